/* Expected values for collective tests. Inputs are small integers (and powers of two for prod)
 * bounded per type and rank count so that every partial sum or product is exact in the type; the
 * conversions are our own, written from the IEEE/OCP formats, not the library's. */
#include "expect.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const ncclDataType_t tl_all_types[] = {
    ncclInt8,    ncclUint8,   ncclInt32,   ncclUint32,   ncclInt64,      ncclUint64,
    ncclFloat16, ncclFloat32, ncclFloat64, ncclBfloat16, ncclFloat8e4m3, ncclFloat8e5m2,
};
const size_t tl_ntypes = sizeof(tl_all_types) / sizeof(tl_all_types[0]);

size_t tl_type_size(ncclDataType_t type)
{
    static const size_t sizes[ncclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
    return (unsigned)type < ncclNumTypes ? sizes[type] : 0;
}

const char *tl_type_name(ncclDataType_t type)
{
    static const char *const names[ncclNumTypes] = {
        "int8", "uint8", "int32",  "uint32",   "int64",  "uint64",
        "half", "float", "double", "bfloat16", "f8e4m3", "f8e5m2",
    };
    return (unsigned)type < ncclNumTypes ? names[type] : "?";
}

const char *tl_op_name(enum tl_op op)
{
    static const char *const names[TL_OP_COUNT] = {"sum", "prod", "max", "min", "avg", "premulsum"};
    return (unsigned)op < TL_OP_COUNT ? names[op] : "?";
}

bool tl_type_is_signed(ncclDataType_t type)
{
    return type != ncclUint8 && type != ncclUint32 && type != ncclUint64;
}

static bool type_is_integer(ncclDataType_t type)
{
    return type <= ncclUint64;
}

/* A binary floating-point format: exponent and mantissa widths; e4m3 (OCP "fn") has no infinity
 * and one NaN mantissa pattern at the top exponent. */
struct fp_format {
    int ebits;
    int mbits;
    bool has_inf;
};

static const struct fp_format fmt_half = {5, 10, true};
static const struct fp_format fmt_bf16 = {8, 7, true};
static const struct fp_format fmt_e4m3 = {4, 3, false};
static const struct fp_format fmt_e5m2 = {5, 2, true};

static uint32_t fp_max_bits(const struct fp_format *f)
{
    uint32_t top = (1u << f->ebits) - 1;
    uint32_t mmask = (1u << f->mbits) - 1;
    return f->has_inf ? ((top - 1) << f->mbits) | mmask : (top << f->mbits) | (mmask - 1);
}

static uint32_t fp_nan_bits(const struct fp_format *f)
{
    uint32_t top = (1u << f->ebits) - 1;
    uint32_t mmask = (1u << f->mbits) - 1;
    return f->has_inf ? (top << f->mbits) | (1u << (f->mbits - 1)) : (top << f->mbits) | mmask;
}

/* Round to nearest even; out-of-range values saturate to the largest finite value. */
static uint32_t fp_encode(const struct fp_format *f, double v)
{
    uint32_t sign = signbit(v) ? 1u << (f->ebits + f->mbits) : 0;
    int bias = (1 << (f->ebits - 1)) - 1;
    int emin = 1 - bias;
    double a = fabs(v);
    if (isnan(v))
        return sign | fp_nan_bits(f);
    if (a == 0.0)
        return sign;
    if (isinf(v))
        return sign | (f->has_inf ? ((1u << f->ebits) - 1) << f->mbits : fp_max_bits(f));
    int e;
    frexp(a, &e);
    int exp = e - 1 < emin ? emin : e - 1;
    double q = nearbyint(ldexp(a, f->mbits - exp));
    double one = ldexp(1.0, f->mbits);
    if (q >= 2 * one) {
        q /= 2;
        exp++;
    }
    uint32_t bits;
    if (q >= one)
        bits = ((uint32_t)(exp + bias) << f->mbits) | (uint32_t)(q - one);
    else
        bits = (uint32_t)q;
    if (bits > fp_max_bits(f))
        bits = fp_max_bits(f);
    return sign | bits;
}

static double fp_decode(const struct fp_format *f, uint32_t bits)
{
    int bias = (1 << (f->ebits - 1)) - 1;
    uint32_t top = (1u << f->ebits) - 1;
    uint32_t mmask = (1u << f->mbits) - 1;
    uint32_t biased = (bits >> f->mbits) & top;
    uint32_t mant = bits & mmask;
    double sign = (bits >> (f->ebits + f->mbits)) & 1 ? -1.0 : 1.0;
    if (f->has_inf && biased == top)
        return mant ? NAN : sign * INFINITY;
    if (!f->has_inf && biased == top && mant == mmask)
        return NAN;
    if (biased == 0)
        return sign * ldexp((double)mant, 1 - bias - f->mbits);
    return sign * ldexp((double)(mant | (1u << f->mbits)), (int)biased - bias - f->mbits);
}

uint16_t tl_double_to_half(double v)
{
    return (uint16_t)fp_encode(&fmt_half, v);
}
double tl_half_to_double(uint16_t h)
{
    return fp_decode(&fmt_half, h);
}
uint16_t tl_double_to_bf16(double v)
{
    return (uint16_t)fp_encode(&fmt_bf16, v);
}
double tl_bf16_to_double(uint16_t b)
{
    return fp_decode(&fmt_bf16, b);
}
uint8_t tl_double_to_fp8e4m3(double v)
{
    return (uint8_t)fp_encode(&fmt_e4m3, v);
}
double tl_fp8e4m3_to_double(uint8_t b)
{
    return fp_decode(&fmt_e4m3, b);
}
uint8_t tl_double_to_fp8e5m2(double v)
{
    return (uint8_t)fp_encode(&fmt_e5m2, v);
}
double tl_fp8e5m2_to_double(uint8_t b)
{
    return fp_decode(&fmt_e5m2, b);
}

double tl_load(ncclDataType_t type, const void *buf, size_t i)
{
    switch (type) {
    case ncclInt8:
        return ((const int8_t *)buf)[i];
    case ncclUint8:
        return ((const uint8_t *)buf)[i];
    case ncclInt32:
        return ((const int32_t *)buf)[i];
    case ncclUint32:
        return ((const uint32_t *)buf)[i];
    case ncclInt64:
        return (double)((const int64_t *)buf)[i];
    case ncclUint64:
        return (double)((const uint64_t *)buf)[i];
    case ncclFloat16:
        return tl_half_to_double(((const uint16_t *)buf)[i]);
    case ncclFloat32:
        return ((const float *)buf)[i];
    case ncclFloat64:
        return ((const double *)buf)[i];
    case ncclBfloat16:
        return tl_bf16_to_double(((const uint16_t *)buf)[i]);
    case ncclFloat8e4m3:
        return tl_fp8e4m3_to_double(((const uint8_t *)buf)[i]);
    case ncclFloat8e5m2:
        return tl_fp8e5m2_to_double(((const uint8_t *)buf)[i]);
    default:
        return NAN;
    }
}

void tl_store(ncclDataType_t type, void *buf, size_t i, double v)
{
    switch (type) {
    case ncclInt8:
        ((int8_t *)buf)[i] = (int8_t)v;
        break;
    case ncclUint8:
        ((uint8_t *)buf)[i] = (uint8_t)v;
        break;
    case ncclInt32:
        ((int32_t *)buf)[i] = (int32_t)v;
        break;
    case ncclUint32:
        ((uint32_t *)buf)[i] = (uint32_t)v;
        break;
    case ncclInt64:
        ((int64_t *)buf)[i] = (int64_t)v;
        break;
    case ncclUint64:
        ((uint64_t *)buf)[i] = (uint64_t)v;
        break;
    case ncclFloat16:
        ((uint16_t *)buf)[i] = tl_double_to_half(v);
        break;
    case ncclFloat32:
        ((float *)buf)[i] = (float)v;
        break;
    case ncclFloat64:
        ((double *)buf)[i] = v;
        break;
    case ncclBfloat16:
        ((uint16_t *)buf)[i] = tl_double_to_bf16(v);
        break;
    case ncclFloat8e4m3:
        ((uint8_t *)buf)[i] = tl_double_to_fp8e4m3(v);
        break;
    case ncclFloat8e5m2:
        ((uint8_t *)buf)[i] = tl_double_to_fp8e5m2(v);
        break;
    default:
        break;
    }
}

int64_t tl_exact_bound(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8:
        return 127;
    case ncclUint8:
        return 255;
    case ncclFloat16:
        return 2048;
    case ncclBfloat16:
        return 256;
    case ncclFloat8e4m3:
        return 16;
    case ncclFloat8e5m2:
        return 8;
    default:
        return 1 << 20; /* wide types: kept small so that doubles stay exact everywhere */
    }
}

/* The largest |input| for op over nranks: partial sums (scaled by the premul scalar for integer
 * types, whose range is the limit) stay within the exact bound. For float types, sums of 2*x stay
 * exact because 2*M is still in range and the integers up to M are. */
static int64_t value_cap(enum tl_op op, ncclDataType_t type, int nranks)
{
    int64_t m = tl_exact_bound(type);
    switch (op) {
    case TL_MAX:
    case TL_MIN:
        return m;
    case TL_PREMULSUM:
        return type_is_integer(type) ? m / (2 * nranks) : m / nranks;
    default:
        return m / nranks;
    }
}

static uint32_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t hash(int rank, size_t i, unsigned seed)
{
    return mix((uint64_t)i + (uint64_t)seed * 0x9E3779B97F4A7C15ULL +
               (uint64_t)(rank + 1) * 0x85EBCA6B12345ULL);
}

/* In [-cap, cap] for signed types, [0, cap] for unsigned ones. */
static double pick(ncclDataType_t type, int64_t cap, uint32_t h)
{
    if (tl_type_is_signed(type))
        return (double)((int64_t)(h % (uint64_t)(2 * cap + 1)) - cap);
    return (double)(h % (uint64_t)(cap + 1));
}

/* avg: rank pairs (2j, 2j+1) add +e and -e to a common a, so the sum is exactly nranks * a. */
static double avg_value(ncclDataType_t type, int rank, int nranks, size_t i, unsigned seed)
{
    int64_t cap = value_cap(TL_AVG, type, nranks);
    int64_t k = cap / 2;
    uint32_t ha = hash(-1, i, seed);
    double a =
        tl_type_is_signed(type) ? pick(type, cap - k, ha) : (double)(k + ha % (cap - 2 * k + 1));
    if (rank == nranks - 1 && nranks % 2 == 1)
        return a;
    double e = (double)(hash(rank / 2 + 1000, i, seed) % (uint64_t)(k + 1));
    return rank % 2 == 0 ? a + e : a - e;
}

double tl_value(enum tl_op op, ncclDataType_t type, int rank, int nranks, size_t i, unsigned seed)
{
    uint32_t h = hash(rank, i, seed);
    if (op == TL_PROD) {
        /* At most ceil(nranks / 4) factors of two per element: 8 ranks multiply to at most 4. */
        double v = (i + (size_t)rank + seed) % 4 == 0 ? 2.0 : 1.0;
        return tl_type_is_signed(type) && h % 5 == 0 ? -v : v;
    }
    if (op == TL_AVG)
        return avg_value(type, rank, nranks, i, seed);
    return pick(type, value_cap(op, type, nranks), h);
}

double tl_expected(enum tl_op op, ncclDataType_t type, int nranks, size_t i, unsigned seed)
{
    double acc = tl_value(op, type, 0, nranks, i, seed);
    if (op == TL_PREMULSUM)
        acc *= TL_PREMUL_SCALAR;
    for (int r = 1; r < nranks; r++) {
        double v = tl_value(op, type, r, nranks, i, seed);
        switch (op) {
        case TL_PROD:
            acc *= v;
            break;
        case TL_MAX:
            acc = v > acc ? v : acc;
            break;
        case TL_MIN:
            acc = v < acc ? v : acc;
            break;
        case TL_PREMULSUM:
            acc += v * TL_PREMUL_SCALAR;
            break;
        default:
            acc += v;
            break;
        }
    }
    return op == TL_AVG ? acc / nranks : acc;
}

void tl_fill(void *buf, size_t count, ncclDataType_t type, enum tl_op op, int rank, int nranks,
             unsigned seed)
{
    for (size_t i = 0; i < count; i++)
        tl_store(type, buf, i, tl_value(op, type, rank, nranks, i, seed));
}

void tl_poison(void *buf, size_t bytes)
{
    memset(buf, 0xCD, bytes);
}

static bool same(double got, double want)
{
    return got == want || (isnan(got) && isnan(want));
}

struct expected_arg {
    enum tl_op op;
    ncclDataType_t type;
    int nranks;
    unsigned seed;
};

static double expected_at(size_t i, const void *arg)
{
    const struct expected_arg *e = arg;
    return tl_expected(e->op, e->type, e->nranks, i, e->seed);
}

size_t tl_check(const void *buf, size_t count, ncclDataType_t type, enum tl_op op, int nranks,
                unsigned seed, char *why, size_t why_len)
{
    struct expected_arg e = {op, type, nranks, seed};
    return tl_check_fn(buf, count, type, expected_at, &e, why, why_len);
}

size_t tl_check_fn(const void *buf, size_t count, ncclDataType_t type,
                   double (*want)(size_t i, const void *arg), const void *arg, char *why,
                   size_t why_len)
{
    size_t nbad = 0;
    for (size_t i = 0; i < count; i++) {
        double w = want(i, arg);
        double g = tl_load(type, buf, i);
        if (same(g, w))
            continue;
        if (nbad++ == 0 && why && why_len)
            snprintf(why, why_len, "[%zu] got %.17g want %.17g", i, g, w);
    }
    if (nbad > 1 && why && why_len) {
        size_t len = strlen(why);
        snprintf(why + len, why_len - len, " (%zu of %zu elements wrong)", nbad, count);
    }
    return nbad;
}

ncclResult_t tl_op_create(enum tl_op op, ncclDataType_t type, ncclComm_t comm, ncclRedOp_t *out)
{
    static const ncclRedOp_t builtin[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg};
    if (op != TL_PREMULSUM) {
        *out = builtin[op];
        return ncclSuccess;
    }
    uint64_t scalar = 0;
    tl_store(type, &scalar, 0, TL_PREMUL_SCALAR);
    return ncclRedOpCreatePreMulSum(out, &scalar, type, ncclScalarHostImmediate, comm);
}

ncclResult_t tl_op_destroy(enum tl_op op, ncclRedOp_t nccl_op, ncclComm_t comm)
{
    return op == TL_PREMULSUM ? ncclRedOpDestroy(nccl_op, comm) : ncclSuccess;
}
