#!/usr/bin/env bash
# The whole test suite, as CI runs it: system set-up, the guest image, then unit, property,
# in-process gRPC, root integration and end-to-end tests. Run as root on Debian:
#
#   ./deploy/test.sh
#
# Root tests refuse to skip here (VNET_REQUIRE_ROOT=1): a missing precondition is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "test.sh: the suite creates namespaces, TAP devices and guests; run it as root" >&2
  exit 1
fi

./deploy/setup.sh
# The guest images (each skipped when its inputs did not change): the project's small image for
# x86_64 and aarch64 (Debian's arm64 packages are unpacked, not run), and a Debian disk image.
./deploy/guest/build-image.sh
./deploy/guest/build-image.sh --arch aarch64
./deploy/guest/build-debian.sh

before=$(mktemp)
trap 'rm -f "$before"' EXIT
./deploy/check-leftovers.sh snapshot "$before"

export VNET_REQUIRE_ROOT=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A one-shot build gains nothing from incremental state, which doubles the target directory.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

echo "== build"
cargo build --workspace --all-targets --locked

echo "== tests"
rc=0
cargo test --workspace --locked --no-fail-fast || rc=$?

echo "== leftovers"
./deploy/check-leftovers.sh compare "$before" || rc=1
exit $rc
