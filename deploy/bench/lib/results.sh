# shellcheck shell=bash
# Sourced by every benchmark script under deploy/bench/: writes the script's own section of
# deploy/bench/RESULTS.md, between the lines `<!-- BEGIN NAME -->` and `<!-- END NAME -->`, headed
# by the date, the command, the commit and the machine (cores, CPU, memory, kernel, load average
# at start and end). Every other section of the file is kept as it is.
#
#   results_begin ARGS...        call first, with the script's arguments: remembers the command
#                                and the load average at start
#   results_env VAR...           adds these environment variables, when set, to the command shown
#   results_write NAME TITLE FILE
#                                replaces section NAME (adds it at the end when it is missing)
#                                with a `## TITLE` heading, the conditions and the Markdown in FILE
#
# VNET_BENCH_RESULTS names the file to write instead (for a trial run); "-" prints the section on
# stdout and writes no file. Writers of different sections may run at once: the rewrite holds
# the flock on /run/lock/vnet-bench-results.lock.

results_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# The bench scripts' options and preconditions (parse_args, die, need_root, need_tools, ...).
# shellcheck source=deploy/lib/cli.sh
. "$results_root/deploy/lib/cli.sh"
results_cmd=""
results_load_start=""

results_begin() {
  results_cmd="deploy/bench/$(basename "$0")"
  local a
  for a in "$@"; do results_cmd+=" $(printf '%q' "$a")"; done
  results_load_start=$(cut -d' ' -f1-3 /proc/loadavg)
}

results_env() {
  local v
  for v in "$@"; do
    if [[ -n ${!v+set} ]]; then results_cmd="$v=$(printf '%q' "${!v}") $results_cmd"; fi
  done
}

# The conditions line: cores, CPU model, memory, kernel.
results_machine() {
  local cpu mem
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  echo "$(nproc) cores${cpu:+ ($cpu)}, $mem memory, Linux $(uname -r)"
}

# The commit measured, with "+ uncommitted changes" when the tree differs from it.
results_commit() {
  local c
  c=$(git -C "$results_root" rev-parse --short HEAD 2>/dev/null) || { echo "unknown"; return; }
  git -C "$results_root" diff --quiet HEAD -- 2>/dev/null || c+=" + uncommitted changes"
  echo "$c"
}

results_write() {
  local name=$1 title=$2 body=$3
  local file=${VNET_BENCH_RESULTS-$results_root/deploy/bench/RESULTS.md}
  [[ -f $body ]] || { echo "results_write: no such file: $body" >&2; return 1; }
  local section
  section=$(mktemp)
  {
    echo "<!-- BEGIN $name -->"
    echo "## $title"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with" \
      "\`${results_cmd:-deploy/bench/$(basename "$0")}\` at commit $(results_commit)."
    echo "Machine: $(results_machine); load average (1, 5, 15 min) ${results_load_start:-unknown}" \
      "at start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    cat "$body"
    echo "<!-- END $name -->"
  } >"$section"
  if [[ $file == - ]]; then
    cat "$section"
    rm -f "$section"
    return 0
  fi
  local rc=0
  (
    flock 8
    [[ -e $file ]] || printf '# Benchmark results\n' >"$file"
    local tmp
    tmp=$(mktemp "$file.XXXXXX")
    if awk -v begin="<!-- BEGIN $name -->" -v end="<!-- END $name -->" -v sec="$section" '
        $0 == begin { while ((getline line < sec) > 0) print line; skip = 1; found = 1; next }
        skip && $0 == end { skip = 0; next }
        !skip { print }
        END {
          if (skip) { print "no line \"" end "\" after \"" begin "\"" > "/dev/stderr"; exit 1 }
          if (!found) { print ""; while ((getline line < sec) > 0) print line }
        }' "$file" >"$tmp"; then
      chmod --reference="$file" "$tmp" && mv "$tmp" "$file"
    else
      rm -f "$tmp"
      exit 1
    fi
  ) 8>>/run/lock/vnet-bench-results.lock || rc=$?
  rm -f "$section"
  if ((rc != 0)); then
    echo "results_write: could not write section $name of $file" >&2
    return "$rc"
  fi
  echo "results: section $name of $file rewritten" >&2
}
