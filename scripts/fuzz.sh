#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and reports executions per target.
#
#   scripts/fuzz.sh                  # each target 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh # longer
#   scripts/fuzz.sh scim_filter      # only the targets named
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it accept the sanitizer
# flags cargo-fuzz passes. The corpus of each target starts from the committed
# fuzz/regressions/<target>/ and grows in fuzz/corpus/<target>/ (not committed). A
# crash is copied into fuzz/regressions/<target>/ so that `cargo test --test it
# fuzz_regressions::` replays it from then on; the script then fails.
#
# Environment: FUZZ_SECONDS (60), FUZZ_JOBS (1), FUZZ_RSS_MB (2048), FUZZ_MAX_LEN (65536).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
MAX_LEN="${FUZZ_MAX_LEN:-65536}"
ALL_TARGETS=(scim_filter patch_path patch_apply scim_user_body snapshot)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets"
(cd fuzz && cargo fuzz build)
# Run the built binaries directly: `cargo fuzz run` would rebuild whenever a source
# file changed, which would eat into the time budget.
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="fuzz/target/$TRIPLE/release"

mkdir -p fuzz/logs
status=0
summary=()
for target in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    log="fuzz/logs/$target.log"
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s"
    set +e
    ASAN_OPTIONS="detect_odr_violation=0:${ASAN_OPTIONS:-}" "$BIN_DIR/$target" \
        -artifact_prefix="fuzz/artifacts/$target/" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_MB" \
        -max_len="$MAX_LEN" -timeout=10 -print_final_stats=1 \
        "$corpus" "fuzz/regressions/$target" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n1)
    rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1 | awk '{print $2}')
    if [ $rc -ne 0 ]; then
        status=1
        for crash in fuzz/artifacts/"$target"/*; do
            [ -f "$crash" ] || continue
            cp "$crash" "fuzz/regressions/$target/$(basename "$crash")"
            echo "   crash saved to fuzz/regressions/$target/$(basename "$crash")"
        done
        tail -n 40 "$log"
        summary+=("$target: FAILED after ${execs:-?} executions (see $log)")
    else
        summary+=("$target: ${execs:-?} executions, ${rate:-?}/s, coverage ${cov:-?}, no crash")
    fi
done

echo
echo "== fuzz summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit $status
