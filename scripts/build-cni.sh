#!/usr/bin/env bash
# Builds the standalone masq-cni (make cni-bin): a PyInstaller one-folder bundle that runs on a
# host without Python, even with an empty environment (env -i).
#
#   scripts/build-cni.sh [OUT_DIR]      # default: dist
#
# Result: OUT_DIR/masq-cni.d/ (the executable masq-cni and its _internal/ folder) and
# OUT_DIR/masq-cni, a relative symlink to the executable. Copy the folder, not the link, into
# an image; `masq-cni install` then places it on the host.
#
# One folder, not one file: a one-file build unpacks its ~40 MB into a temporary directory on
# every run, which costs about a second per pod start; the folder starts in about 0.1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${1:-dist}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The plugin imports the standard library, grpc and protobuf; nothing else belongs in the
# bundle (the dev environment has packages whose hooks would drag in numpy and friends).
# multiprocessing comes only through concurrent.futures.process, which the plugin never uses;
# left in, PyInstaller runs its start-up hook on every invocation (~30 ms). grpc's compiled
# module imports pkgutil, which the analysis cannot see: named explicitly.
excludes=(numpy yaml grpc_tools tkinter charset_normalizer setuptools pkg_resources
  distutils pydoc_data IPython pytest _pytest multiprocessing)
args=()
for m in "${excludes[@]}"; do args+=(--exclude-module "$m"); done

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --onedir --name masq-cni --log-level WARN \
  --paths . --distpath "$WORK/dist" --workpath "$WORK/build" --specpath "$WORK" \
  --hidden-import masqd.api.v1.control_pb2 --hidden-import pkgutil \
  "${args[@]}" masqd/cni/__main__.py

rm -rf "$OUT/masq-cni.d.new"
mv "$WORK/dist/masq-cni" "$OUT/masq-cni.d.new"
rm -rf "$OUT/masq-cni.d"
mv "$OUT/masq-cni.d.new" "$OUT/masq-cni.d"
ln -sfn masq-cni.d/masq-cni "$OUT/masq-cni"
echo "built $OUT/masq-cni ($(du -sh "$OUT/masq-cni.d" | cut -f1), $(($(date +%s) - start))s)"
