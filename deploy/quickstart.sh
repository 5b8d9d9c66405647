#!/usr/bin/env bash
# vnet in one command, as root on a fresh Debian machine:
#
#   ./deploy/quickstart.sh
#
# Installs the system packages (deploy/setup.sh), builds vnctl, vn-controller and substrate-agent
# (release), brings up a local 3-host testbed (host namespaces h1, h2, h3 with a shaped underlay,
# the controller and one agent per host, with a CA, TLS and an admin token), gives two providers,
# red and blue, a credential each, lets them create a VN each with
# the SAME address plan spread over the three hosts (red over VXLAN, blue over VLAN), waits until
# both are READY, shows that blue cannot see or touch red's VN, and shows reachability inside each
# VN and isolation between them.
#
# The testbed stays up afterwards; take it down with:
#   target/release/vnctl testbed down
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "quickstart: run as root (it creates network namespaces and links)" >&2
  exit 1
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "system packages"
./deploy/setup.sh

step "build (release)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p vnctl -p vn-controller -p substrate-agent
BIN="$CARGO_TARGET_DIR/release"
export PATH="$BIN:$PATH"
VNCTL="$BIN/vnctl"

step "a 3-host testbed"
if [[ -e /var/lib/vnet/testbed/testbed.json ]]; then
  echo "a testbed is already recorded; taking it down first"
  "$VNCTL" testbed down
fi
show vnctl testbed up --hosts 3
show vnctl get hosts
show vnctl get links

step "two providers, each with its own credential"
# testbed up made its admin (CA, token) vnctl's current context; the admin issues one token per
# provider, each in a ready config file. The controller keeps only the tokens' hashes.
CONF="${HOME}/.vnet"
mkdir -p "$CONF"
rm -f "$CONF/red.conf" "$CONF/blue.conf"
show vnctl admin credentials create --provider red --ttl 30d --out "$CONF/red.conf"
show vnctl admin credentials create --provider blue --ttl 30d --out "$CONF/blue.conf"
with() { local p=$1; shift; VNET_CONFIG="$CONF/$p.conf" vnctl "$@"; }
showas() { printf '$ VNET_CONFIG=~/.vnet/%s.conf vnctl %s\n' "$1" "${*:2}"; with "$@"; }

step "two providers, one address plan"
showas red apply -f deploy/examples/red.yaml --wait
showas blue apply -f deploy/examples/blue.yaml --wait
showas red describe vn red-net
showas blue describe vn blue-net

step "blue cannot see or touch red's VN"
for cmd in "get vn red-net" "delete vn red-net"; do
  if out=$(with blue $cmd 2>&1); then echo "  blue: $cmd  SUCCEEDED: isolation broken"; fail_auth=1; else echo "  blue: $cmd  -> $out"; fi
done
if out=$(with blue --as red get vns 2>&1); then echo "  blue --as red  SUCCEEDED: isolation broken"; fail_auth=1; else echo "  blue --as red get vns  -> $out"; fi

# (node, peer address) pairs of the triangle a(h1) - b(h2) - c(h3) in both example specs.
PAIRS=("a 10.0.1.2" "b 10.0.1.1" "b 10.0.2.3" "c 10.0.2.2" "a 10.0.3.3" "c 10.0.3.1")

reach() { # provider vn node addr
  with "$1" exec "$2" "$3" -- busybox ping -c 1 -W 2 "$4" >/dev/null
}

step "reachability inside each VN"
fail=${fail_auth:-0}
for vn in "red red-net" "blue blue-net"; do
  set -- $vn
  for pair in "${PAIRS[@]}"; do
    set -- $vn $pair
    if reach "$1" "$2" "$3" "$4"; then
      echo "  $1/$2: $3 -> $4  reachable"
    else
      echo "  $1/$2: $3 -> $4  NOT reachable"; fail=1
    fi
  done
done

step "isolation between them"
# Both VNs use 10.0.1.0/24 on their a-b link. Give blue's b one more address, 10.0.1.99:
# blue's a reaches it, red's a (same addresses, same hosts) does not.
b_if=$(with blue describe vn blue-net -o json | jq -r '.links[] | select(.endpoints == ["a","b"]) | .interfaces[1]')
showas blue exec blue-net b -- ip addr add 10.0.1.99/32 dev "$b_if"
if reach blue blue-net a 10.0.1.99; then echo "  blue/a -> 10.0.1.99 (blue/b)  reachable"; else echo "  blue/a -> 10.0.1.99  NOT reachable"; fail=1; fi
if reach red red-net a 10.0.1.99; then echo "  red/a  -> 10.0.1.99 (blue/b)  REACHABLE: isolation broken"; fail=1; else echo "  red/a  -> 10.0.1.99 (blue/b)  not reachable: isolated"; fi
with blue exec blue-net b -- ip addr del 10.0.1.99/32 dev "$b_if"

step "what to try next"
cat <<'NEXT'
  export VNET_CONFIG=~/.vnet/red.conf             # act as provider red (its own token)
  vnctl get vns                                   # your VNs
  vnctl get quota                                 # your limits and usage
  vnctl describe vn red-net                       # placement, paths, VNIs, MTU, per-host state
  vnctl exec red-net a -- ip addr                 # a command inside a virtual node
  vnctl watch                                     # events as they happen (Ctrl-C to stop)
  vnctl topology --svg /tmp/vnet.svg              # substrate and VNs as a picture
  unset VNET_CONFIG                               # back to the testbed admin
  vnctl admin quota set red --vns 5 --nodes 20 --cpu 200
  vnctl apply -f deploy/examples/three-tier.yaml --as shop --wait
  vnctl delete vn red-net --wait
  vnctl testbed status
  vnctl testbed down                              # removes the testbed and everything in it
NEXT
exit $fail
