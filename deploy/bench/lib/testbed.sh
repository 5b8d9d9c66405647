# shellcheck shell=bash
# Sourced by the benchmark scripts that run on a private testbed (failover.sh, guest-request.sh,
# recursion.sh, testbed-scale.sh, update.sh): the binaries, the testbed's names, the cross-process
# testbed lock, `vnctl testbed up`, and the EXIT trap that takes the testbed down and checks that
# nothing of it is left. Sources deploy/bench/lib/results.sh (results_begin, results_write, ...,
# and through it deploy/lib/cli.sh: parse_args, die, need_root, need_tools), which these scripts
# use too.
#
# In order:
#   binaries "$bin_dir"              VNCTL (builds the three binaries when $bin_dir is empty)
#   testbed_names SHORT NET          id tag bridge subnet port metrics ctl
#   testbed_lock                     one testbed at a time (fd 9), like the end-to-end tests
#   testbed_begin                    work (scratch dir), state (state dir), before; the traps
#   testbed_up ARGS...               vnctl testbed up with the names above and ARGS
# Every command that starts daemons runs with `9>&-`: they must not inherit (and hold) the lock.

# shellcheck source=deploy/bench/lib/results.sh
. "$(dirname "${BASH_SOURCE[0]}")/results.sh"

# VNCTL from $1, a directory holding vnctl, vn-controller and substrate-agent; when $1 is empty,
# they are built (release, honours CARGO_TARGET_DIR).
binaries() {
  local bin_dir=$1 b
  if [[ -z $bin_dir ]]; then
    cargo build --release -q -p vnctl -p vn-controller -p substrate-agent
    bin_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release"
  fi
  for b in vnctl vn-controller substrate-agent; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing (cargo build --release -p $b)"
  done
  VNCTL=$bin_dir/vnctl
}

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ -z $(ss -Hltn "sport = :$p") && $p != "${port:-}" ]] && { echo "$p"; return; }
  done
}

# testbed_names SHORT NET: the private testbed's names, from this shell's pid: host namespaces
# <SHORT><id>-h1.. and node namespaces <SHORT><id>-h1-<node> (tag), bridge vn<SHORT><id> (at most
# 11 characters), subnet 10.NET.<id % 250>.0/24, two free ports. root_links (an extended regex of
# root-namespace link names that belong to the testbed) starts as the bridge's.
testbed_names() {
  id=$(($$ % 100000))
  tag="$1$id-"
  bridge="vn$1$id"
  subnet="10.$2.$((id % 250)).0/24"
  port=$(free_port)
  metrics=$(free_port)
  ctl="https://127.0.0.1:$port"
  root_links=$bridge
}

# What the testbed may leave behind (compared before/after): its namespaces, its root links
# (root_links), and every process naming its scratch dir or tag.
snapshot() {
  ip netns list | awk '{print "netns " $1}' | grep -F "netns $tag" || true
  ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}' \
    | grep -E "^link ($root_links)" || true
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ -n ${work:-} && $cmd == *"$work"* || $cmd == *"$tag"* ]] || continue
    [[ ${p#/proc/} == "$$" || $cmd == *"${0##*/}"* ]] && continue
    echo "process ${p#/proc/}: $cmd"
  done
  return 0
}

# The flock on /run/lock/vnet-testbed-e2e.lock (fd 9) that the end-to-end tests hold too.
testbed_lock() {
  exec 9>>/run/lock/vnet-testbed-e2e.lock
  if ! flock -n 9; then
    echo "waiting for another testbed to finish (flock /run/lock/vnet-testbed-e2e.lock)" >&2
    flock 9
  fi
}

# The scratch dir ($work, removed on exit) with the state dir inside ($state), the snapshot to
# compare with at the end ($before), and the traps.
testbed_begin() {
  work=$(mktemp -d "/tmp/vnet-$me-XXXXXX")
  state=$work/bed
  # `testbed up` writes its admin context (CA, token) here; every vnctl of the script uses it.
  export VNET_CONFIG=$work/vnet-config
  before=$(snapshot)
  trap testbed_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

testbed_up() {
  "$VNCTL" testbed up --state-dir "$state" --netns-prefix "$tag" --mgmt-bridge "$bridge" \
    --mgmt-subnet "$subnet" --node-prefix "${tag%-}" --listen-port "$port" \
    --metrics-port "$metrics" "$@" 9>&-
}

# Runs a command in the background and waits for it, so INT/TERM interrupt the wait at once
# (the EXIT trap then kills it). Its stdout and stderr go to $1.
child=""
bg() {
  local out=$1
  shift
  "$@" >"$out" 2>&1 &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

# The EXIT trap: stops a command started by bg, shows the logs' tails after a failure (not after
# an interruption), takes the testbed down, checks that nothing of it is left and removes $work.
testbed_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
    kill "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [[ -n ${work:-} && -d $work ]]; then
    if ((rc != 0 && rc < 128)); then
      local log
      for log in "$state"/logs/*.log; do
        [[ -f $log ]] || continue
        echo "--- tail of $log:" >&2
        tail -n 30 "$log" >&2
      done
    fi
    if [[ -e $state/testbed.json ]]; then
      "$VNCTL" testbed down --state-dir "$state" >/dev/null 2>"$work/down.err" 9>&- \
        || { echo "$me: testbed down failed:" >&2; cat "$work/down.err" >&2; rc=1; }
    fi
    local after i
    for ((i = 0; i < 20; i++)); do
      after=$(snapshot)
      [[ $after == "$before" ]] && break
      sleep 0.25
    done
    if [[ $after != "$before" ]]; then
      echo "$me: LEFT BEHIND by the testbed:" >&2
      diff <(echo "$before") <(echo "$after") | grep '^>' >&2 || true
      rc=1
    fi
    rm -rf "$work"
  fi
  exit "$rc"
}
