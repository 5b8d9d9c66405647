#!/usr/bin/env bash
# LACE on large substrates, side by side with a baseline commit in the same run, every run checked
# by the referee.
#
#   deploy/bench/embedding-scale.sh
#
# Builds `embedding/examples/sim_bench.rs` (release) twice: from this tree and from a scratch
# worktree of BASE_REF (default a041d84, LACE before the work on large substrates) with the same
# example file copied in. Runs both on
#   1. the shared standard traces (VNE_TRACES, 100 hosts, rate 0.14: acceptance / lifetime R/C);
#   2. workloads of the standard generator (`vnctl sim --generate waxman`, lifetime 500) on 100, 200, 500 and 1000 hosts, the arrival
#      rate scaled with the hosts (0.14 x hosts / 100, so the load per host stays that of the
#      standard traces), SCALE_REQUESTS requests each (1000 hosts: SCALE_REQUESTS_1000);
# and prints, per workload and build: acceptance, lifetime-weighted R/C, wall-clock ms per
# request (mean, p95, max), CPU ms per request (the thread's CPU time per request; wall-clock
# times grow when other processes share the cores, CPU time hardly), and the referee's verdict
# (0 violations and the same acceptance and R/C). Writes the tables to its section of
# deploy/bench/RESULTS.md (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file).
#
# Environment: BASE_REF, VNE_TRACES (default /work/shared/vne/traces), STANDARD_TRACES (how many
# of them, default 10), SCALE_REQUESTS (default 1000), SCALE_REQUESTS_1000 (default 300),
# SCALE_SIZES (default "100 200 500 1000"), SCALE_SEEDS (per size, default "1 2"),
# CARGO_TARGET_DIR. Needs cargo, git, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE_REF=${BASE_REF:-a041d84}
TRACES=${VNE_TRACES:-/work/shared/vne/traces}
STANDARD_TRACES=${STANDARD_TRACES:-10}
SCALE_REQUESTS=${SCALE_REQUESTS:-1000}
SCALE_REQUESTS_1000=${SCALE_REQUESTS_1000:-300}
SCALE_SIZES=${SCALE_SIZES:-100 200 500 1000}
SCALE_SEEDS=${SCALE_SEEDS:-1 2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REFEREE=$ROOT/embedding/tests/data/check_embedding.py
. "$ROOT/deploy/bench/lib/results.sh"
results_begin "$@"
results_env BASE_REF VNE_TRACES STANDARD_TRACES SCALE_REQUESTS SCALE_REQUESTS_1000 SCALE_SIZES \
    SCALE_SEEDS

command -v python3 >/dev/null || { echo "error: python3 is needed for the referee" >&2; exit 1; }
if ! ls "$TRACES"/*.json >/dev/null 2>&1; then
    echo "error: no traces in $TRACES (set VNE_TRACES)" >&2
    exit 1
fi

WORK=$(mktemp -d)
BASE_TREE=$WORK/base
cleanup() {
    git -C "$ROOT" worktree remove --force "$BASE_TREE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building (release) this tree and $BASE_REF ..." >&2
cargo build --quiet --release -p embedding --example sim_bench
git -C "$ROOT" worktree add --detach "$BASE_TREE" "$BASE_REF" >/dev/null
cp "$ROOT/embedding/examples/sim_bench.rs" "$BASE_TREE/embedding/examples/"
# its own target directory under ours: kept between runs, so only the first one is slow
(cd "$BASE_TREE" && CARGO_TARGET_DIR=$CARGO_TARGET_DIR/bench-base \
    cargo build --quiet --release -p embedding --example sim_bench)
NEW=$CARGO_TARGET_DIR/release/examples/sim_bench
OLD=$CARGO_TARGET_DIR/bench-base/release/examples/sim_bench
BASE_COMMIT=$(git -C "$ROOT" rev-parse --short "$BASE_REF")

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2

export NEW OLD REFEREE WORK TRACES STANDARD_TRACES SCALE_REQUESTS SCALE_REQUESTS_1000 \
    SCALE_SIZES SCALE_SEEDS BASE_COMMIT
python3 - <<'PY'
import glob, json, os, statistics, subprocess, sys

E = os.environ
WORK = E["WORK"]
SUMMARY = open(os.path.join(WORK, "summary.txt"), "w")
BUILDS = [("base " + E["BASE_COMMIT"], E["OLD"]), ("this tree", E["NEW"])]


def both(line=""):
    print(line, flush=True)
    print(line, file=SUMMARY, flush=True)


def run(binary, trace):
    dec = os.path.join(WORK, "decisions.jsonl")
    sim = subprocess.run([binary, trace, "lace", dec], capture_output=True, text=True)
    if sim.returncode != 0:
        sys.exit(f"sim_bench failed on {trace}: {sim.stderr.strip()}")
    r = json.loads(sim.stdout)
    ref = subprocess.run(["python3", E["REFEREE"], trace, dec], capture_output=True, text=True)
    try:
        c = json.loads(ref.stdout)
    except json.JSONDecodeError:
        sys.exit(f"referee output unreadable on {trace}: {ref.stdout} {ref.stderr}")
    same = (c["accepted"] == r["accepted"]
            and abs(c["lt_time_r2c"] - r["lt_time_r2c"]) < 1e-9 * max(1, r["lt_time_r2c"]))
    r["verdict"] = ("ok" if ref.returncode == 0 and c["violations"] == 0 and same
                    else f"MISMATCH viol={c['violations']}")
    return r


HEADER = (f"{'workload':<26} {'build':<16} {'reqs':>5} {'accept':>7} {'R/C(lt)':>8} "
          f"{'ms mean':>8} {'ms p95':>8} {'ms max':>8} {'cpu ms':>7}  referee")


def row(name, build, r):
    return (f"{name:<26} {build:<16} {r['requests']:>5} {r['acceptance_ratio']:>7.4f} "
            f"{r['lt_time_r2c']:>8.4f} {r['solve_ms_mean']:>8.2f} {r['solve_ms_p95']:>8.2f} "
            f"{r['solve_ms_max']:>8.1f} {r['cpu_ms_mean']:>7.2f}  {r['verdict']}")


def group(title, workloads):
    """Runs every build on every workload; prints rows and the per-build means."""
    both(f"\n== {title}")
    both(HEADER)
    res = {b: [] for b, _ in BUILDS}
    for name, trace in workloads:
        for b, binary in BUILDS:
            r = run(binary, trace)
            res[b].append(r)
            both(row(name, b, r))
    for b, rs in res.items():
        m = lambda k: statistics.mean(r[k] for r in rs)
        ok = sum(r["verdict"] == "ok" for r in rs)
        both(f"{'mean of ' + str(len(rs)):<26} {b:<16} {'':>5} {m('acceptance_ratio'):>7.4f} "
             f"{m('lt_time_r2c'):>8.4f} {m('solve_ms_mean'):>8.2f} {m('solve_ms_p95'):>8.2f} "
             f"{max(r['solve_ms_max'] for r in rs):>8.1f} {m('cpu_ms_mean'):>7.2f}  "
             f"{ok}/{len(rs)} ok")


std = sorted(glob.glob(os.path.join(E["TRACES"], "*.json")))[: int(E["STANDARD_TRACES"])]
group(f"standard traces ({E['TRACES']}, 100 hosts, rate 0.14)",
      [(os.path.basename(t).removesuffix(".json"), t) for t in std])

for nodes in [int(x) for x in E["SCALE_SIZES"].split()]:
    reqs = E["SCALE_REQUESTS_1000"] if nodes >= 1000 else E["SCALE_REQUESTS"]
    rate = round(0.14 * nodes / 100, 4)
    wl = []
    for seed in E["SCALE_SEEDS"].split():
        seed = nodes * 10 + int(seed)
        path = os.path.join(WORK, f"wx{nodes}_s{seed}.json")
        subprocess.run([E["NEW"], "--generate", str(nodes), str(rate), reqs, str(seed), path],
                       check=True, capture_output=True)
        wl.append((f"wx{nodes} r{rate} s{seed}", path))
    group(f"generated Waxman, {nodes} hosts, rate {rate}, {reqs} requests", wl)
PY
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (wall-clock times are noisy when others compile; compare the cpu ms column)"

{
  echo "LACE of this tree against LACE of $BASE_COMMIT (before the work on large substrates), same"
  echo "run, same workloads; every run replayed by the referee. \"cpu ms\" is the simulation's CPU"
  echo "time per request, \"ms\" columns are wall-clock per \`embed\` call (they grow when other"
  echo "processes share the cores)."
  echo
  echo '```text'
  sed '/./,$!d' "$WORK/summary.txt"
  echo '```'
} >"$WORK/results.md"
results_write embedding-scale "LACE on large substrates (\`embedding-scale.sh\`)" "$WORK/results.md"
