/* Software conversions between float and the narrow float types (fp16, bf16, fp8 e4m3 and e5m2),
 * shared by every backend. No hardware conversion is assumed: results do not depend on the FPU's
 * flush-to-zero or rounding mode, only integer operations and exact float products are used.
 * Float -> narrow rounds to nearest, ties to even; NaN stays NaN. Overflow: fp16 and bf16 give
 * infinity (as IEEE and CUDA's __float2half_rn / __float2bfloat16), fp8 saturates to the largest
 * finite value with the sign, infinities included (CUDA's __NV_SATFINITE, used by __nv_fp8_*). */
#ifndef AC_DEVICE_KERNELS_DTYPES_H
#define AC_DEVICE_KERNELS_DTYPES_H

#include "device/kernels/compat.h"

#include <stdbool.h>
#include <stdint.h>

/* The narrow conversions are written without branches (selects only) so that loops over them
 * vectorize; AVX2's per-lane shifts cover the variable shift of the subnormal case. */

/* A narrow format: ebits exponent bits, mbits mantissa bits, the exponent bias, whether the
 * all-ones exponent means inf/NaN (IEEE-like: fp16, e5m2) or only S.1111.111 is NaN (e4m3). */
AC_DEVFN float ac_dt_narrow_to_float(uint32_t v, int ebits, int mbits, int bias, bool has_inf)
{
    uint32_t sign = ((v >> (ebits + mbits)) & 1u) << 31;
    uint32_t emask = (1u << ebits) - 1;
    uint32_t mmask = (1u << mbits) - 1;
    uint32_t e = (v >> mbits) & emask;
    uint32_t m = v & mmask;
    /* zero or subnormal: m * 2^(1 - bias - mbits), exact in float */
    float sub = (float)m * ac_f32_from_bits((uint32_t)(127 + 1 - bias - mbits) << 23);
    uint32_t normal = ((e - bias + 127) << 23) | (m << (23 - mbits));
    uint32_t special = has_inf ? 0x7f800000u | (m << (23 - mbits)) /* inf, NaN with payload */
                               : 0x7fc00000u;                      /* e4m3's S.1111.111 */
    uint32_t mag = e == emask && (has_inf || m == mmask) ? special : normal;
    /* A mask, not a select: the float product must not look conditional, or the compiler keeps
     * a branch around it rather than speculate an operation that may raise a flag. */
    uint32_t is_sub = 0u - (uint32_t)(e == 0);

    mag = (ac_f32_bits(sub) & is_sub) | (mag & ~is_sub);

    return ac_f32_from_bits(sign | mag);
}

/* max_finite: the largest finite magnitude's encoding; saturate: overflow (infinities included)
 * gives it, else infinity. Rounding to nearest even adds half an ulp less one, plus the kept
 * lowest bit, then truncates; its carry may run from the mantissa into the exponent, which is the
 * correct next binade, and past max_finite is overflow. */
AC_DEVFN uint32_t ac_dt_float_to_narrow(float f, int ebits, int mbits, int bias, bool has_inf,
                                        bool saturate, uint32_t max_finite)
{
    uint32_t x = ac_f32_bits(f);
    uint32_t sign = (x >> 31) << (ebits + mbits);
    uint32_t a = x & 0x7fffffffu;
    uint32_t mmask = (1u << mbits) - 1;
    uint32_t inf = ((1u << ebits) - 1) << mbits;
    /* NaN: quiet, the top payload bits kept where there is room */
    uint32_t nan = inf | (has_inf ? (1u << (mbits - 1)) | ((a >> (23 - mbits)) & mmask) : mmask);
    uint32_t overflow = saturate ? max_finite : inf;
    int32_t e = (int32_t)(a >> 23) - 127 + bias; /* biased exponent in the narrow format */
    /* A subnormal result (float zeros and subnormals too) shifts the mantissa, implicit bit
     * included, further right; 25 or more leaves nothing (mantissa < 2^24, half > remainder). */
    int32_t sub_shift = 24 - mbits - e;
    uint32_t shift = e >= 1 ? (uint32_t)(23 - mbits) : sub_shift > 25 ? 25u : (uint32_t)sub_shift;
    uint32_t v = e >= 1 ? ((uint32_t)e << 23) | (a & 0x7fffffu) : (a & 0x7fffffu) | 0x800000u;
    uint32_t q = (v + (1u << (shift - 1)) - 1 + ((v >> shift) & 1u)) >> shift;
    uint32_t mag = a > 0x7f800000u ? nan : q > max_finite ? overflow : q;

    return sign | mag;
}

AC_DEVFN float ac_dt_half_to_float(uint16_t h)
{
    return ac_dt_narrow_to_float(h, 5, 10, 15, true);
}

AC_DEVFN uint16_t ac_dt_float_to_half(float f)
{
    return (uint16_t)ac_dt_float_to_narrow(f, 5, 10, 15, true, false, 0x7bffu);
}

AC_DEVFN float ac_dt_bf16_to_float(uint16_t b)
{
    return ac_f32_from_bits((uint32_t)b << 16);
}

/* bf16 is float's top half: add just under half an ulp (plus the kept bit, for ties to even) and
 * truncate. The largest floats carry into the exponent and give infinity, as they should. */
AC_DEVFN uint16_t ac_dt_float_to_bf16(float f)
{
    uint32_t x = ac_f32_bits(f);

    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

AC_DEVFN float ac_dt_fp8e4m3_to_float(uint8_t v)
{
    return ac_dt_narrow_to_float(v, 4, 3, 7, false);
}

AC_DEVFN uint8_t ac_dt_float_to_fp8e4m3(float f)
{
    return (uint8_t)ac_dt_float_to_narrow(f, 4, 3, 7, false, true, 0x7eu);
}

AC_DEVFN float ac_dt_fp8e5m2_to_float(uint8_t v)
{
    return ac_dt_narrow_to_float(v, 5, 2, 15, true);
}

AC_DEVFN uint8_t ac_dt_float_to_fp8e5m2(float f)
{
    return (uint8_t)ac_dt_float_to_narrow(f, 5, 2, 15, true, true, 0x7bu);
}

#endif
