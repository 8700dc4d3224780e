#!/usr/bin/env bash
# Builds masqd's container image with podman, offline from any container registry (make image).
#
#   1. The base image debian:bookworm-slim is made here by debootstrap from the Debian mirror apt
#      already uses, and imported into podman (once: later runs reuse it).
#   2. The Python wheels of masqd and its dependencies are built on the host into
#      build/wheels. The host's pip already reaches PyPI the way this machine allows (its index,
#      CA bundle and caches), so the image build installs from that wheelhouse with --no-index:
#      no Python package is fetched inside a container, the image holds exactly the versions the
#      tests ran against, and re-builds reuse the host's pip cache.
#      The standalone masq-cni is built on the host too (scripts/build-cni.sh, into
#      build/cni-dist): it runs on the node, with the node's glibc, not in this image.
#   3. podman builds the Dockerfile (--pull=never, --network host so apt reaches the mirror;
#      podman's bridge network is never used), tags localhost/masqd:dev and saves the OCI archive
#      dist/masqd-image.tar.
#
# Podman reads only the project's settings (deploy/podman/*.conf), never the host's.
# Environment: MASQD_IMAGE (tag, default localhost/masqd:dev), MASQD_REBUILD_BASE=1 to remake the
# base image.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MASQD_IMAGE:-localhost/masqd:dev}
BASE=debian:bookworm-slim
SUITE=bookworm
WHEELS=build/wheels
ARCHIVE=dist/masqd-image.tar
PYTHON=${PYTHON:-python3}

export CONTAINERS_CONF=$PWD/deploy/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$PWD/deploy/podman/storage.conf

log() { printf '==> %s\n' "$*" >&2; }

# The debootstrap tree while the base image is made; removed however the script ends.
ROOTFS=
trap 'if [ -n "$ROOTFS" ]; then rm -rf "$ROOTFS"; fi' EXIT

# The first URI of the host's apt sources that serves $1 (a suite), e.g. http://deb.debian.org/debian.
apt_mirror() {
  local suite=$1 files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    if [ -f "$f" ]; then files+=("$f"); fi
  done
  # deb822 (.sources) stanzas: a URIs line before its Suites line; one-line "deb URI SUITE ...".
  awk -v suite="$suite" '
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
    /^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i + 1) == suite) { print $i; exit } } }
  ' "${files[@]}" </dev/null | head -n 1
}

build_base() {
  if [ "${MASQD_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE"; then
    log "base image $BASE: cached"
    return
  fi
  local mirror security rootfs
  mirror=$(apt_mirror "$SUITE")
  security=$(apt_mirror "$SUITE-security")
  [ -n "$mirror" ] || { echo "no Debian mirror for $SUITE in /etc/apt/sources.list*" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/masqd-rootfs.XXXXXX)
  ROOTFS=$rootfs
  log "base image $BASE: debootstrap --variant=minbase $SUITE from $mirror"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >/dev/null
  # Make it like Debian's -slim image: apt sources with updates and security, no docs, man
  # pages or locales installed by later layers, and no package caches.
  rm -f "$rootfs/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$SUITE"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-clean"
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  tar -C "$rootfs" --numeric-owner -c . |
    podman import --change 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  ROOTFS=
  # A short name resolves to docker.io/library/... as well; tag both so FROM finds it offline.
  podman tag "$BASE" "docker.io/library/$BASE"
}

build_wheels() {
  log "wheels of masqd and its dependencies into $WHEELS"
  rm -rf "$WHEELS"
  # Fixed timestamps make the wheels byte-for-byte the same for the same source, so podman's
  # layer cache holds across re-builds until the source really changes.
  local epoch=${SOURCE_DATE_EPOCH:-315532800}
  SOURCE_DATE_EPOCH=$epoch "$PYTHON" -m pip wheel --quiet --disable-pip-version-check \
    --wheel-dir "$WHEELS" .
  touch --date="@$epoch" "$WHEELS" "$WHEELS"/*
}

build_cni() {
  log "standalone masq-cni into build/cni-dist"
  scripts/build-cni.sh build/cni-dist >/dev/null
  # Fixed timestamps, as for the wheels: the COPY layer is reused until the content changes.
  find build/cni-dist/masq-cni.d -exec touch --no-dereference --date="@${SOURCE_DATE_EPOCH:-315532800}" {} +
}

build_image() {
  log "podman build $IMAGE"
  # --format docker: the OCI image config has no SHELL, and the Dockerfile's SHELL (pipefail)
  # must hold. `podman save` below still writes an OCI archive.
  podman build --pull=never --network host --layers --format docker --tag "$IMAGE" \
    --file Dockerfile .
  mkdir -p "$(dirname "$ARCHIVE")"
  rm -f "$ARCHIVE"
  podman save --format oci-archive --output "$ARCHIVE" "$IMAGE"
  log "saved $IMAGE as $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
}

start=$SECONDS
build_base
build_wheels
build_cni
build_image
log "built in $((SECONDS - start))s"
