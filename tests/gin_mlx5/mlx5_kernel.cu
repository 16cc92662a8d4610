/* Compile check of the mlx5 direct engine's device side (src/device/kernels/gin_mlx5.h) with nvcc
 * and hipcc: tests/gin_mlx5/run.sh compiles it and reads the PTX; it never runs here (no GPU, no
 * ConnectX). Each thread is a producer: a put of its block to a peer, a signal after it, quiet on
 * the QP, then a wait for the peer's signal. */
#include "device/kernels/gin_mlx5.h"

#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#endif

__global__ void gin_mlx5_producer(struct ac_gin_mlx5_dev *dev, uint64_t block, uint64_t epoch,
                                  int *status)
{
    uint32_t peer = (dev->me + 1 + threadIdx.x) % dev->npeers;
    uint64_t ticket = 0;
    int st = AC_GIN_OK;
    if (peer != dev->me) {
        st = ac_gin_mlx5_put(dev, peer, peer * block, dev->me * block, block, NULL);
        if (st == AC_GIN_OK)
            st = ac_gin_mlx5_signal(dev, peer, dev->me, 1, &ticket);
        if (st == AC_GIN_OK)
            st = ac_gin_mlx5_quiet(dev, peer, ticket);
        if (st == AC_GIN_OK)
            st = ac_gin_mlx5_wait_signal(dev, peer, epoch);
    }
    if (st == AC_GIN_OK && threadIdx.x == 0)
        st = ac_gin_mlx5_flush(dev);
    if (st != AC_GIN_OK)
        atomicExch(status, st);
}
