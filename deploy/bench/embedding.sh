#!/usr/bin/env bash
# Embedding benchmark: every algorithm on every shared trace, each run checked by the referee.
#
#   deploy/bench/embedding.sh            # full run (about 75 min on 2 cores, most of it the MIP)
#   MIP_REQUESTS=0 deploy/bench/embedding.sh   # heuristics only (a few minutes)
#
# Prints:
#   1. per trace and algorithm: acceptance, R/C, lifetime-weighted R/C, ms per request (mean,
#      p95), and the referee's verdict (check_embedding.py: violations, and whether it recomputes
#      the same acceptance and R/C that `vnctl sim` printed);
#   2. the 10-trace means per algorithm (and the rate-0.16 set when present);
#   3. generalisation: LACE against GRC on workloads it was not tuned on (generator: other seeds,
#      200-node substrates, rates 0.08 and 0.20);
#   4. the exact MIP on single requests of 2..5 nodes against the 100-node substrate;
# and writes parts 2 to 4 to its section of deploy/bench/RESULTS.md (deploy/bench/lib/results.sh;
# VNET_BENCH_RESULTS=- writes no file).
#
# Environment: VNE_TRACES (default /work/shared/vne/traces), VNE_TRACES16
# (default /work/shared/vne/traces-r016), MIP_REQUESTS (prefix of each trace for the online MIP
# rows, default 100; 0 skips them), MIP_PER_SIZE (requests per size in part 4, default 10),
# GEN_REQUESTS (requests per generated workload in part 3, default 1000), CARGO_TARGET_DIR.
# Needs cargo, python3 and Debian's coinor-libcbc-dev.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TRACES=${VNE_TRACES:-/work/shared/vne/traces}
TRACES16=${VNE_TRACES16:-/work/shared/vne/traces-r016}
MIP_REQUESTS=${MIP_REQUESTS:-100}
MIP_PER_SIZE=${MIP_PER_SIZE:-10}
GEN_REQUESTS=${GEN_REQUESTS:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REFEREE=$ROOT/embedding/tests/data/check_embedding.py
. "$ROOT/deploy/bench/lib/results.sh"
results_begin "$@"
results_env VNE_TRACES VNE_TRACES16 MIP_REQUESTS MIP_PER_SIZE GEN_REQUESTS

if ! ls "$TRACES"/*.json >/dev/null 2>&1; then
    echo "error: no traces in $TRACES (set VNE_TRACES to the directory of the shared *.json traces)" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "error: python3 is needed for the referee" >&2; exit 1; }

echo "building (release) ..." >&2
# two invocations: `--example` would restrict the targets of every `-p` package
cargo build --quiet --release -p vnctl
cargo build --quiet --release -p embedding --example mip_optimality
VNCTL=$CARGO_TARGET_DIR/release/vnctl
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start" >&2

export VNCTL REFEREE WORK TRACES TRACES16 MIP_REQUESTS GEN_REQUESTS
python3 - <<'PY'
import glob, json, os, statistics, subprocess, sys

VNCTL, REFEREE, WORK = os.environ["VNCTL"], os.environ["REFEREE"], os.environ["WORK"]
MIP_REQUESTS = int(os.environ["MIP_REQUESTS"])
HEURISTICS = ["lace", "grc", "grc-feasible", "rw-maxmatch", "rw-bfs"]
# The summary tables (means, generalisation) also go to RESULTS.md.
SUMMARY = open(os.path.join(WORK, "summary.txt"), "w")


def both(line=""):
    print(line, flush=True)
    print(line, file=SUMMARY, flush=True)


def prefix(trace, n):
    """A copy of `trace` with only its first n requests (the referee replays the whole file)."""
    t = json.load(open(trace))
    t["requests"] = t["requests"][:n]
    out = os.path.join(WORK, f"{os.path.basename(trace)}.first{n}.json")
    json.dump(t, open(out, "w"))
    return out


def run(trace, algo, flags=()):
    dec = os.path.join(WORK, "decisions.jsonl")
    sim = subprocess.run([VNCTL, "sim", "--trace", trace, "--algo", algo, "--json",
                          "--decisions", dec, *flags], capture_output=True, text=True)
    if sim.returncode != 0:
        sys.exit(f"vnctl sim failed on {trace} / {algo}: {sim.stderr.strip()}")
    r = json.loads(sim.stdout)
    ref_flags = [{"--allow-split": "--allow-split", "--allow-revisit": "--allow-revisit"}[f]
                 for f in flags]
    ref = subprocess.run(["python3", REFEREE, *ref_flags, trace, dec], capture_output=True,
                         text=True)
    try:
        c = json.loads(ref.stdout)
    except json.JSONDecodeError:
        sys.exit(f"referee output unreadable on {trace} / {algo}: {ref.stdout} {ref.stderr}")
    same = (c["accepted"] == r["accepted"] and c["requests"] == r["requests"]
            and abs(c["acceptance_ratio"] - r["acceptance_ratio"]) < 1e-9
            and abs(c["lt_r2c"] - r["lt_r2c"]) < 1e-9 * max(1, r["lt_r2c"])
            and abs(c["lt_time_r2c"] - r["lt_time_r2c"]) < 1e-9 * max(1, r["lt_time_r2c"]))
    r["referee"] = c
    r["verdict"] = ("ok" if c["violations"] == 0 and same and ref.returncode == 0
                    else f"MISMATCH viol={c['violations']} acc={c['acceptance_ratio']:.4f} "
                         f"rc={c['lt_time_r2c']:.4f}")
    return r


HEADER = (f"{'trace':<24} {'algorithm':<13} {'reqs':>5} {'accept':>7} {'R/C':>7} {'R/C(lt)':>8} "
          f"{'ms/req':>8} {'p95 ms':>8} {'max ms':>8}  referee (0 violations, same acc & R/C)")


def row(name, r):
    return (f"{name:<24} {r['algo']:<13} {r['requests']:>5} {r['acceptance_ratio']:>7.4f} "
            f"{r['lt_r2c']:>7.4f} {r['lt_time_r2c']:>8.4f} {r['solve_ms_mean']:>8.2f} "
            f"{r['solve_ms_p95']:>8.2f} {r['solve_ms_max']:>8.1f}  {r['verdict']}")


def table(title, traces, algos, mip_prefix):
    print(f"\n== {title}")
    print(HEADER)
    results = {}
    for t in traces:
        name = os.path.basename(t).removesuffix(".json")
        for a in algos:
            r = run(t, a)
            results.setdefault(a, []).append(r)
            print(row(name, r), flush=True)
        if mip_prefix > 0:
            short = prefix(t, mip_prefix)
            for a, flags in [("mip", ()), ("mip-split", ("--allow-split",))]:
                r = run(short, a, flags)
                label = a if not flags else a + "*"
                r["algo"] = label
                results.setdefault(label, []).append(r)
                print(row(f"{name}[:{mip_prefix}]", r), flush=True)
    return results


def means(title, results):
    both(f"\n== {title}: means over traces")
    both(f"{'algorithm':<13} {'traces':>6} {'accept':>7} {'R/C':>7} {'R/C(lt)':>8} {'ms/req':>8} "
         f"{'p95 ms (max over traces)':>25} {'referee':>9}")
    for a, rs in results.items():
        m = lambda k: statistics.mean(r[k] for r in rs)
        ok = sum(r["verdict"] == "ok" for r in rs)
        both(f"{a:<13} {len(rs):>6} {m('acceptance_ratio'):>7.4f} {m('lt_r2c'):>7.4f} "
             f"{m('lt_time_r2c'):>8.4f} {m('solve_ms_mean'):>8.2f} "
             f"{max(r['solve_ms_p95'] for r in rs):>25.2f} {ok:>4}/{len(rs)} ok")
    if "lace" in results:
        rs = results["lace"]
        both(f"lace per-request time: mean {statistics.mean(r['solve_ms_mean'] for r in rs):.2f} ms, "
             f"p95 {statistics.mean(r['solve_ms_p95'] for r in rs):.2f} ms (mean over traces), "
             f"worst trace p95 {max(r['solve_ms_p95'] for r in rs):.2f} ms")


traces = sorted(glob.glob(os.path.join(os.environ["TRACES"], "*.json")))
res = table(f"shared traces ({os.environ['TRACES']}); mip rows on the first {MIP_REQUESTS} "
            "requests; mip-split* with splitting allowed", traces, HEURISTICS, MIP_REQUESTS)
means("shared traces", res)

t16 = sorted(glob.glob(os.path.join(os.environ["TRACES16"], "wx100_*.json")))
if t16:
    res16 = table(f"rate-0.16 traces ({os.environ['TRACES16']})", t16, HEURISTICS, 0)
    means("rate-0.16 traces", res16)
geant = glob.glob(os.path.join(os.environ["TRACES16"], "geant*.json"))
if geant:
    g = table("GEANT (40 nodes, rate 0.016)", geant, HEURISTICS, 0)

print("\n== generalisation: workloads from `vnctl sim --generate waxman` (not tuned on)")
print(HEADER)
gen = [("seed 101, 100 nodes, rate 0.14", 100, 0.14, 101),
       ("seed 102, 100 nodes, rate 0.14", 100, 0.14, 102),
       ("seed 103, 100 nodes, rate 0.14", 100, 0.14, 103),
       ("seed 201, 200 nodes, rate 0.14", 200, 0.14, 201),
       ("seed 202, 200 nodes, rate 0.20", 200, 0.20, 202),
       ("seed 301, 100 nodes, rate 0.08", 100, 0.08, 301),
       ("seed 302, 100 nodes, rate 0.08", 100, 0.08, 302),
       ("seed 401, 100 nodes, rate 0.20", 100, 0.20, 401),
       ("seed 402, 100 nodes, rate 0.20", 100, 0.20, 402)]
gres = {}
for label, nodes, rate, seed in gen:
    path = os.path.join(WORK, f"gen_{nodes}_{rate}_{seed}.json")
    subprocess.run([VNCTL, "sim", "--generate", "waxman", "--nodes", str(nodes), "--requests",
                    os.environ["GEN_REQUESTS"], "--rate", str(rate), "--lifetime", "500",
                    "--seed", str(seed), "--out", path], check=True, capture_output=True)
    pair = {}
    for a in ["lace", "grc"]:
        r = run(path, a)
        pair[a] = r
        print(row(f"wx{nodes} r{rate} s{seed}", r), flush=True)
    gres[label] = pair
both(f"\n== generalisation: LACE against GRC on generated workloads")
both(f"{'workload':<32} {'LACE acc':>9} {'GRC acc':>8} {'LACE R/C(lt)':>13} {'GRC R/C(lt)':>12}")
for label, p in gres.items():
    both(f"{label:<32} {p['lace']['acceptance_ratio']:>9.4f} {p['grc']['acceptance_ratio']:>8.4f} "
         f"{p['lace']['lt_time_r2c']:>13.4f} {p['grc']['lt_time_r2c']:>12.4f}")
PY

first=$(ls "$TRACES"/*.json | head -1)
{
  echo
  echo "== exact MIP on single requests against the 100-node substrate of $(basename "$first")"
  "$CARGO_TARGET_DIR/release/examples/mip_optimality" "$first" "$MIP_PER_SIZE" 5
} | tee -a "$WORK/summary.txt"
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (timings are noisy when others compile)"

{
  echo "Means over the traces in \`$TRACES\` (and in \`$TRACES16\` when there are any)."
  if ((MIP_REQUESTS > 0)); then
    echo "The mip rows run on the first $MIP_REQUESTS requests of each trace (mip-split* with"
    echo "splitting allowed)."
  else
    echo "The mip rows were skipped (MIP_REQUESTS=0)."
  fi
  echo "The referee column counts the runs with 0 violations and the same acceptance and R/C as"
  echo "\`vnctl sim\` printed. Per-trace rows: run the script."
  echo
  echo '```text'
  sed '/./,$!d' "$WORK/summary.txt"
  echo '```'
} >"$WORK/results.md"
results_write embedding "Embedding algorithms (\`embedding.sh\`)" "$WORK/results.md"
