#!/usr/bin/env bash
# Installs the Debian packages that building and testing AnyCCL need, only those missing.
# Idempotent and quiet when everything is present. Not root and something missing: says what to
# run and exits 1. Used by `make deps` (and so by `make test` and `make bench`).
set -euo pipefail

PACKAGES=(
    build-essential pkg-config   # compiler, make, pkg-config (install test)
    libcriterion-dev             # unit tests
    openmpi-bin libopenmpi-dev   # mpirun for the benchmark and MPI-launched tests
    hwloc libhwloc-dev           # topology discovery (optional at build time)
    iproute2 procps              # ip/ss/ps for the network and process tests
    clang libclang-rt-14-dev     # make fuzz, and the fuzz suite's libFuzzer replay (libFuzzer)
    libfabric-dev libfabric1 libfabric-bin # ofi transport: headers, library, fi_info (tests/ofi)
    libibverbs-dev ibverbs-utils # ib transport: verbs headers, libibverbs; ibv_devices (tests/ofi)
    hipcc                        # HIP kernels for gfx90a/gfx940 (ROCm 5.2's clang; no GPU needed)
)

missing=()
for entry in "${PACKAGES[@]}"; do
    pkg=$entry
    [[ -z $pkg ]] && continue
    # "install ok installed" only: a package removed but not purged still has a dpkg record.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
