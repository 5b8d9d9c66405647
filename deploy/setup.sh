#!/usr/bin/env bash
# Installs the system packages vnet needs on Debian (idempotent; run as root).
#
#   ./deploy/setup.sh            install what is missing
#   ./deploy/setup.sh --check    only report what is missing (exit 1 if anything is)
#
# What each package is for:
#   iproute2, nftables, util-linux, procps   namespaces, links, tc, nsenter, process checks
#   coinor-libcbc-dev, pkg-config             the CBC MIP solver behind the exact embedding
#   iperf3, tcpdump, tshark                   bandwidth and capture checks in the tests and benches
#   qemu-system-x86, busybox-static           QEMU guests and the project's guest image
#   qemu-system-arm                           aarch64 guests (qemu-system-aarch64, TCG)
#   qemu-utils, genisoimage                   disk-image guests: qcow2 overlays (qemu-img) and the
#                                             NoCloud seed volume (genisoimage, as cloud-localds)
#   mmdebstrap, e2fsprogs                     deploy/guest/build-debian.sh (Debian disk image)
#   graphviz                                  `vnctl topology --svg`
#   jq, python3                               bench scripts and the VNE referee
#   clang, llvm, libbpf-dev, linux-libc-dev   the agent's BPF 802.1Q datapath (compiled by build.rs)
#   bpftool                                   inspecting BPF programs and maps in tests and checks
#   protobuf-compiler                         building the etcd client (its build script runs protoc)
#   etcd-server                               the replicated store (`--store etcd`): tests start a
#                                             real cluster, `vnctl testbed up --store etcd` one member
set -euo pipefail

PACKAGES=(
  iproute2 nftables util-linux procps kmod
  coinor-libcbc-dev pkg-config
  iperf3 tcpdump tshark
  qemu-system-x86 qemu-utils busybox-static cpio zstd xz-utils
  qemu-system-arm genisoimage mmdebstrap e2fsprogs
  graphviz jq python3 ca-certificates
  clang llvm libbpf-dev linux-libc-dev bpftool
  protobuf-compiler etcd-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing packages: ${missing[*]}"; exit 1; fi
  echo "all system packages present"; exit 0
fi

if ((${#missing[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }
echo "setup: system packages ready"
