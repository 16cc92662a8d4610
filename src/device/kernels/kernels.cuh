/* Every kernel of the GPU backends, written once: the .cu (CUDA) and .hip (HIP) wrappers include
 * this file and nothing else. Names are C names (extern "C"): the backends look them up by the
 * strings of launch.h in the module they load from the code embedded in the library. One reduce
 * kernel per type takes the operator as an argument, which keeps the code small (13 kernels), plus
 * the signal/wait pair of sync.cuh and the collective engine ac_k_coll (engine.h): 16 in all. */
#ifndef AC_DEVICE_KERNELS_KERNELS_CUH
#define AC_DEVICE_KERNELS_KERNELS_CUH

#include "device/kernels/copy.cuh"
#include "device/kernels/engine.h"
#include "device/kernels/launch.h"
#include "device/kernels/ll.h"
#include "device/kernels/simple.cuh"
#include "device/kernels/sync.cuh"

#define AC_GRID_TID() ((uint64_t)blockIdx.x * blockDim.x + threadIdx.x)
#define AC_GRID_THREADS() ((uint64_t)gridDim.x * blockDim.x)

extern "C" __global__ void __launch_bounds__(AC_KERNEL_THREADS)
    ac_k_copy(void *dst, const void *src, uint64_t bytes)
{
    ac_dev_copy((char *)dst, (const char *)src, bytes, AC_GRID_TID(), AC_GRID_THREADS());
}

#define AC_REDUCE_KERNEL(t)                                                                        \
    extern "C" __global__ void __launch_bounds__(AC_KERNEL_THREADS)                                \
        ac_k_reduce_##t(struct ac_kreduce_args args)                                               \
    {                                                                                              \
        ac_dev_simple_reduce<ac_dev_ops_##t>(args, AC_GRID_TID(), AC_GRID_THREADS());              \
    }

AC_REDUCE_KERNEL(i8)
AC_REDUCE_KERNEL(u8)
AC_REDUCE_KERNEL(i32)
AC_REDUCE_KERNEL(u32)
AC_REDUCE_KERNEL(i64)
AC_REDUCE_KERNEL(u64)
AC_REDUCE_KERNEL(f16)
AC_REDUCE_KERNEL(f32)
AC_REDUCE_KERNEL(f64)
AC_REDUCE_KERNEL(bf16)
AC_REDUCE_KERNEL(e4m3)
AC_REDUCE_KERNEL(e5m2)

/* A stream's hand-off to the proxy thread (sync.cuh): launched with one thread. */
extern "C" __global__ void ac_k_signal(volatile uint32_t *flag, uint32_t value)
{
    ac_dev_signal(flag, value, AC_GRID_TID());
}

extern "C" __global__ void ac_k_wait(volatile uint32_t *flag, uint32_t value)
{
    ac_dev_wait(flag, value, AC_GRID_TID());
}

/* The collective engine (engine.h): block b runs task b of args.tasks (struct ac_dev_task,
 * devcoll.h) over the peer-to-peer connectors; any block size. */
extern "C" __global__ void __launch_bounds__(AC_KERNEL_THREADS) ac_k_coll(struct ac_kcoll_args args)
{
    ac_eng_block(args, blockIdx.x, threadIdx.x, blockDim.x);
}

#endif
