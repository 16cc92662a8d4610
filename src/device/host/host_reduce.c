/* The host instantiation of the shared reduction kernels: one plain loop per (storage type,
 * operator) over the element functions of kernels/ops.h, picked once per call from a table.
 * premulsum and avg run as extra passes over blocks small enough to stay in L1, so that the common
 * case (no premul, not the final step) is a single loop that the compiler vectorizes. Two hand
 * vectorized paths give the same bits as those loops, faster: bf16 on 32-byte vectors, fp16 with
 * x86's F16C conversions when the CPU has them. */
#include "device/kernels/ops.h"
#include "device/kernels/reduce.h"

#include <string.h>

/* GCC -O2 vectorizes only with its cheap cost model; O3 on the hot loops gets full vectors. On
 * x86-64 an AVX2 clone is picked at load time on machines that have it. */
#if defined(__x86_64__) && defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#elif defined(__x86_64__) && defined(__GNUC__)
#define HOT __attribute__((optimize("O3"), target_clones("avx2", "default")))
#elif defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((optimize("O3")))
#else
#define HOT
#endif

/* dst = a OP b elementwise. No restrict: dst may equal a or b, and GCC's runtime overlap check
 * accepts equal pointers (distance 0) and still takes the vector loop. */
typedef void binop_fn(void *dst, const void *a, const void *b, size_t n);
/* dst = src OP arg elementwise: the premul product (arg: the scalar's bits) or the avg division
 * (arg: postdiv). */
typedef void unop_fn(void *dst, const void *src, size_t n, uint64_t arg);

#define DEFINE_BINOP(name, T, op)                                                                  \
    static HOT void name(void *dst, const void *a, const void *b, size_t n)                        \
    {                                                                                              \
        T *d = dst;                                                                                \
        const T *x = a, *y = b;                                                                    \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] = op(x[i], y[i]);                                                                 \
    }

/* The scalar is a value of T in the low bytes of arg; U is the unsigned type of T's size. */
#define DEFINE_PREMUL(name, T, U, op)                                                              \
    static HOT void name(void *dst, const void *src, size_t n, uint64_t arg)                       \
    {                                                                                              \
        U bits = (U)arg;                                                                           \
        T s, *d = dst;                                                                             \
        const T *x = src;                                                                          \
        memcpy(&s, &bits, sizeof s);                                                               \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] = op(x[i], s);                                                                    \
    }

#define DEFINE_POSTDIV(name, T, op)                                                                \
    static void name(void *dst, const void *src, size_t n, uint64_t arg)                           \
    {                                                                                              \
        T *d = dst;                                                                                \
        const T *x = src;                                                                          \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] = op(x[i], (uint32_t)arg);                                                        \
    }

/* sum and prod give the same bits for a signed type and its unsigned twin: one loop for both. */
DEFINE_BINOP(sum_u8, uint8_t, ac_op_sum_u8)
DEFINE_BINOP(prod_u8, uint8_t, ac_op_prod_u8)
DEFINE_BINOP(max_i8, int8_t, ac_op_max_i8)
DEFINE_BINOP(min_i8, int8_t, ac_op_min_i8)
DEFINE_BINOP(max_u8, uint8_t, ac_op_max_u8)
DEFINE_BINOP(min_u8, uint8_t, ac_op_min_u8)
DEFINE_BINOP(sum_u32, uint32_t, ac_op_sum_u32)
DEFINE_BINOP(prod_u32, uint32_t, ac_op_prod_u32)
DEFINE_BINOP(max_i32, int32_t, ac_op_max_i32)
DEFINE_BINOP(min_i32, int32_t, ac_op_min_i32)
DEFINE_BINOP(max_u32, uint32_t, ac_op_max_u32)
DEFINE_BINOP(min_u32, uint32_t, ac_op_min_u32)
DEFINE_BINOP(sum_u64, uint64_t, ac_op_sum_u64)
DEFINE_BINOP(prod_u64, uint64_t, ac_op_prod_u64)
DEFINE_BINOP(max_i64, int64_t, ac_op_max_i64)
DEFINE_BINOP(min_i64, int64_t, ac_op_min_i64)
DEFINE_BINOP(max_u64, uint64_t, ac_op_max_u64)
DEFINE_BINOP(min_u64, uint64_t, ac_op_min_u64)
DEFINE_BINOP(sum_f16, uint16_t, ac_op_sum_f16)
DEFINE_BINOP(prod_f16, uint16_t, ac_op_prod_f16)
DEFINE_BINOP(max_f16, uint16_t, ac_op_max_f16)
DEFINE_BINOP(min_f16, uint16_t, ac_op_min_f16)
DEFINE_BINOP(sum_f32, float, ac_op_sum_f32)
DEFINE_BINOP(prod_f32, float, ac_op_prod_f32)
DEFINE_BINOP(max_f32, float, ac_op_max_f32)
DEFINE_BINOP(min_f32, float, ac_op_min_f32)
DEFINE_BINOP(sum_f64, double, ac_op_sum_f64)
DEFINE_BINOP(prod_f64, double, ac_op_prod_f64)
DEFINE_BINOP(max_f64, double, ac_op_max_f64)
DEFINE_BINOP(min_f64, double, ac_op_min_f64)
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* bf16 is float's top half, so a 32-bit lane holding two bf16 values already has the odd one in
 * float position (clear the low half) and the even one a shift away: 16 elements per pass with
 * no unpacking, about half the instructions of the auto-vectorized element loop. Rounding as in
 * dtypes.h: add half an ulp less one plus the kept lowest bit; NaN only gets its quiet bit. The
 * helpers are macros: 32-byte vector arguments would change the ABI of the default clone. */
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));

#define BF16_ROUND(f)                                                                              \
    ({                                                                                             \
        u32x8 x_ = (u32x8)(f), nan_ = (u32x8)((f) != (f));                                         \
        (nan_ & (x_ | 0x400000u)) | (~nan_ & (x_ + 0x7fffu + ((x_ >> 16) & 1u)));                  \
    })
#define VEC_SUM(a, b) ((a) + (b))
#define VEC_PROD(a, b) ((a) * (b))
/* ops.h's NaN-propagating max/min: a when a > b (resp. <) or a is NaN, else b. */
#define VEC_PICK(a, b, take_a)                                                                     \
    ({                                                                                             \
        u32x8 t_ = (u32x8)(take_a);                                                                \
        (f32x8)((t_ & (u32x8)(a)) | (~t_ & (u32x8)(b)));                                           \
    })
#define VEC_MAX(a, b) VEC_PICK(a, b, ((a) > (b)) | ((a) != (a)))
#define VEC_MIN(a, b) VEC_PICK(a, b, ((a) < (b)) | ((a) != (a)))

/* Each block is loaded before it is stored: dst may equal a or b. */
#define DEFINE_BF16_BINOP(name, vop, op)                                                           \
    static HOT void name(void *dst, const void *a, const void *b, size_t n)                        \
    {                                                                                              \
        uint16_t *d = dst;                                                                         \
        const uint16_t *x = a, *y = b;                                                             \
        size_t i = 0;                                                                              \
        for (; i + 16 <= n; i += 16) {                                                             \
            u32x8 va, vb, r;                                                                       \
            memcpy(&va, x + i, sizeof va);                                                         \
            memcpy(&vb, y + i, sizeof vb);                                                         \
            f32x8 even = vop((f32x8)(va << 16), (f32x8)(vb << 16));                                \
            f32x8 odd = vop((f32x8)(va & 0xffff0000u), (f32x8)(vb & 0xffff0000u));                 \
            r = (BF16_ROUND(even) >> 16) | (BF16_ROUND(odd) & 0xffff0000u);                        \
            memcpy(d + i, &r, sizeof r);                                                           \
        }                                                                                          \
        for (; i < n; i++)                                                                         \
            d[i] = op(x[i], y[i]);                                                                 \
    }

DEFINE_BF16_BINOP(sum_bf16, VEC_SUM, ac_op_sum_bf16)
DEFINE_BF16_BINOP(prod_bf16, VEC_PROD, ac_op_prod_bf16)
DEFINE_BF16_BINOP(max_bf16, VEC_MAX, ac_op_max_bf16)
DEFINE_BF16_BINOP(min_bf16, VEC_MIN, ac_op_min_bf16)
#else
DEFINE_BINOP(sum_bf16, uint16_t, ac_op_sum_bf16)
DEFINE_BINOP(prod_bf16, uint16_t, ac_op_prod_bf16)
DEFINE_BINOP(max_bf16, uint16_t, ac_op_max_bf16)
DEFINE_BINOP(min_bf16, uint16_t, ac_op_min_bf16)
#endif
DEFINE_BINOP(sum_e4m3, uint8_t, ac_op_sum_e4m3)
DEFINE_BINOP(prod_e4m3, uint8_t, ac_op_prod_e4m3)
DEFINE_BINOP(max_e4m3, uint8_t, ac_op_max_e4m3)
DEFINE_BINOP(min_e4m3, uint8_t, ac_op_min_e4m3)
DEFINE_BINOP(sum_e5m2, uint8_t, ac_op_sum_e5m2)
DEFINE_BINOP(prod_e5m2, uint8_t, ac_op_prod_e5m2)
DEFINE_BINOP(max_e5m2, uint8_t, ac_op_max_e5m2)
DEFINE_BINOP(min_e5m2, uint8_t, ac_op_min_e5m2)

DEFINE_PREMUL(premul_u8, uint8_t, uint8_t, ac_op_prod_u8)
DEFINE_PREMUL(premul_u32, uint32_t, uint32_t, ac_op_prod_u32)
DEFINE_PREMUL(premul_u64, uint64_t, uint64_t, ac_op_prod_u64)
DEFINE_PREMUL(premul_f16, uint16_t, uint16_t, ac_op_prod_f16)
DEFINE_PREMUL(premul_f32, float, uint32_t, ac_op_prod_f32)
DEFINE_PREMUL(premul_f64, double, uint64_t, ac_op_prod_f64)
DEFINE_PREMUL(premul_bf16, uint16_t, uint16_t, ac_op_prod_bf16)
DEFINE_PREMUL(premul_e4m3, uint8_t, uint8_t, ac_op_prod_e4m3)
DEFINE_PREMUL(premul_e5m2, uint8_t, uint8_t, ac_op_prod_e5m2)

DEFINE_POSTDIV(postdiv_i8, int8_t, ac_op_div_i8)
DEFINE_POSTDIV(postdiv_u8, uint8_t, ac_op_div_u8)
DEFINE_POSTDIV(postdiv_i32, int32_t, ac_op_div_i32)
DEFINE_POSTDIV(postdiv_u32, uint32_t, ac_op_div_u32)
DEFINE_POSTDIV(postdiv_i64, int64_t, ac_op_div_i64)
DEFINE_POSTDIV(postdiv_u64, uint64_t, ac_op_div_u64)
DEFINE_POSTDIV(postdiv_f16, uint16_t, ac_op_div_f16)
DEFINE_POSTDIV(postdiv_f32, float, ac_op_div_f32)
DEFINE_POSTDIV(postdiv_f64, double, ac_op_div_f64)
DEFINE_POSTDIV(postdiv_bf16, uint16_t, ac_op_div_bf16)
DEFINE_POSTDIV(postdiv_e4m3, uint8_t, ac_op_div_e4m3)
DEFINE_POSTDIV(postdiv_e5m2, uint8_t, ac_op_div_e5m2)

struct type_kernels {
    const char *name; /* nccl-tests' name */
    size_t size;
    binop_fn *binop[AC_OP_KIND_COUNT];
    unop_fn *premul;
    unop_fn *postdiv;
};

#define OPS(t, s)                                                                                  \
    {                                                                                              \
        [AC_OP_SUM] = sum_##s, [AC_OP_PROD] = prod_##s, [AC_OP_MAX] = max_##t,                     \
        [AC_OP_MIN] = min_##t                                                                      \
    }

static const struct type_kernels all_types[ncclNumTypes] = {
    [ncclInt8] = {"int8", 1, OPS(i8, u8), premul_u8, postdiv_i8},
    [ncclUint8] = {"uint8", 1, OPS(u8, u8), premul_u8, postdiv_u8},
    [ncclInt32] = {"int32", 4, OPS(i32, u32), premul_u32, postdiv_i32},
    [ncclUint32] = {"uint32", 4, OPS(u32, u32), premul_u32, postdiv_u32},
    [ncclInt64] = {"int64", 8, OPS(i64, u64), premul_u64, postdiv_i64},
    [ncclUint64] = {"uint64", 8, OPS(u64, u64), premul_u64, postdiv_u64},
    [ncclFloat16] = {"half", 2, OPS(f16, f16), premul_f16, postdiv_f16},
    [ncclFloat32] = {"float", 4, OPS(f32, f32), premul_f32, postdiv_f32},
    [ncclFloat64] = {"double", 8, OPS(f64, f64), premul_f64, postdiv_f64},
    [ncclBfloat16] = {"bfloat16", 2, OPS(bf16, bf16), premul_bf16, postdiv_bf16},
    [ncclFloat8e4m3] = {"f8e4m3", 1, OPS(e4m3, e4m3), premul_e4m3, postdiv_e4m3},
    [ncclFloat8e5m2] = {"f8e5m2", 1, OPS(e5m2, e5m2), premul_e5m2, postdiv_e5m2},
};

/* fp16 on x86-64 with F16C: the hardware conversions give the same values as dtypes.h (round to
 * nearest even, fixed by the immediate whatever MXCSR says; subnormals kept; NaN stays NaN), eight
 * lanes per instruction, where the vectorized software conversion costs some 20 instructions per
 * element. The tail (< 8 elements) uses the software operators. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

#define F16C __attribute__((target("avx,f16c")))

F16C static inline __m256 f16c_load(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

F16C static inline void f16c_store(uint16_t *p, __m256 v)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

/* ops.h's NaN-propagating max/min: a when a > b (resp. <) or a is NaN, else b. */
F16C static inline __m256 f16c_max(__m256 a, __m256 b)
{
    __m256 take_a = _mm256_cmp_ps(a, b, _CMP_GT_OQ);

    take_a = _mm256_or_ps(take_a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    return _mm256_blendv_ps(b, a, take_a);
}

F16C static inline __m256 f16c_min(__m256 a, __m256 b)
{
    __m256 take_a = _mm256_cmp_ps(a, b, _CMP_LT_OQ);

    take_a = _mm256_or_ps(take_a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    return _mm256_blendv_ps(b, a, take_a);
}

/* Each block of 8 is loaded before it is stored: dst may equal a or b. */
#define DEFINE_F16C_BINOP(name, vop, op)                                                           \
    F16C static void name(void *dst, const void *a, const void *b, size_t n)                       \
    {                                                                                              \
        uint16_t *d = dst;                                                                         \
        const uint16_t *x = a, *y = b;                                                             \
        size_t i = 0;                                                                              \
        for (; i + 8 <= n; i += 8)                                                                 \
            f16c_store(d + i, vop(f16c_load(x + i), f16c_load(y + i)));                            \
        for (; i < n; i++)                                                                         \
            d[i] = op(x[i], y[i]);                                                                 \
    }

DEFINE_F16C_BINOP(sum_f16_f16c, _mm256_add_ps, ac_op_sum_f16)
DEFINE_F16C_BINOP(prod_f16_f16c, _mm256_mul_ps, ac_op_prod_f16)
DEFINE_F16C_BINOP(max_f16_f16c, f16c_max, ac_op_max_f16)
DEFINE_F16C_BINOP(min_f16_f16c, f16c_min, ac_op_min_f16)

static binop_fn *const f16c_binops[AC_OP_KIND_COUNT] = {
    [AC_OP_SUM] = sum_f16_f16c,
    [AC_OP_PROD] = prod_f16_f16c,
    [AC_OP_MAX] = max_f16_f16c,
    [AC_OP_MIN] = min_f16_f16c,
};

/* AVX (which includes the OS saving ymm state) and F16C, asked once; clang 14's
 * __builtin_cpu_supports does not know "f16c", hence cpuid. */
static bool has_f16c(void)
{
    static int cached = -1;
    int has = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    unsigned int eax, ebx, ecx, edx;

    if (has < 0) {
        has = __builtin_cpu_supports("avx") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) &&
              (ecx & bit_F16C);
        __atomic_store_n(&cached, has, __ATOMIC_RELAXED);
    }
    return has;
}

static binop_fn *binop_of(const struct type_kernels *k, const struct ac_redop *op)
{
    if (op->type == ncclFloat16 && has_f16c())
        return f16c_binops[op->kind];
    return k->binop[op->kind];
}
#else
static binop_fn *binop_of(const struct type_kernels *k, const struct ac_redop *op)
{
    return k->binop[op->kind];
}
#endif

static const struct type_kernels *kernels_of(ncclDataType_t type)
{
    return (unsigned)type < ncclNumTypes ? &all_types[type] : NULL;
}

size_t ac_type_size(ncclDataType_t type)
{
    const struct type_kernels *k = kernels_of(type);

    return k ? k->size : 0;
}

const char *ac_type_name(ncclDataType_t type)
{
    const struct type_kernels *k = kernels_of(type);

    return k ? k->name : "invalid";
}

/* 8 KiB per block: the scratch for premul products and the block being divided stay in L1. */
#define BLOCK_BYTES 8192

/* dst = a OP pre(b), or dst = pre(b) when a is NULL; then divided by postdiv if has_div. Runs
 * block by block so that the premul and postdiv passes reread data still in L1. */
static void run_blocks(const struct type_kernels *k, const struct ac_redop *op, char *dst,
                       const char *a, const char *b, size_t count, bool has_premul, bool has_div)
{
    binop_fn *binop = binop_of(k, op);
    uint64_t scratch[BLOCK_BYTES / sizeof(uint64_t)];
    size_t block = BLOCK_BYTES / k->size;

    for (size_t i = 0; i < count; i += block) {
        size_t n = count - i < block ? count - i : block;
        size_t off = i * k->size;
        const char *src = b + off;

        if (has_premul) {
            char *prod = a ? (char *)scratch : dst + off;
            k->premul(prod, src, n, op->scalar);
            src = prod;
        }
        if (a)
            binop(dst + off, a + off, src, n);
        else if (src != dst + off)
            memmove(dst + off, src, n * k->size);
        if (has_div)
            k->postdiv(dst + off, dst + off, n, op->postdiv);
    }
}

/* An invalid type or operator does nothing: src/core validates both before any kernel runs. */
static const struct type_kernels *checked_kernels(const struct ac_redop *op)
{
    if ((unsigned)op->kind >= AC_OP_KIND_COUNT)
        return NULL;
    return kernels_of(op->type);
}

void ac_kern_load(const struct ac_redop *op, void *dst, const void *local, size_t count,
                  bool is_final)
{
    const struct type_kernels *k = checked_kernels(op);
    bool has_div = is_final && op->postdiv > 1;

    if (!k)
        return;
    if (!op->has_premul && !has_div) {
        if (dst != local)
            memmove(dst, local, count * k->size);
        return;
    }
    run_blocks(k, op, dst, NULL, local, count, op->has_premul, has_div);
}

void ac_kern_reduce(const struct ac_redop *op, void *dst, const void *recvd, const void *local,
                    size_t count, bool is_final)
{
    const struct type_kernels *k = checked_kernels(op);
    bool has_div = is_final && op->postdiv > 1;

    if (!k)
        return;
    if (!op->has_premul && !has_div) {
        binop_of(k, op)(dst, recvd, local, count);
        return;
    }
    run_blocks(k, op, dst, recvd, local, count, op->has_premul, has_div);
}

void ac_kern_combine(const struct ac_redop *op, void *dst, const void *a, const void *b,
                     size_t count, bool is_final)
{
    const struct type_kernels *k = checked_kernels(op);
    bool has_div = is_final && op->postdiv > 1;

    if (!k)
        return;
    if (!has_div) {
        binop_of(k, op)(dst, a, b, count);
        return;
    }
    run_blocks(k, op, dst, a, b, count, false, has_div);
}

float ac_half_to_float(uint16_t h)
{
    return ac_dt_half_to_float(h);
}
uint16_t ac_float_to_half(float f)
{
    return ac_dt_float_to_half(f);
}
float ac_bf16_to_float(uint16_t b)
{
    return ac_dt_bf16_to_float(b);
}
uint16_t ac_float_to_bf16(float f)
{
    return ac_dt_float_to_bf16(f);
}
float ac_fp8e4m3_to_float(uint8_t v)
{
    return ac_dt_fp8e4m3_to_float(v);
}
uint8_t ac_float_to_fp8e4m3(float f)
{
    return ac_dt_float_to_fp8e4m3(f);
}
float ac_fp8e5m2_to_float(uint8_t v)
{
    return ac_dt_fp8e5m2_to_float(v);
}
uint8_t ac_float_to_fp8e5m2(float f)
{
    return ac_dt_float_to_fp8e5m2(f);
}
