#!/usr/bin/env bash
# The mlx5 direct engine of GIN where no ConnectX and no GPU exist (this machine):
#   - engine choice: ANYCCL_GIN_ENGINE=auto logs why mlx5 did not run and the all-to-all runs on
#     the software engine; ANYCCL_GIN_ENGINE=mlx5 fails every rank's all-to-all with the reason
#     (never a fallback); a malformed value is refused;
#   - the device header (src/device/kernels/gin_mlx5.h) compiles with nvcc (sm_90) and hipcc
#     (gfx90a), and the doorbell path in the PTX is: system-scope fence, doorbell record stored with
#     st.release.sys, system-scope fence, doorbell stored volatile (never merged or cached).
# Compile checks only: nothing runs on a GPU or a NIC here. The producer logic itself is unit-tested
# (tests/unit/gin/test_mlx5_engine.c). Prints "PASS/FAIL/SKIP <name>".   BUILD=build
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
PROG=$BUILD/tests/gin/gin_a2a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. tests/lib/ports.sh

run_a2a() { # OUT NRANKS VAR=VALUE...
    local out=$1 n=$2
    shift 2
    env "$@" NCCL_COMM_ID=127.0.0.1:$(free_port) ANYCCL_INIT_TIMEOUT=30 ANYCCL_GPU_INITIATED=1 \
        NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=NET timeout -k 5 60 "$PROG" check "$n" >"$out" 2>&1
}

if [[ ! -x $PROG ]]; then
    echo "FAIL gin_mlx5/build: $PROG is not built (run make test-build)"
else
    run_a2a "$tmp/auto.out" 2 ANYCCL_GIN_ENGINE=auto
    ok=$(grep -c '^RESULT rank=[0-9]* ok=1$' "$tmp/auto.out")
    why=$(grep -c 'GIN: engine=sw backend=.*engine=mlx5 ran=no: ' "$tmp/auto.out")
    if [[ $ok == 2 && $why == 2 ]]; then
        echo "PASS gin_mlx5/auto-logs-why ($(grep -o 'engine=mlx5 ran=no: .*' "$tmp/auto.out" | head -1 | sed 's/)$//'))"
    else
        echo "FAIL gin_mlx5/auto-logs-why: $ok of 2 ranks correct, $why logged engine=mlx5 ran=no"
        grep -E 'RESULT|GIN' "$tmp/auto.out" | head -4 | sed 's/^/    /'
    fi
    run_a2a "$tmp/forced.out" 2 ANYCCL_GIN_ENGINE=mlx5
    named=$(grep -c '^RESULT rank=[0-9]* ok=0 .*rc 5: GIN: ANYCCL_GIN_ENGINE=mlx5' "$tmp/forced.out")
    if [[ $named == 2 ]]; then
        echo "PASS gin_mlx5/forced-is-an-error"
    else
        echo "FAIL gin_mlx5/forced-is-an-error: $named of 2 ranks refused with ncclInvalidUsage"
        grep RESULT "$tmp/forced.out" | head -3 | sed 's/^/    /'
    fi
    run_a2a "$tmp/bad.out" 2 ANYCCL_GIN_ENGINE=ibgda
    named=$(grep -c '^RESULT rank=[0-9]* ok=0 .*ANYCCL_GIN_ENGINE=ibgda is not an engine' "$tmp/bad.out")
    if [[ $named == 2 ]]; then
        echo "PASS gin_mlx5/malformed-refused"
    else
        echo "FAIL gin_mlx5/malformed-refused: $named of 2 ranks refused it"
        grep RESULT "$tmp/bad.out" | head -3 | sed 's/^/    /'
    fi
fi

# PTX tokens of interest, in program order, one per line.
ptx_tokens() {
    grep -oE 'fence\.acq_rel\.sys|st\.release\.sys\.global\.u32|st\.volatile\.global\.u64|ld\.acquire\.sys\.global\.u64|atom\.[a-z.]*sys[a-z.]*cas\.b32' "$1"
}

NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)}
if [[ -n $NVCC && -x $NVCC ]]; then
    if "$NVCC" -std=c++17 -Iinclude -Isrc -arch=sm_90 -ptx -o "$tmp/k.ptx" \
        tests/gin_mlx5/mlx5_kernel.cu >"$tmp/nvcc.out" 2>&1; then
        # the doorbell sequence: fence, record (release), fence, doorbell (volatile 8 bytes)
        seq=$(ptx_tokens "$tmp/k.ptx" | tr '\n' ' ')
        want='fence.acq_rel.sys st.release.sys.global.u32 fence.acq_rel.sys st.volatile.global.u64'
        if [[ $seq == *"$want"* ]] && [[ $seq == *ld.acquire.sys.global.u64* ]] &&
            [[ $seq == *cas.b32* ]]; then
            echo "PASS gin_mlx5/device-header-nvcc (compiled only: no GPU here)"
        else
            echo "FAIL gin_mlx5/device-header-nvcc: the PTX lacks '$want' in order (or acquire loads, CAS): $seq"
        fi
    else
        echo "FAIL gin_mlx5/device-header-nvcc: $(head -3 "$tmp/nvcc.out" | tr '\n' ' ')"
    fi
else
    echo "SKIP gin_mlx5/device-header-nvcc: no nvcc (set NVCC or install the CUDA toolkit)"
fi

HIPCC=${HIPCC:-$(command -v hipcc)}
if [[ -n $HIPCC ]]; then
    if "$HIPCC" -std=c++17 -Iinclude -Isrc --offload-arch=gfx90a --cuda-device-only -S \
        -o "$tmp/k.s" -x hip tests/gin_mlx5/mlx5_kernel.cu >"$tmp/hipcc.out" 2>&1; then
        # gfx90a: a system-scope release writes back L2 (buffer_wbl2) before the store
        if grep -q buffer_wbl2 "$tmp/k.s" && grep -q global_atomic_cmpswap "$tmp/k.s"; then
            echo "PASS gin_mlx5/device-header-hipcc (compiled only: no GPU here)"
        else
            echo "FAIL gin_mlx5/device-header-hipcc: no system-scope release (buffer_wbl2) or CAS in the gfx90a code"
        fi
    else
        echo "FAIL gin_mlx5/device-header-hipcc: $(grep -v 'warning:\|rocm_agent\|Traceback\|File \|^ ' "$tmp/hipcc.out" | head -3 | tr '\n' ' ')"
    fi
else
    echo "SKIP gin_mlx5/device-header-hipcc: no hipcc on the PATH"
fi
