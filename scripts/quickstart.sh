#!/usr/bin/env bash
# Runs masqd with the default config inside a network namespace of its own, so the host's
# iptables are never touched; prints the chains it wrote and masqctl's view, then keeps
# running until Ctrl-C (or for MASQD_RUN_SECONDS seconds). The namespace is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ns="${1:-masqd-quickstart}"
work="$(mktemp -d)"
sock="$work/masqd.sock"
pid=""

cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# No file at --config means the default config (RFC 1918 ranges unmasqueraded).
ip netns exec "$ns" python3 -m masqd --config "$work/ip-masq-agent" --socket "$sock" &
pid=$!

for _ in $(seq 100); do
  python3 -m masqctl.cli --socket "$sock" health >/dev/null 2>&1 && break
  sleep 0.1
done

echo "--- iptables -t nat -S IP-MASQ-AGENT (in netns $ns)"
ip netns exec "$ns" iptables -t nat -S IP-MASQ-AGENT
echo "--- ip6tables -t nat -S IP-MASQ-AGENT"
ip netns exec "$ns" ip6tables -t nat -S IP-MASQ-AGENT
echo "--- masqctl status"
python3 -m masqctl.cli --socket "$sock" status || true
echo "--- masqd is running in netns $ns; socket $sock; Ctrl-C stops it and deletes the netns"

if [ -n "${MASQD_RUN_SECONDS:-}" ]; then
  sleep "$MASQD_RUN_SECONDS"
else
  wait "$pid"
fi
