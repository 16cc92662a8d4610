#!/usr/bin/env bash
# The device code embedded in the library (mk/device.mk): the CUDA fatbin carries SASS for every
# listed architecture (sm_80, sm_90) and PTX (compute_90), the HIP bundle a code object for each
# of gfx90a and gfx940, each with every kernel of src/device/kernels/kernels.cuh; and the library
# needs no GPU library to load (no DT_NEEDED on libcuda/libcudart/libamdhip64). A part built
# without its compiler (see $BUILD/device/*.state) is a SKIP with the reason. No GPU is needed:
# the embedded sections are dumped with objcopy and read with cuobjdump / clang-offload-bundler
# when installed, else by parsing their headers (fatbin and offload-bundle formats) with od.
#   BUILD (default build)   CUDA_HOME (default /usr/local/cuda)
set -uo pipefail

cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
LIB=$BUILD/lib/libanyccl.so.1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0

pass() { echo "PASS device/$1"; }
fail() { echo "FAIL device/$1: $2"; failed=1; }
skip() { echo "SKIP device/$1: $2"; }

CUDA_ARCHS=(80 90)
CUDA_PTX=90
HIP_ARCHS=(gfx90a gfx940)
KERNELS=(ac_k_copy ac_k_reduce_i8 ac_k_reduce_u8 ac_k_reduce_i32 ac_k_reduce_u32 ac_k_reduce_i64
    ac_k_reduce_u64 ac_k_reduce_f16 ac_k_reduce_f32 ac_k_reduce_f64 ac_k_reduce_bf16
    ac_k_reduce_e4m3 ac_k_reduce_e5m2 ac_k_signal ac_k_wait ac_k_coll)

# Little-endian unsigned integer of $3 bytes at offset $2 of file $1.
u() { od -An -t "u$3" -j "$2" -N "$3" "$1" | tr -d ' '; }

# Writes the section named $1 of the library to $2; fails when it is missing or empty.
dump_section() {
    objcopy -O binary --only-section="$1" "$LIB" "$2" 2>/dev/null && [[ -s $2 ]]
}

# The kernels missing from file $1 (their names appear in the symbol and section tables).
missing_kernels() {
    local k names
    names=$(strings -n 6 "$1" | grep -o 'ac_k_[a-z0-9_]*' | sort -u)
    for k in "${KERNELS[@]}"; do
        grep -qx "$k" <<<"$names" || echo -n "$k "
    done
}

# One line per fatbin entry: "elf 80 <offset> <size> <compressed>" / "ptx 90 ...".
fatbin_entries() {
    local f=$1 total off end kind hsize size arch flags
    [[ $(u "$f" 0 4) == 3126193488 ]] || return 1 # 0xBA55ED50
    off=$(u "$f" 6 2)
    end=$((off + $(u "$f" 8 8)))
    while ((off < end)); do
        kind=$(u "$f" "$off" 2) hsize=$(u "$f" $((off + 4)) 4) size=$(u "$f" $((off + 8)) 8)
        arch=$(u "$f" $((off + 28)) 4) flags=$(u "$f" $((off + 40)) 8)
        case $kind in
        1) echo "ptx $arch $((off + hsize)) $size $(((flags >> 13) & 1))" ;;
        2) echo "elf $arch $((off + hsize)) $size $(((flags >> 13) & 1))" ;;
        esac
        off=$((off + hsize + size))
    done
}

check_cuda() {
    local state fb entries a line kind arch off size comp miss cuobjdump
    state=$(cat "$BUILD/device/cuda.state" 2>/dev/null || echo none)
    if [[ $state == none ]]; then
        skip cuda-archs "built without nvcc (mk/device.mk found none: set CUDA_HOME)"
        return
    fi
    fb=$TMP/cuda.fatbin
    if ! dump_section .anyccl_ac_cuda_fatbin "$fb"; then
        fail cuda-archs "$LIB has no embedded fatbin although nvcc was used ($state)"
        return
    fi
    cuobjdump=$(command -v cuobjdump || echo "$CUDA_HOME/bin/cuobjdump")
    if [[ -x $cuobjdump ]]; then
        entries=$("$cuobjdump" --list-elf "$fb"; "$cuobjdump" --list-ptx "$fb")
        for a in "${CUDA_ARCHS[@]}"; do
            grep -q "ELF file.*sm_$a\b" <<<"$entries" || fail cuda-sass-sm_$a "no sm_$a ELF: $entries"
        done
        grep -q "PTX file.*sm_$CUDA_PTX\b" <<<"$entries" || fail cuda-ptx "no compute_$CUDA_PTX PTX"
    fi
    if ! entries=$(fatbin_entries "$fb"); then
        fail cuda-archs "the embedded section is not a fatbin (bad magic)"
        return
    fi
    for a in "${CUDA_ARCHS[@]}"; do
        line=$(grep "^elf $a " <<<"$entries") || { fail cuda-sass-sm_$a "no sm_$a code"; continue; }
        read -r kind arch off size comp <<<"$line"
        tail -c +$((off + 1)) "$fb" | head -c "$size" >"$TMP/sm_$a.cubin"
        miss=$( ((comp)) || missing_kernels "$TMP/sm_$a.cubin")
        [[ -z $miss ]] && pass cuda-sass-sm_$a || fail cuda-sass-sm_$a "kernels missing: $miss"
    done
    if grep -q "^ptx $CUDA_PTX " <<<"$entries"; then
        pass cuda-ptx-compute_$CUDA_PTX
    else
        fail cuda-ptx-compute_$CUDA_PTX "no PTX for compute_$CUDA_PTX: later GPUs could not JIT"
    fi
}

# One line per bundle entry: "<triple> <offset> <size>".
bundle_entries() {
    local f=$1 n i off=32 eoff esize tlen
    [[ $(head -c 24 "$f") == __CLANG_OFFLOAD_BUNDLE__ ]] || return 1
    n=$(u "$f" 24 8)
    for ((i = 0; i < n; i++)); do
        eoff=$(u "$f" "$off" 8) esize=$(u "$f" $((off + 8)) 8) tlen=$(u "$f" $((off + 16)) 8)
        echo "$(tail -c +$((off + 25)) "$f" | head -c "$tlen") $eoff $esize"
        off=$((off + 24 + tlen))
    done
}

check_hip() {
    local state code entries a line triple off size miss bundler
    state=$(cat "$BUILD/device/hip.state" 2>/dev/null || echo none)
    if [[ $state == none ]]; then
        skip hip-archs "built without hipcc (install ROCm or Debian's hipcc)"
        return
    fi
    code=$TMP/hip.bundle
    if ! dump_section .anyccl_ac_hip_code "$code"; then
        fail hip-archs "$LIB has no embedded code objects although hipcc was used ($state)"
        return
    fi
    if ! entries=$(bundle_entries "$code"); then
        fail hip-archs "the embedded section is not a clang offload bundle"
        return
    fi
    bundler=$(command -v clang-offload-bundler || command -v clang-offload-bundler-15 ||
        ls /opt/rocm/llvm/bin/clang-offload-bundler 2>/dev/null)
    if [[ -n $bundler ]] && ! "$bundler" --list --type=o --input="$code" |
        diff -q - <(cut -d' ' -f1 <<<"$entries") >/dev/null; then
        fail hip-bundle "$bundler --list disagrees with the header: $entries"
    fi
    for a in "${HIP_ARCHS[@]}"; do
        line=$(grep -E "^hipv4-amdgcn-amd-amdhsa--$a(:| )" <<<"$entries") ||
            { fail hip-code-$a "no code object for $a"; continue; }
        read -r triple off size <<<"$line"
        tail -c +$((off + 1)) "$code" | head -c "$size" >"$TMP/$a.co"
        miss=$(missing_kernels "$TMP/$a.co")
        [[ -z $miss ]] && pass hip-code-$a || fail hip-code-$a "kernels missing: $miss"
    done
}

check_library() {
    local needed leaked
    needed=$(readelf -d "$LIB" | grep NEEDED | grep -iE 'cuda|hip|hsa|nvrtc')
    [[ -z $needed ]] && pass no-gpu-link || fail no-gpu-link "the library needs: $needed"
    leaked=$(nm -D --defined-only "$LIB" | grep -E ' ac_(cuda|hip)_')
    [[ -z $leaked ]] && pass embedded-symbols-hidden || fail embedded-symbols-hidden "$leaked"
}

if [[ ! -f $LIB ]]; then
    fail library "$LIB not built (make lib)"
    exit 1
fi
for tool in objcopy readelf nm od strings; do
    command -v $tool >/dev/null || { skip embedded-code "$tool not installed (binutils)"; exit 0; }
done
check_library
check_cuda
check_hip
exit $failed
