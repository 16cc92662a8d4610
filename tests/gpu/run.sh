#!/usr/bin/env bash
# The GPU suite, for a machine with NVIDIA or AMD GPUs (docs/gpu.md). On a machine without one it
# prints one SKIP per part and exits 0, which is what `make test` sees in CI. With a GPU:
#   1. builds the library, tools and tests (unless GPU_NO_BUILD=1) and prints anyccl-info;
#   2. the embedded-code check (tests/device/run.sh);
#   3. tests/gpu/gpu_backend.c per usable backend: kernels against the host backend bit for bit,
#      memory calls, events, and the kernels' bandwidth;
#   4. the integration suite (tests/integration/run.sh; its device program runs against the emulated
#      driver there), then tests/integration/device.c against the real CUDA driver: every
#      collective on cuMemAlloc buffers and user streams, 2 and 4 ranks on one GPU (threads and
#      processes), groups, errors (TL_CUDA_DRIVER=libcuda.so.1). HIP buffers: no test yet (SKIP);
#   5. the allreduce benchmark (host buffers, threads) as a regression number;
#   6. benchmarks on GPU buffers (tests/gpu/gpu_coll_bench.c, CUDA): (a) the reduce kernel against
#      the device's own copy bandwidth (from step 3, aim 85 %); (b) allreduce of 2 ranks sharing
#      one GPU against the device copy bandwidth measured in the same run, and every collective
#      again on registered buffers (-R: worked on in place); (c) 8-byte allreduce
#      latency per protocol (NCCL_PROTO=Simple, LL, LL128); every collective checked once per size;
#   7. with PyTorch and a CUDA device: tests/gpu/torch_check.py, 2 processes on one GPU under
#      LD_PRELOAD run all_reduce, all_gather_into_tensor, reduce_scatter_tensor,
#      all_to_all_single and broadcast with the nccl backend, compared with CPU results.
# Ends with a summary table; exits 1 on any wrong result or failed part.
# Written without a GPU to run it on: the first run on a GPU machine is its test.
#   BUILD (default build)  GPU_NO_BUILD=1  GPU_BENCH_BYTES (default 256M: 268435456)
#   GPU_FORCE=1: run every part even without a GPU device node (to debug this script)
set -uo pipefail

cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BENCH_BYTES=${GPU_BENCH_BYTES:-268435456}
BIN=$BUILD/tests/gpu/gpu_backend
BENCH=$BUILD/tests/gpu/gpu_coll_bench
failed=0

summary=()
pass() { echo "PASS gpu/$1"; summary+=("$1|PASS|${2:-}"); }
fail() { echo "FAIL gpu/$1: $2"; failed=1; summary+=("$1|FAIL|$2"); }
skip() { echo "SKIP gpu/$1: $2"; summary+=("$1|SKIP|$2"); }
print_summary() {
    echo
    printf '%-34s %-5s %s\n' part result figures/why
    local row
    for row in "${summary[@]}"; do
        IFS='|' read -r name res why <<<"$row"
        printf '%-34s %-5s %s\n' "$name" "$res" "$why"
    done
}

# Evidence of a GPU without loading anything: device nodes of the NVIDIA and AMD kernel drivers.
has_gpu() {
    ls /dev/nvidia[0-9]* >/dev/null 2>&1 || [[ -e /dev/kfd ]]
}

# Builds the benchmark of collectives on GPU buffers; false when it does not build.
build_bench() {
    local san=()
    # a sanitized library (make asan) needs its runtime first in the program
    [[ $BUILD == *asan* ]] && san=(-fsanitize=address,undefined)
    mkdir -p "$(dirname "$BENCH")"
    ${CC:-cc} -std=gnu11 -Wall -Werror "${san[@]}" -Iinclude -O2 -o "$BENCH" \
        tests/gpu/gpu_coll_bench.c \
        "$BUILD/lib/libanyccl.so.1" -ldl -pthread -Wl,-rpath,"$(realpath "$BUILD/lib")"
}

if [[ ${GPU_FORCE:-0} != 1 ]] && ! has_gpu; then
    # The programs of the GPU parts still run here, so they do not rot before a GPU runs them:
    # the benchmark against the emulated CUDA driver of the tests (every collective, results
    # checked; its timings mean nothing), the PyTorch check compiled.
    emu=$BUILD/tests/unit/device/fake/libcuda_emu.so
    if [[ ! -f $emu || ! -f $BUILD/lib/libanyccl.so.1 ]]; then
        skip bench-program-emulated "$emu not built (make test-build)"
    elif ! build_bench; then
        fail bench-program-emulated "tests/gpu/gpu_coll_bench.c does not build"
    else
        # -R: registered buffers, the 64 KiB calls worked on in place
        for reg in "" -R; do
            for coll in allreduce allgather reducescatter broadcast alltoall; do
                if out=$(ANYCCL_CUDA_LIBRARY=$emu TL_CUDA_DRIVER=$emu timeout -k 10 120 \
                    "$BENCH" -c $coll -t 2 -b 8 -e 64K -f 32 -n 2 -w 1 $reg 2>&1); then
                    pass "bench-program-emulated-$coll$reg"
                else
                    fail "bench-program-emulated-$coll$reg" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
                fi
            done
        done
    fi
    if python3 -c "compile(open('tests/gpu/torch_check.py').read(), 'torch_check.py', 'exec')" 2>/dev/null; then
        pass torch-check-compiles
    else
        fail torch-check-compiles "tests/gpu/torch_check.py does not compile (python3)"
    fi
    skip all "no GPU on this machine (no /dev/nvidia<N>, no /dev/kfd): run on a GPU machine"
    exit $failed
fi

if [[ ${GPU_NO_BUILD:-0} != 1 ]]; then
    if ! make --no-print-directory -j"$(nproc)" BUILD="$BUILD" all test-build >"$BUILD.gpu-build.log" 2>&1; then
        fail build "make all test-build failed (log: $BUILD.gpu-build.log)"
        tail -n 20 "$BUILD.gpu-build.log" | sed 's/^/    /'
        exit 1
    fi
fi
info=$("$BUILD/bin/anyccl-info" 2>&1 | sed -n '/^Device backends:/,/^$/p')
echo "$info" | sed 's/^/# /'

BUILD=$BUILD bash tests/device/run.sh | sed 's/^\(PASS\|FAIL\|SKIP\) device\//\1 gpu\/embedded-/'
((PIPESTATUS[0] == 0)) || failed=1

mkdir -p "$(dirname "$BIN")"
if ! ${CC:-cc} -std=gnu11 -D_GNU_SOURCE -Iinclude -Isrc -O2 -g -pthread -o "$BIN" \
    tests/gpu/gpu_backend.c "$BUILD/lib/libanyccl_internal.a" -ldl -lrt -lm; then
    fail backend-build "cannot build tests/gpu/gpu_backend.c"
    exit 1
fi
usable=()
for kind in cuda hip; do
    if grep -q "^  $kind: usable" <<<"$info"; then
        usable+=("$kind")
        out=$("$BIN" "$kind" "$BENCH_BYTES")
        rc=$?
        echo "$out"
        pct=$(awk -v k="$kind-reduce-vs-copy" '$1 == "RESULT" && $2 == k { print $3 }' <<<"$out")
        if ((rc == 0)); then
            pass "$kind-kernels" "(a) reduce kernel at ${pct:-?} % of the device copy (aim 85 %)"
        else
            fail "$kind-kernels" "$(grep -c '^FAIL' <<<"$out") kernel checks failed"
        fi
    else
        skip "$kind" "$(grep "^  $kind:" <<<"$info" | sed 's/^ *[a-z]*: //')"
    fi
done
if ((${#usable[@]} == 0)); then
    fail backends "a GPU device node exists but no GPU backend is usable (see anyccl-info above)"
fi

# The host suite and the host benchmark see no GPU: where one is usable, ncclMemAlloc gives device
# memory (as NCCL's does), which the host-buffer tests of registered memory would write from the
# CPU. The programs that drive the emulated driver name it themselves and still run.
hide_gpus=(env CUDA_VISIBLE_DEVICES= HIP_VISIBLE_DEVICES= ROCR_VISIBLE_DEVICES=)
QUICK=1 BUILD=$BUILD "${hide_gpus[@]}" bash tests/integration/run.sh |
    sed 's/^\(PASS\|FAIL\|SKIP\) /\1 gpu\/host-/'
((PIPESTATUS[0] == 0)) || failed=1
if [[ " ${usable[*]} " == *" cuda "* ]]; then
    TL_CUDA_DRIVER=libcuda.so.1 timeout -k 10 900 "$BUILD/tests/integration/device" |
        sed 's/^\(PASS\|FAIL\|SKIP\) device\//\1 gpu\/cuda-buffers-/'
    ((PIPESTATUS[0] == 0)) || failed=1
else
    skip cuda-buffers "the CUDA backend is not usable here"
fi
skip hip-buffers "tests/integration/device.c drives the CUDA driver API only; HIP buffers are \
staged by the same code (src/core/stream.c) but have no test yet"

if out=$("${hide_gpus[@]}" "$BUILD/bin/all_reduce_perf" -b 8 -e 16M -f 4 -c 1 -t 2 2>&1); then
    echo "$out" | grep -E '^ +[0-9]' | sed 's/^/# allreduce host: /'
    pass bench-allreduce-host
else
    fail bench-allreduce-host "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
fi

# Collectives on CUDA buffers: several ranks (threads) sharing GPU 0.
if [[ " ${usable[*]} " != *" cuda "* ]]; then
    skip gpu-bench "the CUDA backend is not usable here"
elif ! build_bench; then
    fail gpu-bench-build "cannot build tests/gpu/gpu_coll_bench.c"
else
    drv=${TL_CUDA_DRIVER:-libcuda.so.1}
    for coll in allreduce allgather reducescatter broadcast alltoall; do
        for np in 2 4; do
            if out=$(TL_CUDA_DRIVER=$drv timeout -k 10 600 "$BENCH" -c $coll -t $np -b 8 \
                -e "$BENCH_BYTES" -f 8 -n 20 -w 5 2>&1); then
                echo "$out" | sed "s/^/# $coll np$np: /"
                copy=$(awk '$1 == "copy_GBps" { print $2 }' <<<"$out")
                last=$(grep -E '^ +[0-9]' <<<"$out" | tail -n 1)
                bus=$(awk '{ print $5 }' <<<"$last")
                pct=$(awk -v b="$bus" -v c="$copy" 'BEGIN { if (c > 0) printf "%.0f", 100 * b / c }')
                pass "cuda-$coll-np$np" "busbw $bus GB/s at $(awk '{ print $1 }' <<<"$last") B = \
${pct} % of the device copy ($copy GB/s)"
            else
                fail "cuda-$coll-np$np" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
            fi
        done
    done
    # the same on registered buffers, worked on in place (src/core/devpath_direct.c)
    for coll in allreduce allgather reducescatter broadcast alltoall; do
        if out=$(TL_CUDA_DRIVER=$drv timeout -k 10 600 "$BENCH" -c $coll -t 2 -b 64K \
            -e "$BENCH_BYTES" -f 8 -n 20 -w 5 -R 2>&1); then
            echo "$out" | sed "s/^/# $coll np2 registered: /"
            copy=$(awk '$1 == "copy_GBps" { print $2 }' <<<"$out")
            last=$(grep -E '^ +[0-9]' <<<"$out" | tail -n 1)
            bus=$(awk '{ print $5 }' <<<"$last")
            pct=$(awk -v b="$bus" -v c="$copy" 'BEGIN { if (c > 0) printf "%.0f", 100 * b / c }')
            pass "cuda-$coll-np2-registered" "busbw $bus GB/s at $(awk '{ print $1 }' <<<"$last") \
B = ${pct} % of the device copy ($copy GB/s)"
        else
            fail "cuda-$coll-np2-registered" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
        fi
    done
    # (c) 8-byte allreduce latency per protocol, 2 ranks on one GPU
    for proto in Simple LL LL128; do
        if out=$(NCCL_PROTO=$proto TL_CUDA_DRIVER=$drv timeout -k 10 300 "$BENCH" -c allreduce \
            -t 2 -b 8 -e 8 -n 2000 -w 200 2>&1); then
            us=$(grep -E '^ +[0-9]' <<<"$out" | awk '{ print $3 }')
            pass "cuda-latency-8B-$proto" "allreduce 8 B, 2 ranks on one GPU: $us us"
        else
            fail "cuda-latency-8B-$proto" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
        fi
    done
fi

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
    skip pytorch "no python3 with torch and a CUDA device"
else
    lib=$(realpath "$BUILD/lib/libanyccl.so.1")
    ver=$(LD_PRELOAD=$lib python3 -c 'import torch; print(torch.cuda.nccl.version())' 2>&1)
    if [[ $ver == *"(2, 28"* ]]; then
        pass pytorch-sees-anyccl "torch.cuda.nccl.version() = $ver"
        out=$(LD_PRELOAD=$lib timeout -k 10 900 python3 tests/gpu/torch_check.py 2 2>&1)
        rc=$?
        echo "$out" | sed 's/^/# /'
        if ((rc == 0)); then
            pass pytorch-collectives "$(grep '^PASS torch/all' <<<"$out" | sed 's/^PASS torch\/all: //')"
        else
            fail pytorch-collectives "$(grep -E '^(FAIL|SKIP) torch/' <<<"$out" | head -n 3 | tr '\n' ' ')"
        fi
    else
        fail pytorch-sees-anyccl "torch.cuda.nccl.version() under LD_PRELOAD=$lib gave: $ver \
(torch links NCCL statically? then LD_PRELOAD cannot replace it)"
    fi
fi
print_summary
exit $failed
