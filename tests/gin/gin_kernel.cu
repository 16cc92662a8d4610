/* Compile check of the GIN device interface (src/device/kernels/gin.h) with nvcc and hipcc:
 * tests/gin/run.sh compiles this file; it is never run on this machine (no GPU). Each thread of
 * the kernel is a producer: a put of its block to a peer, a signal, quiet, then a wait for the
 * peer's signal, the all-to-all pattern of src/gin/gin_comm.c. */
#include "device/kernels/gin.h"

#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#endif

__global__ void gin_alltoall_producer(struct ac_gin_ring *ring, uint32_t me, uint32_t nranks,
                                      uint64_t block, uint64_t epoch, int *status)
{
    uint32_t peer = (me + 1 + threadIdx.x) % nranks;
    uint64_t ticket = 0;
    int st = AC_GIN_OK;
    if (peer != me) {
        st = ac_gin_put(ring, peer, peer * block, me * block, block, NULL);
        if (st == AC_GIN_OK)
            st = ac_gin_signal(ring, peer, me, 1, 1, &ticket);
        if (st == AC_GIN_OK)
            st = ac_gin_quiet(ring, ticket);
        if (st == AC_GIN_OK)
            st = ac_gin_wait_signal(ring, peer, epoch);
    }
    if (st != AC_GIN_OK)
        atomicExch(status, st);
}
