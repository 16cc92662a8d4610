#!/usr/bin/env bash
# `make install` into a temporary prefix, then build a small program the way a user would (flags
# from pkg-config) and run it against the installed library: ncclGetVersion, then a one-rank
# ncclCommInitAll and an allreduce. Also checks the NCCL-named link (libnccl.so.2) is installed.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

check() { # name command...
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "PASS $name"
        return 0
    fi
    echo "FAIL $name: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    return 1
}

skip_rest() {
    for name in "$@"; do echo "SKIP $name: an earlier install step failed"; done
    exit 1
}

check install/make-install make --no-print-directory BUILD="$BUILD" install PREFIX="$prefix" ||
    skip_rest install/pkg-config install/build install/run install/libnccl-link

check install/pkg-config env PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
    pkg-config --exists --print-errors anyccl || skip_rest install/build install/run \
    install/libnccl-link
flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs anyccl)
# A sanitizer build of the library needs its runtime in the program too.
if [[ $BUILD == *asan* ]]; then
    flags="$flags -fsanitize=address,undefined"
fi

cat >"$tmp/hello.c" <<'C'
#include <nccl.h>
#include <stdio.h>

int main(void)
{
    int version = 0;
    ncclComm_t comm;
    float buf[3] = {1.0f, 2.0f, 3.0f};
    if (ncclGetVersion(&version) != ncclSuccess || version != NCCL_VERSION_CODE) {
        fprintf(stderr, "ncclGetVersion gave %d, want %d\n", version, NCCL_VERSION_CODE);
        return 1;
    }
    ncclResult_t res = ncclCommInitAll(&comm, 1, NULL);
    if (res != ncclSuccess) {
        fprintf(stderr, "ncclCommInitAll: %s\n", ncclGetErrorString(res));
        return 1;
    }
    res = ncclAllReduce(buf, buf, 3, ncclFloat, ncclSum, comm, NULL);
    if (res != ncclSuccess || buf[0] != 1.0f || buf[1] != 2.0f || buf[2] != 3.0f) {
        fprintf(stderr, "ncclAllReduce: %s, got %g %g %g\n", ncclGetErrorString(res), buf[0],
                buf[1], buf[2]);
        return 1;
    }
    if (ncclCommDestroy(comm) != ncclSuccess)
        return 1;
    printf("ok %d\n", version);
    return 0;
}
C
# shellcheck disable=SC2086 # flags are words
check install/build cc -std=c11 -Wall -Werror -o "$tmp/hello" "$tmp/hello.c" $flags ||
    skip_rest install/run install/libnccl-link
check install/run env LD_LIBRARY_PATH="$prefix/lib" "$tmp/hello"
run_rc=$?
check install/libnccl-link test -e "$prefix/lib/libnccl.so.2" -a -e "$prefix/lib/libanyccl.so"
link_rc=$?
((run_rc == 0 && link_rc == 0))
