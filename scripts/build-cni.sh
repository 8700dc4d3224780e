#!/usr/bin/env bash
# Builds the standalone masq-cni (make cni-bin): a relocatable interpreter tree that runs on any
# x86-64 Linux host with glibc 2.28 or newer, with an empty environment (env -i) and no Python
# on the host.
#
#   scripts/build-cni.sh [OUT_DIR]      # default: dist
#
# Result: OUT_DIR/masq-cni.d/ and OUT_DIR/masq-cni, a relative symlink to its executable:
#
#   masq-cni.d/masq-cni              the launcher: CPython linked in statically (launcher.c)
#   masq-cni.d/lib/                  the standard library and masqd's plugin, byte-compiled
#   masq-cni.d/masq-cni.build.json   what it was built from, and the glibc it needs
#
# Copy the folder, not the link, into an image; `masq-cni install` then places it on the host.
# The interpreter comes from scripts/cni/build-python.sh (cached under build/cni); this script
# then takes a few seconds. It prints the newest GLIBC symbol version each ELF needs and fails
# when one is newer than GLIBC_TARGET (default 2.28).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
OUT=${1:-dist}
GLIBC_TARGET=${GLIBC_TARGET:-2.28}
export GLIBC_TARGET
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$SECONDS

py=$(scripts/cni/build-python.sh)
cc=$(ls -d "${MASQ_CNI_CACHE:-$ROOT/build/cni}"/zig-*-glibc"$GLIBC_TARGET")/cc
export ZIG_GLOBAL_CACHE_DIR=${MASQ_CNI_CACHE:-$ROOT/build/cni}/zig-cache
export ZIG_LOCAL_CACHE_DIR=$ZIG_GLOBAL_CACHE_DIR

stage=$(mktemp -d "$OUT/.masq-cni.d.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# The executable: launcher.c against the static libpython, stripped (-s).
"$cc" -O2 -s -I"$py/Include" -I"$py" -o "$stage/masq-cni" scripts/cni/launcher.c \
  "$py/libpython3.11.a" -lm -ldl -lpthread -lutil

# The standard library, less what the plugin and its installer never import (tests, GUIs,
# packaging, the C-backed modules this interpreter leaves out), then masqd's plugin: masqd's
# package marker, the duration parser and default paths of masqd.core, masqd.cni, and the
# client's light path (not its grpcio path, which the plugin never imports; an import contract
# keeps it so).
lib=$stage/lib
mkdir -p "$lib"
excluded=(test idlelib tkinter turtledemo turtle.py lib2to3 ensurepip distutils pydoc_data
  venv sqlite3 dbm curses ctypes msilib xml xmlrpc multiprocessing asyncio concurrent unittest
  email http wsgiref html json/tool.py pydoc.py site-packages)
tar_excludes=()
for e in "${excluded[@]}"; do tar_excludes+=(--exclude="./$e"); done
tar -C "$py/Lib" --exclude=__pycache__ "${tar_excludes[@]}" -cf - . | tar -C "$lib" -xf -
mkdir -p "$lib/masqd/core" "$lib/masqd/cni" "$lib/masqd/client"
cp masqd/__init__.py "$lib/masqd/"
cp masqd/core/__init__.py masqd/core/durations.py masqd/core/defaults.py "$lib/masqd/core/"
cp masqd/cni/*.py "$lib/masqd/cni/"
for m in __init__ errors light wire h2transport hpack; do cp "masqd/client/$m.py" "$lib/masqd/client/"; done

# Byte-compiled by the interpreter that will run it, next to each module (-b) with the source
# removed: an import then finds the .pyc in one look-up and never checks a source's mtime.
"$py/python" -I -S -m compileall -q -b -s "$lib" -p masq-cni.d/lib "$lib" >/dev/null
find "$lib" -name '*.py' -delete
find "$lib" -name __pycache__ -prune -exec rm -rf {} +

cat >"$stage/masq-cni.build.json" <<EOF
{"python": "$(cat "$py/.source-version")", "source": "Debian bookworm source package python3.11",
 "compiler": "zig $(cat "$py/.zig-version") cc -target x86_64-linux-gnu.$GLIBC_TARGET",
 "glibc": "$GLIBC_TARGET", "masqd": "$("$PYTHON" -c 'import masqd; print(masqd.__version__)')"}
EOF

# Every ELF in the tree, with the newest glibc symbol version it needs.
"$PYTHON" scripts/cni/elf_glibc.py --max "$GLIBC_TARGET" "$stage"
# It starts with nothing from the environment.
echo '{"cniVersion":"1.0.0"}' | env -i CNI_COMMAND=VERSION "$stage/masq-cni" >/dev/null

rm -rf "$OUT/masq-cni.d"
mv "$stage" "$OUT/masq-cni.d"
chmod 755 "$OUT/masq-cni.d"
ln -sfn masq-cni.d/masq-cni "$OUT/masq-cni"
echo "built $OUT/masq-cni ($(du -sh "$OUT/masq-cni.d" | cut -f1), $((SECONDS - start))s)"
