#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time and prints, per target, the
# executions, the new corpus units and the findings (crashes, timeouts, out-of-memory).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 seconds per target, every target
#
# cargo-fuzz (libFuzzer, coverage-guided, AddressSanitizer, debug assertions and overflow checks
# on) is installed when missing. It needs nightly-only rustc flags (-Zsanitizer, the sanitizer
# coverage passes), which a stable toolchain accepts with RUSTC_BOOTSTRAP=1, set here only.
# Each target starts from its committed seeds (fuzz/corpus/<target>/, read-only here) plus what
# earlier runs found (fuzz/target/corpus/<target>/, where new units go). A finding is written to
# fuzz/artifacts/<target>/ and the script exits 1; once fixed, copy the input into
# fuzz/corpus/<target>/ so that `hub/tests/fuzz_seeds.rs` replays it in every test run.
#
# Not part of CI (too slow on small runners): the seeds are, through the test above.
# One fuzz process at a time. Inputs are mutated up to 64 KiB (-max_len): the larger attack seeds
# (256 KiB) are fuzzed by their first 64 KiB, which keeps the SOAP targets ~8 times faster; the
# test above replays them whole. FUZZ_ARGS adds or overrides libFuzzer flags (the last one wins).
# The `crashes` column counts every finding: crash or panic, timeout (10 s), out of memory (2 GB).
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/.."
root="$PWD"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | sort)
fi

echo "building ${#targets[@]} fuzz targets (release, ASan, debug assertions)" >&2
cargo fuzz build >&2

logs="$root/fuzz/target/logs"
mkdir -p "$logs"
rows=()
failed=0
for t in "${targets[@]}"; do
    work="$root/fuzz/target/corpus/$t"
    artifacts="$root/fuzz/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    stamp="$logs/$t.stamp"
    touch "$stamp"
    log="$logs/$t.log"
    echo "fuzzing $t for ${seconds}s (log: ${log#"$root"/})" >&2
    set +e
    # shellcheck disable=SC2086
    cargo fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    set -e
    stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
    execs="$(stat number_of_executed_units)"
    per_sec="$(stat average_exec_per_sec)"
    new_units="$(stat new_units_added)"
    rss="$(stat peak_rss_mb)"
    found=()
    while IFS= read -r f; do
        found+=("${f#"$root"/}")
    done < <(find "$artifacts" -type f -newer "$stamp" | sort)
    rm -f "$stamp"
    findings="${#found[@]}"
    if [ "$status" -ne 0 ] && [ "$findings" -eq 0 ]; then
        findings=1 # a failure without an artifact (build or harness error): see the log
        found+=("see ${log#"$root"/}")
    fi
    if [ "$findings" -ne 0 ]; then
        failed=1
    fi
    rows+=("$(printf '%-20s %12s %8s %6s %8s %8s' "$t" "${execs:-?}" "${per_sec:-?}" \
        "${new_units:-?}" "${rss:-?}" "$findings")")
    for f in "${found[@]}"; do
        rows+=("    finding: $f")
    done
done

echo
printf '%-20s %12s %8s %6s %8s %8s\n' target executions exec/s new rss_mb crashes
for r in "${rows[@]}"; do
    echo "$r"
done
exit "$failed"
