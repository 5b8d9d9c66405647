#!/usr/bin/env bash
# Time from a fault to READY again (not a test: nothing is asserted on numbers). As root:
#
#   deploy/bench/failover.sh [--sizes 10,100] [--hosts 5] [--bin-dir DIR]
#
# On a private testbed of --hosts hosts (full mesh; real controller and agents; one testbed at a
# time through the flock on /run/lock/vnet-testbed-e2e.lock, like the end-to-end tests), for each
# VN size N of --sizes: a ring of N unpinned netns nodes (revisitation allowed, so N may exceed
# the hosts; cpu demands spread them, at most ceil(1.25 N / (hosts - 1)) per host), then
#   host kill   the agent of the host of node n0 killed and its underlay links taken down
#               (`vnctl testbed host kill H --links`): time until the VN is READY with no node
#               on H. Includes the controller's host grace period (--host-grace-secs, 10 s),
#               shown apart. The host then comes back (`host start --links`).
#   link down   the substrate link under the first hop of a virtual link taken down (`vnctl
#               testbed link down A B`): time until the VN is READY with no path over it.
#               Includes the probes' detection (3 x 300 ms) and the link debounce (1 s).
# Polls `vnctl describe` every 100 ms (the resolution of the numbers). Prints a Markdown table and
# writes it to its section of deploy/bench/RESULTS.md (deploy/bench/lib/results.sh;
# VNET_BENCH_RESULTS=- writes no file). Takes the testbed down and checks that nothing of it is
# left (deploy/bench/lib/testbed.sh).
# Needs jq, iproute2, util-linux (flock). Builds vnctl, vn-controller and substrate-agent
# (release, honours CARGO_TARGET_DIR) unless --bin-dir names a directory holding all three.
# Noisy when other builds share the machine: the load is printed.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
. deploy/bench/lib/testbed.sh
results_begin "$@"

sizes=10,100 hosts=5 bin_dir=""
parse_args --sizes --hosts --bin-dir -- "$@"
[[ $sizes =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--sizes wants sizes like 10,100, got '$sizes'"
want_int --hosts "$hosts" 3
need_root "namespaces, links, daemons"
need_tools jq flock ip ss
binaries "$bin_dir"

testbed_names fo 249
vn() { VNET_CONTROLLER=$ctl "$VNCTL" --provider lab "$@" 9>&-; }
tb() { "$VNCTL" testbed "$@" --state-dir "$state" >/dev/null 9>&-; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

testbed_lock
testbed_begin
testbed_up --hosts "$hosts" --timeout 120s >/dev/null

# The smallest host cpu capacity: node demands are sized so that N nodes spread over the hosts
# (at most ceil(1.25 N / (hosts - 1)) per host, so they still fit when one host is gone).
cap=$(vn get hosts -o json | jq '[.[].capacity.cpu] | min')

# ring N: nodes n0..n(N-1), links n(i) - n(i+1 mod N), each its own /30.
ring() {
  local n=$1 i j per cpu
  # A quarter more room than the survivors need: a re-embedding has a choice of hosts.
  per=$(((5 * n + 4 * (hosts - 1) - 1) / (4 * (hosts - 1))))
  cpu=$((cap / per))
  ((cpu > 0)) || die "hosts of $cap cpu cannot hold $per nodes each"
  echo "name: ring$n"
  echo "allowRevisitation: true"
  echo "nodes:"
  for ((i = 0; i < n; i++)); do echo "  - {name: n$i, cpu: $cpu, memory: 8}"; done
  echo "links:"
  for ((i = 0; i < n; i++)); do
    j=$(((i + 1) % n))
    echo "  - {endpoints: [n$i, n$j], bandwidth: 1, addresses: [10.$((80 + i / 250)).$((i % 250)).1/30, 10.$((80 + i / 250)).$((i % 250)).2/30]}"
  done
}

# wait_until VN JQ-CONDITION: polls describe until READY and the condition holds; prints ms.
wait_until() {
  local name=$1 cond=$2 t0=$3 d
  while :; do
    d=$(vn describe vn "$name" -o json 2>/dev/null) || d='{}'
    if jq -e ".state == \"READY\" and ($cond)" <<<"$d" >/dev/null; then
      echo $(($(now_ms) - t0))
      return
    fi
    (($(now_ms) - t0 < 600000)) || die "$name did not recover within 600 s: $(jq -c '{state, reason}' <<<"$d")"
    sleep 0.1
  done
}

# Waits until host $1 is connected and applied its desired state (its leftovers removed).
settled() {
  local h=$1 i
  for ((i = 0; i < 600; i++)); do
    vn get hosts -o json | jq -e --arg h "$h" \
      '.[] | select(.id == $h) | .connected and .observedGeneration == .desiredGeneration' \
      >/dev/null && return
    sleep 0.1
  done
  die "host $h did not settle"
}

body=$work/table.md
{
  echo "| VN nodes | fault | moved | fault to READY | of which grace/debounce | create to READY |"
  echo "|---|---|---|---|---|---|"
} >"$body"
IFS=, read -ra ns <<<"$sizes"
for n in "${ns[@]}"; do
  ring "$n" >"$work/ring$n.yaml"
  t0=$(now_ms)
  vn apply -f "$work/ring$n.yaml" --wait --timeout 600s >/dev/null
  created=$(($(now_ms) - t0))

  d=$(vn describe vn "ring$n" -o json)
  victim=$(jq -r '.nodes[] | select(.node == "n0") | .host' <<<"$d")
  t0=$(now_ms)
  tb host kill "$victim" --links
  ms=$(wait_until "ring$n" "[.nodes[].host] | index(\"$victim\") | not" "$t0")
  moved=$(vn describe vn "ring$n" -o json | jq -r '.recoveries[-1].moved | length')
  echo "| $n | host kill ($victim, agent and links) | $moved | $ms ms | 10000 ms (host grace) | $created ms |" >>"$body"
  echo "ring$n: host $victim killed: READY again after $ms ms ($moved moved)" >&2
  tb host start "$victim" --links
  settled "$victim"

  d=$(vn describe vn "ring$n" -o json)
  hop=$(jq -r '[.links[] | select(.path | length >= 2)][0].path[0:2] | join(" ")' <<<"$d")
  [[ -n $hop && $hop != null ]] || die "ring$n has no link crossing the underlay"
  read -r a b <<<"$hop"
  # Sorted, as the pairs of consecutive hosts below.
  read -r a b <<<"$(printf '%s\n' "$a" "$b" | sort | tr '\n' ' ')"
  cond="all(.links[].path; . as \$p | [range(0; (\$p | length) - 1) | [\$p[.], \$p[. + 1]] | sort] | any(.[]; . == [\"$a\", \"$b\"]) | not)"
  t0=$(now_ms)
  tb link down "$a" "$b"
  ms=$(wait_until "ring$n" "$cond" "$t0")
  moved=$(vn describe vn "ring$n" -o json | jq -r '.recoveries[-1].moved | length')
  echo "| $n | link down ($a-$b) | $moved | $ms ms | ~1900 ms (3 probes of 300 ms + 1 s debounce) | |" >>"$body"
  echo "ring$n: link $a-$b down: READY again after $ms ms ($moved rerouted)" >&2
  tb link up "$a" "$b"
  vn delete vn "ring$n" --wait >/dev/null
done
{
  echo
  echo "Real controller and agents on a $hosts-host testbed (full mesh), binaries: ${bin_dir:-release build}. A ring of N"
  echo "unpinned netns nodes with revisitation; \"moved\": nodes moved plus links rerouted by the"
  echo "re-embedding (replan keeps everything else). Fault to READY is measured by polling"
  echo "\`vnctl describe\` every 100 ms from the moment the fault command returned; it includes the"
  echo "detection delay shown in the next column. The machine is shared while it runs (load above)."
} >>"$body"
cat "$body"
results_write failover "Failure recovery: fault to READY (\`failover.sh\`)" "$body"
