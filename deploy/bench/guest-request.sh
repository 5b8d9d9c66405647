#!/usr/bin/env bash
# Guest benchmark through the whole system (not a test: nothing is asserted on time). As root:
#
#   deploy/bench/guest-request.sh [--runs N] [--hosts 2|3] [--memory MB] [--limit S] [--arp-ms MS]
#                                 [--bin-dir DIR]
#
# Brings up a private testbed (vnctl testbed up: own namespace prefix, bridge, subnet, ports and
# state dir; one testbed at a time through the flock on /run/lock/vnet-testbed-e2e.lock, like the
# end-to-end tests), then N times (default 5) per guest kind, one VN at a time:
#   virtio guest on h1 + netns node on h2, linked over VXLAN;
#   e1000 guest on h1 + netns node on h2, linked over (userspace) VLAN;
#   a Debian disk-image guest (image debian: systemd, overlay, NoCloud seed), over VXLAN;
#   an aarch64 guest (image default-aarch64, qemu-system-aarch64 under TCG), over VXLAN;
# and measures, with the wall clock of this host:
#   (a) request -> VN READY: `vnctl apply --wait` started -> returned;
#   (b) request -> first ping reply from the netns node to the guest (busybox ping every 100 ms
#       inside the node through `vnctl exec`, started when (a) returns; the reply's time is taken
#       inside the node; the node's ARP retransmit interval set to --arp-ms, default 100, so the
#       kernel's 1 s ARP retries do not round the result up; 0 keeps the kernel's default);
#   (c) delete -> `vnctl delete --wait` returned, and delete -> all gone (no QEMU of the testbed,
#       no guest run directory, no namespace of the VN left: node, sandbox, transit);
#   (d) the guest's host memory once reachable: QEMU's RSS and PSS (/proc/PID/smaps_rollup).
# VNET_BENCH_KINDS replaces the four cases, e.g. "virtio:vlan:virtio-net-device e1000:vxlan:e1000,"
# (NIC:ENCAPSULATION:what QEMU's command line must name[:IMAGE[:ARCH[:MEMORY]]]); a kind whose
# image the hosts do not hold is skipped with a note.
# Each wait is bounded by --limit seconds (default 120); running out of it fails the benchmark.
# Prints each run, then a Markdown table (min / median / max per phase), which it also writes to
# its section of deploy/bench/RESULTS.md (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=-
# writes no file). Each run also checks that it measured what it claims (placement,
# encapsulation, the QEMU NIC model).
# Takes the testbed down and checks that nothing of it is left on any exit (the trap of
# deploy/bench/lib/testbed.sh, shared with recursion.sh).
# Needs: the guest image (deploy/guest/build-image.sh), qemu-system-x86, busybox-static, jq,
# iproute2, util-linux (flock). Builds vnctl, vn-controller and substrate-agent (release, honours
# CARGO_TARGET_DIR) unless --bin-dir names a directory holding all three.
# Timings are noisy when other builds share the machine: the load average is printed.
set -euo pipefail
export LC_ALL=C # a dot in $EPOCHREALTIME and in printf
cd "$(dirname "$0")/../.."
. deploy/bench/lib/testbed.sh
results_begin "$@"
results_env VNET_BENCH_KINDS VNET_GUEST_IMAGES

runs=5 hosts=2 memory=128 bin_dir="" limit=120 arp_ms=100
parse_args --runs --hosts --memory --bin-dir --limit --arp-ms -- "$@"
want_int --runs "$runs" 1
want_int --hosts "$hosts" 2 3
[[ $limit =~ ^[1-9][0-9]*$ ]] || die "--limit wants seconds as a positive integer, got '$limit'"
[[ $memory =~ ^[1-9][0-9]*$ ]] || die "--memory wants MiB as a positive integer, got '$memory'"
[[ $arp_ms =~ ^[0-9]+$ ]] || die "--arp-ms wants milliseconds (0: the kernel's default), got '$arp_ms'"
need_root "namespaces, TAP devices, daemons, QEMU"
need_tools jq flock ip ss busybox qemu-system-x86_64 awk
images=${VNET_GUEST_IMAGES:-/var/lib/vnet/images}
[[ -f $images/default/image.json ]] \
  || die "guest image missing: $images/default/image.json (run deploy/guest/build-image.sh)"
binaries "$bin_dir"

# The private testbed: host namespaces gb<id>-h1.., node namespaces gb<id>-h1-<node>; TAP-named
# root links count as its leftovers too.
testbed_names gb 252
root_links="$bridge|t-"
host_ns=()
for ((h = 1; h <= hosts; h++)); do host_ns+=("${tag}h$h"); done

# vnctl without the lock's fd 9: the daemons and QEMUs it starts must not inherit (and hold) it.
vn() { VNET_CONTROLLER=$ctl "$VNCTL" --provider bench "$@" 9>&-; }

testbed_lock
for ns in "${host_ns[@]}"; do
  [[ -z $(ip netns list | awk -v n="$ns" '$1 == n') ]] || die "namespace $ns exists already"
done
testbed_begin

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
up_out=$work/up.out
if ! bg "$up_out" testbed_up --hosts "$hosts" --timeout 90s; then
  die "vnctl testbed up failed: $(cat "$up_out")"
fi
vn get hosts -o json >"$work/hosts.json"
kvm=$(jq -r '.[0].capabilities | if .kvmUsable then "KVM usable" else "KVM unusable: \(.kvmReason)" end' \
  "$work/hosts.json")
qemu=$(jq -r '.[0].capabilities.qemu // ""' "$work/hosts.json")

# spec NAME NIC ENCAP IMAGE ARCH MEMORY: a VM node on h1 and a netns node on h2, one link.
spec() {
  cat >"$work/$1.yaml" <<EOF
name: $1
encapsulation: $3
nodes:
  - {name: vm, kind: vm, cpu: 20, memory: $6, host: h1, image: $4, arch: $5, nic: $2, vcpus: 1}
  - {name: a, kind: netns, cpu: 10, memory: 64, host: h2}
links:
  - {endpoints: [vm, a], bandwidth: 20, addresses: [10.63.0.1/24, 10.63.0.2/24]}
EOF
}

# Runs inside the netns node: pings the guest every 100 ms until the first reply and prints the
# reply's wall-clock time (taken the moment grep sees it, not when ping ends). First it sets the
# node's ARP retransmit interval (--arp-ms). With the kernel's default the node sends an ARP probe
# once a second (three, then the entry fails and the next ping starts over), and the first reply
# waits for the next probe after the guest is up: tcpdump in the node showed probes at 0, 1.0 and
# 2.0 s unanswered and the one at 3.1 s answered, so up to a second of the result was the
# instrument's. With 100 ms the guest is seen within about 0.1 s of answering.
arp_script=""
if ((arp_ms > 0)); then
  arp_script="for f in /proc/sys/net/ipv4/neigh/*/retrans_time_ms; do echo $arp_ms >\$f; done
"
fi
ping_script="${arp_script}end=\$((\$(date +%s) + $limit))
while [ \"\$(date +%s)\" -lt \"\$end\" ]; do
  busybox ping -i 0.1 -w 10 10.63.0.1 2>/dev/null | { grep -q -m1 'bytes from' && date +%s.%N; } && exit 0
done
exit 1"

# Everything a VN of this testbed leaves while it exists; empty when all of it is gone.
remains() {
  local ns
  while read -r ns _; do
    [[ $ns == "$tag"* ]] || continue
    [[ " ${host_ns[*]} " == *" $ns "* ]] && continue
    echo "namespace $ns"
  done < <(ip netns list)
  pgrep -af -- "$state/agents/h[0-9]+/guests/" | sed 's/^/process /' || true
  find "$state"/agents/*/guests -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/run dir /' || true
}

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# QEMU's resident and proportional set sizes in MiB: "RSS PSS".
qemu_memory() {
  awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { printf "%.0f %.0f", r / 1024, p / 1024 }' \
    "/proc/$1/smaps_rollup"
}

declare -A samples # "<kind>:<phase>" -> space-separated seconds (or MiB)
kinds=(${VNET_BENCH_KINDS:-"virtio:vxlan:virtio-net-device" "e1000:vlan:e1000,"
  "virtio:vxlan:virtio-net-device:debian:x86_64:256"
  "virtio:vxlan:virtio-net-device:default-aarch64:aarch64:256"})
echo "guest-request: $hosts-host testbed $tag (state $state), $kvm${qemu:+, $qemu}"
echo "load average at start: $load_start"
labels=()
for k in "${kinds[@]}"; do
  IFS=: read -r nic encap model image arch mem <<<"$k"
  image=${image:-default} arch=${arch:-x86_64} mem=${mem:-$memory}
  label="$image ($arch, $nic, $mem MiB)"
  if ! jq -e --arg i "$image" --arg a "$arch" \
    'any(.[]; .capabilities.guestArchs // [] | index($a))' "$work/hosts.json" >/dev/null \
    || [[ ! -f $images/$image/image.json ]]; then
    echo "guest-request: skipping $label: no image $images/$image or no host runs $arch"
    continue
  fi
  labels+=("$label|$encap")
  for ((r = 1; r <= runs; r++)); do
    name="gb-${image//_/-}-$nic-$r"
    spec "$name" "$nic" "$encap" "$image" "$arch" "$mem"
    # (a) request -> READY
    t0=$EPOCHREALTIME
    bg "$work/apply.out" vn apply -f "$work/$name.yaml" --wait --timeout "${limit}s" \
      || die "$name: apply --wait failed: $(cat "$work/apply.out")"
    t1=$EPOCHREALTIME
    # (b) request -> first ping reply (netns node -> guest)
    bg "$work/ping.out" vn exec "$name" a --timeout "${limit}s" -- sh -c "$ping_script" \
      || die "$name: the netns node got no ping reply from the guest within ${limit}s: $(cat "$work/ping.out")"
    t2=$(grep -E "^[0-9]+\.[0-9]+\$" "$work/ping.out" | tail -n1) \
      || die "$name: no reply time from the netns node: $(cat "$work/ping.out")"
    # What was measured is what is claimed: placement, encapsulation, NIC model.
    vn describe vn "$name" -o json >"$work/describe.json"
    jq -e --arg e "$encap" '.state == "READY"
        and ([.nodes[] | "\(.node)@\(.host)"] | sort) == ["a@h2", "vm@h1"]
        and ([.links[].hops[].encapsulation] | length > 0 and all(. == $e))' \
      "$work/describe.json" >/dev/null \
      || die "$name: not READY with vm@h1, a@h2 over $encap: $(cat "$work/describe.json")"
    node_id=$(jq -r '.nodes[] | select(.node == "vm") | .nodeId' "$work/describe.json")
    pid=$(cat "$state/agents/h1/guests/$node_id/qemu.pid")
    qcmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    [[ $qcmd == *"vnet-$node_id "* && $qcmd == *"$model"* && $qcmd == "qemu-system-$arch "* ]] \
      || die "$name: QEMU pid $pid is not a $nic $arch guest of $node_id: $qcmd"
    mem_now=$(qemu_memory "$pid")
    # (c) delete -> delete --wait returns -> all gone
    t3=$EPOCHREALTIME
    bg "$work/delete.out" vn delete vn "$name" --wait --timeout "${limit}s" \
      || die "$name: delete --wait failed: $(cat "$work/delete.out")"
    t4=$EPOCHREALTIME
    deadline=$((${t4%.*} + limit))
    while [[ -n $(remains) ]]; do
      ((${EPOCHREALTIME%.*} < deadline)) || die "$name: ${limit} s after delete still left: $(remains)"
      sleep 0.05
    done
    t5=$EPOCHREALTIME
    ready=$(secs "$t0" "$t1") reach=$(secs "$t0" "$t2")
    deleted=$(secs "$t3" "$t4") gone=$(secs "$t3" "$t5")
    printf 'run %d/%d %s over %-5s READY %6.3f s  first ping reply %6.3f s  delete --wait %6.3f s  all gone %6.3f s  QEMU RSS %s MiB PSS %s MiB\n' \
      "$r" "$runs" "$label" "$encap" "$ready" "$reach" "$deleted" "$gone" $mem_now
    samples[$label:ready]+="$ready " samples[$label:reach]+="$reach "
    samples[$label:deleted]+="$deleted " samples[$label:gone]+="$gone "
    read -r rss pss <<<"$mem_now"
    samples[$label:rss]+="$rss " samples[$label:pss]+="$pss "
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# min / median / max of the numbers in $1, with unit $2 (default s)
stats() {
  tr ' ' '\n' <<<"$1" | grep . | sort -g | awk -v u="${2:-s}" '{ v[NR] = $1 }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          f = (u == "s") ? "%.2f %s | %.2f %s | %.2f %s" : "%.0f %s | %.0f %s | %.0f %s"
          printf f, v[1], u, m, u, v[NR], u }'
}
{
  echo "Request to reachable guest, through vnctl, controller and agents ($runs runs each," \
    "$hosts-host testbed; $kvm${qemu:+, $qemu})"
  echo
  echo "| guest | phase | min | median | max |"
  echo "| --- | --- | --- | --- | --- |"
  for l in "${labels[@]}"; do
    key=${l%|*} encap=${l##*|}
    label="$key on h1, over ${encap^^} to a netns on h2"
    echo "| $label | request -> VN READY (\`apply --wait\` returns) | $(stats "${samples[$key:ready]}") |"
    echo "| $label | request -> first ping reply, netns node -> guest | $(stats "${samples[$key:reach]}") |"
    echo "| $label | delete -> \`delete --wait\` returns | $(stats "${samples[$key:deleted]}") |"
    echo "| $label | delete -> all gone (QEMU, namespaces, run dir) | $(stats "${samples[$key:gone]}") |"
    echo "| $label | QEMU RSS once reachable | $(stats "${samples[$key:rss]}" MiB) |"
    echo "| $label | QEMU PSS once reachable | $(stats "${samples[$key:pss]}" MiB) |"
  done
  echo
  if ((arp_ms > 0)); then arp_note="$arp_ms ms"; else arp_note="the kernel's default"; fi
  echo "The pinging node's ARP retransmit interval: $arp_note (\`--arp-ms\`)."
} >"$work/results.md"
echo
cat "$work/results.md"
echo "load average: $load_start at start, $load_end at the end (1, 5, 15 min)"
results_write guest-request "Guests: request to reachable guest (\`guest-request.sh\`)" "$work/results.md"
