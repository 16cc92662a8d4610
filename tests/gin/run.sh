#!/usr/bin/env bash
# GPU-initiated networking (issue 8, item 2): the all-to-all of ANYCCL_GPU_INITIATED=1 between
# processes, through the descriptor ring and the software engine, with the cma backend (one host)
# the socket backend (every rank given its own ANYCCL_HOSTID, so no two share a host) and the rdma
# backend (the same, with ANYCCL_NET=ofi: the RDMA engine over libfabric's tcp;ofi_rxm and sockets
# providers, with 1 or 2 slots per connector to stress its flow control):
#   - exact results on 2, 3, 4 and 8 ranks (3 types x 6 sizes, allreduces in between), and a log
#     line from every rank proving the GIN path ran;
#   - ANYCCL_GPU_INITIATED unset: the same program, the normal path (no GIN line);
#   - backend choice: ANYCCL_NET=ofi keeps cma on one host unless NCCL_SHM_DISABLE=1 (as the
#     transports keep shm), and a forced network no rank can run is an error, not a fallback;
#   - error injection: a rank SIGKILLed in the middle of an all-to-all; every survivor fails
#     within the case's bound, naming the dead rank;
#   - the device interface compiles with nvcc (and hipcc when present) and uses system-scope
#     acquire/release; it is never run here (no GPU on this machine).
# The ring's own concurrency tests are unit tests (tests/unit/gin/test_ring.c).
# Prints "PASS/FAIL/SKIP <name>" per check.   BUILD=build  QUICK=1 (or ASAN_QUICK=1): fewer rdma
# cases
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
PROG=$BUILD/tests/gin/gin_a2a
CASE_LIMIT=60
QUICK=${QUICK:-${ASAN_QUICK:-0}}
[[ $BUILD == *asan* ]] && CASE_LIMIT=180
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ ! -x $PROG ]]; then
    echo "FAIL gin/build: $PROG is not built (run make test-build)"
    exit 0
fi

# free_port: where the ranks meet (rank 0 starts the bootstrap root there).
. tests/lib/ports.sh

# fi_info links libfabric.so.1: if it lists the tcp provider, the library loads too.
have_libfabric() {
    command -v fi_info >/dev/null && fi_info -p tcp -t FI_EP_RDM >/dev/null 2>&1
}

check() { # NAME NRANKS GIN(0/1) [BACKEND [VAR=VALUE...]]: BACKEND cma, socket, rdma (split hosts)
    local name=$1 n=$2 gin=$3 be=${4:-cma} out=$tmp/${1//\//_}.out split=
    shift $(($# < 4 ? $# : 4))
    [[ $be == socket || $be == rdma ]] && split=1
    [[ $be == cma-forced ]] && be=cma
    [[ $be == rdma-one-host ]] && be=rdma
    env GIN_SPLIT_HOSTS=$split "$@" NCCL_COMM_ID=127.0.0.1:$(free_port) ANYCCL_INIT_TIMEOUT=30 ANYCCL_GPU_INITIATED=$gin NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET \
        timeout -k 5 "$CASE_LIMIT" "$PROG" check "$n" >"$out" 2>&1
    local rc=$? ok lines
    ok=$(grep -c '^RESULT rank=[0-9]* ok=1$' "$out")
    lines=$(grep -c "GIN: engine=sw backend=$be " "$out")
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $name: timed out after $CASE_LIMIT s"
        grep -v 'NCCL INFO' "$out" | tail -5 | sed 's/^/    /'
    elif [[ $rc != 0 || $ok != "$n" ]]; then
        echo "FAIL $name: status $rc, $ok of $n ranks correct"
        grep -E 'RESULT|SETUP|WARN' "$out" | grep -v 'ok=1$' | head -5 | sed 's/^/    /'
    elif [[ $gin == 1 && $lines != "$n" ]]; then
        echo "FAIL $name: correct, but $lines of $n ranks logged the GIN engine (path not used)"
    elif [[ $gin == 0 && $lines != 0 ]]; then
        echo "FAIL $name: ANYCCL_GPU_INITIATED=0 but the GIN engine started"
    else
        echo "PASS $name"
    fi
}

refused_case() { # NAME NRANKS PATTERN VAR=VALUE...: every rank's all-to-all fails with PATTERN
    local name=$1 n=$2 pattern=$3 out=$tmp/${1//\//_}.out
    shift 3
    env GIN_SPLIT_HOSTS=1 "$@" NCCL_COMM_ID=127.0.0.1:$(free_port) ANYCCL_INIT_TIMEOUT=30 \
        ANYCCL_GPU_INITIATED=1 timeout -k 5 "$CASE_LIMIT" "$PROG" check "$n" >"$out" 2>&1
    local rc=$? named
    named=$(grep -c "^RESULT rank=[0-9]* ok=0 .*$pattern" "$out")
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $name: timed out after $CASE_LIMIT s"
    elif [[ $named != "$n" ]]; then
        echo "FAIL $name: $named of $n ranks failed with '$pattern'"
        grep RESULT "$out" | head -3 | sed 's/^/    /'
    else
        echo "PASS $name"
    fi
}

kill_case() { # NAME NRANKS VICTIM [socket|rdma [VAR=VALUE...]]
    local name=$1 n=$2 victim=$3 be=${4:-} out=$tmp/${1//\//_}.out start end split=
    shift $(($# < 4 ? $# : 4))
    [[ $be == socket || $be == rdma ]] && split=1
    start=$(date +%s)
    env GIN_SPLIT_HOSTS=$split "$@" NCCL_COMM_ID=127.0.0.1:$(free_port) ANYCCL_INIT_TIMEOUT=30 ANYCCL_GPU_INITIATED=1 timeout -k 5 "$CASE_LIMIT" "$PROG" kill "$n" "$victim" >"$out" 2>&1
    local rc=$?
    end=$(date +%s)
    local results named
    results=$(grep -c '^RESULT rank=[0-9]* rc=[1-9]' "$out")
    named=$(grep -c "^RESULT rank=[0-9]* rc=[1-9].*peer rank $victim " "$out")
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "FAIL $name: survivors hung (killed after $CASE_LIMIT s)"
        tail -5 "$out" | sed 's/^/    /'
    elif [[ $results != $((n - 1)) ]]; then
        echo "FAIL $name: $results of $((n - 1)) survivors returned an error"
        head -5 "$out" | sed 's/^/    /'
    elif [[ $named != $((n - 1)) ]]; then
        echo "FAIL $name: $named of $((n - 1)) errors name rank $victim"
        head -5 "$out" | sed 's/^/    /'
    elif [[ -n $be ]] && grep -q '^RESULT.*rc=[1-9]' "$out" &&
        ! grep -q "^RESULT rank=[0-9]* rc=[1-9].*$be backend" "$out"; then
        echo "FAIL $name: the errors do not come from the $be backend"
        head -3 "$out" | sed 's/^/    /'
    else
        echo "PASS $name ($((end - start)) s)"
    fi
}

for n in 2 3 4 8; do
    check "gin/alltoall-np$n" "$n" 1
done
check gin/alltoall-np3-gin-off 3 0
kill_case gin/peer-killed-np4 4 2
kill_case gin/peer-killed-np3-rank0 3 0
# Every rank its own host (ANYCCL_HOSTID): the socket backend.
for n in 2 3 4 8; do
    check "gin/alltoall-socket-np$n" "$n" 1 socket
done
kill_case gin/peer-killed-socket-np4 4 1 socket

# The rdma backend: the RDMA engine over libfabric's software providers (ANYCCL_NET=ofi).
if have_libfabric; then
    OFI=ANYCCL_NET=ofi
    SOCKETS="$OFI ANYCCL_OFI_PROVIDER=sockets"
    check gin/alltoall-rdma-tcp-np2-1slot 2 1 rdma $OFI ANYCCL_NSLOTS=1 NCCL_BUFFSIZE=4096
    check gin/alltoall-rdma-tcp-np4-2slots 4 1 rdma $OFI ANYCCL_NSLOTS=2 NCCL_BUFFSIZE=8192
    kill_case gin/peer-killed-rdma-tcp-np4 4 2 rdma $OFI
    if [[ $QUICK == 0 ]]; then
        # one host, shared memory off: the network path, as for the transports
        check gin/alltoall-rdma-sockets-np2-shm-off 2 1 rdma-one-host $SOCKETS NCCL_SHM_DISABLE=1
        check gin/alltoall-rdma-sockets-np3-1slot 3 1 rdma $SOCKETS ANYCCL_NSLOTS=1 \
            NCCL_BUFFSIZE=4096
        check gin/alltoall-rdma-sockets-np4-2slots-2eps 4 1 rdma $SOCKETS ANYCCL_NSLOTS=2 \
            NCCL_BUFFSIZE=8192 ANYCCL_OFI_EPS=2
        kill_case gin/peer-killed-rdma-sockets-np3-rank0 3 0 rdma $SOCKETS
        # one host, shared memory on: cma stays, as shm does for the transports
        check gin/alltoall-ofi-one-host-cma 2 1 cma-forced $OFI
    fi
else
    echo "SKIP gin/alltoall-rdma-*: libfabric (fi_info -p tcp) not available: apt-get install libfabric-bin libfabric1"
fi
# A forced network that no rank can run: an error naming it, not a fallback to sockets.
if [[ -d /sys/class/infiniband ]]; then
    echo "SKIP gin/forced-ib-no-fallback: this machine has an RDMA device"
else
    refused_case gin/forced-ib-no-fallback 2 "no backend every rank can run with ANYCCL_NET=ib" \
        ANYCCL_NET=ib
fi

# The device interface with the GPU compilers (compile only: nothing runs on a GPU here).
NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)}
if [[ -n $NVCC && -x $NVCC ]]; then
    if "$NVCC" -std=c++17 -Iinclude -Isrc -arch=sm_90 -ptx -o "$tmp/k.ptx" \
        tests/gin/gin_kernel.cu >"$tmp/nvcc.out" 2>&1; then
        if grep -q 'st.release.sys' "$tmp/k.ptx" && grep -q 'ld.acquire.sys' "$tmp/k.ptx"; then
            echo "PASS gin/device-header-nvcc (compiled only: no GPU here)"
        else
            echo "FAIL gin/device-header-nvcc: no system-scope release/acquire in the PTX"
        fi
    else
        echo "FAIL gin/device-header-nvcc: $(head -3 "$tmp/nvcc.out" | tr '\n' ' ')"
    fi
else
    echo "SKIP gin/device-header-nvcc: no nvcc (set NVCC or install the CUDA toolkit)"
fi
HIPCC=${HIPCC:-$(command -v hipcc)}
if [[ -n $HIPCC ]]; then
    if "$HIPCC" -std=c++17 -Iinclude -Isrc --offload-arch=gfx90a -c -o "$tmp/k.o" \
        -x hip tests/gin/gin_kernel.cu >"$tmp/hipcc.out" 2>&1; then
        echo "PASS gin/device-header-hipcc (compiled only: no GPU here)"
    else
        echo "FAIL gin/device-header-hipcc: $(head -3 "$tmp/hipcc.out" | tr '\n' ' ')"
    fi
else
    echo "SKIP gin/device-header-hipcc: no hipcc on the PATH"
fi
