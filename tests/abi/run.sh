#!/usr/bin/env bash
# ABI checks (the test protocol: one "PASS|FAIL|SKIP <name>" line per check, exit 1 on any FAIL).
#  - AnyCCL's header against NVIDIA's nccl.h (and nccl_device.h): constants, enum values, struct
#    sizes and offsets, initializer contents, and every function signature NVIDIA declares;
#  - C++ programs may include cuda_runtime.h and our nccl.h in either order;
#  - the shared library exports every NCCL name of the reference list with its pnccl alias (strong
#    pncclX, weak ncclX), every function our header declares, and nothing outside nccl*, pnccl*,
#    anyccl*; its soname is libanyccl.so.1 and the NCCL/RCCL names link to it;
#  - the entry points exported but not implemented fail cleanly (stubs_fail.c).
# Environment: BUILD (default build), CC, CXX, CUDA_INC (default /usr/local/cuda/include).
set -u
export LC_ALL=C  # ASCII compiler messages in the one-line reasons

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
OUT=$BUILD/abi
CC=${CC:-cc}
CXX=${CXX:-g++}
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
LIB=$BUILD/lib/libanyccl.so.1
CFLAGS_ABI="-std=gnu11 -Wall -Wextra -Werror"
CXXFLAGS_ABI="-std=c++17 -Wall -Wextra -Werror"
mkdir -p "$OUT"

failed=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=1; }
skip() { echo "SKIP $1: $2"; }

# The first compiler error in log $1, for a one-line reason.
first_error() { grep -m1 -E 'error|Error' "$1" | cut -c1-200; }

# Lists "name<TAB>declaration" for the functions header $2 declares; $1: cc or c++ preprocessor
# command, $3: regex of the file paths to read.
decls() { $1 -E "$2" 2>/dev/null | awk -v from="$3" -f "$HERE/decls.awk"; }

names_of() { cut -f1 | sort -u; }

# ---- AnyCCL's values ----
have_ours=0
if $CC $CFLAGS_ABI -Iinclude -I"$HERE" -o "$OUT/gen_values" "$HERE/gen_values.c" \
        >"$OUT/gen_values.log" 2>&1 && "$OUT/gen_values" >"$OUT/ours_values.h"; then
    have_ours=1
    pass abi-values-generator
else
    fail abi-values-generator "$(first_error "$OUT/gen_values.log") (see $OUT/gen_values.log)"
fi
decls "$CC -std=gnu11 -Iinclude" include/nccl.h 'anyccl\.h$' >"$OUT/ours_decls.txt"

check_nvidia_values() {
    if ! $CC $CFLAGS_ABI -isystem "$CUDA_INC" -I"$HERE" -I"$OUT" -o "$OUT/check_values" \
            "$HERE/check_values.c" >"$OUT/check_values.log" 2>&1; then
        fail abi-nvidia-values "$(first_error "$OUT/check_values.log") (see $OUT/check_values.log)"
    elif ! "$OUT/check_values" >"$OUT/check_values.out" 2>&1; then
        fail abi-nvidia-values \
            "initializers differ: $(head -c 300 "$OUT/check_values.out" | tr '\n' ';')"
    else
        pass abi-nvidia-values
    fi
}

# Our declarations of the functions NVIDIA's header declares, redeclared after NVIDIA's: the
# compiler rejects any that differ (C, and C++ where enum parameters are not interchangeable).
check_nvidia_signatures() {
    local theirs="$OUT/nvidia_decls.txt" src="$OUT/signatures"
    decls "$CC -std=gnu11 -I$CUDA_INC" "$CUDA_INC/nccl.h" '/nccl\.h$' | names_of >"$theirs"
    local missing
    missing=$(comm -23 "$theirs" <(names_of <"$OUT/ours_decls.txt") | tr '\n' ' ')
    if [ ! -s "$theirs" ]; then
        fail abi-nvidia-functions-declared "found no declarations in $CUDA_INC/nccl.h"
        return
    elif [ -n "$missing" ]; then
        fail abi-nvidia-functions-declared "NVIDIA declares, AnyCCL does not: $missing"
    else
        pass abi-nvidia-functions-declared
    fi
    { echo '#include <nccl.h>'; echo '#ifdef __cplusplus'; echo 'extern "C" {'; echo '#endif'
      awk -F'\t' 'NR == FNR { want[$1] = 1; next } ($1 in want) { print $2 }' "$theirs" \
          "$OUT/ours_decls.txt"
      echo '#ifdef __cplusplus'; echo '}'; echo '#endif'; } >"$src.c"
    if ! $CC $CFLAGS_ABI -isystem "$CUDA_INC" -fsyntax-only "$src.c" >"$src.log" 2>&1; then
        fail abi-nvidia-signatures "C: $(first_error "$src.log") (see $src.log)"
    elif ! command -v "$CXX" >/dev/null; then
        pass abi-nvidia-signatures
        skip abi-nvidia-signatures-cxx "no C++ compiler ($CXX)"
    elif ! $CXX $CXXFLAGS_ABI -isystem "$CUDA_INC" -x c++ -fsyntax-only "$src.c" \
            >"$src.log" 2>&1; then
        fail abi-nvidia-signatures "C++: $(first_error "$src.log") (see $src.log)"
    else
        pass abi-nvidia-signatures
    fi
}

# ncclTeam_t's layout and the device-API host functions, against nccl_device.h (C++ only).
check_nvidia_device() {
    local name=abi-nvidia-device src="$OUT/check_device_full.cpp"
    if [ ! -f "$CUDA_INC/nccl_device.h" ]; then
        skip $name "$CUDA_INC/nccl_device.h not found"; return
    elif ! command -v "$CXX" >/dev/null; then
        skip $name "no C++ compiler ($CXX)"; return
    fi
    printf '#include <cstddef>\n#include <cstdint>\n#include <nccl_device.h>\n' >"$OUT/dev_hdr.cpp"
    decls "$CXX -std=c++17 -I$CUDA_INC" "$OUT/dev_hdr.cpp" 'nccl_device' | names_of \
        >"$OUT/nvidia_device_decls.txt"
    local missing
    missing=$(comm -23 "$OUT/nvidia_device_decls.txt" <(names_of <"$OUT/ours_decls.txt") \
        | tr '\n' ' ')
    if [ ! -s "$OUT/nvidia_device_decls.txt" ]; then
        fail $name "found no host functions in $CUDA_INC/nccl_device.h"; return
    elif [ -n "$missing" ]; then
        fail $name "NVIDIA declares, AnyCCL does not: $missing"; return
    fi
    { cat "$HERE/check_device.cpp"; echo 'extern "C" {'
      awk -F'\t' 'NR == FNR { want[$1] = 1; next } ($1 in want) { print $2 }' \
          "$OUT/nvidia_device_decls.txt" "$OUT/ours_decls.txt"
      echo '}'; } >"$src"
    if $CXX $CXXFLAGS_ABI -isystem "$CUDA_INC" -I"$OUT" -fsyntax-only "$src" \
            >"$OUT/device.log" 2>&1; then
        pass $name
    else
        fail $name "$(first_error "$OUT/device.log") (see $OUT/device.log)"
    fi
}

if [ ! -f "$CUDA_INC/nccl.h" ]; then
    skip abi-nvidia-header "$CUDA_INC/nccl.h not found (CUDA_INC=<dir> names another)"
elif [ "$have_ours" = 0 ]; then
    skip abi-nvidia-header "AnyCCL's values could not be generated (see abi-values-generator)"
else
    check_nvidia_values
    check_nvidia_signatures
    check_nvidia_device
fi

# ---- C++ include order ----
for order in cuda-first ours-first; do
    name=abi-cxx-$order
    def=; [ $order = ours-first ] && def=-DAC_OURS_FIRST
    if [ ! -f "$CUDA_INC/cuda_runtime.h" ]; then
        skip $name "$CUDA_INC/cuda_runtime.h not found"
    elif ! command -v "$CXX" >/dev/null; then
        skip $name "no C++ compiler ($CXX)"
    elif $CXX $CXXFLAGS_ABI $def -Iinclude -isystem "$CUDA_INC" -c -o "$OUT/coexist-$order.o" \
            "$HERE/coexist.cpp" >"$OUT/coexist-$order.log" 2>&1; then
        pass $name
    else
        fail $name "$(first_error "$OUT/coexist-$order.log") (see $OUT/coexist-$order.log)"
    fi
done

# ---- the shared library ----
TOP=$(git -C "$ROOT" rev-parse --show-toplevel 2>/dev/null || echo "$ROOT")
SHARED_LIST=$TOP/../shared/reference/nccl-exports.txt
LIST=$HERE/nccl-exports.txt
if [ -f "$SHARED_LIST" ]; then
    if cmp -s "$SHARED_LIST" "$LIST"; then
        pass abi-exports-list-copy
    else
        fail abi-exports-list-copy "tests/abi/nccl-exports.txt differs from $SHARED_LIST; copy it"
    fi
    LIST=$SHARED_LIST
else
    skip abi-exports-list-copy "$SHARED_LIST not found; using tests/abi/nccl-exports.txt"
fi

# First $2 words of list $1, with a count when longer.
summary() {
    local n
    n=$(wc -w <<<"$1")
    if [ "$n" -gt "$2" ]; then
        echo "$(echo $1 | cut -d' ' -f1-"$2") ... ($n in all)"
    else
        echo $1
    fi
}

check_exports() {
    # "name type" for every defined dynamic symbol.
    nm -D --defined-only "$LIB" | awk 'NF >= 3 { print $3, $2 }' | sort >"$OUT/exports.txt"
    local wanted missing extra bad_binding
    wanted=$(grep -v '^#' "$LIST" | awk 'NF { print $1; print "p" $1 }' | sort -u)
    missing=$(comm -23 <(echo "$wanted") <(cut -d' ' -f1 "$OUT/exports.txt"))
    if [ -z "$wanted" ]; then
        fail abi-exports-nccl "no names in $LIST"
    elif [ -n "$missing" ]; then
        fail abi-exports-nccl "not exported: $(summary "$missing" 12)"
    else
        pass abi-exports-nccl
    fi
    missing=$(comm -23 <(names_of <"$OUT/ours_decls.txt") <(cut -d' ' -f1 "$OUT/exports.txt"))
    if [ -n "$missing" ]; then
        fail abi-exports-header "declared in anyccl.h, not exported: $(summary "$missing" 12)"
    else
        pass abi-exports-header
    fi
    extra=$(awk '$1 !~ /^(p?nccl|anyccl)/ && $1 !~ /^(_init|_fini|_edata|_end|__bss_start)$/ \
        { print $1 }' "$OUT/exports.txt")
    if [ -n "$extra" ]; then
        fail abi-exports-only-api "exported outside nccl*/pnccl*/anyccl*: $(summary "$extra" 12)"
    else
        pass abi-exports-only-api
    fi
    # As in NCCL, ncclX is weak so that a profiler can interpose it and call the strong pncclX.
    bad_binding=$(awk '$1 ~ /^nccl/ && $2 != "W" { print $1 " (" $2 ")" }
                       $1 ~ /^pnccl/ && $2 != "T" { print $1 " (" $2 ")" }' "$OUT/exports.txt")
    if [ -n "$bad_binding" ]; then
        fail abi-exports-weak-alias "want weak ncclX, strong pncclX: $(summary "$bad_binding" 12)"
    else
        pass abi-exports-weak-alias
    fi
}

check_links() {
    local soname bad=
    soname=$(readelf -d "$LIB" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    if [ "$soname" = libanyccl.so.1 ]; then
        pass abi-soname
    else
        fail abi-soname "soname is '$soname', want libanyccl.so.1"
    fi
    for l in libanyccl.so libnccl.so.2 librccl.so.1; do
        if [ ! -L "$BUILD/lib/$l" ] \
                || [ "$(readlink -f "$BUILD/lib/$l")" != "$(readlink -f "$LIB")" ]; then
            bad="$bad $l"
        fi
    done
    if [ -n "$bad" ]; then
        fail abi-links "not a link to libanyccl.so.1 in $BUILD/lib:$bad"
    else
        pass abi-links
    fi
}

# The entry points AnyCCL exports but does not implement fail cleanly (docs/api.md).
check_stubs() {
    local libdir san=
    libdir=$(cd "$(dirname "$LIB")" && pwd)
    # A sanitized library (make asan) needs its runtime loaded first: build the program alike.
    readelf -d "$LIB" | grep -q 'NEEDED.*libasan' && san="$san -fsanitize=address"
    readelf -d "$LIB" | grep -q 'NEEDED.*libubsan' && san="$san -fsanitize=undefined"
    if ! $CC $CFLAGS_ABI $san -Iinclude -o "$OUT/stubs_fail" "$HERE/stubs_fail.c" "$LIB" \
            -Wl,-rpath,"$libdir" >"$OUT/stubs_fail.log" 2>&1; then
        fail abi-stubs-fail-cleanly "$(first_error "$OUT/stubs_fail.log") (see $OUT/stubs_fail.log)"
    elif ! NCCL_DEBUG=WARN "$OUT/stubs_fail" >"$OUT/stubs_fail.out" 2>"$OUT/stubs_fail.err"; then
        fail abi-stubs-fail-cleanly "$(head -n 3 "$OUT/stubs_fail.out" | tr '\n' ';')"
    else
        pass abi-stubs-fail-cleanly
    fi
}

if [ ! -f "$LIB" ]; then
    for c in abi-exports-nccl abi-exports-header abi-exports-only-api abi-exports-weak-alias \
            abi-soname abi-links abi-stubs-fail-cleanly; do
        fail $c "$LIB not built (run make lib)"
    done
elif ! command -v nm >/dev/null || ! command -v readelf >/dev/null; then
    skip abi-exports "nm/readelf not found (install binutils)"
else
    check_exports
    check_links
    check_stubs
fi

exit $failed
