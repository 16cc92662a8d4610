/* Float <-> fp16, bf16, fp8 (e4m3, e5m2) conversions, checked against an independent decoder
 * written from the formats' definitions: every value of every format decodes and round-trips,
 * every tie between neighbours rounds to the even one, overflow and NaN behave as specified. */
#include "device/kernels/reduce.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Criterion 2.4's runner sometimes leaks 48 bytes of its own when tests run in parallel; LSan
 * would fail the ASan build for it. Read only by LeakSanitizer, ignored elsewhere. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

struct format {
    const char *name;
    int ebits, mbits, bias;
    bool is_ieee;      /* all-ones exponent is inf/NaN; else (e4m3) only S.1111.111 is NaN */
    uint32_t max_bits; /* encoding of the largest finite value */
    bool saturates;    /* overflow gives max_bits, else infinity */
    float (*decode)(uint32_t v);
    uint32_t (*encode)(float f);
};

static float dec_half(uint32_t v)
{
    return ac_half_to_float((uint16_t)v);
}
static uint32_t enc_half(float f)
{
    return ac_float_to_half(f);
}
static float dec_bf16(uint32_t v)
{
    return ac_bf16_to_float((uint16_t)v);
}
static uint32_t enc_bf16(float f)
{
    return ac_float_to_bf16(f);
}
static float dec_e4m3(uint32_t v)
{
    return ac_fp8e4m3_to_float((uint8_t)v);
}
static uint32_t enc_e4m3(float f)
{
    return ac_float_to_fp8e4m3(f);
}
static float dec_e5m2(uint32_t v)
{
    return ac_fp8e5m2_to_float((uint8_t)v);
}
static uint32_t enc_e5m2(float f)
{
    return ac_float_to_fp8e5m2(f);
}

static const struct format half_fmt = {"fp16", 5, 10, 15, true, 0x7bff, false, dec_half, enc_half};
static const struct format bf16_fmt = {"bf16", 8, 7, 127, true, 0x7f7f, false, dec_bf16, enc_bf16};
static const struct format e4m3_fmt = {"e4m3", 4, 3, 7, false, 0x7e, true, dec_e4m3, enc_e4m3};
static const struct format e5m2_fmt = {"e5m2", 5, 2, 15, true, 0x7b, true, dec_e5m2, enc_e5m2};

static uint32_t sign_bit(const struct format *f)
{
    return 1u << (f->ebits + f->mbits);
}
static uint32_t ncodes(const struct format *f)
{
    return 2u << (f->ebits + f->mbits);
}

static bool is_nan_code(const struct format *f, uint32_t v)
{
    uint32_t emax = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
    uint32_t e = (v >> f->mbits) & emax, m = v & mmask;

    return e == emax && (f->is_ieee ? m != 0 : m == mmask);
}

/* The value of code v by the textbook formula, in double: sign * 2^(e-bias) * (1 + m/2^mbits),
 * subnormals sign * 2^(1-bias) * m/2^mbits. */
static double reference_value(const struct format *f, uint32_t v)
{
    uint32_t emax = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
    uint32_t e = (v >> f->mbits) & emax, m = v & mmask;
    double sign = (v & sign_bit(f)) ? -1.0 : 1.0;

    if (is_nan_code(f, v))
        return NAN;
    if (f->is_ieee && e == emax)
        return sign * INFINITY;
    if (e == 0)
        return sign * ldexp((double)m / (1u << f->mbits), 1 - f->bias);
    return sign * ldexp(1.0 + (double)m / (1u << f->mbits), (int)e - f->bias);
}

static void check_decode_all(const struct format *f)
{
    for (uint32_t v = 0; v < ncodes(f); v++) {
        float got = f->decode(v);
        double want = reference_value(f, v);

        if (isnan(want)) {
            cr_assert(isnan(got), "%s 0x%x: decoded %a, want NaN", f->name, v, got);
            continue;
        }
        cr_assert((double)got == want && !signbit(got) == !signbit(want),
                  "%s 0x%x: decoded %a, want %a", f->name, v, got, want);
    }
}

/* Every non-NaN code survives code -> float -> code; NaN stays NaN. */
static void check_round_trip_all(const struct format *f, uint32_t except_code, uint32_t except_to)
{
    for (uint32_t v = 0; v < ncodes(f); v++) {
        uint32_t back = f->encode(f->decode(v));
        uint32_t want = v;

        if (is_nan_code(f, v)) {
            cr_assert(is_nan_code(f, back), "%s 0x%x: NaN came back as 0x%x", f->name, v, back);
            continue;
        }
        if ((v & ~sign_bit(f)) == except_code)
            want = (v & sign_bit(f)) | except_to;
        cr_assert_eq(back, want, "%s 0x%x: came back as 0x%x, want 0x%x", f->name, v, back, want);
    }
}

Test(dtypes, decode_matches_formula, .timeout = 10)
{
    check_decode_all(&half_fmt);
    check_decode_all(&bf16_fmt);
    check_decode_all(&e4m3_fmt);
    check_decode_all(&e5m2_fmt);
}

Test(dtypes, round_trip_every_code, .timeout = 10)
{
    check_round_trip_all(&half_fmt, UINT32_MAX, 0);
    check_round_trip_all(&bf16_fmt, UINT32_MAX, 0);
    check_round_trip_all(&e4m3_fmt, UINT32_MAX, 0);
    /* e5m2's infinities saturate to the largest finite value (SATFINITE) */
    check_round_trip_all(&e5m2_fmt, 0x7c, 0x7b);
}

/* For each pair of neighbouring positive finite codes (lo, lo+1): their exact midpoint rounds to
 * the even code; one float ulp above goes up, one below goes down. Negatives mirror. */
static void check_ties(const struct format *f)
{
    for (uint32_t lo = 0; lo < f->max_bits; lo++) {
        double a = reference_value(f, lo), b = reference_value(f, lo + 1);
        float mid = (float)((a + b) / 2);
        uint32_t even = (lo & 1) ? lo + 1 : lo;
        float above = nextafterf(mid, INFINITY), below = nextafterf(mid, 0.0f);

        cr_assert_eq((double)mid, (a + b) / 2, "%s: midpoint of 0x%x not exact", f->name, lo);
        cr_assert_eq(f->encode(mid), even, "%s: tie %a above 0x%x gave 0x%x", f->name, mid, lo,
                     f->encode(mid));
        cr_assert_eq(f->encode(-mid), sign_bit(f) | even, "%s: tie -%a", f->name, mid);
        cr_assert_eq(f->encode(above), lo + 1, "%s: %a gave 0x%x", f->name, above,
                     f->encode(above));
        cr_assert_eq(f->encode(below), lo, "%s: %a gave 0x%x", f->name, below, f->encode(below));
        cr_assert_eq(f->encode(-below), sign_bit(f) | lo, "%s: -%a", f->name, below);
    }
}

Test(dtypes, ties_round_to_even, .timeout = 10)
{
    check_ties(&half_fmt);
    check_ties(&bf16_fmt);
    check_ties(&e4m3_fmt);
    check_ties(&e5m2_fmt);
}

Test(dtypes, named_ties_and_subnormals, .timeout = 10)
{
    cr_assert_eq(ac_float_to_half(1.0f + 0x1p-11f), 0x3c00);     /* tie, even is 1.0 */
    cr_assert_eq(ac_float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie, even is above */
    cr_assert_eq(ac_float_to_half(0x1p-24f), 0x0001);            /* smallest subnormal */
    cr_assert_eq(ac_float_to_half(0x1p-25f), 0x0000);            /* tie with zero */
    cr_assert_eq(ac_float_to_half(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    cr_assert_eq(ac_float_to_half(3 * 0x1p-25f), 0x0002);
    cr_assert_eq(ac_float_to_half(0x1p-14f - 0x1p-25f), 0x0400); /* rounds up into the normals */
    cr_assert_eq(ac_float_to_half(-0.0f), 0x8000);
    cr_assert_eq(ac_float_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    cr_assert_eq(ac_float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    cr_assert_eq(ac_float_to_bf16(0x1p-133f), 0x0001); /* float subnormal in bf16 */
    cr_assert_eq(ac_float_to_fp8e4m3(0x1p-9f), 0x01);
    cr_assert_eq(ac_float_to_fp8e4m3(0x1p-10f), 0x00);
    cr_assert_eq(ac_float_to_fp8e4m3(3 * 0x1p-10f), 0x02);
    cr_assert_eq(ac_float_to_fp8e4m3(1e-30f), 0x00);
    cr_assert_eq(ac_float_to_fp8e5m2(0x1p-16f), 0x01);
    cr_assert_eq(ac_float_to_fp8e5m2(0x1p-17f), 0x00);
    cr_assert_eq(ac_float_to_fp8e5m2(-3 * 0x1p-17f), 0x82);
    cr_assert_float_eq(ac_half_to_float(0x0001), 0x1p-24f, 0.0f);
    cr_assert_float_eq(ac_fp8e4m3_to_float(0x01), 0x1p-9f, 0.0f);
    cr_assert_float_eq(ac_fp8e5m2_to_float(0x01), 0x1p-16f, 0.0f);
}

Test(dtypes, overflow, .timeout = 10)
{
    cr_assert_eq(ac_float_to_fp8e4m3(500.0f), 0x7e); /* 448 */
    cr_assert_eq(ac_float_to_fp8e4m3(-500.0f), 0xfe);
    cr_assert_eq(ac_float_to_fp8e4m3(464.0f), 0x7e); /* past 448: saturate, not NaN */
    cr_assert_eq(ac_float_to_fp8e4m3(1e30f), 0x7e);
    cr_assert_eq(ac_float_to_fp8e4m3(INFINITY), 0x7e);
    cr_assert_eq(ac_float_to_fp8e4m3(-INFINITY), 0xfe);
    cr_assert_eq(ac_float_to_fp8e5m2(1e6f), 0x7b); /* 57344 */
    cr_assert_eq(ac_float_to_fp8e5m2(-1e6f), 0xfb);
    cr_assert_eq(ac_float_to_fp8e5m2(61440.0f), 0x7b);
    cr_assert_eq(ac_float_to_fp8e5m2(INFINITY), 0x7b);
    cr_assert_eq(ac_float_to_half(1e6f), 0x7c00);
    cr_assert_eq(ac_float_to_half(-1e6f), 0xfc00);
    cr_assert_eq(ac_float_to_half(65519.0f), 0x7bff); /* below the 65520 tie */
    cr_assert_eq(ac_float_to_half(65520.0f), 0x7c00); /* tie: the even side is inf */
    cr_assert_eq(ac_float_to_half(INFINITY), 0x7c00);
    cr_assert_eq(ac_float_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds up to inf */
    cr_assert_eq(ac_float_to_bf16(-INFINITY), 0xff80);
    cr_assert_float_eq(ac_fp8e4m3_to_float(0x7e), 448.0f, 0.0f);
    cr_assert_float_eq(ac_fp8e5m2_to_float(0x7b), 57344.0f, 0.0f);
}

Test(dtypes, nan_stays_nan, .timeout = 10)
{
    float nans[] = {NAN, -NAN, __builtin_nansf(""), -__builtin_nanf("0x1")};

    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        float n = nans[i];

        cr_assert(is_nan_code(&half_fmt, ac_float_to_half(n)), "fp16 NaN %zu", i);
        cr_assert(is_nan_code(&bf16_fmt, ac_float_to_bf16(n)), "bf16 NaN %zu", i);
        cr_assert(is_nan_code(&e4m3_fmt, ac_float_to_fp8e4m3(n)), "e4m3 NaN %zu", i);
        cr_assert(is_nan_code(&e5m2_fmt, ac_float_to_fp8e5m2(n)), "e5m2 NaN %zu", i);
    }
    cr_assert(isnan(ac_fp8e4m3_to_float(0x7f)) && isnan(ac_fp8e4m3_to_float(0xff)));
    cr_assert(isinf(ac_fp8e5m2_to_float(0x7c)) && isnan(ac_fp8e5m2_to_float(0x7d)));
}
