#!/usr/bin/env bash
# Time from update to READY of a live VN (not a test: nothing is asserted on numbers). As root:
#
#   deploy/bench/update.sh [--sizes "10 100"] [--runs N] [--hosts H] [--bin-dir DIR]
#
# Brings up a private testbed of H hosts (default 5; vnctl testbed up with its own namespace
# prefix, bridge, subnet, ports and state dir; one testbed at a time through the flock on
# /run/lock/vnet-testbed-e2e.lock, like the end-to-end tests). For each size N it creates a VN of
# N netns nodes in a ring (N links of 10 Mbit/s with addresses, node i pinned to host i mod H, so
# every link crosses the underlay) and waits for READY; then it applies, N times by default 3 (--runs), the change of
# the end-to-end test: one node and two links added, one link removed, one bandwidth doubled, and
# back again, each time measuring `vnctl apply -f SPEC --wait` from its start to READY (the
# controller's replan and commit, the involved agents' reconcile, their reports). Prints a
# Markdown table (median, min-max) and writes it to its section of deploy/bench/RESULTS.md
# (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file). Takes the testbed down and
# checks that nothing of it is left (the trap of deploy/bench/lib/testbed.sh).
# Needs jq, iproute2, util-linux (flock). Builds vnctl, vn-controller and substrate-agent
# (release, honours CARGO_TARGET_DIR) unless --bin-dir names a directory holding all three.
# Noisy when other builds share the machine: the load is printed.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
. deploy/bench/lib/testbed.sh
results_begin "$@"

sizes="10 100" runs=3 hosts=5 bin_dir=""
parse_args --sizes --runs --hosts --bin-dir -- "$@"
want_int --runs "$runs" 1
want_int --hosts "$hosts" 1
for n in $sizes; do want_int --sizes "$n" 3 250; done
need_root "namespaces, links, daemons"
need_tools jq flock ip ss
binaries "$bin_dir"

testbed_names ub 247
# vnctl without the lock's fd 9: the daemons it starts must not inherit (and hold) it.
vn() { VNET_CONTROLLER=$ctl "$VNCTL" --provider lab "$@" 9>&-; }

# spec NAME N VARIANT: a ring of N nodes, node i pinned to host i mod H (so that neighbours sit on
# different hosts and every link is a VXLAN tunnel); VARIANT 1 adds node x with links x-n0 and
# x-n1, removes the link n1-n2 and doubles n0-n1.
spec() {
  local name=$1 n=$2 variant=$3 i j bw
  echo "name: $name"
  echo "allowRevisitation: true"
  echo "nodes:"
  for ((i = 0; i < n; i++)); do
    echo "  - {name: n$i, cpu: 1, memory: 16, host: h$((i % hosts + 1))}"
  done
  ((variant == 1)) && echo "  - {name: x, cpu: 1, memory: 16, host: h$((n % hosts + 1))}"
  echo "links:"
  for ((i = 0; i < n; i++)); do
    j=$(((i + 1) % n))
    ((variant == 1 && i == 1)) && continue
    bw=10
    ((variant == 1 && i == 0)) && bw=20
    echo "  - {endpoints: [n$i, n$j], bandwidth: $bw, addresses: [10.80.$i.1/24, 10.80.$i.2/24]}"
  done
  if ((variant == 1)); then
    echo "  - {endpoints: [x, n0], bandwidth: 10, addresses: [10.81.0.1/24, 10.81.0.2/24]}"
    echo "  - {endpoints: [x, n1], bandwidth: 10, addresses: [10.81.1.1/24, 10.81.1.2/24]}"
  fi
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# median min max of the numbers on stdin
stats() { sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'; }

testbed_lock
testbed_begin
echo "testbed of $hosts hosts ..." >&2
bg "$work/up.log" testbed_up --hosts "$hosts" --timeout 120s || { cat "$work/up.log" >&2; exit 1; }

rows=""
for n in $sizes; do
  name="u$n"
  spec "$name" "$n" 0 >"$work/$name-0.yaml"
  spec "$name" "$n" 1 >"$work/$name-1.yaml"
  t0=$(now)
  vn apply -f "$work/$name-0.yaml" --wait --timeout 600s >"$work/apply.log" 2>&1 \
    || { cat "$work/apply.log" >&2; die "create of $name failed"; }
  create=$(secs "$t0" "$(now)")
  echo "$name: created in ${create}s" >&2
  : >"$work/times"
  variant=1
  for ((r = 0; r < runs; r++)); do
    t0=$(now)
    vn apply -f "$work/$name-$variant.yaml" --wait --timeout 600s >"$work/apply.log" 2>&1 \
      || { cat "$work/apply.log" >&2; die "update $r of $name failed"; }
    t=$(secs "$t0" "$(now)")
    grep -q "updated to generation" "$work/apply.log" || die "update $r of $name did nothing: $(cat "$work/apply.log")"
    echo "$name: update $((r + 1)) (to variant $variant) READY in ${t}s" >&2
    echo "$t" >>"$work/times"
    variant=$((1 - variant))
  done
  hosts_used=$(vn get vn "$name" -o json | jq '[.nodes[].host] | unique | length')
  rows+="| $n | $hosts_used | $create | $(stats <"$work/times") | $runs |"$'\n'
  vn delete vn "$name" --wait --timeout 300s >/dev/null
done

body=$work/results.md
{
  echo "Testbed of $hosts hosts (full mesh of 1000 Mbit/s), binaries from ${bin_dir:-a release build}."
  echo "A ring VN of N netns nodes spread round-robin over the hosts (every link a VXLAN tunnel);"
  echo "each update adds a node and two links, removes a link and doubles a bandwidth (or undoes"
  echo "that), timed from the start of \`vnctl apply --wait\` to READY. Debug binaries are slower"
  echo "than release ones; the machine is shared with other builds (see the load)."
  echo
  echo "| VN nodes | hosts used | create to READY (s) | update to READY (s), median (min-max) | updates |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s' "$rows"
} >"$body"
cat "$body"
results_write update "Update a live VN to READY" "$body"
