#!/usr/bin/env bash
# Link-down test (issue 6): two "nodes" of the multi-node bed (tests/multinode/bed.sh), one or
# two ranks each, run allreduces over TCP in a loop; then node 1's NIC goes down (ip link set
# rail0 down, which sends nothing: no FIN, no RST). Every rank must return an error, not hang,
# within a bound, and its message must name the connection: the peer's rank and the address it
# was reached at (10.<net>.0.<k+1>). Cases, each with its bound (twice that under ASan):
#   ras      RAS on (the default): missed heartbeats (ANYCCL_RAS_DEAD_MS, 5 s) fail the call;
#            bound 10 s
#   ras-2x2  the same with two ranks per node (local peers over shared memory): every rank
#            names a rank of the other node
#   noras    ANYCCL_RAS_ENABLE=0: the socket transport's own bound (15 s of unanswered keepalive
#            probes; docs/troubleshooting.md); bound 25 s. Before the link goes down, rank 1 is
#            16 s late to its second allreduce, longer than that bound, while rank 0 waits in it:
#            a live rank, however late, must not be failed ("PASS .../noras-late").
# Prints "PASS|FAIL multinode-linkdown/<case>" and an INFO line with each rank's time to error.
# Not root, or no network namespaces: SKIP.
#   BUILD=build   LD_NET=217 (the bed's addresses 10.<net>.0.k)
#   tests/multinode/linkdown.sh [CASE...]
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BED=$PWD/tests/multinode/bed.sh
BIN=$BUILD/tests/multinode/linkdown
export BED_ID=acbed-$$
export BED_NET=${LD_NET:-217}
READY_LIMIT=60
RUN_LIMIT=90 # a rank's whole life: set-up, the loop and the wait for its error
SLOW=1
[[ $BUILD == *asan* ]] && SLOW=2

failed=0
pids=()
TMP=""

fail() {
    echo "FAIL $*"
    failed=1
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    "$BED" down 2>/dev/null
    [[ -n $TMP ]] && rm -rf "$TMP"
}

skip_reason() {
    [[ $(id -u) == 0 ]] || { echo "not root (network namespaces need CAP_SYS_ADMIN)"; return; }
    command -v ip >/dev/null || { echo "ip (iproute2) not found"; return; }
    if ! ip netns add "$BED_ID-probe" 2>/dev/null; then
        echo "ip netns add fails here (no network namespaces in this container?)"
        return
    fi
    ip netns del "$BED_ID-probe" 2>/dev/null
}

# The last line of a rank's output that starts with word.
line_of() { # file word
    grep -a "^$2 " "$1" | tail -n 1
}

nlines() { # case word: how many ranks printed word
    cat "$TMP/$1".*.out 2>/dev/null | grep -c "^$2"
}

run_case() { # name ranks-per-node bound late-s env...
    local name=$1 nlocal=$2 bound=$(($3 * SLOW)) late=$4 life=$((RUN_LIMIT * SLOW)) r n k t0
    local line terr dt times="" bad="" peers addr deadline
    shift 4
    n=$((2 * nlocal))
    if ! "$BED" up 2 1 2>"$TMP/$name.bed.err"; then
        fail "multinode-linkdown/$name: bed.sh up 2 1 failed: $(head -c 300 "$TMP/$name.bed.err")"
        return
    fi
    rm -f "$TMP/$name.id"
    for ((r = 0; r < n; r++)); do
        timeout -k 5 "$life" "$BED" exec $((r / nlocal)) env -u NCCL_COMM_ID -u ANYCCL_COMM_ID \
            NCCL_SOCKET_IFNAME=rail0 LD_PRELOAD="$SAN_PRELOAD" "$@" \
            "$BIN" "$r" "$n" "$TMP/$name.id" "$life" "$late" >"$TMP/$name.$r.out" \
            2>"$TMP/$name.$r.err" &
        pids+=($!)
    done
    deadline=$((SECONDS + READY_LIMIT * SLOW + late))
    while ((SECONDS < deadline)) && (($(nlines "$name" STEP2) < n)) &&
        (($(nlines "$name" ERROR) == 0)); do
        sleep 0.2
    done
    if (($(nlines "$name" STEP2) < n)); then
        fail "multinode-linkdown/$name: the ranks did not complete two allreduces within" \
            "$((READY_LIMIT * SLOW + late))s (rank $((n - 1)) ${late}s late):" \
            "$(cat "$TMP/$name".*.out | grep -m2 '^ERROR') $(head -c 400 "$TMP/$name".*.err |
                tr '\n' ' ')"
        cleanup_case
        return
    fi
    ((late > 0)) &&
        echo "PASS multinode-linkdown/$name-late (rank $((n - 1)) ${late}s late, no error)"
    sleep 1 # allreduces in flight
    t0=$(date +%s.%N)
    ip -n "$BED_ID-node1" link set rail0 down
    for ((r = 0; r < n; r++)); do
        wait "${pids[r]}"
    done
    pids=()
    for ((r = 0; r < n; r++)); do
        # The peers at fault: the ranks of the other node, at its address.
        k=$((1 - r / nlocal))
        peers=$(seq -s '|' $((k * nlocal)) $((k * nlocal + nlocal - 1)))
        addr=10.$BED_NET.0.$((k + 1))
        line=$(line_of "$TMP/$name.$r.out" ERROR)
        if [[ -z $line ]]; then
            bad+=" rank $r returned no error ($(tail -n 1 "$TMP/$name.$r.out"; head -c 300 \
                "$TMP/$name.$r.err" | tr '\n' ' '));"
            continue
        fi
        terr=$(awk '{ print $2 }' <<<"$line")
        dt=$(awk -v a="$terr" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
        times+=" rank $r ${dt}s;"
        echo "INFO multinode-linkdown/$name: rank $r: ${line#ERROR * }"
        if awk -v d="$dt" -v b="$bound" 'BEGIN { exit !(d > b) }'; then
            bad+=" rank $r's error came ${dt}s after the link went down (bound ${bound}s);"
        fi
        if [[ $line != *" result 6: "* && $line != *" result 2: "* ]]; then
            bad+=" rank $r returned $(awk '{ print $3, $4 }' <<<"$line") (want ncclRemoteError 6"
            bad+=" or ncclSystemError 2);"
        fi
        if ! [[ $line =~ rank\ ($peers)\ \( && $line == *"$addr"* ]]; then
            bad+=" rank $r's message does not name the connection (rank $peers at $addr);"
        fi
    done
    echo "INFO multinode-linkdown/$name: time from link down to error (bound ${bound}s):$times"
    if [[ -n $bad ]]; then
        fail "multinode-linkdown/$name:$bad"
    else
        echo "PASS multinode-linkdown/$name"
    fi
    "$BED" down
}

cleanup_case() {
    local p
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    pids=()
    "$BED" down 2>/dev/null
}

reason=$(skip_reason)
if [[ -n $reason ]]; then
    echo "SKIP multinode-linkdown: $reason"
    exit 0
fi
if [[ ! -x $BIN ]]; then
    echo "FAIL multinode-linkdown: $BIN is not built (make test-build)"
    exit 1
fi
SAN_PRELOAD=$(ldd "$BIN" | awk '/lib(a|ub)san/ { printf "%s ", $3 }')
trap cleanup EXIT
trap 'exit 130' INT TERM
TMP=$(mktemp -d "${TMPDIR:-/tmp}/linkdown.XXXXXX")
cases=("$@")
((${#cases[@]} > 0)) || cases=(ras ras-2x2 noras)
for c in "${cases[@]}"; do
    case $c in
    ras) run_case ras 1 10 0 ANYCCL_RAS_ENABLE=1 ;;
    ras-2x2) run_case ras-2x2 2 10 0 ANYCCL_RAS_ENABLE=1 ;;
    noras) run_case noras 1 25 16 ANYCCL_RAS_ENABLE=0 ;;
    *) fail "multinode-linkdown: unknown case $c" ;;
    esac
done
exit $failed
