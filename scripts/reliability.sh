#!/usr/bin/env bash
# Everything RELIABILITY.md describes, in one run:
#   1. the fast reliability tests (also in CI): fuzz regressions, hostile input,
#      concurrency, crash consistency (small plan), security, IdP faults;
#   2. the crash test at full size (20,000 users, 100,000 memberships: 120,100 operations);
#   3. every fuzz target for FUZZ_SECONDS (60) each;
#   4. the soak run for SOAK_SECONDS (3600: an hour, with restarts and an IdP outage).
# Set SKIP_FUZZ=1 or SKIP_SOAK=1 to leave a part out.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== reliability tests"
cargo test --test it -- fuzz_regressions:: hostile_input:: concurrency:: crash:: security:: \
    idp_faults:: write_transactions::

echo "== crash consistency at full size"
CRASH_USERS=20000 cargo test --test it crash::killing_apply -- --nocapture

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzzing"
    scripts/fuzz.sh
fi
if [ "${SKIP_SOAK:-0}" != 1 ]; then
    echo "== soak"
    scripts/soak.sh
fi
