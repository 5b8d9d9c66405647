#!/usr/bin/env bash
# Compares the machine's namespaces, root-namespace links, our processes and the BPF datapath's
# pins and programs with a snapshot taken before the suite, and fails when something of ours
# outlived it.
#
#   deploy/check-leftovers.sh snapshot FILE    record the current state
#   deploy/check-leftovers.sh compare FILE     fail if anything was added since
set -uo pipefail
state() {
  ip netns list 2>/dev/null | awk '{print "netns " $1}' | sort
  ip -o link show 2>/dev/null | awk -F': ' '{print "link " $2}' | sed 's/@.*//' | sort
  # live processes only (a zombie is gone once its parent reaps it), not this script itself
  local procs
  procs=$(ps -eo pid=,stat=,args= | awk -v self=$$ '$1 != self && $2 !~ /^Z/ {$1 = $2 = ""; print}')
  for p in substrate-agent vn-controller qemu-system iperf3; do
    if grep -q -F -- "$p" <<<"$procs"; then echo "process $p"; fi
  done
  # the agents' BPF 802.1Q datapath: pin directories (/sys/fs/bpf/vnet/<prefix>-<host>/...) and
  # loaded programs named vnet_vlan (a program outlives its pins while a classifier holds it)
  if [[ -d /sys/fs/bpf/vnet ]]; then
    find /sys/fs/bpf/vnet -mindepth 1 2>/dev/null | sed 's/^/bpf pin /'
  fi
  if command -v bpftool >/dev/null; then
    local n
    n=$(bpftool -j prog show 2>/dev/null | jq '[.[] | select(.name == "vnet_vlan")] | length' 2>/dev/null)
    [[ "${n:-0}" -gt 0 ]] && echo "bpf programs vnet_vlan: $n"
  fi
  return 0
}
case "${1:-}" in
  snapshot) state | sort > "$2"; exit 0 ;;
  compare)
    # daemons stopped by the last test may still be exiting: give them a few seconds
    for _ in $(seq 20); do
      added=$(comm -13 "$2" <(state | sort))
      [[ -z "$added" ]] && break
      sleep 0.5
    done
    if [[ -n "$added" ]]; then
      echo "left behind by the suite:"; echo "$added" | sed 's/^/  /'; exit 1
    fi
    echo "no leftovers" ;;
  *) echo "usage: $0 snapshot|compare FILE" >&2; exit 2 ;;
esac
