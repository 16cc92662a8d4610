/* The host reduction kernels: every type x every operator (sum, prod, max, min, avg final and
 * not, premulsum) through ac_kern_load / ac_kern_reduce / ac_kern_combine, on counts that hit the
 * vector tails, in place and out of place, on pointers one element off alignment. Inputs are small
 * integers, exact in every type (fp8 included), so expected values come from formulas in double
 * and are compared bit for bit, with a guard element after the end that must stay untouched. */
#include "device/kernels/reduce.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Criterion 2.4's runner sometimes leaks 48 bytes of its own when tests run in parallel; LSan
 * would fail the ASan build for it. Read only by LeakSanitizer, ignored elsewhere. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

struct type_case {
    ncclDataType_t type;
    size_t size;
    bool is_unsigned;
    int ebits, mbits, bias; /* narrow floats (fp16, bf16, fp8); ebits 0 otherwise */
};

static const struct type_case all_types[] = {
    {ncclInt8, 1, false},
    {ncclUint8, 1, true},
    {ncclInt32, 4, false},
    {ncclUint32, 4, true},
    {ncclInt64, 8, false},
    {ncclUint64, 8, true},
    {ncclFloat16, 2, false, 5, 10, 15},
    {ncclFloat32, 4, false},
    {ncclFloat64, 8, false},
    {ncclBfloat16, 2, false, 8, 7, 127},
    {ncclFloat8e4m3, 1, false, 4, 3, 7},
    {ncclFloat8e5m2, 1, false, 5, 2, 15},
};

enum op_case {
    CASE_SUM,
    CASE_PROD,
    CASE_MAX,
    CASE_MIN,
    CASE_AVG_FINAL,
    CASE_AVG_PARTIAL,
    CASE_PREMULSUM,
    CASE_COUNT
};
static const char *const case_names[CASE_COUNT] = {
    "sum", "prod", "max", "min", "avg(final)", "avg(not final)", "premulsum"};
enum layout { OUT_OF_PLACE, DST_IS_FIRST, DST_IS_SECOND, LAYOUT_COUNT };
enum kern { KERN_LOAD, KERN_REDUCE, KERN_COMBINE, KERN_COUNT };
static const char *const kern_names[KERN_COUNT] = {"load", "reduce", "combine"};

#define PREMUL 2
#define POSTDIV 3

/* The encoding of v (zero or a normal value exact in the format) from the formula
 * v = sign * 2^e * (1 + m / 2^mbits). */
static uint32_t encode_exact(const struct type_case *t, double v)
{
    uint32_t sign = signbit(v) ? 1u << (t->ebits + t->mbits) : 0;
    int e;
    double frac = frexp(fabs(v), &e); /* |v| = frac * 2^e, frac in [0.5, 1) */

    if (v == 0)
        return sign;
    cr_assert(e - 1 + t->bias >= 1, "test bug: %g is not a normal value", v);
    return sign | (uint32_t)(e - 1 + t->bias) << t->mbits | (uint32_t)ldexp(frac * 2 - 1, t->mbits);
}

static void put(const struct type_case *t, void *buf, size_t i, double v)
{
    char *p = (char *)buf + i * t->size;
    uint32_t bits = t->ebits ? encode_exact(t, v) : 0;

    switch (t->type) {
    case ncclInt8:
        *(int8_t *)p = (int8_t)v;
        break;
    case ncclUint8:
        *(uint8_t *)p = (uint8_t)v;
        break;
    case ncclInt32:
        *(int32_t *)p = (int32_t)v;
        break;
    case ncclUint32:
        *(uint32_t *)p = (uint32_t)v;
        break;
    case ncclInt64:
        *(int64_t *)p = (int64_t)v;
        break;
    case ncclUint64:
        *(uint64_t *)p = (uint64_t)v;
        break;
    case ncclFloat32:
        *(float *)p = (float)v;
        break;
    case ncclFloat64:
        *(double *)p = v;
        break;
    case ncclFloat16:
    case ncclBfloat16:
        *(uint16_t *)p = (uint16_t)bits;
        break;
    default:
        *(uint8_t *)p = (uint8_t)bits;
        break;
    }
}

/* Inputs: small integers, [-2, 2] ([0, 4] unsigned), multiples of 3 for avg so that the quotient
 * is exact; every sum, product and premulsum of them is exact in every type. */
static double input(const struct type_case *t, enum op_case c, int which, size_t i)
{
    size_t k = which ? i * 3 + 2 : i * 7 + 1;

    if (c == CASE_AVG_FINAL || c == CASE_AVG_PARTIAL)
        return 3.0 * (double)(k % 3) - (t->is_unsigned ? 0 : 3);
    return (double)(k % 5) - (t->is_unsigned ? 0 : 2);
}

static double expected(enum op_case c, enum kern kern, double a, double b)
{
    double pre_b = (c == CASE_PREMULSUM && kern != KERN_COMBINE) ? PREMUL * b : b;

    if (kern == KERN_LOAD)
        return c == CASE_AVG_FINAL ? pre_b / POSTDIV : pre_b;
    switch (c) {
    case CASE_PROD:
        return a * b;
    case CASE_MAX:
        return a > b ? a : b;
    case CASE_MIN:
        return a < b ? a : b;
    case CASE_AVG_FINAL:
        return (a + b) / POSTDIV;
    default:
        return a + pre_b;
    }
}

static struct ac_redop make_op(const struct type_case *t, enum op_case c)
{
    struct ac_redop op = {.type = t->type, .kind = AC_OP_SUM};
    static const enum ac_op_kind kinds[] = {
        [CASE_PROD] = AC_OP_PROD, [CASE_MAX] = AC_OP_MAX, [CASE_MIN] = AC_OP_MIN};

    if (c <= CASE_MIN)
        op.kind = kinds[c];
    if (c == CASE_AVG_FINAL || c == CASE_AVG_PARTIAL)
        op.postdiv = POSTDIV;
    if (c == CASE_PREMULSUM) {
        op.has_premul = true;
        put(t, &op.scalar, 0, PREMUL); /* a value of the type in the low bytes */
    }
    return op;
}

struct run {
    const struct type_case *t;
    enum op_case c;
    enum kern kern;
    enum layout layout;
    size_t count, misalign;
};

static void check_run(const struct run *r)
{
    const struct type_case *t = r->t;
    size_t n = r->count, sz = t->size, off = r->misalign * sz;
    char *bufs[3], *guard = malloc(sz);
    struct ac_redop op = make_op(t, r->c);

    for (int j = 0; j < 3; j++) {
        bufs[j] = malloc((n + 2) * sz);
        memset(bufs[j], 0x5a, (n + 2) * sz);
    }
    char *a = bufs[0] + off, *b = bufs[1] + off;
    char *dst = r->layout == DST_IS_FIRST ? a : r->layout == DST_IS_SECOND ? b : bufs[2] + off;
    for (size_t i = 0; i < n; i++) {
        put(t, a, i, input(t, r->c, 0, i));
        put(t, b, i, input(t, r->c, 1, i));
    }
    memcpy(guard, dst + n * sz, sz);
    bool is_final = r->c == CASE_AVG_FINAL;
    if (r->kern == KERN_LOAD)
        ac_kern_load(&op, dst, b, n, is_final);
    else if (r->kern == KERN_REDUCE)
        ac_kern_reduce(&op, dst, a, b, n, is_final);
    else
        ac_kern_combine(&op, dst, a, b, n, is_final);

    char want[8];
    for (size_t i = 0; i < n; i++) {
        double v = expected(r->c, r->kern, input(t, r->c, 0, i), input(t, r->c, 1, i));
        put(t, want, 0, v);
        cr_assert(memcmp(dst + i * sz, want, sz) == 0,
                  "%s %s %s: count %zu layout %d misalign %zu: element %zu is wrong (want %g)",
                  kern_names[r->kern], case_names[r->c], ac_type_name(t->type), n, r->layout,
                  r->misalign, i, v);
    }
    cr_assert(memcmp(dst + n * sz, guard, sz) == 0, "%s %s %s: count %zu: wrote past the end",
              kern_names[r->kern], case_names[r->c], ac_type_name(t->type), n);
    for (int j = 0; j < 3; j++)
        free(bufs[j]);
    free(guard);
}

static void check_type(const struct type_case *t)
{
    static const size_t counts[] = {0, 1, 7, 1000, 4097};

    for (int c = 0; c < CASE_COUNT; c++)
        for (int k = 0; k < KERN_COUNT; k++)
            for (int l = 0; l < LAYOUT_COUNT; l++)
                for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++)
                    for (size_t mis = 0; mis < 2; mis++) {
                        if (k == KERN_LOAD && l == DST_IS_FIRST)
                            continue; /* load has a single input */
                        struct run r = {t, c, k, l, counts[ci], mis};
                        check_run(&r);
                    }
}

/* One test per type rather than a ParameterizedTest: Criterion 2.4's runner leaks a parameter
 * array when those run in parallel with other tests, which fails the ASan build. */
#define EVERY_OP_TEST(name, index)                                                                 \
    Test(reduce, every_op_##name, .timeout = 20)                                                   \
    {                                                                                              \
        check_type(&all_types[index]);                                                             \
    }

EVERY_OP_TEST(int8, 0)
EVERY_OP_TEST(uint8, 1)
EVERY_OP_TEST(int32, 2)
EVERY_OP_TEST(uint32, 3)
EVERY_OP_TEST(int64, 4)
EVERY_OP_TEST(uint64, 5)
EVERY_OP_TEST(half, 6)
EVERY_OP_TEST(float, 7)
EVERY_OP_TEST(double, 8)
EVERY_OP_TEST(bfloat16, 9)
EVERY_OP_TEST(f8e4m3, 10)
EVERY_OP_TEST(f8e5m2, 11)

Test(reduce, type_sizes_and_names, .timeout = 10)
{
    static const size_t sizes[ncclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
    static const char *const names[ncclNumTypes] = {"int8",   "uint8",    "int32",  "uint32",
                                                    "int64",  "uint64",   "half",   "float",
                                                    "double", "bfloat16", "f8e4m3", "f8e5m2"};

    for (int i = 0; i < ncclNumTypes; i++) {
        cr_assert_eq(ac_type_size((ncclDataType_t)i), sizes[i], "type %d", i);
        cr_assert_str_eq(ac_type_name((ncclDataType_t)i), names[i], "type %d", i);
    }
    cr_assert_eq(ac_type_size(ncclNumTypes), 0);
    cr_assert_eq(ac_type_size((ncclDataType_t)-1), 0);
}

/* ac_kern_reduce on n raw elements of type; returns dst in out. */
static void reduce_raw(struct ac_redop op, const void *recvd, const void *local, void *out,
                       size_t n, bool is_final)
{
    ac_kern_reduce(&op, out, recvd, local, n, is_final);
}

Test(reduce, integers_wrap_and_keep_signedness, .timeout = 10)
{
    int8_t a8[] = {127, -128, -1, 100}, b8[] = {1, -1, 1, 3}, o8[4];
    uint8_t ua8[] = {255, 0x80, 0x7f, 200}, ub8[] = {1, 0x7f, 0x80, 2}, uo8[4];
    int32_t a32[] = {INT32_MAX, INT32_MIN}, b32[] = {1, -1}, o32[2];
    int64_t a64[] = {INT64_MAX, INT64_MIN}, b64[] = {1, 2}, o64[2];

    reduce_raw((struct ac_redop){.type = ncclInt8, .kind = AC_OP_SUM}, a8, b8, o8, 4, false);
    cr_assert(o8[0] == -128 && o8[1] == 127 && o8[2] == 0 && o8[3] == 103);
    reduce_raw((struct ac_redop){.type = ncclInt8, .kind = AC_OP_PROD}, a8, b8, o8, 4, false);
    cr_assert(o8[0] == 127 && o8[1] == -128 && o8[2] == -1 && o8[3] == 44); /* 300 - 256 */
    reduce_raw((struct ac_redop){.type = ncclInt8, .kind = AC_OP_MAX}, a8, b8, o8, 4, false);
    cr_assert(o8[0] == 127 && o8[1] == -1 && o8[2] == 1 && o8[3] == 100);
    reduce_raw((struct ac_redop){.type = ncclUint8, .kind = AC_OP_SUM}, ua8, ub8, uo8, 4, false);
    cr_assert(uo8[0] == 0 && uo8[1] == 0xff && uo8[2] == 0xff && uo8[3] == 202);
    reduce_raw((struct ac_redop){.type = ncclUint8, .kind = AC_OP_MAX}, ua8, ub8, uo8, 4, false);
    cr_assert(uo8[0] == 255 && uo8[1] == 0x80 && uo8[2] == 0x80 && uo8[3] == 200);
    reduce_raw((struct ac_redop){.type = ncclUint8, .kind = AC_OP_MIN}, ua8, ub8, uo8, 4, false);
    cr_assert(uo8[0] == 1 && uo8[1] == 0x7f && uo8[2] == 0x7f && uo8[3] == 2);
    reduce_raw((struct ac_redop){.type = ncclInt32, .kind = AC_OP_SUM}, a32, b32, o32, 2, false);
    cr_assert(o32[0] == INT32_MIN && o32[1] == INT32_MAX);
    reduce_raw((struct ac_redop){.type = ncclInt32, .kind = AC_OP_MIN}, a32, b32, o32, 2, false);
    cr_assert(o32[0] == 1 && o32[1] == INT32_MIN);
    reduce_raw((struct ac_redop){.type = ncclInt64, .kind = AC_OP_SUM}, a64, b64, o64, 2, false);
    cr_assert(o64[0] == INT64_MIN && o64[1] == INT64_MIN + 2);
    reduce_raw((struct ac_redop){.type = ncclInt64, .kind = AC_OP_PROD}, a64, b64, o64, 2, false);
    cr_assert(o64[0] == INT64_MAX && o64[1] == 0);
}

Test(reduce, integer_avg_truncates_toward_zero, .timeout = 10)
{
    int32_t a[] = {1, -1, 2, -2, 3}, b[] = {3, -3, 3, -3, 3}, o[5];
    uint32_t ua[] = {1, 2, 0xffffffffu}, ub[] = {3, 3, 3}, uo[3];
    int8_t a8[] = {127}, b8[] = {2}, o8[1];
    struct ac_redop op = {.type = ncclInt32, .kind = AC_OP_SUM, .postdiv = 3};

    reduce_raw(op, a, b, o, 5, true);
    cr_assert(o[0] == 1 && o[1] == -1 && o[2] == 1 && o[3] == -1 && o[4] == 2); /* 4/3 -4/3 5/3 */
    op.type = ncclUint32;
    reduce_raw(op, ua, ub, uo, 3, true);
    cr_assert(uo[0] == 1 && uo[1] == 1 && uo[2] == 0); /* the wrapped sum 2 divides to 0 */
    op.type = ncclInt8;
    reduce_raw(op, a8, b8, o8, 1, true); /* 129 wraps to -127, then -127 / 3 = -42 */
    cr_assert_eq(o8[0], -42);
}

Test(reduce, float_max_min_propagate_nan, .timeout = 10)
{
    float a[] = {NAN, 1.0f, -INFINITY, 2.0f}, b[] = {1.0f, NAN, 3.0f, INFINITY}, o[4];
    double da[] = {NAN, 1.0}, db[] = {1.0, NAN}, dout[2];
    uint16_t ha[] = {0x7e00, 0x3c00}, hb[] = {0x3c00, 0x7e00}, ho[2]; /* fp16 NaN, 1.0 */
    uint16_t ba[] = {0x7fc0, 0x3f80}, bb[] = {0x3f80, 0x7fc0}, bo[2]; /* bf16 NaN, 1.0 */
    uint8_t ea[] = {0x7f, 0x38}, eb[] = {0x38, 0xff}, eo[2];          /* e4m3 NaN, 1.0 */
    uint8_t fa[] = {0x7f, 0x3c}, fb[] = {0x3c, 0x7e}, fo[2];          /* e5m2 NaN, 1.0 */

    for (int kind = AC_OP_MAX; kind <= AC_OP_MIN; kind++) {
        reduce_raw((struct ac_redop){.type = ncclFloat32, .kind = kind}, a, b, o, 4, false);
        cr_assert(isnan(o[0]) && isnan(o[1]));
        cr_assert_eq(o[2], kind == AC_OP_MAX ? 3.0f : -INFINITY);
        cr_assert_eq(o[3], kind == AC_OP_MAX ? INFINITY : 2.0f);
        reduce_raw((struct ac_redop){.type = ncclFloat64, .kind = kind}, da, db, dout, 2, false);
        cr_assert(isnan(dout[0]) && isnan(dout[1]));
        reduce_raw((struct ac_redop){.type = ncclFloat16, .kind = kind}, ha, hb, ho, 2, false);
        cr_assert(isnan(ac_half_to_float(ho[0])) && isnan(ac_half_to_float(ho[1])));
        reduce_raw((struct ac_redop){.type = ncclBfloat16, .kind = kind}, ba, bb, bo, 2, false);
        cr_assert(isnan(ac_bf16_to_float(bo[0])) && isnan(ac_bf16_to_float(bo[1])));
        reduce_raw((struct ac_redop){.type = ncclFloat8e4m3, .kind = kind}, ea, eb, eo, 2, false);
        cr_assert(isnan(ac_fp8e4m3_to_float(eo[0])) && isnan(ac_fp8e4m3_to_float(eo[1])));
        reduce_raw((struct ac_redop){.type = ncclFloat8e5m2, .kind = kind}, fa, fb, fo, 2, false);
        cr_assert(isnan(ac_fp8e5m2_to_float(fo[0])) && isnan(ac_fp8e5m2_to_float(fo[1])));
    }
}

Test(reduce, narrow_floats_round_in_float, .timeout = 10)
{
    /* fp16: 2048 + 1 is a tie between 2048 and 2050: even is 2048; 2048 + 3 -> 2052 */
    uint16_t ha[] = {0x6800, 0x6800}, hb[] = {0x3c00, 0x4200}, ho[2];
    /* e4m3: 448 + 448 saturates to 448; e5m2: 57344 * 2 saturates */
    uint8_t ea[] = {0x7e, 0xfe}, eb[] = {0x7e, 0xfe}, eo[2];
    uint8_t fa[] = {0x7b}, fb[] = {0x40}, fo[1];
    /* f32 avg in the float domain: (1 + 1) / 3 rounds once, as 2.0f / 3 does */
    float a[] = {1.0f}, b[] = {1.0f}, o[1];

    reduce_raw((struct ac_redop){.type = ncclFloat16, .kind = AC_OP_SUM}, ha, hb, ho, 2, false);
    cr_assert(ho[0] == 0x6800 && ho[1] == 0x6802, "got 0x%x 0x%x", ho[0], ho[1]);
    reduce_raw((struct ac_redop){.type = ncclFloat8e4m3, .kind = AC_OP_SUM}, ea, eb, eo, 2, false);
    cr_assert(eo[0] == 0x7e && eo[1] == 0xfe, "got 0x%x 0x%x", eo[0], eo[1]);
    reduce_raw((struct ac_redop){.type = ncclFloat8e5m2, .kind = AC_OP_PROD}, fa, fb, fo, 1, false);
    cr_assert_eq(fo[0], 0x7b);
    reduce_raw((struct ac_redop){.type = ncclFloat32, .kind = AC_OP_SUM, .postdiv = 3}, a, b, o, 1,
               true);
    cr_assert_eq(o[0], 2.0f / 3);
}

/* Every code of each narrow type (every pair for fp8) through each operator, against float
 * arithmetic on the conversions that test_dtypes checks against the formats' definitions. This
 * covers the vectorized software loops and, on x86 with F16C, the hardware fp16 path alike. */
struct narrow_type {
    ncclDataType_t type;
    int bits;
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

static float reference_op(enum ac_op_kind kind, float a, float b)
{
    switch (kind) {
    case AC_OP_SUM:
        return a + b;
    case AC_OP_PROD:
        return a * b;
    case AC_OP_MAX:
        return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    default:
        return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    }
}

static uint32_t get_code(const struct narrow_type *t, const void *buf, size_t i)
{
    return t->bits == 16 ? ((const uint16_t *)buf)[i] : ((const uint8_t *)buf)[i];
}

static void set_code(const struct narrow_type *t, void *buf, size_t i, uint32_t v)
{
    if (t->bits == 16)
        ((uint16_t *)buf)[i] = (uint16_t)v;
    else
        ((uint8_t *)buf)[i] = (uint8_t)v;
}

static void check_every_code(const struct narrow_type *t)
{
    size_t n = 65536, bytes = n * (size_t)t->bits / 8;
    char *a = malloc(bytes), *b = malloc(bytes), *out = malloc(bytes);

    for (size_t i = 0; i < n; i++) { /* 16 bits: every a, b a scrambled code; 8 bits: all pairs */
        set_code(t, a, i, t->bits == 16 ? i : i & 0xff);
        set_code(t, b, i, t->bits == 16 ? (i * 40503u + 12345u) & 0xffff : i >> 8);
    }
    for (int kind = 0; kind < AC_OP_KIND_COUNT; kind++) {
        struct ac_redop op = {.type = t->type, .kind = kind};

        ac_kern_reduce(&op, out, a, b, n, false);
        for (size_t i = 0; i < n; i++) {
            uint32_t ca = get_code(t, a, i), cb = get_code(t, b, i), got = get_code(t, out, i);
            float want = reference_op(kind, t->decode(ca), t->decode(cb));

            if (isnan(want))
                cr_assert(isnan(t->decode(got)), "%s op %d: 0x%x, 0x%x gave 0x%x, want NaN",
                          ac_type_name(t->type), kind, ca, cb, got);
            else
                cr_assert_eq(got, t->encode(want), "%s op %d: 0x%x, 0x%x gave 0x%x, want 0x%x",
                             ac_type_name(t->type), kind, ca, cb, got, t->encode(want));
        }
    }
    free(a);
    free(b);
    free(out);
}

Test(reduce, every_half_code, .timeout = 10)
{
    check_every_code(&(struct narrow_type){ncclFloat16, 16, dec_half, enc_half});
}

Test(reduce, every_bf16_code, .timeout = 10)
{
    check_every_code(&(struct narrow_type){ncclBfloat16, 16, dec_bf16, enc_bf16});
}

Test(reduce, every_fp8_pair, .timeout = 10)
{
    check_every_code(&(struct narrow_type){ncclFloat8e4m3, 8, dec_e4m3, enc_e4m3});
    check_every_code(&(struct narrow_type){ncclFloat8e5m2, 8, dec_e5m2, enc_e5m2});
}

/* Copies into the user's buffer, whole and in parts of a larger copy, below and above the size
 * from which they bypass the cache (256 KiB), at destinations off alignment by a byte and by
 * less and more than a vector: every byte lands, nothing before or after is touched. */
Test(reduce, copy_out_whole_and_in_parts, .timeout = 10)
{
    const size_t sizes[] = {0, 1, 31, 4097, 256 * 1024 - 1, 256 * 1024 + 129, 1 << 20};
    const size_t shifts[] = {0, 1, 31, 33};
    size_t max = (1 << 20) + 128;
    unsigned char *src = malloc(max), *dst = malloc(max);
    cr_assert(src != NULL && dst != NULL);
    for (size_t i = 0; i < max; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t s = 0; s < sizeof(shifts) / sizeof(shifts[0]); s++) {
            size_t n = sizes[k], sh = shifts[s], part = 16 * 1024;
            for (int whole = 0; whole < 2; whole++) {
                memset(dst, 0xa5, max);
                if (whole) {
                    ac_kern_copy_out(dst + sh, src + 64, n);
                } else {
                    for (size_t off = 0; off < n; off += part)
                        ac_kern_copy_out_part(dst + sh + off, src + 64 + off,
                                              n - off < part ? n - off : part, n);
                }
                for (size_t i = 0; i < sh; i++)
                    cr_assert_eq(dst[i], 0xa5, "byte %zu before the copy written", i);
                cr_assert(memcmp(dst + sh, src + 64, n) == 0,
                          "copy of %zu bytes to offset %zu (%s) differs", n, sh,
                          whole ? "whole" : "in parts");
                for (size_t i = sh + n; i < sh + n + 64 && i < max; i++)
                    cr_assert_eq(dst[i], 0xa5, "byte %zu after the copy written", i);
            }
        }
    }
    memcpy(dst, src, 4096);
    ac_kern_copy_out(dst, dst, 4096); /* the same buffer: nothing to do, nothing changed */
    cr_assert(memcmp(dst, src, 4096) == 0);
    free(src);
    free(dst);
}

/* Between the user's buffers: overlapping ones (forward and backward, below and above the
 * streaming size) end as memmove leaves them, disjoint ones as a copy. */
Test(reduce, copy_user_overlapping, .timeout = 10)
{
    const size_t sizes[] = {1, 4097, 300 * 1024};
    const long shifts[] = {-4096, -1, 1, 4096};
    size_t max = 2 * 300 * 1024;
    unsigned char *buf = malloc(max), *want = malloc(max);
    cr_assert(buf != NULL && want != NULL);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t s = 0; s < sizeof(shifts) / sizeof(shifts[0]); s++) {
            for (size_t i = 0; i < max; i++)
                buf[i] = want[i] = (unsigned char)(i * 13 + 1);
            size_t n = sizes[k], at = 8192;
            unsigned char *src = buf + at, *dst = buf + (long)at + shifts[s];
            memmove(want + (long)at + shifts[s], want + at, n);
            ac_kern_copy_user(dst, src, n);
            cr_assert(memcmp(buf, want, max) == 0, "%zu bytes shifted by %ld", n, shifts[s]);
        }
    }
    for (size_t i = 0; i < max; i++)
        buf[i] = (unsigned char)i;
    ac_kern_copy_user(buf + max / 2, buf, max / 2); /* disjoint */
    cr_assert(memcmp(buf + max / 2, buf, max / 2) == 0);
    free(buf);
    free(want);
}
