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
#   6. with PyTorch and a CUDA device: torch sees AnyCCL's NCCL (LD_PRELOAD) and its version.
# Written without a GPU to run it on: the first run on a GPU machine is its test.
#   BUILD (default build)  GPU_NO_BUILD=1  GPU_BENCH_BYTES (default 256M: 268435456)
#   GPU_FORCE=1: run every part even without a GPU device node (to debug this script)
set -uo pipefail

cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BENCH_BYTES=${GPU_BENCH_BYTES:-268435456}
BIN=$BUILD/tests/gpu/gpu_backend
failed=0

pass() { echo "PASS gpu/$1"; }
fail() { echo "FAIL gpu/$1: $2"; failed=1; }
skip() { echo "SKIP gpu/$1: $2"; }

# Evidence of a GPU without loading anything: device nodes of the NVIDIA and AMD kernel drivers.
has_gpu() {
    ls /dev/nvidia[0-9]* >/dev/null 2>&1 || [[ -e /dev/kfd ]]
}

if [[ ${GPU_FORCE:-0} != 1 ]] && ! has_gpu; then
    skip all "no GPU on this machine (no /dev/nvidia<N>, no /dev/kfd): run on a GPU machine"
    exit 0
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
        "$BIN" "$kind" "$BENCH_BYTES" || failed=1
    else
        skip "$kind" "$(grep "^  $kind:" <<<"$info" | sed 's/^ *[a-z]*: //')"
    fi
done
if ((${#usable[@]} == 0)); then
    fail backends "a GPU device node exists but no GPU backend is usable (see anyccl-info above)"
fi

QUICK=1 BUILD=$BUILD bash tests/integration/run.sh | sed 's/^\(PASS\|FAIL\|SKIP\) /\1 gpu\/host-/'
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

if out=$("$BUILD/bin/all_reduce_perf" -b 8 -e 16M -f 4 -c 1 -t 2 2>&1); then
    echo "$out" | grep -E '^ +[0-9]' | sed 's/^/# allreduce host: /'
    pass bench-allreduce-host
else
    fail bench-allreduce-host "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
fi

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
    skip pytorch "no python3 with torch and a CUDA device"
else
    lib=$(realpath "$BUILD/lib/libanyccl.so.1")
    ver=$(LD_PRELOAD=$lib python3 -c 'import torch; print(torch.cuda.nccl.version())' 2>&1)
    if [[ $ver == *"(2, 28"* ]]; then
        pass pytorch-sees-anyccl
    else
        fail pytorch-sees-anyccl "torch.cuda.nccl.version() under LD_PRELOAD=$lib gave: $ver \
(torch links NCCL statically? then LD_PRELOAD cannot replace it)"
    fi
fi
exit $failed
