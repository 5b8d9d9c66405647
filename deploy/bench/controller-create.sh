#!/usr/bin/env bash
# Controller benchmark: Create -> Accepted throughput and latency (requests per second, p50/p90/p99)
# of 1000 standard-size VN requests (2..10 nodes) against 100 stand-in hosts, each client count
# twice in the same run: plain text with the bootstrap admin token, and TLS with per-provider
# tokens (the cost of the trust layer).
# Prints a Markdown table and writes it to its section of deploy/bench/RESULTS.md
# (deploy/bench/lib/results.sh; VNET_BENCH_RESULTS=- writes no file). Knobs (environment):
# BENCH_REQUESTS (1000), BENCH_HOSTS (100), BENCH_CONCURRENCY (comma-separated client counts,
# "1,8,32"), BENCH_ALGORITHM (default: the embedding crate's default), CARGO_TARGET_DIR.
# Timings are noisy when other builds share the machine: re-run and compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/bench/lib/results.sh
results_begin "$@"
results_env BENCH_REQUESTS BENCH_HOSTS BENCH_CONCURRENCY BENCH_ALGORITHM
body=$(mktemp)
trap 'rm -f "$body"' EXIT
cargo bench -p vn-controller --bench create "$@" | tee "$body"
{
  echo
  echo "Latency is Create to Accepted (persisted) at the client; \"mean server\" is Create inside the"
  echo "controller (validation to persisted), \"mean embed\" the algorithm run including building its"
  echo "model of the substrate. Release build (cargo bench), one fresh controller per row. \"plain\":"
  echo "no TLS, the bootstrap admin token acting for each provider; \"TLS\": rustls (ring, ECDSA"
  echo "P-256) and a token issued to each provider. Stand-in agents attach on a plain listener in both."
} >>"$body"
results_write controller-create "Controller: Create to Accepted (\`controller-create.sh\`)" "$body"
