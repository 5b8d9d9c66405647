#!/usr/bin/env bash
# Datapath benchmark (not a test): one virtual link between two host namespaces joined by an
# underlay veth, realized by the agent's own code (`substrate-agent bench-link`), every path in
# the same run. Run as root:
#
#   deploy/bench/datapath.sh [--seconds S] [--rounds N]
#
# Paths: the raw veth (baseline, two plain namespaces), VXLAN, 802.1Q on the BPF datapath,
# 802.1Q on the userspace datapath. For each: iperf3 TCP with 1 and 4 streams (Gbit/s), 64-byte
# UDP frames (iperf3 -u -b 0 -l 22: 14 + 20 + 8 + 22 bytes on the wire; received frames/s) and
# CPU per Gbit/s in the 1-stream run (busy cores of the whole machine from /proc/stat, divided by
# Gbit/s: only meaningful on an otherwise idle machine). The 1-stream TCP runs N rounds (default
# 3), the paths interleaved in each round, and reports the median and the range: one sample per
# path moves by tens of percent on a shared machine. Targets, 1 stream: BPF 802.1Q >= 80% and
# VXLAN >= 85% of the raw veth. Writes its section of deploy/bench/RESULTS.md
# (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib/results.sh

SECONDS_PER_RUN=5
ROUNDS=3
parse_args --seconds:SECONDS_PER_RUN --rounds:ROUNDS -- "$@"
need_root "creates namespaces, loads BPF"
need_tools iperf3 ip jq busybox
results_begin "$@"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p substrate-agent
BIN="$TARGET_DIR/release/substrate-agent"

TAG="dp$$"
R1="${TAG}r1"; R2="${TAG}r2"
# Host pairs: B (BPF 802.1Q, and the VXLAN link), U (userspace 802.1Q).
B1="${TAG}b1"; B2="${TAG}b2"; U1="${TAG}u1"; U2="${TAG}u2"
STATE="$(mktemp -d)"
BODY="$STATE/results.md"
link() { # mode host side local remote [--teardown]
  VNET_VLAN_DATAPATH="$1" "$BIN" bench-link --netns "$2" --host-id "$2" --state-dir "$STATE/$2" \
    --side "$3" --local "$4" --remote "$5" "${@:6}"
}
cleanup() {
  for m in "bpf $B1 1 10.255.98.1 10.255.98.2" "bpf $B2 2 10.255.98.2 10.255.98.1" \
           "userspace $U1 1 10.255.97.1 10.255.97.2" "userspace $U2 2 10.255.97.2 10.255.97.1"; do
    # shellcheck disable=SC2086
    link $m --teardown >/dev/null 2>&1 || true
  done
  for ns in "$R1" "$R2" "$B1" "$B2" "$U1" "$U2"; do ip netns delete "$ns" 2>/dev/null || true; done
  rm -rf "$STATE"
}
trap cleanup EXIT

for ns in "$R1" "$R2" "$B1" "$B2" "$U1" "$U2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
underlay() { # ns1 ns2 net
  # MTU 1550 as the testbed's underlay (cli/src/testbed/layout.rs DEFAULT_UNDERLAY_MTU): VXLAN
  # links carry 1500-byte frames like the raw veth and the 802.1Q links.
  ip link add "u$1" netns "$1" mtu 1550 type veth peer name "u$2" netns "$2" mtu 1550
  ip -n "$1" addr add "$3.1/24" dev "u$1"; ip -n "$1" link set "u$1" up
  ip -n "$2" addr add "$3.2/24" dev "u$2"; ip -n "$2" link set "u$2" up
}
underlay "$B1" "$B2" 10.255.98
underlay "$U1" "$U2" 10.255.97
ip link add eth0 netns "$R1" type veth peer name eth0 netns "$R2"
ip -n "$R1" addr add 10.98.0.1/24 dev eth0; ip -n "$R1" link set eth0 up
ip -n "$R2" addr add 10.98.0.2/24 dev eth0; ip -n "$R2" link set eth0 up
link bpf "$B1" 1 10.255.98.1 10.255.98.2 >/dev/null
link bpf "$B2" 2 10.255.98.2 10.255.98.1 >/dev/null
link userspace "$U1" 1 10.255.97.1 10.255.97.2 >/dev/null
link userspace "$U2" 2 10.255.97.2 10.255.97.1 >/dev/null
NB1="vnb-$B1-p1"; NB2="vnb-$B2-p2"; NU1="vnb-$U1-p1"; NU2="vnb-$U2-p2"
for p in "$NB1 10.97.0.2" "$NB1 10.96.0.2" "$NU1 10.96.0.2"; do
  # shellcheck disable=SC2086
  set -- $p
  ip netns exec "$1" busybox ping -c 1 -W 2 "$2" >/dev/null
done

busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
PORT=5500
# tcp client-ns server-ns server-ip streams -> "gbps cpu_per_gbps"
tcp() {
  PORT=$((PORT + 1))
  ip netns exec "$2" iperf3 -s -1 -p "$PORT" >/dev/null 2>&1 &
  local srv=$! b0 b1 bps
  sleep 0.5
  b0=$(busy_jiffies)
  bps=$(ip netns exec "$1" iperf3 -c "$3" -p "$PORT" -P "$4" -t "$SECONDS_PER_RUN" -J | jq '.end.sum_received.bits_per_second')
  b1=$(busy_jiffies)
  wait "$srv" 2>/dev/null || true
  awk -v b="$bps" -v j=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v t="$SECONDS_PER_RUN" \
    'BEGIN { g = b / 1e9; printf "%.2f %.2f", g, (g > 0 ? j / hz / t / g : 0) }'
}
# udp client-ns server-ns server-ip -> received 64-byte frames per second
udp() {
  PORT=$((PORT + 1))
  ip netns exec "$2" iperf3 -s -1 -p "$PORT" >/dev/null 2>&1 &
  local srv=$! j
  sleep 0.5
  j=$(ip netns exec "$1" iperf3 -c "$3" -p "$PORT" -u -b 0 -l 22 -t "$SECONDS_PER_RUN" -J)
  wait "$srv" 2>/dev/null || true
  jq -r '.end.sum | ((.packets - .lost_packets) / .seconds | floor)' <<<"$j"
}
labels=("raw veth (baseline)" "VXLAN (kernel, MTU 1500, underlay 1550)"
  "802.1Q, BPF datapath (MTU 1500)" "802.1Q, userspace datapath (MTU 1500)")
clients=("$R1" "$NB1" "$NB1" "$NU1")
servers=("$R2" "$NB2" "$NB2" "$NU2")
ips=(10.98.0.2 10.97.0.2 10.96.0.2 10.96.0.2)
# 1-stream TCP: ROUNDS rounds, the paths interleaved, so that load from elsewhere hits all alike.
gbps=("" "" "" "")
cpus=("" "" "" "")
for ((r = 0; r < ROUNDS; r++)); do
  for i in "${!labels[@]}"; do
    res=$(tcp "${clients[i]}" "${servers[i]}" "${ips[i]}" 1)
    gbps[i]+="${res% *} "
    cpus[i]+="${res#* } "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
rows=()
for i in "${!labels[@]}"; do
  four=$(tcp "${clients[i]}" "${servers[i]}" "${ips[i]}" 4)
  fps=$(udp "${clients[i]}" "${servers[i]}" "${ips[i]}")
  rows+=("${labels[i]}|$(median <<<"${gbps[i]}")|$(range <<<"${gbps[i]}")|${four% *}|$fps|$(median <<<"${cpus[i]}")")
done
veth1=$(cut -d'|' -f2 <<<"${rows[0]}")
{
  echo "One virtual link between two host namespaces over an underlay veth, realized by the agent's"
  echo "code; iperf3, ${SECONDS_PER_RUN} s per run, all paths in the same run. TCP 1 stream: median of"
  echo "${ROUNDS} rounds with the paths interleaved (range in brackets); % = that median over the raw"
  echo "veth's. CPU/Gbit/s: busy cores of the whole machine per Gbit/s in the 1-stream runs (median;"
  echo "other processes count too: compare within a run only)."
  echo
  echo "| path | TCP 1 stream (Gbit/s) | % of veth | TCP 4 streams (Gbit/s) | 64-byte UDP (frames/s) | CPU cores per Gbit/s | target |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for r in "${rows[@]}"; do
    IFS='|' read -r label one spread four fps cpu <<<"$r"
    pct=$(awk -v a="$one" -v b="$veth1" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }')
    target=""
    case "$label" in
      VXLAN*) target=">= 85%" ;;
      *BPF*) target=">= 80%" ;;
    esac
    echo "| $label | $one ($spread) | $pct | $four | $fps | $cpu | $target |"
  done
} >"$BODY"
echo
cat "$BODY"
echo
results_write datapath "Datapaths side by side: veth, VXLAN, BPF and userspace 802.1Q (\`datapath.sh\`)" "$BODY"
