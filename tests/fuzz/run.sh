#!/usr/bin/env bash
# The fuzz regression suite (part of `make test`): every seed (tests/fuzz/corpus/<target>/) and
# every input that once crashed a parser (tests/fuzz/crashes/<target>/) goes through the real
# parser again, in two builds of each target:
#   replay     $BUILD/tests/fuzz/replay_<t>: this compiler, replay.c's main (ASan/UBSan under
#              `make asan`); "PASS fuzz-replay/<t>" when no input crashes or breaks an oracle
#   libfuzzer  with clang on the PATH (not under make asan): `make fuzz-build` into
#              $BUILD/fuzz-clang, each target runs every file once (-runs=0), then fuzzes for
#              FUZZ_SUITE_SECONDS (default 1) from them; "PASS fuzz-libfuzzer/<t>"
# Long runs are `make fuzz` (docs/fuzzing.md).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
SECONDS_EACH=${FUZZ_SUITE_SECONDS:-1}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fuzzsuite.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failed=0
targets=()
for f in tests/fuzz/fuzz_*.c; do
    t=${f#tests/fuzz/fuzz_}
    targets+=("${t%.c}")
done

inputs_of() { # target -> the folders that exist
    local d
    for d in "tests/fuzz/corpus/$1" "tests/fuzz/crashes/$1"; do
        [[ -d $d ]] && echo "$d"
    done
}

replay() { # target
    local t=$1 bin=$BUILD/tests/fuzz/replay_$1 log=$TMP/replay_$1.log rc dirs last
    if [[ ! -x $bin ]]; then
        echo "FAIL fuzz-replay/$t: $bin is not built (make test-build)"
        failed=1
        return
    fi
    mapfile -t dirs < <(inputs_of "$t")
    timeout -k 5 120 "$bin" -v "${dirs[@]}" >"$log" 2>&1
    rc=$?
    if ((rc == 0)); then
        echo "PASS fuzz-replay/$t ($(grep -c '^replay ' "$log") inputs)"
        return
    fi
    last=$(grep '^replay ' "$log" | tail -n 1)
    echo "FAIL fuzz-replay/$t: exit $rc on ${last#replay }: $(grep -m1 -E \
        'ERROR|runtime error|fuzz oracle failed' "$log")"
    tail -n 20 "$log" | sed 's/^/    /'
    failed=1
}

libfuzzer() { # target
    local t=$1 bin=$BUILD/fuzz-clang/fuzz_$1 log=$TMP/libfuzzer_$1.log dirs
    mapfile -t dirs < <(inputs_of "$t")
    mkdir -p "$TMP/work_$t" "$TMP/crash_$t"
    if ! "$bin" -runs=0 "${dirs[@]}" >"$log" 2>&1 ||
        ! "$bin" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 \
            -print_final_stats=1 -artifact_prefix="$TMP/crash_$t/" "$TMP/work_$t" "${dirs[@]}" \
            >>"$log" 2>&1; then
        echo "FAIL fuzz-libfuzzer/$t: $(grep -m1 -E 'ERROR|runtime error|fuzz oracle failed' \
            "$log") (new crashing inputs: $(ls "$TMP/crash_$t" | tr '\n' ' '); copy them to" \
            "tests/fuzz/crashes/$t/ and see docs/fuzzing.md)"
        mkdir -p "$BUILD/fuzz-clang/crashes/$t"
        cp "$TMP/crash_$t"/* "$BUILD/fuzz-clang/crashes/$t/" 2>/dev/null
        tail -n 20 "$log" | sed 's/^/    /'
        failed=1
        return
    fi
    echo "PASS fuzz-libfuzzer/$t ($(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" |
        awk '{ s += $2 } END { print s + 0 }') runs)"
}

for t in "${targets[@]}"; do
    replay "$t"
done

if ! command -v clang >/dev/null; then
    echo "SKIP fuzz-libfuzzer: clang not found (scripts/install-deps.sh installs it)"
elif [[ $BUILD == *asan* ]]; then
    echo "SKIP fuzz-libfuzzer: the libFuzzer build (ASan and UBSan already) runs in make test"
elif ! make --no-print-directory -j"$(nproc)" BUILD="$BUILD" fuzz-build >"$TMP/build.log" 2>&1; then
    echo "FAIL fuzz-libfuzzer: make fuzz-build failed: $(grep -m3 -iE 'error' "$TMP/build.log")"
    failed=1
else
    for t in "${targets[@]}"; do
        libfuzzer "$t"
    done
fi
exit $failed
