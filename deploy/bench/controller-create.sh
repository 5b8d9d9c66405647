#!/usr/bin/env bash
# Controller benchmark: Create -> Accepted throughput and latency (requests per second, p50/p90/p99)
# of 1000 standard-size VN requests (2..10 nodes) against 100 stand-in hosts, each concurrency
# twice in the same run: plain text with the bootstrap admin token, and TLS with per-provider
# tokens (the cost of the trust layer).
# Prints a Markdown table. Knobs (environment): BENCH_REQUESTS (1000), BENCH_HOSTS (100),
# BENCH_CONCURRENCY (comma-separated client counts, "1,8,32"), BENCH_ALGORITHM (default: the
# embedding crate's default), CARGO_TARGET_DIR.
# Timings are noisy when other builds share the machine: re-run and compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p vn-controller --bench create "$@"
