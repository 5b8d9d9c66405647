#!/usr/bin/env bash
# What nesting costs on the data path (not a test: nothing is asserted on numbers). As root:
#
#   deploy/bench/recursion.sh [--runs N] [--seconds S] [--bin-dir DIR]
#
# Brings up a private testbed (vnctl testbed up with its own namespace prefix, bridge, subnet,
# ports and state dir; one testbed at a time through the flock on /run/lock/vnet-testbed-e2e.lock,
# like the end-to-end tests) on a line h1 - h2 - h3 of 40 Gbit/s links, so that every h1-h3 path
# crosses h2, and measures one TCP stream (iperf3, S seconds, default 3, N runs, default 3) and
# the ping round trip (busybox ping, 50 x 20 ms) between the two ends of:
#   flat      a VN on the substrate, h1 > h2 > h3 (a transit at h2)
#   P         the nestable parent of deploy/examples/nested-parent.yaml, one hop p1 > p2
#   C 1 hop   a child with its ends in p1 and p2 (VXLAN in VXLAN, no transit)
#   C         deploy/examples/nested-child.yaml: p1 > p2 > p3 (its transit inside p2)
#   G         deploy/examples/nested-grandchild.yaml inside C
#   D         a depth-3 VN inside G
# with the examples' link bandwidths raised (P 30000, C 25000, G 20000, D 15000 Mbit/s; flat
# 30000), so the shaping (TBF at the link's bandwidth) is above what the machine forwards. Prints a
# Markdown table (median, min-max) and writes it to its section of deploy/bench/RESULTS.md
# (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file). Takes the testbed down and
# checks that nothing of it is left (the trap of deploy/bench/lib/testbed.sh, shared with
# guest-request.sh).
# Needs iperf3, busybox-static, jq, iproute2, util-linux (flock, nsenter). Builds vnctl,
# vn-controller and substrate-agent (release, honours CARGO_TARGET_DIR) unless --bin-dir names a
# directory holding all three. Noisy when other builds share the machine: the load is printed.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
. deploy/bench/lib/testbed.sh
results_begin "$@"

runs=3 seconds=3 bin_dir=""
parse_args --runs --seconds --bin-dir -- "$@"
want_int --runs "$runs" 1
want_int --seconds "$seconds" 1
need_root "namespaces, links, daemons"
need_tools jq flock ip ss busybox iperf3 nsenter
binaries "$bin_dir"

testbed_names rb 251
# vnctl without the lock's fd 9: the daemons it starts must not inherit (and hold) it.
vn() { VNET_CONTROLLER=$ctl "$VNCTL" --provider lab "$@" 9>&-; }

testbed_lock
testbed_begin
cat >"$work/line.yaml" <<'EOF'
hosts:
  - {id: h1, cpu: 400, memory: 4096}
  - {id: h2, cpu: 400, memory: 4096}
  - {id: h3, cpu: 400, memory: 4096}
links:
  - {a: h1, b: h2, bandwidth: 40000}
  - {a: h2, b: h3, bandwidth: 40000}
EOF
testbed_up --topology "$work/line.yaml" >/dev/null

ex=deploy/examples
sed 's/bandwidth: 100,/bandwidth: 30000,/' $ex/nested-parent.yaml >"$work/p.yaml"
sed 's/bandwidth: 50,/bandwidth: 25000,/' $ex/nested-child.yaml >"$work/c.yaml"
sed -e 's/host: p3/host: p2/' -e 's/name: nested-child/name: hop1/' "$work/c.yaml" >"$work/c1.yaml"
sed 's/bandwidth: 20,/bandwidth: 20000,/' $ex/nested-grandchild.yaml >"$work/g.yaml"
sed 's/bandwidth: 5,/bandwidth: 15000,/' $ex/nested-deep.yaml >"$work/d.yaml"
cat >"$work/flat.yaml" <<'EOF'
name: flat
nodes:
  - {name: f1, cpu: 1, memory: 8, host: h1}
  - {name: f2, cpu: 1, memory: 8, host: h3}
links:
  - {endpoints: [f1, f2], bandwidth: 30000, addresses: [10.79.0.1/24, 10.79.0.2/24]}
EOF
apply() { vn apply -f "$1" --wait --timeout 60s >/dev/null 2>&1 || die "apply $1 failed"; }
# The namespace of node $2 of VN $1.
netns() {
  vn describe vn "$1" -o json \
    | jq -r --arg n "$2" --arg t "$tag" '.nodes[] | select(.node == $n) | "\($t)\(.host)-\(.nodeId)"'
}
median() { sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]}'; }
rows=()
# measure LABEL VN A B ADDRESS PATH
measure() {
  local a z g rtt
  a=$(netns "$2" "$3") z=$(netns "$2" "$4")
  g=$(for ((r = 0; r < runs; r++)); do
    nsenter --net=/run/netns/"$z" iperf3 -s -1 -p 5299 >/dev/null 2>&1 9>&- &
    sleep 0.3
    nsenter --net=/run/netns/"$a" iperf3 -c "$5" -p 5299 -t "$seconds" -J 9>&- \
      | jq '.end.sum_received.bits_per_second / 1e9'
    wait
  done | median)
  rtt=$(nsenter --net=/run/netns/"$a" busybox ping -q -c 50 -i 0.02 -W 1 "$5" 9>&- \
    | awk -F/ '/round-trip/ {print $4}')
  rows+=("| $1 | $6 | $g | $rtt |")
  echo "  $1: $g Gbit/s, rtt $rtt ms" >&2
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
apply "$work/flat.yaml"
measure flat flat f1 f2 10.79.0.2 "h1 > h2 > h3"
vn delete vn flat --wait >/dev/null 2>&1
apply "$work/p.yaml"
measure "P (depth 0)" nested-parent p1 p2 10.70.1.2 "p1 > p2 (h1 > h2)"
apply "$work/c1.yaml"
measure "C, 1 hop (depth 1)" hop1 c1 c2 10.71.0.2 "p1 > p2"
vn delete vn hop1 --wait >/dev/null 2>&1
for f in c g d; do apply "$work/$f.yaml"; done
measure "C (depth 1)" nested-child c1 c2 10.71.0.2 "p1 > p2 > p3"
measure "G (depth 2)" nested-grandchild g1 g2 10.72.0.2 "c1 > c2"
measure "D (depth 3)" nested-deep d1 d2 10.73.0.2 "g1 > g2"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
{
  echo "Private line testbed h1 - h2 - h3 of 40 Gbit/s links; the example specs with raised"
  echo "bandwidths; iperf3 one TCP stream, $runs x ${seconds} s per row; busybox ping 50 x 20 ms."
  echo
  echo "| VN | path | one TCP stream, Gbit/s, median (min-max) of $runs x ${seconds}s | ping rtt avg, ms |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$work/results.md"
cat "$work/results.md"
results_write recursion "Recursion: throughput and latency per nesting level (\`recursion.sh\`)" "$work/results.md"
