#!/usr/bin/env bash
# Builds the CPython that masq-cni runs on, for any host with glibc 2.28 or newer (RHEL 8 and
# everything after it), and prints the directory it is in (build/cni/python-KEY).
#
#   scripts/cni/build-python.sh            # cached: a second run with the same inputs is instant
#
# Why this way (README: "masq-cni on the node"): the host's own C library is the only thing the
# plugin can count on, so the interpreter is compiled with `zig cc -target
# x86_64-linux-gnu.2.28`, which links against glibc 2.28's symbol versions whatever glibc the
# build machine has (here bookworm's 2.36). The source is Debian's own python3.11 source package
# (apt-get source, with the patches of its latest point release), fetched through a private deb-src list so the
# machine's apt configuration is left alone. The C modules in scripts/cni/Setup.local are
# compiled in and nothing else: no shared object but glibc's is needed.
#
# Environment: PYTHON (runs zig, from the ziglang package; default python3), MASQ_CNI_CACHE
# (default build/cni), GLIBC_TARGET (default 2.28).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
CACHE=${MASQ_CNI_CACHE:-$ROOT/build/cni}
GLIBC_TARGET=${GLIBC_TARGET:-2.28}
SOURCE_PACKAGE=python3.11
SUITE=bookworm

log() { printf '==> %s\n' "$*" >&2; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

zig=$("$PYTHON" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))' 2>/dev/null) || {
  echo "zig is missing: pip install ziglang (make deps installs it)" >&2
  exit 1
}
zig_version=$("$zig" version)

# Wrappers, so configure and make see one word per tool. -Wno-date-time: zig makes
# __DATE__/__TIME__ an error (reproducibility), and Modules/getbuildinfo.c uses them.
tools=$CACHE/zig-$zig_version-glibc$GLIBC_TARGET
mkdir -p "$tools"
printf '#!/bin/sh\nexec "%s" cc -target x86_64-linux-gnu.%s -Wno-date-time "$@"\n' "$zig" "$GLIBC_TARGET" >"$tools/cc"
printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" >"$tools/ar"
printf '#!/bin/sh\nexec "%s" ranlib "$@"\n' "$zig" >"$tools/ranlib"
chmod +x "$tools/cc" "$tools/ar" "$tools/ranlib"
# zig keeps its compiled C runtime pieces (glibc stubs, compiler-rt) here, beside the build.
export ZIG_GLOBAL_CACHE_DIR=$CACHE/zig-cache ZIG_LOCAL_CACHE_DIR=$CACHE/zig-cache

# ---- the source: Debian's python3.11 source package ---------------------------------------
apt_mirror() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    if [ -f "$f" ]; then files+=("$f"); fi
  done
  awk -v suite="$SUITE" '
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
    /^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i + 1) == suite) { print $i; exit } } }
  ' "${files[@]}" </dev/null | head -n 1
}

apt_dir=$CACHE/apt
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
if [ ! -f "$apt_dir/lists/.updated" ]; then
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || { echo "no Debian mirror for $SUITE in /etc/apt/sources.list*" >&2; exit 1; }
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  printf 'Types: deb-src\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$SUITE" "$SUITE" >"$apt_dir/sources.list.d/masq-cni-src.sources"
  log "deb-src lists for $SUITE"
  apt-get "${apt_opts[@]}" update -qq
  touch "$apt_dir/lists/.updated"
fi
src_version=$(apt-cache "${apt_opts[@]}" showsrc "$SOURCE_PACKAGE" | awk '/^Version:/ { print $2 }' | sort -V | tail -n 1)
[ -n "$src_version" ] || { echo "no source package $SOURCE_PACKAGE in $SUITE" >&2; exit 1; }
src=$CACHE/src/$SOURCE_PACKAGE-$src_version
if [ ! -f "$src/.unpacked" ]; then
  log "apt-get source $SOURCE_PACKAGE=$src_version"
  rm -rf "$CACHE/src" && mkdir -p "$CACHE/src/dl"
  (cd "$CACHE/src/dl" && apt-get "${apt_opts[@]}" source -qq --download-only "$SOURCE_PACKAGE=$src_version" >/dev/null)
  dpkg-source --no-check -x "$CACHE/src/dl/"*.dsc "$src" >/dev/null
  rm -rf "$CACHE/src/dl"
  touch "$src/.unpacked"
fi

# ---- configure and make, once per set of inputs --------------------------------------------
key=$(cat "$ROOT/scripts/cni/Setup.local" "$0" | sha256sum | cut -c1-12)
out=$CACHE/python-$src_version-zig$zig_version-glibc$GLIBC_TARGET-$key
if [ -f "$out/.built" ]; then
  echo "$out"
  exit 0
fi
log "building CPython $src_version with zig $zig_version for glibc $GLIBC_TARGET in $out"
start=$SECONDS
rm -rf "$out" && cp -a "$src" "$out"
cp "$ROOT/scripts/cni/Setup.local" "$out/Modules/Setup.local"
cd "$out"
# PKG_CONFIG=false: the build machine's .pc files describe its own libraries (zlib...), which
# the target does not link. No -g: nothing here is debugged on a node. --without-doc-strings
# keeps the executable small; the plugin prints no help from docstrings.
PKG_CONFIG=false CC="$tools/cc" AR="$tools/ar" RANLIB="$tools/ranlib" OPT="-DNDEBUG -fwrapv -O2 -Wall" \
  ./configure -q --prefix=/opt/masq-cni --disable-shared --without-ensurepip --disable-test-modules \
  --with-lto=no --without-doc-strings >configure.out 2>&1 || { tail -n 30 configure.out >&2; exit 1; }
make -j"$(nproc)" python >make.out 2>&1 || { grep -B2 -A8 'error' make.out | head -n 60 >&2; exit 1; }
printf '%s\n' "$src_version" >.source-version
printf '%s\n' "$zig_version" >.zig-version
touch .built
log "CPython built in $((SECONDS - start))s"
echo "$out"
