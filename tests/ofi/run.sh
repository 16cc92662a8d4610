#!/usr/bin/env bash
# The RDMA engine (src/transport/rdma) over real providers on one machine (issue 8):
#   - every collective of the integration suite over libfabric (ANYCCL_NET=ofi, NCCL_SHM_DISABLE=1:
#     ranks of this host use the network transport) on 2 and 3 ranks, with 2
#     slots per connector (ANYCCL_NSLOTS=2) so flow control (credits) is exercised on every chunk,
#     and send/recv on 2 ranks with 1 slot over 2 endpoints per connection (ordering across
#     endpoints);
#   - the sockets provider of libfabric (allreduce, 2 ranks);
#   - every collective between nodes of the multi-node bed (network namespaces) over ofi;
#   - transport choice: unset ANYCCL_NET keeps sockets on Ethernet, ANYCCL_NET=ofi picks ofi;
#   - error injection: a rank SIGKILLed in the middle of an allreduce; every survivor must fail
#     (not hang) within a bound, and the neighbours' errors must name the dead rank;
#   - verbs end to end (ANYCCL_NET=ib) when `ibv_devices` lists a device; otherwise SKIP.
# Prints "PASS/FAIL/SKIP <name>" per check.   BUILD=build  QUICK=1 (or ASAN_QUICK=1): 2 ranks only,
# no sockets provider
# OFI_FULL=1: also 3 nodes x 2 rails x 2 ranks on the bed (~45 s on the 2-core CI machine).
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
. tests/lib/ports.sh
INTEG=$BUILD/tests/integration
KILLER=$BUILD/tests/ofi/peer_kill
QUICK=${QUICK:-${ASAN_QUICK:-0}}
CASE_LIMIT=${CASE_LIMIT:-300}
# Sanitizer builds run several times slower: stretch every case's deadline.
if [[ $BUILD == *asan* ]]; then
    export TL_TIMEOUT_SCALE=${TL_TIMEOUT_SCALE:-4}
    CASE_LIMIT=$((CASE_LIMIT * 2))
fi
OFI_BED_NET=${OFI_BED_NET:-219} # second octet of the bed's addresses (tests/multinode uses 213)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fi_info links libfabric.so.1: if it lists the tcp provider, the library loads too.
have_libfabric() {
    command -v fi_info >/dev/null && fi_info -p tcp -t FI_EP_RDM >/dev/null 2>&1
}

# run_integ NAME ENV PROGRAM PATTERN...: runs integration cases under ENV, prefixing their lines.
run_integ() {
    local name=$1 envs=$2 prog=$3
    shift 3
    if [[ ! -x $INTEG/$prog ]]; then
        echo "FAIL $name: $INTEG/$prog is not built (run make test-build)"
        return
    fi
    local out=$tmp/$prog.out
    env $envs timeout -k 10 "$CASE_LIMIT" "$INTEG/$prog" "$@" >"$out" 2>&1
    local rc=$?
    grep -E '^(PASS|FAIL|SKIP) ' "$out" | sed -E "s@^(PASS|FAIL|SKIP) @\1 $name/@"
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $name/$prog: timed out after $CASE_LIMIT s"
    elif ! grep -qE '^(PASS|FAIL|SKIP) ' "$out"; then
        echo "FAIL $name/$prog: no case ran (status $rc)"
        tail -5 "$out" | sed 's/^/    /'
    fi
}

run_collectives() {
    local np='[23]' env="ANYCCL_NET=ofi ANYCCL_NSLOTS=2"
    [[ $QUICK != 0 ]] && np=2
    run_integ ofi "$env" allreduce "allreduce/np$np/tcp/proc"
    run_integ ofi "$env" collectives "*/np$np/tcp/proc" "large/*/np2/tcp/proc"
    run_integ ofi-1slot-2eps "ANYCCL_NET=ofi ANYCCL_NSLOTS=1 ANYCCL_OFI_EPS=2" sendrecv \
        "sendrecv/*/np2/tcp/proc"
    # threads of one process share libfabric's domain (FI_THREAD_SAFE)
    run_integ ofi-threads "ANYCCL_NET=ofi NCCL_SHM_DISABLE=1 ANYCCL_NSLOTS=2" allreduce \
        "allreduce/np2/threads" "allreduce/np3/initall"
    # the sockets provider's progress threads make it slow on 2 cores (~70 s under ASan): not quick
    if [[ $QUICK != 0 ]]; then
        echo "SKIP ofi-sockets/allreduce/np2/tcp/proc: quick mode (QUICK/ASAN_QUICK)"
    else
        run_integ ofi-sockets "ANYCCL_NET=ofi ANYCCL_OFI_PROVIDER=sockets ANYCCL_NSLOTS=2" \
            allreduce "allreduce/np2/tcp/proc"
    fi
}

# check_choice NAME ENV WANT: the transport NCCL_DEBUG=INFO reports for a 2-rank TCP case.
check_choice() {
    local name=$1 envs=$2 want=$3 out=$tmp/choice.out
    env $envs NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET timeout -k 5 120 \
        "$INTEG/allreduce" "allreduce/np2/tcp/proc" >"$out" 2>&1
    local got
    got=$(grep -oE 'rank [0-9]+ -> rank [0-9]+ \(host [^)]*\) via [a-z]+' "$out" | awk '{print $NF}' |
        sort -u | tr '\n' ' ')
    if ! grep -q '^PASS ' "$out"; then
        echo "FAIL choice/$name: the case failed: $(grep -m1 '^FAIL' "$out")"
    elif [[ $got == "$want " ]]; then
        echo "PASS choice/$name (via $want)"
    else
        echo "FAIL choice/$name: wanted via $want, got via ${got:-nothing logged}"
    fi
}

# Between "nodes" of the multi-node bed (network namespaces joined by veth and bridges, see
# docs/multinode.md): K nodes, R rails, L ranks per node; shm inside a node, ofi between nodes.
run_multinode() { # K R L
    local k=$1 nrails=$2 nlocal=$3 name="ofi-multinode/${1}n${2}r${3}l"
    local bed=$PWD/tests/multinode/bed.sh mn n=$(($1 * $3)) script=$tmp/mn.sh
    mn=$(cd "$BUILD" 2>/dev/null && pwd)/tests/multinode/mn_colls
    if [[ $(id -u) != 0 ]] || ! ip netns add "acofiprobe$$" 2>/dev/null; then
        echo "SKIP $name: network namespaces unavailable (needs root and ip netns)"
        return
    fi
    ip netns del "acofiprobe$$"
    if [[ ! -x $mn ]]; then
        echo "FAIL $name: $mn is not built (run make test-build)"
        return
    fi
    # one script run by bed.sh inside its bed: starts every rank in its node, waits for all
    {
        echo "pids=()"
        for ((node = 0; node < k; node++)); do
            for ((i = 0; i < nlocal; i++)); do
                local rank=$((node * nlocal + i))
                echo "timeout -k 5 120 $bed exec $node env ANYCCL_NET=ofi ANYCCL_NSLOTS=2" \
                    "NCCL_SOCKET_IFNAME=rail NCCL_COMM_ID=10.$OFI_BED_NET.0.1:29613" \
                    "$mn $name $rank $n - >$tmp/mn$rank.out 2>$tmp/mn$rank.err & pids+=(\$!)"
            done
        done
        echo 'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc'
    } >"$script"
    # bed.sh wants BED_ID=acbed-<pid of a live owner>: this subshell's pid
    (BED_ID=acbed-$BASHPID BED_NET=$OFI_BED_NET timeout -k 10 180 "$bed" run "$k" "$nrails" -- \
        bash "$script") >"$tmp/mn.log" 2>&1
    local rc=$?
    grep -hE '^(PASS|FAIL) ' "$tmp/mn0.out"
    if ((rc != 0)); then
        echo "FAIL $name: a rank failed or timed out (status $rc)"
        cat "$tmp"/mn*.err "$tmp/mn.log" 2>/dev/null | grep -v '^$' | head -8 | sed 's/^/    /'
    else
        echo "PASS $name"
    fi
}

# The victim (last rank) kills itself in its 4th allreduce; survivors must fail within the bound.
run_peer_kill() {
    local np=$1 name="peer-kill/np$1" victim=$(($1 - 1)) bound=30
    if [[ ! -x $KILLER ]]; then
        echo "FAIL $name: $KILLER is not built (run make test-build)"
        return
    fi
    local port pids=() start=$SECONDS
    port=$(free_port)
    for ((r = 0; r < np; r++)); do
        # Distinct host ids: ranks are "nodes" to each other, so the executor's same-host check of
        # peer pids does not fire and RAS is off: the transport itself must notice.
        env NCCL_COMM_ID=127.0.0.1:$port ANYCCL_NET=ofi NCCL_SHM_DISABLE=1 ANYCCL_RAS_ENABLE=0 \
            ANYCCL_HOSTID=ofi-node$r ANYCCL_TIMEOUT=120 ANYCCL_FLIGHT_RECORDER_FILE=none \
            timeout -k 5 $((bound + 30)) "$KILLER" "$r" "$np" "$victim" 3 \
            >"$tmp/kill$r.out" 2>"$tmp/kill$r.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    local took=$((SECONDS - start)) bad="" named=0
    for ((r = 0; r < victim; r++)); do
        local line
        line=$(grep -m1 '^RESULT' "$tmp/kill$r.out")
        if [[ -z $line ]]; then
            bad+=" rank $r gave no result ($(grep -m1 -E 'SETUP|WARN' "$tmp/kill$r.out" \
                "$tmp/kill$r.err" | head -c 200));"
        elif [[ $line == *" rc=0 "* ]]; then
            bad+=" rank $r saw no error;"
        elif [[ $line == *"rank $victim "* ]]; then
            named=$((named + 1))
        fi
    done
    if ((took > bound)); then
        bad+=" survivors took $took s (bound $bound s);"
    fi
    if ((named == 0)); then
        bad+=" no survivor's error names rank $victim;"
    fi
    if [[ -n $bad ]]; then
        echo "FAIL $name:$bad"
        grep -h '^RESULT' "$tmp"/kill*.out | sed 's/^/    /'
    else
        echo "PASS $name (errors in $took s; $named survivor(s) name rank $victim)"
    fi
}

run_verbs() {
    local devs
    if ! command -v ibv_devices >/dev/null; then
        echo "SKIP ib/end-to-end: ibv_devices not installed (ibverbs-utils)"
        return
    fi
    devs=$(ibv_devices 2>/dev/null | awk 'NR > 2 {print $1}')
    if [[ -z $devs ]]; then
        echo "SKIP ib/end-to-end: ibv_devices lists no RDMA device on this machine (no HCA, no" \
            "soft-RoCE); the verbs provider ran only as compiled code and unit tests"
        return
    fi
    run_integ "ib" "ANYCCL_NET=ib ANYCCL_NSLOTS=2" allreduce "allreduce/np2/tcp/proc"
    run_integ "ib-2qps" "ANYCCL_NET=ib ANYCCL_NSLOTS=1 NCCL_IB_QPS_PER_CONNECTION=2" sendrecv \
        "sendrecv/*/np2/tcp/proc"
}

if ! have_libfabric; then
    echo "SKIP ofi: libfabric (libfabric1, fi_info from libfabric-bin) with the tcp provider is" \
        "not installed; run scripts/install-deps.sh"
else
    run_collectives
    check_choice default-ethernet "" socket
    check_choice ofi "ANYCCL_NET=ofi" ofi
    run_peer_kill 3
    run_multinode 2 1 1
    [[ ${OFI_FULL:-0} != 0 ]] && run_multinode 3 2 2 # ~45 s here: OFI_FULL=1
fi
run_verbs
