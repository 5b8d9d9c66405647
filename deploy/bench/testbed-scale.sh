#!/usr/bin/env bash
# Scale of the real system on one machine (not a test: nothing is asserted on numbers). As root:
#
#   deploy/bench/testbed-scale.sh [--hosts 50] [--vns 2000] [--steps 4] [--vlan-every 4]
#                                 [--bin-dir DIR]
#
# Brings up a private testbed of --hosts hosts with `vnctl testbed up --topology` (a generated
# file: a ring of hosts plus chords from every host to the one 7 further on, 10 Gbit/s links; its
# own namespace prefix, bridge, subnet, ports and state dir; one testbed at a time through the
# flock on /run/lock/vnet-testbed-e2e.lock, like the end-to-end tests). Then it creates --vns
# small VNs through the controller in --steps equal batches (one `vnctl apply -f BATCH --wait`
# per batch: all of a batch's specs in one file; apply creates them all, then waits until all
# are READY, so they provision side by side): each VN two netns nodes pinned to two hosts and
# one link with addresses; every --vlan-every-th VN is 802.1Q on a direct substrate link, the
# others VXLAN between hosts up to 11 hops apart on the ring (multi-hop underlay). At 0 VNs and
# after each batch, READY, it records:
#   - the controller's RSS (VmRSS of its pid), the sum and the max of the agents' RSS;
#   - the namespaces of the testbed (hosts and virtual nodes);
#   - the duration of a full reconcile pass (observe, plan, apply of everything the agent holds):
#     the mean of the agents' converged passes within one resync period (30 s) from their metrics
#     endpoints (vnet_agent_reconcile_duration_seconds, sum and count before and after), mean over
#     agents and the slowest agent;
#   - the create rate of the batch (VNs per second, from the start of apply to all READY).
# Per VN: (RSS at the step - RSS at 0) / live VNs, for the controller and for the agents' sum.
# At the last step: one agent (of h1) killed with SIGKILL (`vnctl testbed host kill`) and started
# again (`host start`): the time from its start to its first converged pass (its metrics) and to
# the controller seeing it caught up (`vnctl get hosts`: connected, observed generation = desired),
# and that first pass's own duration. Then every VN is deleted (`vnctl delete vn`, 4 at a time):
# the time until the controller lists none and no virtual-node namespace is left; the agents must
# then hold no VN (their vns gauge). Prints a Markdown table and writes it to its section
# `testbed-scale` of deploy/bench/RESULTS.md (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=-
# writes no file). Takes the testbed down and checks that nothing of it is left (the trap of
# deploy/bench/lib/testbed.sh).
# Needs jq, curl, iproute2, util-linux (flock). Builds vnctl, vn-controller and substrate-agent
# (release, honours CARGO_TARGET_DIR) unless --bin-dir names a directory holding all three.
# Noisy when other builds share the machine: the load is printed.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
. deploy/bench/lib/testbed.sh
results_begin "$@"

hosts=50 vns=2000 steps=4 vlan_every=4 bin_dir=""
parse_args --hosts --vns --steps --vlan-every --bin-dir -- "$@"
want_int --hosts "$hosts" 3 250
want_int --vns "$vns" 1
want_int --steps "$steps" 1 "$vns"
[[ $vlan_every =~ ^[0-9]+$ ]] || die "--vlan-every wants 0 (no VLAN) or more, got '$vlan_every'"
need_root "namespaces, links, daemons"
need_tools jq curl flock ip ss
binaries "$bin_dir"

testbed_names ts 246
vn() { VNET_CONTROLLER=$ctl "$VNCTL" --provider lab "$@" 9>&-; }
tb() { "$VNCTL" testbed "$@" --state-dir "$state" >/dev/null 9>&-; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Chords: every host to the one 7 further on the ring (none on rings too small for them).
chord=7
((hosts > 2 * chord)) || chord=0

# The substrate: hosts h1..hN (room for every node: cpu and memory are bookkeeping here), a ring
# and the chords.
topology() {
  local i
  echo "hosts:"
  for ((i = 1; i <= hosts; i++)); do echo "  - {id: h$i, cpu: 100000, memory: 1000000}"; done
  echo "links:"
  for ((i = 1; i <= hosts; i++)); do
    echo "  - {a: h$i, b: h$((i % hosts + 1)), bandwidth: 10000}"
    ((chord > 0)) && echo "  - {a: h$i, b: h$(((i + chord - 1) % hosts + 1)), bandwidth: 10000}"
  done
  return 0
}

# spec K: VN s<K>, node a on host h(K mod N + 1), node b on a neighbour (VLAN: the next host on
# the ring, one hop) or 2 to 11 hosts further on the ring (VXLAN, routed over several hops).
spec() {
  local k=$1 a b enc
  a=$((k % hosts))
  if ((vlan_every > 0 && k % vlan_every == 0)); then
    enc=vlan
    b=$(((a + 1) % hosts))
  else
    enc=vxlan
    b=$(((a + 2 + (k / hosts) % 10) % hosts))
    ((b != a)) || b=$(((a + 1) % hosts))
  fi
  echo "---"
  echo "name: s$k"
  echo "encapsulation: $enc"
  [[ $enc == vlan ]] && echo "maxPathHops: 1"
  echo "nodes:"
  echo "  - {name: a, cpu: 1, memory: 8, host: h$((a + 1))}"
  echo "  - {name: b, cpu: 1, memory: 8, host: h$((b + 1))}"
  echo "links:"
  echo "  - {endpoints: [a, b], bandwidth: 1, addresses: [192.168.0.1/30, 192.168.0.2/30]}"
}

# RSS of pid $1 in KiB (0 when it is gone).
rss_kib() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
controller_pid() { cat "$state/run/controller.pid"; }
agent_pid() { cat "$state/run/agent-$1.pid"; }
# "SUM MAX" of the agents' RSS, KiB.
agents_rss() {
  local i s=0 m=0 r
  for ((i = 1; i <= hosts; i++)); do
    r=$(rss_kib "$(agent_pid "h$i")")
    s=$((s + r))
    ((r > m)) && m=$r
  done
  echo "$s $m"
}
# The testbed's namespaces (hosts and virtual nodes).
namespaces() { ip netns list | awk '{print $1}' | grep -c "^$tag" || true; }
node_namespaces() { echo $(($(namespaces) - hosts)); }
# Host i's management address (the agent's metrics endpoint listens there).
mgmt_addr() { ip -n "${tag}h$1" -4 -o addr show dev mgmt0 | awk '{ sub(/\/.*/, "", $4); print $4 }'; }
metrics_of() { curl -sf --max-time 5 "http://$(mgmt_addr "$1"):$metrics/metrics"; }
# "SUM COUNT" of agent h$1's converged reconcile passes.
converged_passes() {
  metrics_of "$1" | awk '
    /^vnet_agent_reconcile_duration_seconds_sum\{outcome="converged"\}/ { s = $2 }
    /^vnet_agent_reconcile_duration_seconds_count\{outcome="converged"\}/ { c = $2 }
    END { printf "%s %s\n", s + 0, c + 0 }'
}
agent_vns() { metrics_of "$1" | awk '/^vnet_agent_vns / { print $2 }'; }

# Full reconcile: every agent's converged passes over one resync period (30 s, plus margin).
# Prints "MEAN_MS MAX_MS" over the agents (each agent's mean pass in the window).
reconcile_ms() {
  local i before=() s c s0 c0 out=""
  for ((i = 1; i <= hosts; i++)); do before[i]=$(converged_passes "$i"); done
  sleep 32
  for ((i = 1; i <= hosts; i++)); do
    read -r s c <<<"$(converged_passes "$i")"
    read -r s0 c0 <<<"${before[i]}"
    out+="$s0 $c0 $s $c"$'\n'
  done
  awk '$4 > $2 { m = 1000 * ($3 - $1) / ($4 - $2); t += m; n++; if (m > x) x = m }
       END { if (n) printf "%.0f %.0f\n", t / n, x; else print "- -" }' <<<"$out"
}

testbed_lock
testbed_begin
topology >"$work/topology.yaml"
echo "testbed of $hosts hosts ($(grep -c '{a:' "$work/topology.yaml") links) ..." >&2
t0=$(now_ms)
bg "$work/up.log" testbed_up --topology "$work/topology.yaml" --timeout 600s \
  || { cat "$work/up.log" >&2; exit 1; }
up_ms=$(($(now_ms) - t0))
# The phases `testbed up` reports: building the network, the agents' start to all connected.
net_s=$(sed -n 's/^network built in \([0-9.]*\) s.*/\1/p' "$work/up.log")
agents_s=$(sed -n 's/^all .* connected (\([0-9.]*\) s after their start)/\1/p' "$work/up.log")
echo "testbed up in $((up_ms / 1000)) s (network ${net_s:-?} s, agents connected ${agents_s:-?} s after their start)" >&2

rows=""
# step LIVE RATE: one row of the table.
step() {
  local live=$1 rate=$2 c a_sum a_max ns rec_mean rec_max per_c per_a
  c=$(rss_kib "$(controller_pid)")
  read -r a_sum a_max <<<"$(agents_rss)"
  ns=$(namespaces)
  read -r rec_mean rec_max <<<"$(reconcile_ms)"
  if ((live == 0)); then
    c0=$c a0=$a_sum
    per_c="" per_a=""
  else
    # Since 0 VNs / since the previous step (the cost of the VNs added last).
    per_c="$(((c - c0) / live)) / $(((c - c_prev) / (live - live_prev)))"
    per_a="$(((a_sum - a0) / live)) / $(((a_sum - a_prev) / (live - live_prev)))"
  fi
  c_prev=$c a_prev=$a_sum live_prev=$live
  rows+="| $live | $ns | $((c / 1024)) | $((a_sum / 1024)) / $((a_max / 1024)) | $per_c | $per_a | $rate | $rec_mean / $rec_max |"$'\n'
  echo "$live VNs: controller $((c / 1024)) MiB, agents $((a_sum / 1024)) MiB (max $((a_max / 1024))), $ns namespaces, reconcile ${rec_mean} ms (max ${rec_max})" >&2
}
step 0 ""

per=$(((vns + steps - 1) / steps))
live=0
while ((live < vns)); do
  n=$((vns - live < per ? vns - live : per))
  batch=$work/batch-$live.yaml
  for ((k = live; k < live + n; k++)); do spec "$k"; done >"$batch"
  t0=$(now_ms)
  vn apply -f "$batch" --wait --timeout 60m >"$work/apply.log" 2>&1 \
    || { tail -n 20 "$work/apply.log" >&2; die "creating VNs s$live..s$((live + n - 1)) failed"; }
  ms=$(($(now_ms) - t0))
  live=$((live + n))
  rate=$(awk -v n="$n" -v ms="$ms" 'BEGIN { printf "%.1f", n * 1000 / ms }')
  echo "$n VNs READY in $((ms / 1000)) s ($rate/s)" >&2
  step "$live" "$rate"
done
[[ $(vn get vn -o json | jq length) == "$vns" ]] || die "the controller does not list $vns VNs"

# Restart of one agent at full load.
settled() {
  vn get hosts -o json | jq -e --arg h "$1" \
    '.[] | select(.id == $h) | .connected and .observedGeneration == .desiredGeneration' >/dev/null
}
victim=h1
tb host kill "$victim"
t0=$(now_ms)
tb host start "$victim"
agent_ms="" ctl_ms="" pass_ms=""
while (($(now_ms) - t0 < 600000)); do
  if [[ -z $agent_ms ]]; then
    read -r s c <<<"$(converged_passes 1 2>/dev/null || echo "0 0")"
    if ((c > 0)); then
      agent_ms=$(($(now_ms) - t0))
      pass_ms=$(awk -v s="$s" -v c="$c" 'BEGIN { printf "%.0f", 1000 * s / c }')
    fi
  fi
  [[ -z $ctl_ms ]] && settled "$victim" && ctl_ms=$(($(now_ms) - t0))
  [[ -n $agent_ms && -n $ctl_ms ]] && break
  sleep 0.1
done
[[ -n $agent_ms && -n $ctl_ms ]] || die "the agent of $victim did not converge within 600 s of its restart"
victim_vns=$(agent_vns 1)
echo "agent of $victim ($victim_vns VNs) restarted: first converged pass after $agent_ms ms (the pass $pass_ms ms), caught up for the controller after $ctl_ms ms" >&2

# Delete everything.
t0=$(now_ms)
vn get vn -o json | jq -r '.[].name' \
  | xargs -P 4 -n 1 env VNET_CONTROLLER="$ctl" "$VNCTL" --provider lab delete vn >/dev/null 9>&-
while :; do
  left=$(vn get vn -o json | jq length)
  nodes_left=$(node_namespaces)
  ((left == 0 && nodes_left == 0)) && break
  (($(now_ms) - t0 < 1800000)) || die "after 1800 s of deleting: $left VNs and $nodes_left node namespaces left"
  sleep 0.5
done
delete_ms=$(($(now_ms) - t0))
held=0
for ((i = 1; i <= hosts; i++)); do held=$((held + $(agent_vns "$i"))); done
((held == 0)) || die "the agents still hold $held VN slices after the delete"
echo "$vns VNs deleted in $((delete_ms / 1000)) s; nothing left" >&2

body=$work/results.md
{
  shape="a ring"
  ((chord > 0)) && shape+=" plus chords to the host $chord further on"
  mix="all VXLAN"
  ((vlan_every > 0)) && mix="every ${vlan_every}th 802.1Q on a direct link, the others VXLAN"
  echo "Testbed of $hosts hosts on this machine (\`vnctl testbed up --topology\`: $shape,"
  echo "$(grep -c '{a:' "$work/topology.yaml") links of 10 Gbit/s; up in $((up_ms / 1000)) s: network ${net_s:-?} s, agents connected ${agents_s:-?} s after their start), binaries from ${bin_dir:-a release build}."
  echo "Each VN: two netns nodes pinned to two hosts and one link; $mix"
  echo "(VXLAN between hosts 2 to 11 apart on the ring, routed over several underlay hops). Created through the"
  echo "controller in batches of $per (\`vnctl apply -f BATCH --wait\`, one file per batch: it creates"
  echo "all, then waits for all); the create rate is the batch's VNs over the time from the start of"
  echo "apply to all READY. RSS is"
  echo "VmRSS; per VN: (RSS now - RSS at 0 VNs) / live VNs, and (RSS now - RSS at the previous"
  echo "step) / VNs added since (the agents' first VNs also grow their thread pools and caches)."
  echo "Namespaces: all of the testbed's (hosts, virtual nodes, per-host helpers). Full reconcile: each agent's mean"
  echo "converged pass over one resync period (30 s; observe, plan and apply of everything it"
  echo "holds), from its metrics endpoint; mean over the agents / the slowest agent."
  echo
  echo "| live VNs | namespaces | controller RSS MiB | agents' RSS MiB, sum / max | per VN KiB, controller: since 0 / last step | per VN KiB, agents: since 0 / last step | create rate VN/s | full reconcile ms, mean / max |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s' "$rows"
  echo
  echo "Agent restart at $vns live VNs: the agent of $victim ($victim_vns VN slices) killed with SIGKILL"
  echo "and started again: first converged pass $agent_ms ms after its start (that pass itself"
  echo "$pass_ms ms), the controller sees it caught up after $ctl_ms ms. Delete of all $vns VNs"
  echo "(\`vnctl delete vn\`, 4 at a time) until the controller lists none and no virtual-node"
  echo "namespace is left: $((delete_ms / 1000)) s; the agents then held no VN slice. The machine is"
  echo "shared while it runs (load above)."
} >"$body"
cat "$body"
results_write testbed-scale "Testbed scale: memory and reconcile time as VNs grow (\`testbed-scale.sh\`)" "$body"
