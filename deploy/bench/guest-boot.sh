#!/usr/bin/env bash
# Guest benchmark (not a test). Run as root:
#
#   deploy/bench/guest-boot.sh [--requests N] [--boots N] [--guests N] [--memory MB]
#
# 0. Request: through the whole system (deploy/bench/guest-request.sh: a private testbed, vnctl,
#    the controller and the agents), the time from `vnctl apply` to the VN READY and to the first
#    ping reply from a netns node to the guest, and from `vnctl delete` to everything gone; a
#    virtio guest over VXLAN and an e1000 guest over VLAN, N runs each (default 5; 0 skips it).
# 1. Boot: time from QemuRuntime::ensure() to QEMU running, to the first ping reply from a peer
#    namespace, and to the command channel answering; virtio (microvm) and e1000 (q35) guests of
#    the project's image, one at a time, N boots each (default 5).
# 2. Density: N guests (default 16) started together; time until all answer a ping; host memory
#    per guest (QEMU RSS and PSS from /proc/<pid>/smaps_rollup, and the drop of MemAvailable) and
#    how many such guests fit in the host's available memory.
#
# Builds the image first (deploy/guest/build-image.sh, a no-op when current). Prints Markdown
# tables and writes them to deploy/bench/RESULTS.md: part 0 to the section of guest-request.sh,
# parts 1 and 2 to its own (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file).
# Timings are noisy when other builds share the machine: re-run and compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib/results.sh
results_begin "$@"
results_env VNET_GUEST_IMAGES

requests=5 boots=5 guests=16 memory=128
parse_args --requests --boots --guests --memory -- "$@"
need_root "namespaces, TAP devices, QEMU"

deploy/guest/build-image.sh ${VNET_GUEST_IMAGES:+--out "$VNET_GUEST_IMAGES/default"}
if [[ $requests != 0 ]]; then
  deploy/bench/guest-request.sh --runs "$requests" --memory "$memory"
  echo
fi
body=$(mktemp)
trap 'rm -f "$body"' EXIT
VNET_BENCH_BOOTS=$boots VNET_BENCH_GUESTS=$guests VNET_BENCH_MEMORY_MB=$memory \
  cargo run --release -q -p substrate-agent --example guest_bench | tee "$body"
# The example's own headings go one level down, under the section's.
sed -i 's/^## /### /' "$body"
results_write guest-boot "Guests: boot and density without controller (\`guest-boot.sh\`)" "$body"
