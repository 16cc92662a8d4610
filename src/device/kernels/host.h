/* The host build of the kernels (kernels.cuh compiled as C++ by the host compiler): what nvcc and
 * hipcc provide, spelled for a CPU. A launch runs every thread of the grid in turn on the calling
 * thread, setting the thread-local indices first; the kernels are grid-stride loops without
 * barriers or shared memory, so that running their threads one after the other gives the result
 * of running them together. Used by the emulated CUDA driver of the tests
 * (tests/unit/device/emu_cuda.c), so that the code the GPUs run is the code the CPU tests run. */
#ifndef AC_DEVICE_KERNELS_HOST_H
#define AC_DEVICE_KERNELS_HOST_H

#if defined(__CUDACC__) || defined(__HIPCC__) || !defined(__cplusplus)
#error "device/kernels/host.h is for the host C++ build of the kernels only"
#endif

#include <sched.h>
#include <stdint.h>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(n)
#define __align__(n) __attribute__((aligned(n)))

struct ac_host_dim3 {
    unsigned x, y, z;
};

extern __thread struct ac_host_dim3 blockIdx, threadIdx, gridDim, blockDim;

static inline void __threadfence_system(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

#define AC_DEV_SPIN_PAUSE() sched_yield()

#endif
