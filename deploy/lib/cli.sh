# shellcheck shell=bash
# Sourced by the scripts under deploy/bench/ and deploy/guest/: their options and preconditions.
# Messages start with `$me:`, the script's file name without .sh.
#
#   parse_args SPEC... -- "$@"   the script's options, each SPEC one of
#                                  --flag         takes a value into the variable of its name
#                                                 (--bin-dir: bin_dir)
#                                  --flag:VAR     takes a value into VAR
#                                  --flag:VAR=V   takes no value, sets VAR to V
#                                -h or --help prints the script's header comment (exit 0); an
#                                unknown argument or an option without its value: exit 2
#   die MESSAGE...               the message on stderr, exit 1
#   need_root WHY                dies unless run as root ("needs root (WHY)")
#   need_tools CMD...            dies unless every CMD is installed
#   want_int FLAG VALUE MIN [MAX]
#                                dies unless VALUE (given to FLAG) is a whole number from MIN
#                                (to MAX)

me=$(basename "$0" .sh)

die() { echo "$me: $*" >&2; exit 1; }

# The comment at the top of the script, after the #! line.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; }

# The locals start with _ so that they do not hide a caller's variable of the same name.
parse_args() {
  local -a _specs=()
  while (($#)) && [[ $1 != -- ]]; do _specs+=("$1"); shift; done
  (($#)) || { echo "parse_args: no -- before the arguments" >&2; exit 2; }
  shift
  local _spec _flag _var
  while (($#)); do
    [[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
    _var=""
    for _spec in "${_specs[@]}"; do
      _flag=${_spec%%:*}
      [[ $_flag == "$1" ]] || continue
      _var=${_spec#"$_flag"}
      _var=${_var#:}
      [[ -n $_var ]] || { _var=${_flag#--}; _var=${_var//-/_}; }
      break
    done
    [[ -n $_var ]] || { echo "$me: unknown argument: $1" >&2; exit 2; }
    if [[ $_var == *=* ]]; then
      printf -v "${_var%%=*}" '%s' "${_var#*=}"
      shift
    else
      (($# >= 2)) || { echo "$me: $1 needs a value" >&2; exit 2; }
      printf -v "$_var" '%s' "$2"
      shift 2
    fi
  done
}

need_root() { ((EUID == 0)) || die "needs root ($1)"; }

need_tools() {
  local c
  for c; do
    command -v "$c" >/dev/null || die "$c is missing (deploy/setup.sh installs it)"
  done
}

# Messages as "--runs wants a positive integer", "--hosts wants 3 to 250", "--hosts wants at
# least 3".
want_int() {
  local flag=$1 value=$2 min=$3 max=${4:-}
  if [[ $value =~ ^(0|[1-9][0-9]*)$ ]] && ((value >= min)) && { [[ -z $max ]] || ((value <= max)); }
  then
    return 0
  fi
  if [[ -n $max ]]; then
    die "$flag wants $min to $max, got '$value'"
  elif ((min == 1)); then
    die "$flag wants a positive integer, got '$value'"
  fi
  die "$flag wants at least $min, got '$value'"
}
