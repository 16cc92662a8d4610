#!/usr/bin/env bash
# Runs every test suite: each unit-test binary under $BUILD/tests/unit (Criterion), then every
# script tests/<suite>/run.sh, which prints "PASS <name>", "FAIL <name>: <why>" or
# "SKIP <name>: <reason>" per check. Each has a time limit. Prints a per-suite summary and ends
# with exactly one line "N passed, N failed, N skipped"; exits 1 if anything failed.
#   BUILD=build (the build folder)   UNIT_JOBS=2 (Criterion --jobs)
#   tests/run.sh [SUITE...]          SUITE: unit, or a folder of tests/ with a run.sh
# Full logs: $BUILD/test-logs/.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
export BUILD=${BUILD:-build}
UNIT_JOBS=${UNIT_JOBS:-2}
UNIT_LIMIT=${UNIT_LIMIT:-300}
# Seconds per suite script; suites not listed get DEFAULT_LIMIT.
DEFAULT_LIMIT=600
declare -A LIMIT=(
    [integration]=1500
    [install]=300
)
if [[ $BUILD == *asan* ]]; then
    UNIT_LIMIT=$((UNIT_LIMIT * 3))
fi

LOGS=$BUILD/test-logs
mkdir -p "$LOGS"
# Criterion's runner leaks a few bytes at exit; LeakSanitizer must not fail the unit binaries for it.
printf 'leak:libcriterion.so\n' >"$LOGS/lsan.supp"
supp=$(cd "$LOGS" && pwd)/lsan.supp
export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
total_pass=0 total_fail=0 total_skip=0
summary=()

add_summary() { # suite passed failed skipped seconds
    summary+=("$(printf '  %-28s %5d passed %4d failed %4d skipped %6ds' "$@")")
    total_pass=$((total_pass + $2)) total_fail=$((total_fail + $3)) total_skip=$((total_skip + $4))
}

# One Criterion binary. Counts come from its "Synthesis: Tested: N | Passing: N | Failing: N |
# Crashing: N" line (Failing includes Crashing); skipped tests from its [SKIP] lines.
run_unit_binary() { # bin -> sets u_pass u_fail u_skip
    local bin=$1 name=${1#"$BUILD"/tests/unit/} log rc synth
    log=$LOGS/unit/$name.log
    mkdir -p "$(dirname "$log")"
    timeout -k 10 "$UNIT_LIMIT" "$bin" --jobs "$UNIT_JOBS" --verbose >"$log" 2>&1
    rc=$?
    synth=$(grep -a 'Synthesis: Tested:' "$log" | tail -1)
    u_skip=$(grep -ac '^\[SKIP\]' "$log")
    if [[ -z $synth ]]; then
        u_pass=0 u_fail=1
        if [[ $rc == 124 || $rc == 137 ]]; then
            echo "FAIL unit/$name: timed out after $UNIT_LIMIT s (log: $log)"
        else
            echo "FAIL unit/$name: exited with status $rc without a Criterion summary (log: $log)"
        fi
        tail -n 15 "$log" | sed 's/^/    /'
        return
    fi
    u_pass=$(sed -E 's/.*Passing: ([0-9]+).*/\1/' <<<"$synth")
    u_fail=$(sed -E 's/.*Failing: ([0-9]+).*/\1/' <<<"$synth")
    if ((u_fail > 0)); then
        echo "FAIL unit/$name: $u_fail of $((u_pass + u_fail)) tests failed (log: $log)"
        grep -aE '^\[(FAIL|----)\]' "$log" | head -n 40 | sed 's/^/    /'
    elif [[ $rc != 0 ]]; then
        echo "FAIL unit/$name: exited with status $rc although every test passed (log: $log)"
        u_fail=1
    fi
}

run_unit() {
    local start=$SECONDS pass=0 fail=0 skip=0 bins bin
    # test_<unit> binaries only: helpers built beside them (fake drivers, *.so) are not tests.
    mapfile -t bins < <(find "$BUILD/tests/unit" -type f -name 'test_*' ! -name '*.*' -perm -u+x \
        2>/dev/null | sort)
    echo "== unit: ${#bins[@]} binaries"
    for bin in "${bins[@]}"; do
        run_unit_binary "$bin"
        pass=$((pass + u_pass)) fail=$((fail + u_fail)) skip=$((skip + u_skip))
    done
    local nsrc
    nsrc=$(find tests/unit -name 'test_*.c' 2>/dev/null | wc -l)
    if ((nsrc > ${#bins[@]})); then
        echo "FAIL unit: $nsrc test sources but ${#bins[@]} binaries in $BUILD (make test-build)"
        fail=$((fail + 1))
    fi
    add_summary unit "$pass" "$fail" "$skip" $((SECONDS - start))
}

run_suite() { # suite
    local suite=$1 start=$SECONDS limit log rc pass fail skip
    limit=${LIMIT[$suite]:-$DEFAULT_LIMIT}
    [[ $BUILD == *asan* ]] && limit=$((limit * 2))
    log=$LOGS/$suite.log
    echo "== $suite"
    { timeout -k 10 "$limit" bash "tests/$suite/run.sh"; echo $? >"$log.rc"; } 2>&1 | tee "$log"
    rc=$(cat "$log.rc")
    pass=$(grep -ac '^PASS ' "$log")
    fail=$(grep -ac '^FAIL ' "$log")
    skip=$(grep -ac '^SKIP ' "$log")
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $suite: timed out after $limit s"
        fail=$((fail + 1))
    elif [[ $rc != 0 ]] && ((fail == 0)); then
        echo "FAIL $suite: run.sh exited with status $rc but reported no failure"
        fail=$((fail + 1))
    fi
    add_summary "$suite" "$pass" "$fail" "$skip" $((SECONDS - start))
}

suites=("$@")
if ((${#suites[@]} == 0)); then
    suites=(unit)
    for script in tests/*/run.sh; do
        [[ -e $script ]] && suites+=("$(basename "$(dirname "$script")")")
    done
fi
for suite in "${suites[@]}"; do
    if [[ $suite == unit ]]; then
        run_unit
    elif [[ -f tests/$suite/run.sh ]]; then
        run_suite "$suite"
    else
        echo "FAIL $suite: no tests/$suite/run.sh"
        add_summary "$suite" 0 1 0 0
    fi
done

echo "== summary ($BUILD)"
printf '%s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
((total_fail == 0))
