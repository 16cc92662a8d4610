#!/usr/bin/env bash
# GPU-initiated networking (GIN) between the network namespaces of the multi-node bed
# (tests/multinode/bed.sh): one rank per process, each inside its node, so every pair that is not
# on one node crosses veth links and a bridge, as between machines.
#
#   tests/multinode/gin.sh          (run by tests/multinode/run.sh, so by make test) 2 nodes x 1
#                                   rail x 2 ranks: the GIN all-to-all (ANYCCL_GPU_INITIATED=1)
#                                   exact with the socket backend (ANYCCL_NET unset) and with the
#                                   rdma backend (ANYCCL_NET=ofi: the RDMA engine over libfabric's
#                                   tcp;ofi_rxm), each rank's log naming the backend it used
#   tests/multinode/gin.sh bench    4 nodes x 1 rail x 1 rank: all-to-all time for 8 B .. 64 KiB per
#                                   peer, GIN against the normal path, over sockets and over ofi
#                                   (GIN_REPS alternating runs each, default 3); then the bandwidth
#                                   of one 64 MiB send/recv between two nodes over the socket
#                                   transport and over the ofi engine, against a plain TCP stream
#                                   between the same two namespaces. Prints tables, asserts nothing.
# Prints "PASS/FAIL/SKIP <name>" per check. Needs root (network namespaces); otherwise SKIP.
#   BUILD=build   GIN_BED_NET=221 (second octet of the bed's addresses)
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BED=$PWD/tests/multinode/bed.sh
BIN=$BUILD/tests/multinode/mn_gin
LIMIT=120
[[ $BUILD == *asan* ]] && LIMIT=360
MODE=${1:-check}
REPS=${GIN_REPS:-3}
export BED_ID=acbed-$$
export BED_NET=${GIN_BED_NET:-221}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mn-gin.XXXXXX")
SAN_PRELOAD=""
failed=0

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    "$BED" down 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $(id -u) != 0 ]] || ! command -v ip >/dev/null; then
    echo "SKIP multinode-gin: not root or no iproute2 (network namespaces)"
    exit 0
fi
if [[ ! -x $BIN ]]; then
    echo "FAIL multinode-gin: $BIN is not built (run make test-build)"
    exit 1
fi
SAN_PRELOAD=$(ldd "$BIN" | awk '/lib(a|ub)san/ { printf "%s ", $3 }')

have_libfabric() {
    command -v fi_info >/dev/null && fi_info -p tcp -t FI_EP_RDM >/dev/null 2>&1
}

# Runs one job: NNODES x NLOCAL ranks of mn_gin MODE, rank r = node * NLOCAL + local, on rail 0,
# with the variables in ENVS. Outputs in $TMP/NAME.<rank>.out; fails when a rank does.
run_job() { # name nnodes nlocal envs mode args...
    local name=$1 nnodes=$2 nlocal=$3 envs=$4 mode=$5 k i r rc=0 pids=()
    shift 5
    local n=$((nnodes * nlocal)) idf=$TMP/$name.id
    rm -f "$idf"
    for ((k = 0; k < nnodes; k++)); do
        for ((i = 0; i < nlocal; i++)); do
            r=$((k * nlocal + i))
            # shellcheck disable=SC2086 # envs is a list of VAR=VALUE words
            timeout -k 5 "$LIMIT" "$BED" exec "$k" env -u NCCL_COMM_ID -u ANYCCL_COMM_ID \
                NCCL_SOCKET_IFNAME=rail0 ANYCCL_INIT_TIMEOUT=30 LD_PRELOAD="$SAN_PRELOAD" $envs \
                "$BIN" "$mode" "$r" "$n" "$idf" "$@" >"$TMP/$name.$r.out" 2>&1 &
            pids+=($!)
        done
    done
    for ((r = 0; r < n; r++)); do
        wait "${pids[r]}" || rc=1
    done
    return $rc
}

check_case() { # name backend-log envs
    local name=$1 logged=$2 envs=$3 n=4 passed named
    run_job "$name" 2 2 "ANYCCL_GPU_INITIATED=1 NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET $envs" check
    local rc=$?
    passed=$(cat "$TMP/$name".*.out | grep -c '^PASS alltoall rank')
    named=$(cat "$TMP/$name".*.out | grep -c "GIN: engine=sw backend=$logged ")
    if [[ $rc != 0 || $passed != "$n" ]]; then
        echo "FAIL multinode-gin/$name: $passed of $n ranks exact (status $rc)"
        cat "$TMP/$name".*.out | grep -E '^FAIL|WARN' | head -5 | sed 's/^/    /'
        failed=1
    elif [[ $named != "$n" ]]; then
        echo "FAIL multinode-gin/$name: exact, but $named of $n ranks logged backend=$logged"
        failed=1
    else
        echo "PASS multinode-gin/$name"
    fi
}

run_checks() {
    if ! "$BED" up 2 1 2>"$TMP/bed.err"; then
        echo "FAIL multinode-gin: bed.sh up 2 1 failed: $(head -c 300 "$TMP/bed.err")"
        exit 1
    fi
    check_case alltoall-socket-2n2l "socket via=socket" ""
    if have_libfabric; then
        check_case alltoall-rdma-ofi-2n2l "rdma via=ofi" "ANYCCL_NET=ofi ANYCCL_NSLOTS=2"
    else
        echo "SKIP multinode-gin/alltoall-rdma-ofi-2n2l: libfabric (fi_info -p tcp) not available"
    fi
}

# The median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

run_bench() {
    local nets=(socket) net gin rep size
    have_libfabric && nets+=(ofi)
    if ! "$BED" up 4 1 2>"$TMP/bed.err"; then
        echo "FAIL multinode-gin: bed.sh up 4 1 failed: $(head -c 300 "$TMP/bed.err")"
        exit 1
    fi
    echo "# all-to-all, 4 ranks on 4 nodes (namespaces), us per call (mean of 200), $REPS runs"
    for ((rep = 0; rep < REPS; rep++)); do
        for net in "${nets[@]}"; do
            for gin in 1 0; do
                run_job "lat-$net-$gin-$rep" 4 1 "ANYCCL_NET=$net ANYCCL_GPU_INITIATED=$gin" \
                    lat 8 65536 200 || echo "FAIL multinode-gin/bench lat $net gin=$gin"
            done
        done
    done
    printf '%-10s' "bytes/peer"
    for net in "${nets[@]}"; do
        printf ' %18s %18s' "GIN $net med/best" "normal $net med/best"
    done
    echo
    for ((size = 8; size <= 65536; size *= 2)); do
        printf '%-10s' "$size"
        for net in "${nets[@]}"; do
            for gin in 1 0; do
                local vals
                vals=$(cat "$TMP/lat-$net-$gin-"*.0.out 2>/dev/null | awk -v s="$size" \
                    '$1 == "LAT" && $2 == s { print $3 }')
                printf ' %18s' "$(median <<<"$vals")/$(sort -g <<<"$vals" | head -1)"
            done
        done
        echo
    done
    echo "# bandwidth, 64 MiB send/recv node 0 -> node 1, GB/s (best of 3 rounds of 4), $REPS runs"
    for ((rep = 0; rep < REPS; rep++)); do
        for net in "${nets[@]}"; do
            run_job "bw-$net-$rep" 2 1 "ANYCCL_NET=$net" bw $((64 << 20)) 4 ||
                echo "FAIL multinode-gin/bench bw $net"
        done
        "$BED" exec 1 "$BIN" tcpsink 29611 $((1 << 30)) &
        local sink=$!
        "$BED" exec 0 "$BIN" tcpsource "10.$BED_NET.0.2" 29611 $((1 << 30)) >"$TMP/tcp-$rep.out"
        wait $sink
    done
    for net in "${nets[@]}"; do
        echo "$net: $(cat "$TMP/bw-$net-"*.1.out | awk '$1 == "BW" { printf "%s ", $3 }')"
    done
    echo "tcp stream (1 GiB, 4 MiB calls, best of 3): $(cat "$TMP"/tcp-*.out |
        awk '$1 == "TCP" { printf "%s ", $3 }')"
}

case $MODE in
check) run_checks ;;
bench) run_bench ;;
*)
    echo "usage: tests/multinode/gin.sh [check|bench]" >&2
    exit 2
    ;;
esac
exit $failed
