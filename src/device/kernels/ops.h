/* Element operators of every reduction, per storage type, shared by every backend:
 * ac_op_{sum,prod,max,min}_<t>(a, b) and ac_op_div_<t>(a, n) (avg's final division), for
 * t in i8 u8 i32 u32 i64 u64 f16 f32 f64 bf16 e4m3 e5m2.
 * Integers wrap: the arithmetic is done in the unsigned type (signed overflow would be undefined),
 * so sum and prod of a signed type give the same bits as its unsigned twin. Their division
 * truncates toward zero, like NCCL's integer avg. fp16, bf16 and fp8 compute in float and round to
 * nearest even on the way back (dtypes.h). max/min propagate NaN: if either operand is NaN the
 * result is NaN (IEEE 754-2019 maximum, CUDA's
 * __hmax_nan), so a NaN anywhere shows in the result instead of vanishing as with fmax. When the
 * operands compare equal (+0 and -0) the second one is returned. */
#ifndef AC_DEVICE_KERNELS_OPS_H
#define AC_DEVICE_KERNELS_OPS_H

#include "device/kernels/compat.h"
#include "device/kernels/dtypes.h"

#include <stdint.h>

/* T: the type; U: its unsigned twin for wrapping arithmetic; W: a type wide enough to divide in. */
#define AC_INT_OPS(t, T, U, W)                                                                     \
    AC_DEVFN T ac_op_sum_##t(T a, T b)                                                             \
    {                                                                                              \
        return (T)(U)((U)a + (U)b);                                                                \
    }                                                                                              \
    AC_DEVFN T ac_op_prod_##t(T a, T b)                                                            \
    {                                                                                              \
        return (T)(U)((U)a * (U)b);                                                                \
    }                                                                                              \
    AC_DEVFN T ac_op_max_##t(T a, T b)                                                             \
    {                                                                                              \
        return a > b ? a : b;                                                                      \
    }                                                                                              \
    AC_DEVFN T ac_op_min_##t(T a, T b)                                                             \
    {                                                                                              \
        return a < b ? a : b;                                                                      \
    }                                                                                              \
    AC_DEVFN T ac_op_div_##t(T a, uint32_t n)                                                      \
    {                                                                                              \
        return (T)((W)a / (W)n);                                                                   \
    }

AC_INT_OPS(i8, int8_t, uint8_t, int64_t)
AC_INT_OPS(u8, uint8_t, uint8_t, uint64_t)
AC_INT_OPS(i32, int32_t, uint32_t, int64_t)
AC_INT_OPS(u32, uint32_t, uint32_t, uint64_t)
AC_INT_OPS(i64, int64_t, uint64_t, int64_t)
AC_INT_OPS(u64, uint64_t, uint64_t, uint64_t)

/* Bitwise | rather than || keeps the select branch-free, so that loops over it vectorize. */
#define AC_FLOAT_OPS(t, T)                                                                         \
    AC_DEVFN T ac_op_sum_##t(T a, T b)                                                             \
    {                                                                                              \
        return a + b;                                                                              \
    }                                                                                              \
    AC_DEVFN T ac_op_prod_##t(T a, T b)                                                            \
    {                                                                                              \
        return a * b;                                                                              \
    }                                                                                              \
    AC_DEVFN T ac_op_max_##t(T a, T b)                                                             \
    {                                                                                              \
        return ((a > b) | (a != a)) ? a : b;                                                       \
    }                                                                                              \
    AC_DEVFN T ac_op_min_##t(T a, T b)                                                             \
    {                                                                                              \
        return ((a < b) | (a != a)) ? a : b;                                                       \
    }                                                                                              \
    AC_DEVFN T ac_op_div_##t(T a, uint32_t n)                                                      \
    {                                                                                              \
        return a / (T)n;                                                                           \
    }

AC_FLOAT_OPS(f32, float)
AC_FLOAT_OPS(f64, double)

/* T: the storage type; to_f/from_f: its conversions (dtypes.h). */
#define AC_NARROW_OPS(t, T, to_f, from_f)                                                          \
    AC_DEVFN T ac_op_sum_##t(T a, T b)                                                             \
    {                                                                                              \
        return from_f(to_f(a) + to_f(b));                                                          \
    }                                                                                              \
    AC_DEVFN T ac_op_prod_##t(T a, T b)                                                            \
    {                                                                                              \
        return from_f(to_f(a) * to_f(b));                                                          \
    }                                                                                              \
    AC_DEVFN T ac_op_max_##t(T a, T b)                                                             \
    {                                                                                              \
        return from_f(ac_op_max_f32(to_f(a), to_f(b)));                                            \
    }                                                                                              \
    AC_DEVFN T ac_op_min_##t(T a, T b)                                                             \
    {                                                                                              \
        return from_f(ac_op_min_f32(to_f(a), to_f(b)));                                            \
    }                                                                                              \
    AC_DEVFN T ac_op_div_##t(T a, uint32_t n)                                                      \
    {                                                                                              \
        return from_f(to_f(a) / (float)n);                                                         \
    }

AC_NARROW_OPS(f16, uint16_t, ac_dt_half_to_float, ac_dt_float_to_half)
AC_NARROW_OPS(bf16, uint16_t, ac_dt_bf16_to_float, ac_dt_float_to_bf16)
AC_NARROW_OPS(e4m3, uint8_t, ac_dt_fp8e4m3_to_float, ac_dt_float_to_fp8e4m3)
AC_NARROW_OPS(e5m2, uint8_t, ac_dt_fp8e5m2_to_float, ac_dt_float_to_fp8e5m2)

#endif
