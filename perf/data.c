/* Data for the benchmarks' checks (-c 1): element access for all twelve NCCL types, and inputs
 * chosen per (type, op, nranks) so that every result is an exact small number in every type,
 * fp8 included: sums stay below the largest exactly representable integer of the type, products
 * are powers of two that fit, PreMulSum scalars are 1 or 2. Only float ncclAvg may round (NCCL
 * multiplies each input by 1/nranks), so it is compared within that rounding. */
#include <math.h>
#include <string.h>

#include "perf.h"

/* IEEE-like small floats: exponent and mantissa widths; e4m3 is the "fn" variant (no infinity,
 * only S.1111.111 is NaN). */
struct minifloat {
    int ebits;
    int mbits;
    bool is_fn;
};

static const struct minifloat fmt_half = {5, 10, false};
static const struct minifloat fmt_bf16 = {8, 7, false};
static const struct minifloat fmt_e4m3 = {4, 3, true};
static const struct minifloat fmt_e5m2 = {5, 2, false};

static const char *const type_names[ncclNumTypes] = {
    "int8", "uint8", "int32",  "uint32",   "int64",  "uint64",
    "half", "float", "double", "bfloat16", "f8e4m3", "f8e5m2",
};

size_t perf_type_size(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2:
        return 1;
    case ncclFloat16:
    case ncclBfloat16:
        return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    default:
        return 0;
    }
}

const char *perf_type_name(ncclDataType_t type)
{
    return (unsigned)type < ncclNumTypes ? type_names[type] : "?";
}

static uint32_t encode_mini(const struct minifloat *f, double v)
{
    uint32_t sign = 0;
    if (v < 0) {
        sign = 1;
        v = -v;
    }
    int bias = (1 << (f->ebits - 1)) - 1;
    uint32_t bits = 0;
    if (v != 0) {
        int e;
        double m = frexp(v, &e); /* v = m * 2^e, m in [0.5, 1) */
        int biased = e - 1 + bias;
        if (biased <= 0) /* subnormal; rounding up into the first normal carries correctly */
            bits = (uint32_t)nearbyint(ldexp(v, f->mbits - (1 - bias)));
        else /* a mantissa rounded up to 2.0 carries into the exponent, as it should */
            bits = ((uint32_t)biased << f->mbits) + (uint32_t)nearbyint(ldexp(m * 2 - 1, f->mbits));
    }
    return (sign << (f->ebits + f->mbits)) | bits;
}

static double decode_mini(const struct minifloat *f, uint32_t bits)
{
    uint32_t mant_mask = (1u << f->mbits) - 1, exp_max = (1u << f->ebits) - 1;
    uint32_t mant = bits & mant_mask, exp = (bits >> f->mbits) & exp_max;
    bool is_neg = (bits >> (f->ebits + f->mbits)) & 1;
    int bias = (1 << (f->ebits - 1)) - 1;
    double v;
    if (exp == exp_max && (!f->is_fn || mant == mant_mask))
        v = (mant != 0 || f->is_fn) ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp((double)mant, 1 - bias - f->mbits);
    else
        v = ldexp((double)(mant | (1u << f->mbits)), (int)exp - bias - f->mbits);
    return is_neg ? -v : v;
}

static const struct minifloat *mini_of(ncclDataType_t type)
{
    switch (type) {
    case ncclFloat16:
        return &fmt_half;
    case ncclBfloat16:
        return &fmt_bf16;
    case ncclFloat8e4m3:
        return &fmt_e4m3;
    case ncclFloat8e5m2:
        return &fmt_e5m2;
    default:
        return NULL;
    }
}

double perf_get(ncclDataType_t type, const void *buf, size_t i)
{
    const struct minifloat *f = mini_of(type);
    if (f != NULL) {
        if (perf_type_size(type) == 2)
            return decode_mini(f, ((const uint16_t *)buf)[i]);
        return decode_mini(f, ((const uint8_t *)buf)[i]);
    }
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
    case ncclFloat32:
        return ((const float *)buf)[i];
    case ncclFloat64:
        return ((const double *)buf)[i];
    default:
        return NAN;
    }
}

void perf_put(ncclDataType_t type, void *buf, size_t i, double v)
{
    const struct minifloat *f = mini_of(type);
    if (f != NULL) {
        if (perf_type_size(type) == 2)
            ((uint16_t *)buf)[i] = (uint16_t)encode_mini(f, v);
        else
            ((uint8_t *)buf)[i] = (uint8_t)encode_mini(f, v);
        return;
    }
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
    case ncclFloat32:
        ((float *)buf)[i] = (float)v;
        break;
    case ncclFloat64:
        ((double *)buf)[i] = v;
        break;
    default:
        break;
    }
}

void perf_fill_sentinel(void *buf, size_t bytes)
{
    memset(buf, 0xff, bytes); /* NaN in every float type; -1 or the maximum for integers */
}

/* Largest L such that every integer in [0, L] is exact in the type (integers capped at 127 for
 * 8 bits, so that the all-ones sentinel is never a valid result, and at 2^30 otherwise). */
static unsigned exact_int_limit(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8:
    case ncclUint8:
        return 127;
    case ncclFloat16:
        return 2048;
    case ncclBfloat16:
        return 256;
    case ncclFloat8e4m3:
        return 16;
    case ncclFloat8e5m2:
        return 8;
    default:
        return 1u << 30;
    }
}

/* Largest t such that 2^t is exact, fits and stays below the sentinel. */
static int pow2_limit(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8:
    case ncclUint8:
        return 6;
    case ncclFloat16:
    case ncclFloat8e5m2:
        return 15;
    case ncclFloat8e4m3:
        return 8;
    default:
        return 30;
    }
}

static bool is_float(ncclDataType_t type)
{
    return type >= ncclFloat16; /* half, float, double, bfloat16, fp8 */
}

static unsigned min_u(unsigned a, unsigned b)
{
    return a < b ? a : b;
}

void perf_data_init(struct perf_data *d, ncclDataType_t type, enum perf_op op, int nranks,
                    unsigned seed)
{
    unsigned limit = exact_int_limit(type), n = (unsigned)nranks;
    d->type = type;
    d->op = op;
    d->nranks = nranks;
    d->seed = seed;
    d->nz_ranks = nranks;
    d->modulus = min_u(limit + 1, 64);
    if (op == PERF_OP_SUM || op == PERF_OP_AVG) {
        d->nz_ranks = (int)min_u(n, limit);
        d->modulus = min_u(limit / (unsigned)d->nz_ranks + 1, 64);
    } else if (op == PERF_OP_MULSUM) {
        d->nz_ranks = (int)min_u(n, limit / 2);
        d->modulus = min_u(limit / (2 * (unsigned)d->nz_ranks) + 1, 64);
    } else if (op == PERF_OP_PROD) {
        d->nz_ranks = (int)min_u(n, (unsigned)pow2_limit(type));
    }
}

/* A hash rather than an affine function of (rank, g), so that an element moved by any offset, or
 * taken from the wrong rank, is caught (an affine pattern repeats every modulus elements). */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double perf_data_gen(const struct perf_data *d, int rank, size_t g)
{
    uint64_t h =
        mix((uint64_t)g * 0x9e3779b97f4a7c15ull + (uint64_t)rank * 0x632be59bd9b4e019ull + d->seed);
    if (d->op == PERF_OP_PROD)
        return (rank < d->nz_ranks && h % 3 == 0) ? 2.0 : 1.0;
    if (rank >= d->nz_ranks)
        return 0.0;
    return (double)(h % d->modulus);
}

double perf_data_scalar(int rank)
{
    return (double)(1 + rank % 2);
}

double perf_data_reduce(const struct perf_data *d, size_t g)
{
    double acc = perf_data_gen(d, 0, g);
    if (d->op == PERF_OP_MULSUM)
        acc *= perf_data_scalar(0);
    for (int r = 1; r < d->nranks; r++) {
        double v = perf_data_gen(d, r, g);
        switch (d->op) {
        case PERF_OP_PROD:
            acc *= v;
            break;
        case PERF_OP_MAX:
            acc = v > acc ? v : acc;
            break;
        case PERF_OP_MIN:
            acc = v < acc ? v : acc;
            break;
        case PERF_OP_MULSUM:
            acc += v * perf_data_scalar(r);
            break;
        default:
            acc += v;
            break;
        }
    }
    if (d->op == PERF_OP_AVG)
        acc = is_float(d->type) ? acc / d->nranks : floor(acc / d->nranks);
    return acc;
}

static double type_epsilon(ncclDataType_t type)
{
    const struct minifloat *f = mini_of(type);
    if (f != NULL)
        return ldexp(1.0, -f->mbits);
    return type == ncclFloat32 ? ldexp(1.0, -23) : ldexp(1.0, -52);
}

bool perf_data_match(const struct perf_data *d, double got, double want)
{
    if (d->op == PERF_OP_AVG && is_float(d->type)) {
        double tol = 2.0 * d->nranks * type_epsilon(d->type) * (want + 1.0 / d->nranks);
        return fabs(got - want) <= tol; /* false for NaN */
    }
    return got == want;
}
