/* Signal and wait on a 32-bit flag in pinned, host-mapped memory: how a stream hands a staged
 * collective to the proxy thread and waits for its result (src/core/stream.c). Used where the
 * driver has no stream memory operations (cuStreamWriteValue32 / cuStreamWaitValue32), and by the
 * emulated driver of the CPU tests, which runs the host build of this very code.
 * Values are sequence numbers compared as CUDA's CU_STREAM_WAIT_VALUE_GEQ does,
 * (int32_t)(*flag - value) >= 0, so that they may wrap. One thread does the work: the rest of a
 * launch, if any, returns at once. */
#ifndef AC_DEVICE_KERNELS_SYNC_CUH
#define AC_DEVICE_KERNELS_SYNC_CUH

#include <stdint.h>

/* What a waiting thread does between two reads: nothing on a GPU; the host build yields its core
 * to the threads it waits for. */
#ifndef AC_DEV_SPIN_PAUSE
#define AC_DEV_SPIN_PAUSE()
#endif

/* The system-scope fence orders the stream's earlier writes (the staged input) before the flag
 * for a reader on the CPU, and the flag before later work. */
__device__ inline void ac_dev_signal(volatile uint32_t *flag, uint32_t value, uint64_t tid)
{
    if (tid != 0)
        return;
    __threadfence_system();
    *flag = value;
    __threadfence_system();
}

/* volatile: every iteration reads the host's memory again, not a register. */
__device__ inline void ac_dev_wait(volatile uint32_t *flag, uint32_t value, uint64_t tid)
{
    if (tid != 0)
        return;
    while ((int32_t)(*flag - value) < 0)
        AC_DEV_SPIN_PAUSE();
    __threadfence_system();
}

#endif
