#!/usr/bin/env bash
# Substrate agent benchmark (not a test). Run as root:
#
#   deploy/bench/agent-scale.sh [--vnodes N] [--workers W] [--seconds S]
#
# 1. Scale: builds N netns virtual nodes, each with one link (N/2 veth pairs with addresses), and
#    tears them down again, through the agent's own observe -> plan -> apply code path
#    (`substrate-agent bench`). Targets: >= 300 virtual nodes/s created, <= 5 s to tear down 1000.
# 2. Throughput over one virtual link between two host namespaces joined by an underlay veth
#    (iperf3, one TCP stream, S seconds each, same run): the raw veth, a VXLAN link and a
#    userspace-VLAN link, the latter two realized by the agent's code (`substrate-agent bench-link`)
#    with its real VLAN datapath process.
#
# Prints Markdown tables for people and, as its LAST line, one JSON object with vnodes, create_s,
# teardown_s (and the throughput numbers). Writes the tables to its section of
# deploy/bench/RESULTS.md (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib/results.sh

VNODES=1000
WORKERS=4
SECONDS_PER_RUN=5
parse_args --vnodes:VNODES --workers:WORKERS --seconds:SECONDS_PER_RUN -- "$@"
need_root "creates namespaces"
need_tools iperf3 ip jq
results_begin "$@"

# Its VLAN row is the userspace datapath's (datapath.sh compares every datapath side by side).
export VNET_VLAN_DATAPATH=userspace
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p substrate-agent
BIN="$TARGET_DIR/release/substrate-agent"

TAG="ab$$"
H1="${TAG}h1"; H2="${TAG}h2"; R1="${TAG}r1"; R2="${TAG}r2"
STATE="$(mktemp -d)"
BODY="$STATE/results.md"
cleanup() {
  "$BIN" bench-link --netns "$H1" --host-id "$H1" --state-dir "$STATE/h1" --side 1 \
    --local 10.255.99.1 --remote 10.255.99.2 --teardown >/dev/null 2>&1 || true
  "$BIN" bench-link --netns "$H2" --host-id "$H2" --state-dir "$STATE/h2" --side 2 \
    --local 10.255.99.2 --remote 10.255.99.1 --teardown >/dev/null 2>&1 || true
  for ns in "$H1" "$H2" "$R1" "$R2"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$STATE"
}
trap cleanup EXIT

# --- 1. scale ------------------------------------------------------------------------------
scale_json="$("$BIN" bench --vnodes "$VNODES" --workers "$WORKERS" --host-id "$TAG" | tail -n 1)"
create_s=$(jq -r .create_s <<<"$scale_json")
teardown_s=$(jq -r .teardown_s <<<"$scale_json")
resync_s=$(jq -r .resync_s <<<"$scale_json")
links=$(jq -r .links <<<"$scale_json")
rate=$(awk -v n="$VNODES" -v t="$create_s" 'BEGIN { printf "%.0f", n / t }')
per1000=$(awk -v n="$VNODES" -v t="$teardown_s" 'BEGIN { printf "%.2f", t * 1000 / n }')

{
  echo "Scale: $VNODES netns virtual nodes with $links veth links, $WORKERS workers, release build"
  echo
  echo "| metric | value | target |"
  echo "| --- | --- | --- |"
  printf '| create (s) | %.3f | |\n' "$create_s"
  printf '| created nodes/s | %s | >= 300 |\n' "$rate"
  printf '| no-op reconcile of all (s) | %.3f | |\n' "$resync_s"
  printf '| teardown (s) | %.3f | |\n' "$teardown_s"
  printf '| teardown per 1000 nodes (s) | %s | <= 5 |\n' "$per1000"
  echo
} >"$BODY"

# --- 2. throughput -------------------------------------------------------------------------
for ns in "$H1" "$H2" "$R1" "$R2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "u${TAG}a" netns "$H1" type veth peer name "u${TAG}b" netns "$H2"
ip -n "$H1" addr add 10.255.99.1/24 dev "u${TAG}a"; ip -n "$H1" link set "u${TAG}a" up
ip -n "$H2" addr add 10.255.99.2/24 dev "u${TAG}b"; ip -n "$H2" link set "u${TAG}b" up
# Raw veth between two plain namespaces: the baseline.
ip link add eth0 netns "$R1" type veth peer name eth0 netns "$R2"
ip -n "$R1" addr add 10.98.0.1/24 dev eth0; ip -n "$R1" link set eth0 up
ip -n "$R2" addr add 10.98.0.2/24 dev eth0; ip -n "$R2" link set eth0 up
# VXLAN and VLAN links through the agent's code.
"$BIN" bench-link --netns "$H1" --host-id "$H1" --state-dir "$STATE/h1" --side 1 \
  --local 10.255.99.1 --remote 10.255.99.2
"$BIN" bench-link --netns "$H2" --host-id "$H2" --state-dir "$STATE/h2" --side 2 \
  --local 10.255.99.2 --remote 10.255.99.1
N1="vnb-$H1-p1"; N2="vnb-$H2-p2"

iperf() { # client-ns server-ns server-ip port
  ip netns exec "$2" iperf3 -s -1 -p "$4" >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  local bps
  bps=$(ip netns exec "$1" iperf3 -c "$3" -p "$4" -t "$SECONDS_PER_RUN" -J | jq '.end.sum_received.bits_per_second')
  wait "$srv" 2>/dev/null || true
  awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }'
}
ip netns exec "$N1" busybox ping -c 1 -W 2 10.97.0.2 >/dev/null
ip netns exec "$N1" busybox ping -c 1 -W 2 10.96.0.2 >/dev/null
veth_g=$(iperf "$R1" "$R2" 10.98.0.2 5401)
vxlan_g=$(iperf "$N1" "$N2" 10.97.0.2 5402)
vlan_g=$(iperf "$N1" "$N2" 10.96.0.2 5403)

{
  echo "Throughput over one virtual link (iperf3, one TCP stream, ${SECONDS_PER_RUN} s each, same run)"
  echo
  echo "| path | Gbit/s |"
  echo "| --- | --- |"
  echo "| raw veth (baseline) | $veth_g |"
  echo "| VXLAN (kernel, MTU 1450) | $vxlan_g |"
  echo "| 802.1Q VLAN (userspace datapath, MTU 1500) | $vlan_g |"
} >>"$BODY"
echo
cat "$BODY"
echo
results_write agent-scale "Substrate agent: scale and link throughput (\`agent-scale.sh\`)" "$BODY"
jq -c -n --argjson s "$scale_json" --arg v "$veth_g" --arg x "$vxlan_g" --arg l "$vlan_g" \
  '{vnodes: $s.vnodes, create_s: $s.create_s, teardown_s: $s.teardown_s, resync_s: $s.resync_s, links: $s.links,
    workers: $s.workers, veth_gbps: ($v|tonumber), vxlan_gbps: ($x|tonumber), vlan_gbps: ($l|tonumber)}'
