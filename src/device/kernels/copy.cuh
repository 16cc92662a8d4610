/* The copy kernel's element loop (CUDA and HIP): 16-byte words when both pointers are 16-byte
 * aligned, then the tail byte by byte; a plain byte loop otherwise. Each thread of the grid takes
 * every nthreads-th word, so that neighbouring threads touch neighbouring words (coalesced). */
#ifndef AC_DEVICE_KERNELS_COPY_CUH
#define AC_DEVICE_KERNELS_COPY_CUH

#include <stddef.h>
#include <stdint.h>

struct __align__(16) ac_word16
{
    uint64_t lo, hi;
};

__device__ inline void ac_dev_copy(char *dst, const char *src, uint64_t bytes, uint64_t tid,
                                   uint64_t nthreads)
{
    uint64_t i = tid;

    if ((((uintptr_t)dst | (uintptr_t)src) & 15) == 0) {
        uint64_t nwords = bytes / 16;
        struct ac_word16 *d = (struct ac_word16 *)dst;
        const struct ac_word16 *s = (const struct ac_word16 *)src;

        for (; i < nwords; i += nthreads)
            d[i] = s[i];
        i = nwords * 16 + tid;
    }
    for (; i < bytes; i += nthreads)
        dst[i] = src[i];
}

#endif
