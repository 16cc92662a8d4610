/* What the host side of a GPU backend and the device kernels agree on: kernel names and the
 * argument block of the reduce kernels. Plain C, read by gcc, nvcc and hipcc alike; the layout uses
 * fixed-size members only, so that it is the same in the three compilers. */
#ifndef AC_DEVICE_KERNELS_LAUNCH_H
#define AC_DEVICE_KERNELS_LAUNCH_H

#include <stdint.h>

/* Threads per block of every kernel, and the most blocks one launch uses (a grid-stride loop
 * covers the rest). */
#define AC_KERNEL_THREADS 512
#define AC_KERNEL_MAX_BLOCKS 1024

/* One step of the simple protocol: dst[i] = a[i] OP pre(b[i]) (a NULL: pre(b[i])), divided by
 * postdiv when postdiv > 1, stored to dst and, when dst2 is not NULL, to dst2 too (the next peer's
 * slot and the user's buffer of a step that sends and stores). */
struct ac_kreduce_args {
    void *dst;
    void *dst2;
    const void *a;
    const void *b;
    uint64_t count;
    uint64_t scalar; /* premul scalar: a value of the type in the low bytes */
    uint32_t kind;   /* enum ac_op_kind */
    uint32_t has_premul;
    uint32_t postdiv; /* 0 or 1: none */
    uint32_t pad;
};

/* ac_k_copy(void *dst, const void *src, uint64_t bytes) */
#define AC_KERNEL_COPY_NAME "ac_k_copy"

/* ac_k_signal(volatile uint32_t *flag, uint32_t value), ac_k_wait(same): sync.cuh, one thread. */
#define AC_KERNEL_SIGNAL_NAME "ac_k_signal"
#define AC_KERNEL_WAIT_NAME "ac_k_wait"

/* The reduce kernel of an ncclDataType_t value (ac_k_reduce_<t>(struct ac_kreduce_args)); NULL for
 * an invalid type. Same order as nccl.h's ncclDataType_t. */
static inline const char *ac_kernel_reduce_name(int nccl_type)
{
    static const char *const names[] = {
        "ac_k_reduce_i8",  "ac_k_reduce_u8",   "ac_k_reduce_i32",  "ac_k_reduce_u32",
        "ac_k_reduce_i64", "ac_k_reduce_u64",  "ac_k_reduce_f16",  "ac_k_reduce_f32",
        "ac_k_reduce_f64", "ac_k_reduce_bf16", "ac_k_reduce_e4m3", "ac_k_reduce_e5m2",
    };
    if (nccl_type < 0 || nccl_type >= (int)(sizeof names / sizeof names[0]))
        return 0;
    return names[nccl_type];
}

#define AC_KERNEL_REDUCE_COUNT 12

#endif
