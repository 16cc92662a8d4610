#!/bin/sh
# The drop-in proof: tests/dropin/dropin.c is compiled against NVIDIA's nccl.h and linked against
# NVIDIA's libnccl.so.2; it must run unchanged on AnyCCL (a) with LD_PRELOAD=libanyccl.so and
# (b) with AnyCCL's libnccl.so.2 first on LD_LIBRARY_PATH, on 1, 2, 3, 4 and 8 ranks.
# Prints PASS/FAIL/SKIP lines; exits non-zero if any check failed.
#   BUILD (default build): where the library was built;  DROPIN_CUDA (default /usr/local/cuda)
set -u
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
CUDA=${DROPIN_CUDA:-/usr/local/cuda}
BIN=$BUILD/tests/dropin/dropin
LIB=$BUILD/lib/libanyccl.so
CC=${CC:-cc}
failed=0

fail() { echo "FAIL $1"; failed=1; }

if [ ! -f "$CUDA/include/nccl.h" ]; then
    echo "SKIP dropin: $CUDA/include/nccl.h absent (NVIDIA's own header is needed; set DROPIN_CUDA)"
    exit 0
fi
if [ ! -e "$CUDA/lib64/libnccl.so.2" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2 '; then
    echo "SKIP dropin: NVIDIA's libnccl.so.2 absent ($CUDA/lib64, ldconfig): nothing to replace"
    exit 0
fi
if [ ! -e "$LIB" ] || [ ! -e "$BUILD/lib/libnccl.so.2" ]; then
    echo "FAIL dropin/library: $LIB or $BUILD/lib/libnccl.so.2 missing: run make first"
    exit 1
fi

# Built by mk/dropin.mk during `make test-build`; built here when that did not happen.
if [ ! -x "$BIN" ] || [ tests/dropin/dropin.c -nt "$BIN" ]; then
    mkdir -p "$(dirname "$BIN")"
    if ! $CC -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -isystem "$CUDA/include" \
        -o "$BIN" tests/dropin/dropin.c -L"$CUDA/lib64" -lnccl -ldl -pthread; then
        fail "dropin/build: cannot compile tests/dropin/dropin.c against $CUDA/include/nccl.h"
        exit 1
    fi
fi

# The binary must find libnccl.so.2 through the ordinary search, never through a CUDA rpath.
if readelf -d "$BIN" | grep -E 'R(UN)?PATH' | grep -q .; then
    fail "dropin/no-rpath: $BIN carries $(readelf -d "$BIN" | grep -E 'R(UN)?PATH' | sed 's/.*\[//;s/\]//')"
else
    echo "PASS dropin/no-rpath"
fi
resolved=$(LD_LIBRARY_PATH=$BUILD/lib ldd "$BIN" | awk '$1 == "libnccl.so.2" { print $3 }')
if [ "$(readlink -f "$resolved")" = "$(readlink -f "$BUILD/lib/libnccl.so.2")" ]; then
    echo "PASS dropin/libpath-resolves-to-anyccl"
else
    fail "dropin/libpath-resolves-to-anyccl: libnccl.so.2 resolves to '$resolved'"
fi

# A sanitized library needs its runtime loaded first (the program itself is not sanitized).
SAN_PRELOAD=$(ldd "$LIB" | awk '/lib(a|ub)san/ { printf "%s ", $3 }')

run() { # mode nranks env...
    mode=$1 np=$2
    shift 2
    out=$(env "$@" timeout 200 "$BIN" "$np" "dropin/$mode/np$np" 2>&1)
    rc=$?
    echo "$out" | grep -E '^(PASS|FAIL|SKIP) '
    echo "$out" | grep -vE '^(PASS|FAIL|SKIP) ' | head -20 | sed 's/^/  /' >&2
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        fail "dropin/$mode/np$np: killed after 200 s"
    elif [ $rc -ne 0 ]; then
        failed=1
        echo "$out" | grep -q '^FAIL ' || fail "dropin/$mode/np$np: exit status $rc"
    fi
}

for np in 1 2 3 4 8; do
    run preload "$np" LD_PRELOAD="$SAN_PRELOAD$LIB"
    run libpath "$np" LD_PRELOAD="$SAN_PRELOAD" LD_LIBRARY_PATH="$BUILD/lib"
done
run preload-tcp 4 LD_PRELOAD="$SAN_PRELOAD$LIB" NCCL_SHM_DISABLE=1
exit $failed
