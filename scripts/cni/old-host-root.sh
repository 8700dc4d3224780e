#!/usr/bin/env bash
# A Debian bullseye root filesystem (glibc 2.31, no Python), the oldest Debian the registry
# still serves, for running the standalone masq-cni as a node with an old C library would:
# tests/kernel/test_cni_artifact.py chroots into it. Cached: prints the directory, building it first
# when missing (debootstrap --variant=minbase, about a minute).
#
#   scripts/cni/old-host-root.sh [DIR]      # default: build/cni/roots/bullseye
set -euo pipefail
cd "$(dirname "$0")/../.."
SUITE=bullseye
DIR=${1:-build/cni/roots/$SUITE}
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
if [ -f "$DIR/.complete" ]; then
  echo "$DIR"
  exit 0
fi

# The host's Debian mirror (bullseye sits beside bookworm on it).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  if [ -f "$f" ]; then sources+=("$f"); fi
done
mirror=$(awk '
  /^URIs:/ { print $2 }
  /^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }
' "${sources[@]}" </dev/null | grep -v security | grep -E '/debian/?$' | head -n 1 || true)
[ -n "$mirror" ] || { echo "no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing (make deps installs it)" >&2; exit 1; }

rm -rf "$DIR.partial"
printf '==> debootstrap --variant=minbase %s from %s\n' "$SUITE" "$mirror" >&2
start=$SECONDS
debootstrap --variant=minbase "$SUITE" "$DIR.partial" "$mirror" >"$DIR.log" 2>&1 || {
  tail -n 20 "$DIR.log" >&2
  exit 1
}
rm -rf "$DIR.partial"/var/cache/apt/archives/*.deb
rm -rf "$DIR" && mv "$DIR.partial" "$DIR"
touch "$DIR/.complete"
printf '==> %s root in %ss\n' "$SUITE" "$((SECONDS - start))" >&2
echo "$DIR"
