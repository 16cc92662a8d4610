#!/usr/bin/env bash
# RAS fault tests: processes started by tests/ras/ras_job.c (public API + environment variables),
# faults injected from here (kill -9, SIGSTOP), the anyccl-ras client run while a job is stuck.
# One line per check: PASS/FAIL/SKIP <name>. Every job runs under `timeout`; no process is left.
#   BUILD=build tests/ras/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LIB=$BUILD/lib
CLIENT=$BUILD/bin/anyccl-ras
WORK=$(mktemp -d /tmp/anyccl-ras-test.XXXXXX)
JOB=$WORK/ras_job
nfail=0
JOBPID=

cleanup() {
    if [[ -n $JOBPID ]]; then
        pkill -9 -P "$JOBPID" 2>/dev/null # the job's ranks (children of this launcher only)
        kill -9 "$JOBPID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

pass() { echo "PASS $1"; }
fail() {
    echo "FAIL $1: $2"
    nfail=$((nfail + 1))
    [[ -f $WORK/out ]] && sed 's/^/    /' "$WORK/out" | tail -n 20
}

if [[ ! -f $LIB/libanyccl.so || ! -x $CLIENT ]]; then
    echo "SKIP ras: $LIB/libanyccl.so or $CLIENT missing (run make first)"
    exit 0
fi
# A sanitizer build of the library needs the job built with the same runtime.
san=()
if readelf -d "$LIB/libanyccl.so" 2>/dev/null | grep -q 'libasan'; then
    san=(-fsanitize=address,undefined -fno-omit-frame-pointer)
fi
if ! ${CC:-cc} -std=gnu11 -D_GNU_SOURCE -Iinclude -O1 -g -pthread -Wall -Wextra -Werror \
    -Wno-unused-parameter "${san[@]}" -o "$JOB" tests/ras/ras_job.c -L"$LIB" -lanyccl \
    -Wl,-rpath,"$(cd "$LIB" && pwd)" 2>"$WORK/cc.log"; then
    echo "FAIL ras/build: tests/ras/ras_job.c does not compile"
    sed 's/^/    /' "$WORK/cc.log"
    exit 1
fi

# free_port: the RAS client port of a job.
. tests/lib/ports.sh

# start_job ARGS...: runs the job in the background, output in $WORK/out.
start_job() {
    : >"$WORK/out"
    ANYCCL_FLIGHT_RECORDER_FILE=$WORK/fr.%p.txt timeout -k 5 60 "$JOB" "$@" >"$WORK/out" 2>&1 &
    JOBPID=$!
}
wait_job() { # seconds -> 0 when the job ended
    local end=$((SECONDS + $1))
    while kill -0 "$JOBPID" 2>/dev/null; do
        ((SECONDS >= end)) && return 1
        sleep 0.2
    done
    wait "$JOBPID" 2>/dev/null
    JOBPID=
    return 0
}
wait_ready() { # nranks
    local end=$((SECONDS + 30))
    while (($(grep -c '^READY' "$WORK/out") < $1)); do
        ((SECONDS >= end)) && return 1
        sleep 0.1
    done
}
rank_pid() { awk -v r="$1" '$1 == "READY" && $2 == r { print $3 }' "$WORK/out"; }
now_ms() { date +%s%3N; }

# (a) kill -9 of one rank: every survivor fails within 15 s with a message naming it.
kill_test() { # nranks victim
    local n=$1 victim=$2 name="ras/kill9_${1}ranks"
    start_job -n "$n" -s 40
    if ! wait_ready "$n"; then fail "$name" "ranks did not start"; wait_job 1; return; fi
    sleep 1
    local t0
    t0=$(now_ms)
    kill -9 "$(rank_pid "$victim")"
    if ! wait_job 25; then fail "$name" "job still running 25 s after the kill"; return; fi
    local nerr worst=0
    nerr=$(grep -c "^ERROR .*rank $victim " "$WORK/out")
    while read -r _ _ ms _; do
        ((ms - t0 > worst)) && worst=$((ms - t0))
    done < <(grep '^ERROR' "$WORK/out")
    if ((nerr != n - 1)); then
        fail "$name" "$nerr of $((n - 1)) survivors reported an error naming rank $victim"
    elif ((worst > 15000)); then
        fail "$name" "slowest survivor failed $worst ms after the kill (bound 15000)"
    else
        pass "$name (survivors failed within $worst ms)"
    fi
}

# (b) SIGSTOP: survivors fail after ~ANYCCL_TIMEOUT; the client names the rank and the op.
stop_test() {
    local name=ras/sigstop_client port
    port=$(free_port)
    ANYCCL_TIMEOUT=5 start_job -n 4 -s 40 -p "$port"
    if ! wait_ready 4; then fail "$name" "ranks did not start"; wait_job 1; return; fi
    sleep 1
    local victim t0
    victim=$(rank_pid 2)
    t0=$(now_ms)
    kill -STOP "$victim"
    sleep 2
    timeout 15 "$CLIENT" --port "$port" --timeout 1 >"$WORK/report" 2>&1
    local t_err=0 nerr=0 end=$((SECONDS + 20))
    while ((nerr < 3 && SECONDS < end)); do
        sleep 0.2
        nerr=$(grep -c '^ERROR' "$WORK/out")
    done
    kill -CONT "$victim" 2>/dev/null
    kill -9 "$victim" 2>/dev/null
    wait_job 15 || fail "$name" "job still running after the stopped rank was killed"
    while read -r _ _ ms _; do
        ((ms - t0 > t_err)) && t_err=$((ms - t0))
    done < <(grep '^ERROR' "$WORK/out")
    if ((nerr < 3)); then
        fail "$name" "only $nerr of 3 survivors failed within 20 s of SIGSTOP"
    elif ((t_err < 3000 || t_err > 12000)); then
        fail "$name" "survivors failed $t_err ms after SIGSTOP (expected ~5000)"
    elif ! grep -q "rank 2 " "$WORK/report" || ! grep -q "AllReduce" "$WORK/report"; then
        fail "$name" "client report does not name rank 2 and AllReduce: $(head -c 600 "$WORK/report")"
    else
        pass "$name (errors after $t_err ms; client named rank 2 and AllReduce)"
    fi
}

# (c) + (e) ncclCommAbort from a second thread ends a waiting allreduce; the dump lists the ops.
abort_test() {
    rm -f "$WORK"/fr.*.txt
    start_job -n 2 -m abort
    if ! wait_job 20; then fail ras/abort_thread "job still running after 20 s"; return; fi
    local line ms
    line=$(grep '^ABORTED 0' "$WORK/out")
    ms=${line##* }
    if [[ -z $line || $(awk '{print $3}' <<<"$line") == 0 ]]; then
        fail ras/abort_thread "the waiting allreduce did not return an error: '$line'"
    elif ((ms > 2000)); then
        fail ras/abort_thread "the waiting allreduce returned $ms ms after ncclCommAbort"
    else
        pass "ras/abort_thread (returned $ms ms after ncclCommAbort)"
    fi
    local fr
    fr=$(grep -l "reason: ncclCommAbort" "$WORK"/fr.*.txt 2>/dev/null | head -1)
    if [[ -z $fr ]]; then
        fail ras/flight_recorder "no flight recorder file with reason ncclCommAbort in $WORK"
    elif (($(sed -n '/reason: ncclCommAbort/,$p' "$fr" |
        grep -c '^seq=[1-6] AllReduce count=1024 type=float op=sum') != 6)); then
        fail ras/flight_recorder "dump does not list the 6 allreduces: $(head -c 800 "$fr")"
    elif grep -q '^seq=6 AllReduce .*result=no error' "$fr" ||
        ! grep -q '^seq=6 AllReduce .*state=' "$fr"; then
        fail ras/flight_recorder "op #6 (aborted) is not shown as failed"
    else
        pass ras/flight_recorder
    fi
}

# (d) garbage and wrong-secret connections to the root, the ranks' RAS and bootstrap ports.
poke_test() {
    start_job -n 4 -i 1500 -m poke
    if ! wait_job 45; then fail ras/garbage_connections "job did not finish in 45 s"; return; fi
    local ndone npoked
    ndone=$(grep -c '^DONE' "$WORK/out")
    npoked=$(grep -c '^POKED [0-9]' "$WORK/out")
    if ((ndone != 4 || npoked != 4)) || grep -q '^WRONG\|^ERROR' "$WORK/out" ||
        (($(grep -c '^EXIT [0-9]* 0$' "$WORK/out") != 4)); then
        fail ras/garbage_connections "$ndone of 4 ranks finished, $npoked poked"
    else
        pass "ras/garbage_connections ($(grep '^POKED' "$WORK/out" | tr '\n' ' '))"
    fi
}

# A healthy job: the report lists its processes and the communicator.
status_test() {
    local port
    port=$(free_port)
    start_job -n 3 -s 6 -p "$port"
    if ! wait_ready 3; then fail ras/status "ranks did not start"; wait_job 1; return; fi
    sleep 1.5
    timeout 15 "$CLIENT" --port "$port" --timeout 2 >"$WORK/report" 2>&1
    timeout 15 "$CLIENT" --port "$port" --timeout 2 --json >"$WORK/report.json" 2>&1
    wait_job 20
    if (($(grep -c '^EXIT [0-9]* 0$' "$WORK/out") != 3)); then
        fail ras/status "not every rank exited with status 0"
    elif ! grep -q "3 ranks in 3 process(es), 3 answered" "$WORK/report"; then
        fail ras/status "report: $(head -c 600 "$WORK/report")"
    elif ! grep -q '"nranks":3' "$WORK/report.json"; then
        fail ras/status "json report: $(head -c 600 "$WORK/report.json")"
    else
        pass ras/status
    fi
}

status_test
kill_test 4 2
kill_test 8 5
stop_test
abort_test
poke_test
exit $((nfail > 0))
