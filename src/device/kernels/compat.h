/* The little that differs between the host (C) and CUDA/HIP builds of the shared kernels: how an
 * element function is declared and how a float's bits are read. Everything else in kernels/ is
 * plain C that nvcc and hipcc also accept. */
#ifndef AC_DEVICE_KERNELS_COMPAT_H
#define AC_DEVICE_KERNELS_COMPAT_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define AC_DEVFN __host__ __device__ inline
#else
#define AC_DEVFN static inline
#endif

/* memcpy is the portable type pun: compilers turn it into a register move on every target. */
AC_DEVFN uint32_t ac_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

AC_DEVFN float ac_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
