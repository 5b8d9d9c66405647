#!/usr/bin/env bash
# Draws the example pictures from a real 5-host testbed: nested.svg/png (admin view of every
# provider: lab's campus with blue's VNs nested three deep inside it, green's VN beside it),
# nested-labels.svg (the same with --labels) and fifty.svg/png (red's 50-node VN spread over the
# 5 hosts). Needs root, graphviz and the built binaries (cargo build -p vnctl -p vn-controller
# -p substrate-agent). Takes the testbed lock the e2e tests use and its own names throughout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
vnctl=${VNCTL:-$repo/target/debug/vnctl}
state=$(mktemp -d /tmp/vnet-pictures-XXXX)
export VNET_CONFIG=$state/config
exec 9>/run/lock/vnet-testbed-e2e.lock
flock 9
down() { "$vnctl" testbed down --state-dir "$state/bed" >/dev/null 2>&1 || true; rm -rf "$state"; }
trap down EXIT
"$vnctl" testbed up --hosts 5 --state-dir "$state/bed" --netns-prefix pic- --node-prefix pic \
  --mgmt-bridge vnpic0 --mgmt-subnet 10.249.7.0/24 --listen-port 7391 --metrics-port 9391 \
  --timeout 90s >/dev/null
apply() { "$vnctl" --as "$1" apply -f "$here/$2" --wait --timeout 300s >/dev/null; }
apply lab campus.yaml
apply blue tenant.yaml
apply blue team.yaml
apply blue exp.yaml
apply green green.yaml
"$vnctl" topology --svg "$here/nested.svg" --png "$here/nested.png"
"$vnctl" topology --labels --svg "$here/nested-labels.svg"
for vn in exp team tenant; do "$vnctl" --as blue delete vn "$vn" --wait >/dev/null; done
"$vnctl" --as lab delete vn campus --wait >/dev/null
"$vnctl" --as green delete vn lab-net --wait >/dev/null
apply red fifty.yaml
"$vnctl" --as red topology --svg "$here/fifty.svg" --png "$here/fifty.png"
"$vnctl" --as red topology --labels --svg "$here/fifty-labels.svg"
"$vnctl" --as red delete vn fifty --wait >/dev/null
