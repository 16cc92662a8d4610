#!/usr/bin/env bash
# Runs every integration-test program in $BUILD/tests/integration (one per tests/integration/*.c).
# Each program enumerates its own cases (ranks, transports, modes: see tests/lib/launcher.h) and
# prints "PASS/FAIL/SKIP <case>" lines; this script adds a time limit per program and a FAIL line
# for a program that is missing, times out or dies without saying why.
#   BUILD=build  QUICK=1 (or ASAN_QUICK=1): skip the cases marked slow
#   tests/integration/run.sh [PROGRAM...]   e.g. tests/integration/run.sh allreduce
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BIN_DIR=$BUILD/tests/integration

# Seconds per program; programs not listed get DEFAULT_LIMIT. Raise a limit here when a program
# grows, rather than letting `timeout` cut it.
DEFAULT_LIMIT=600
declare -A LIMIT=(
    [allreduce]=900
    [errors]=300
)

args=()
if [[ ${QUICK:-0} != 0 || ${ASAN_QUICK:-0} != 0 ]]; then
    args+=(--quick)
fi
# Sanitizer builds run several times slower: stretch every case's deadline.
if [[ $BUILD == *asan* ]]; then
    export TL_TIMEOUT_SCALE=${TL_TIMEOUT_SCALE:-4}
fi

if (($# > 0)); then
    programs=("$@")
else
    programs=()
    for src in tests/integration/*.c; do
        [[ -e $src ]] && programs+=("$(basename "$src" .c)")
    done
fi

if ((${#programs[@]} == 0)); then
    echo "SKIP integration: no programs in tests/integration"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nfailed=0
for prog in "${programs[@]}"; do
    bin=$BIN_DIR/$prog
    if [[ ! -x $bin ]]; then
        echo "FAIL $prog: $bin is not built (run make test-build)"
        nfailed=$((nfailed + 1))
        continue
    fi
    limit=${LIMIT[$prog]:-$DEFAULT_LIMIT}
    if [[ $BUILD == *asan* ]]; then
        limit=$((limit * 2))
    fi
    out=$tmp/$prog.out
    { timeout -k 10 "$limit" "$bin" "${args[@]}"; echo $? >"$tmp/$prog.rc"; } | tee "$out"
    rc=$(cat "$tmp/$prog.rc")
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $prog: timed out after $limit s (cases not listed above did not run)"
        nfailed=$((nfailed + 1))
    elif ! grep -qE '^(PASS|FAIL|SKIP) ' "$out"; then
        echo "FAIL $prog: exited with status $rc and reported no case"
        nfailed=$((nfailed + 1))
    elif [[ $rc != 0 ]] && ! grep -q '^FAIL ' "$out"; then
        echo "FAIL $prog: exited with status $rc after its cases"
        nfailed=$((nfailed + 1))
    elif grep -q '^FAIL ' "$out"; then
        nfailed=$((nfailed + 1))
    fi
done
((nfailed == 0))
