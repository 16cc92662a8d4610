#!/usr/bin/env bash
# Runs libFuzzer targets built by `make fuzz-build` for a bounded time each (make fuzz calls it).
#   FUZZ_BUILD=build/fuzz-clang  FUZZ_SECONDS=60  FUZZ_JOBS=1 (parallel fuzzing jobs per target)
#   tests/fuzz/fuzz.sh [TARGET...]   (default: every tests/fuzz/fuzz_*.c)
# tests/fuzz/<t>.dict, when present, is the target's libFuzzer dictionary (tokens of the format).
# The working corpus grows in $FUZZ_BUILD/corpus/<t>; the seeds (tests/fuzz/corpus/<t>) and past
# crashes (tests/fuzz/crashes/<t>) are read, never written. A crash stops that target and leaves
# its input in $FUZZ_BUILD/crashes/<t>/; the script goes on with the next target and exits 1.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}
targets=("$@")
if ((${#targets[@]} == 0)); then
    for f in tests/fuzz/fuzz_*.c; do
        t=${f#tests/fuzz/fuzz_}
        targets+=("${t%.c}")
    done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for t in "${targets[@]}"; do
    bin=$FUZZ_BUILD/fuzz_$t
    [[ -x $bin ]] || { echo "fuzz: $bin missing (make fuzz-build)"; failed=1; continue; }
    work=$FUZZ_BUILD/corpus/$t crashes=$FUZZ_BUILD/crashes/$t
    mkdir -p "$work" "$crashes" "tests/fuzz/corpus/$t" "tests/fuzz/crashes/$t"
    log=$FUZZ_BUILD/fuzz_$t.log
    echo "fuzz: $t for ${FUZZ_SECONDS}s (log: $log)"
    opts=()
    ((FUZZ_JOBS > 1)) && opts=(-fork="$FUZZ_JOBS" -ignore_crashes=0)
    [[ -f tests/fuzz/$t.dict ]] && opts+=(-dict="tests/fuzz/$t.dict")
    "$bin" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" -print_final_stats=1 "${opts[@]}" \
        "$work" "tests/fuzz/corpus/$t" "tests/fuzz/crashes/$t" >"$log" 2>&1
    rc=$?
    grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added)' "$log" |
        sed 's/^/    /'
    if ((rc != 0)); then
        echo "fuzz: $t FOUND A CRASH (exit $rc); inputs in $crashes:"
        ls "$crashes" | sed 's/^/    /'
        grep -m1 -E 'ERROR|runtime error|fuzz oracle failed' "$log" | sed 's/^/    /'
        failed=1
    fi
done
exit $failed
