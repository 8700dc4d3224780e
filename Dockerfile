# masqd's image: masqd, masqctl and the standalone masq-cni on slim Debian, with the
# distribution's iptables, ip6tables and ipset. Build it with `make image`
# (scripts/build-image.sh): that script first puts the wheels of masqd and its dependencies
# into build/wheels, which this build installs from without any package index, and builds the
# standalone masq-cni into build/cni-dist (scripts/build-cni.sh: it runs on the host, not in
# this image, so it is built for the oldest glibc a node may have, not for this image's). The
# context holds only those two (.dockerignore).

# ---- builder: a virtualenv of masqd --------------------------------------------------------
FROM debian:bookworm-slim AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's Python, so the virtualenv runs unchanged on the runtime stage's python3.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

COPY build/wheels/ /wheels/

# masqd and masqctl: a virtualenv holding only masqd and what it imports at run time.
RUN python3 -m venv /opt/masqd \
    && /opt/masqd/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/masqd-*.whl \
    && /opt/masqd/bin/pip uninstall --yes pip setuptools \
    && rm -f /opt/masqd/bin/masq-cni /opt/masqd/bin/activate* /opt/masqd/bin/Activate.ps1

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="masqd" \
      org.opencontainers.image.description="IP masquerade agent for Kubernetes nodes" \
      org.opencontainers.image.licenses="Apache-2.0"

# iptables brings ip6tables and both its modes (nft, Debian's default, and legacy); masqd's
# --iptables-mode=auto picks the one the node uses. nftables brings nft, which the nftables
# backend runs (--backend nftables, or auto where the node wants it). tini runs as PID 1: it
# reaps the processes a killed worker leaves behind (the iptables-restore or nft each keeps
# waiting), which masqd as PID 1 would leave as zombies, and passes SIGTERM on. Versions follow Debian stable's security
# updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ipset nftables python3 tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/*

COPY --from=builder /opt/masqd /opt/masqd
# The standalone masq-cni, as `masq-cni install` (the DaemonSet's installer) copies it to the host.
COPY build/cni-dist/masq-cni.d /opt/masq-cni
RUN CNI_COMMAND=VERSION /opt/masq-cni/masq-cni </dev/null >/dev/null \
    && ln -s /opt/masqd/bin/masqd /opt/masqd/bin/masqctl /opt/masq-cni/masq-cni /usr/local/bin/ \
    && masqd --help > /dev/null && masqctl --help > /dev/null && nft --version > /dev/null

# Python writes nothing at run time (the root filesystem may be read-only) and logs unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MASQD_SOCKET=/run/masqd/masqd.sock

# SIGTERM (the default stop signal) leaves the rules in place, so traffic keeps flowing while
# the pod is replaced.
CMD ["tini", "--", "masqd", "--config", "/etc/config/ip-masq-agent", "--socket", "/run/masqd/masqd.sock"]
