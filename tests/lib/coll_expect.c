/* Expected values for collective integration tests: element conversions written independently of
 * the library's kernels, input formulas and their reductions computed in double. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* vasprintf */
#endif
#include "coll_expect.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const ncclDataType_t ce_all_types[] = {
    ncclInt8,    ncclUint8,   ncclInt32,    ncclUint32,        ncclInt64,         ncclUint64,
    ncclFloat16, ncclFloat32, ncclFloat64,  ncclBfloat16,      ncclFloat8e4m3,    ncclFloat8e5m2,
};
const int ce_ntypes = (int)(sizeof(ce_all_types) / sizeof(ce_all_types[0]));
const ncclRedOp_t ce_all_ops[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg};
const int ce_nops = (int)(sizeof(ce_all_ops) / sizeof(ce_all_ops[0]));

/* Small IEEE-like float formats: exponent bits, mantissa bits, whether all-ones exponent is
 * inf/NaN (fp8 e4m3 uses it for normal numbers, only S.1111.111 is NaN). */
struct small_fmt {
    int ebits, mbits;
    bool has_inf;
};
static const struct small_fmt fmt_half = {5, 10, true};
static const struct small_fmt fmt_bf16 = {8, 7, true};
static const struct small_fmt fmt_e4m3 = {4, 3, false};
static const struct small_fmt fmt_e5m2 = {5, 2, true};

size_t ce_type_size(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

const char *ce_type_name(ncclDataType_t type)
{
    static const char *const names[] = {"int8",  "uint8",  "int32",  "uint32", "int64", "uint64",
                                        "half",  "float",  "double", "bf16",   "f8e4m3", "f8e5m2"};
    return (unsigned)type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

const char *ce_op_name(ncclRedOp_t op)
{
    static const char *const names[] = {"sum", "prod", "max", "min", "avg"};
    return (unsigned)op < 5 ? names[op] : "?";
}

static const struct small_fmt *small_fmt_of(ncclDataType_t type)
{
    switch (type) {
    case ncclFloat16: return &fmt_half;
    case ncclBfloat16: return &fmt_bf16;
    case ncclFloat8e4m3: return &fmt_e4m3;
    case ncclFloat8e5m2: return &fmt_e5m2;
    default: return NULL;
    }
}

static double small_decode(uint32_t bits, const struct small_fmt *f)
{
    int bias = (1 << (f->ebits - 1)) - 1;
    uint32_t emax = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
    uint32_t e = (bits >> f->mbits) & emax, m = bits & mmask;
    double sign = (bits >> (f->ebits + f->mbits)) & 1 ? -1.0 : 1.0;
    if (e == 0)
        return sign * ldexp((double)m, 1 - bias - f->mbits);
    if (e == emax && (f->has_inf || m == mmask))
        return m == 0 && f->has_inf ? sign * INFINITY : NAN;
    return sign * ldexp((double)(m | (1u << f->mbits)), (int)e - bias - f->mbits);
}

/* Round to nearest even; saturate to the largest finite value (as CUDA's SATFINITE does). */
static uint32_t small_encode(double v, const struct small_fmt *f)
{
    int bias = (1 << (f->ebits - 1)) - 1, x;
    uint32_t sign = v < 0 ? 1u << (f->ebits + f->mbits) : 0, emax = (1u << f->ebits) - 1;
    uint32_t max_e = f->has_inf ? emax - 1 : emax;
    uint32_t max_m = f->has_inf ? (1u << f->mbits) - 1 : (1u << f->mbits) - 2;
    double a = fabs(v);
    if (a == 0)
        return sign;
    frexp(a, &x);
    int exp = x - 1; /* a = 1.m * 2^exp */
    if (exp < 1 - bias)
        exp = 1 - bias; /* subnormal: fixed scale, the rounding may carry into the min normal */
    double scaled = nearbyint(ldexp(a, f->mbits - exp));
    uint64_t q = (uint64_t)scaled;
    if (q >= (2ull << f->mbits)) { /* rounding carried into the next binade */
        q >>= 1;
        exp++;
    }
    uint32_t e = q >= (1ull << f->mbits) ? (uint32_t)(exp + bias) : 0;
    uint32_t m = (uint32_t)(q & ((1u << f->mbits) - 1));
    if (e > max_e || (e == max_e && m > max_m)) {
        e = max_e;
        m = max_m;
    }
    return sign | (e << f->mbits) | m;
}

double ce_get(const void *buf, ncclDataType_t type, size_t i)
{
    const struct small_fmt *f = small_fmt_of(type);
    if (f) {
        uint32_t bits = ce_type_size(type) == 2 ? ((const uint16_t *)buf)[i]
                                                : ((const uint8_t *)buf)[i];
        return small_decode(bits, f);
    }
    switch (type) {
    case ncclInt8: return ((const int8_t *)buf)[i];
    case ncclUint8: return ((const uint8_t *)buf)[i];
    case ncclInt32: return ((const int32_t *)buf)[i];
    case ncclUint32: return ((const uint32_t *)buf)[i];
    case ncclInt64: return (double)((const int64_t *)buf)[i];
    case ncclUint64: return (double)((const uint64_t *)buf)[i];
    case ncclFloat32: return ((const float *)buf)[i];
    case ncclFloat64: return ((const double *)buf)[i];
    default: return NAN;
    }
}

void ce_set(void *buf, ncclDataType_t type, size_t i, double v)
{
    const struct small_fmt *f = small_fmt_of(type);
    if (f && ce_type_size(type) == 2) {
        ((uint16_t *)buf)[i] = (uint16_t)small_encode(v, f);
        return;
    }
    if (f) {
        ((uint8_t *)buf)[i] = (uint8_t)small_encode(v, f);
        return;
    }
    switch (type) {
    case ncclInt8: ((int8_t *)buf)[i] = (int8_t)v; break;
    case ncclUint8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    case ncclInt32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case ncclUint32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
    case ncclInt64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case ncclUint64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
    case ncclFloat32: ((float *)buf)[i] = (float)v; break;
    case ncclFloat64: ((double *)buf)[i] = v; break;
    default: break;
    }
}

static bool is_signed(ncclDataType_t type)
{
    return type != ncclUint8 && type != ncclUint32 && type != ncclUint64;
}

static bool is_float(ncclDataType_t type)
{
    return type == ncclFloat16 || type == ncclFloat32 || type == ncclFloat64 ||
           type == ncclBfloat16 || type == ncclFloat8e4m3 || type == ncclFloat8e5m2;
}

/* Largest M such that every integer in [-M, M] (or [0, M] unsigned) is exact in the type. */
static int64_t exact_int_max(ncclDataType_t type)
{
    switch (type) {
    case ncclInt8: return 127;
    case ncclUint8: return 255;
    case ncclFloat16: return 2048;
    case ncclBfloat16: return 256;
    case ncclFloat8e4m3: return 16;
    case ncclFloat8e5m2: return 8;
    default: return 1 << 20;
    }
}

/* Relative precision of the type (unit roundoff), 0 for integers. */
static double type_eps(ncclDataType_t type)
{
    switch (type) {
    case ncclFloat16: return ldexp(1, -11);
    case ncclBfloat16: return ldexp(1, -8);
    case ncclFloat8e4m3: return ldexp(1, -4);
    case ncclFloat8e5m2: return ldexp(1, -3);
    case ncclFloat32: return ldexp(1, -24);
    case ncclFloat64: return ldexp(1, -53);
    default: return 0;
    }
}

/* Sum and avg: partial sums stay in [-M, M]; avg uses non-negative inputs because NCCL's integer
 * avg divides a possibly negative sum and C's truncation is not something to pin down here.
 * Prod: factors 1, 2 (and -1 for signed types) with at most log2(M) factors of 2 per element.
 * Max/min: values spread over a range around 0. */
double ce_red_input(ncclDataType_t type, ncclRedOp_t op, int nranks, int rank, size_t i)
{
    int64_t m = exact_int_max(type), vmax;
    uint64_t r = (uint64_t)rank;
    switch (op) {
    case ncclSum:
    case ncclAvg:
        vmax = m / nranks < 1000 ? m / nranks : 1000;
        if (op == ncclSum && is_signed(type))
            return (double)((int64_t)((r * 7 + i * 13 + 3) % (uint64_t)(vmax + 1)) - vmax / 2);
        return (double)((r * 7 + i * 13 + 3) % (uint64_t)(vmax + 1));
    case ncclProd: {
        int twos = 0;
        while ((1ll << (twos + 1)) <= m && twos < 30)
            twos++;
        double v = (rank < twos && (i + r) % 3 == 0) ? 2.0 : 1.0;
        return (is_signed(type) && (i + 2 * r) % 7 == 0) ? -v : v;
    }
    default:
        vmax = m < 100 ? m : 100;
        return (double)((int64_t)((r * 5 + i * 3 + 1) % (uint64_t)(vmax + 1)) -
                        (is_signed(type) ? vmax / 2 : 0));
    }
}

double ce_red_expected(ncclDataType_t type, ncclRedOp_t op, int nranks, size_t i)
{
    double acc = ce_red_input(type, op, nranks, 0, i);
    for (int r = 1; r < nranks; r++) {
        double v = ce_red_input(type, op, nranks, r, i);
        switch (op) {
        case ncclProd: acc *= v; break;
        case ncclMax: acc = v > acc ? v : acc; break;
        case ncclMin: acc = v < acc ? v : acc; break;
        default: acc += v; break;
        }
    }
    if (op == ncclAvg)
        acc = is_float(type) ? acc / nranks : floor(acc / nranks);
    return acc;
}

void ce_red_fill(void *buf, ncclDataType_t type, ncclRedOp_t op, int nranks, int rank,
                 size_t first, size_t count)
{
    for (size_t k = 0; k < count; k++)
        ce_set(buf, type, k, ce_red_input(type, op, nranks, rank, first + k));
}

static bool red_close(ncclDataType_t type, ncclRedOp_t op, int nranks, double got, double exp)
{
    if (got == exp)
        return true;
    if (op != ncclAvg || !is_float(type) || isnan(got))
        return false;
    double scale = fabs(exp) > 1 ? fabs(exp) : 1;
    return fabs(got - exp) <= (nranks + 1) * 2 * type_eps(type) * scale * 8;
}

int ce_red_check(const void *buf, ncclDataType_t type, ncclRedOp_t op, int nranks, size_t first,
                 size_t count, char *err, size_t errlen)
{
    for (size_t k = 0; k < count; k++) {
        double got = ce_get(buf, type, k), exp = ce_red_expected(type, op, nranks, first + k);
        if (!red_close(type, op, nranks, got, exp)) {
            snprintf(err, errlen, "%s %s: element %zu (global %zu) is %g, expected %g",
                     ce_type_name(type), ce_op_name(op), k, first + k, got, exp);
            return -1;
        }
    }
    return 0;
}

uint8_t ce_byte(int rank, size_t j)
{
    return (uint8_t)((unsigned)(rank + 1) * 37u + (unsigned)j * 11u + (unsigned)(j >> 8) * 3u);
}

void ce_bytes_fill(void *buf, int rank, size_t first, size_t nbytes)
{
    uint8_t *p = buf;
    for (size_t j = 0; j < nbytes; j++)
        p[j] = ce_byte(rank, first + j);
}

int ce_bytes_check(const void *buf, int rank, size_t first, size_t nbytes, char *err,
                   size_t errlen)
{
    const uint8_t *p = buf;
    for (size_t j = 0; j < nbytes; j++) {
        if (p[j] != ce_byte(rank, first + j)) {
            snprintf(err, errlen, "byte %zu is 0x%02x, expected 0x%02x (byte %zu of rank %d's data)",
                     j, p[j], ce_byte(rank, first + j), first + j, rank);
            return -1;
        }
    }
    return 0;
}

int ce_buf_alloc(struct ce_buf *b, size_t nbytes)
{
    b->nbytes = nbytes;
    b->base = malloc(nbytes + 2 * CE_GUARD_BYTES);
    b->data = b->base ? b->base + CE_GUARD_BYTES : NULL;
    if (!b->base)
        return -1;
    ce_buf_reset(b);
    return 0;
}

void ce_buf_free(struct ce_buf *b)
{
    free(b->base);
    b->base = NULL;
    b->data = NULL;
}

void ce_buf_reset(struct ce_buf *b)
{
    memset(b->base, CE_SENTINEL, b->nbytes + 2 * CE_GUARD_BYTES);
}

int ce_check_untouched(const void *p, size_t nbytes, const char *what, char *err, size_t errlen)
{
    const uint8_t *q = p;
    for (size_t j = 0; j < nbytes; j++) {
        if (q[j] != CE_SENTINEL) {
            snprintf(err, errlen, "%s: byte %zu was written (0x%02x) but must be untouched", what,
                     j, q[j]);
            return -1;
        }
    }
    return 0;
}

int ce_buf_check_guards(const struct ce_buf *b, const char *what, char *err, size_t errlen)
{
    char name[96];
    snprintf(name, sizeof(name), "%s guard before the buffer", what);
    if (ce_check_untouched(b->base, CE_GUARD_BYTES, name, err, errlen))
        return -1;
    snprintf(name, sizeof(name), "%s guard after the buffer", what);
    return ce_check_untouched(b->base + CE_GUARD_BYTES + b->nbytes, CE_GUARD_BYTES, name, err,
                              errlen);
}

/* Case names live until exit: kept here so that LeakSanitizer does not report them once a
 * caller's case table goes out of scope. */
static char *owned_names[4096];
static size_t nowned_names;

size_t ce_add_case(struct tl_case *out, size_t n, size_t max, struct tl_case c, const char *fmt,
                   ...)
{
    va_list ap;
    char *name;
    if (n >= max || nowned_names == sizeof(owned_names) / sizeof(owned_names[0]))
        return n;
    va_start(ap, fmt);
    int rc = vasprintf(&name, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return n;
    owned_names[nowned_names++] = name;
    c.name = name;
    out[n] = c;
    return n + 1;
}

size_t ce_add_matrix(struct tl_case *out, size_t n, size_t max, const char *prefix,
                     tl_body_fn body, const void *arg, int timeout_s)
{
    static const int nps[] = {1, 2, 3, 4, 5, 8};
    for (size_t i = 0; i < sizeof(nps) / sizeof(nps[0]); i++) {
        for (int is_tcp = 0; is_tcp <= 1; is_tcp++) {
            struct tl_case c = {NULL, TL_PROCS, nps[i], is_tcp ? "NCCL_SHM_DISABLE=1" : NULL,
                                body, NULL, arg, timeout_s,
                                nps[i] >= 5 || (is_tcp && nps[i] != 2)};
            n = ce_add_case(out, n, max, c, "%s/np%d/%s/proc", prefix, nps[i],
                            is_tcp ? "tcp" : "shm");
        }
    }
    /* With ANYCCL_CMA_ENABLE=1, transfers between local ranks go by cross-memory attach from
     * ANYCCL_CMA_MIN_BYTES up and through slots below (the default cases): every size on that
     * path, and the mix at the default threshold. */
    static const struct {
        int np;
        const char *env, *name;
    } paths[] = {{3, "ANYCCL_CMA_ENABLE=1 ANYCCL_CMA_MIN_BYTES=0", "cma"},
                 {4, "ANYCCL_CMA_ENABLE=1 ANYCCL_CMA_MIN_BYTES=0", "cma"},
                 {3, "ANYCCL_CMA_ENABLE=1", "cma-above-32k"}};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct tl_case c = {NULL, TL_PROCS, paths[i].np, paths[i].env, body, NULL, arg,
                            timeout_s, false};
        n = ce_add_case(out, n, max, c, "%s/np%d/%s/proc", prefix, paths[i].np, paths[i].name);
    }
    for (int np = 2; np <= 4; np += 2) {
        struct tl_case c = {NULL, TL_THREADS, np, NULL, body, NULL, arg, timeout_s, np == 4};
        n = ce_add_case(out, n, max, c, "%s/np%d/threads", prefix, np);
    }
    struct tl_case c = {NULL, TL_INITALL, 3, NULL, body, NULL, arg, timeout_s, false};
    return ce_add_case(out, n, max, c, "%s/np3/initall", prefix);
}

size_t ce_add_proto_cases(struct tl_case *out, size_t n, size_t max, const char *prefix,
                          tl_body_fn body, const void *arg, int timeout_s)
{
    static const struct {
        int np;
        enum tl_mode mode;
        const char *env, *name, *how;
    } protos[] = {
        {2, TL_PROCS, "NCCL_PROTO=LL", "ll", "shm/proc"},
        {3, TL_PROCS, "NCCL_PROTO=LL", "ll", "shm/proc"},
        {2, TL_THREADS, "NCCL_PROTO=LL", "ll", "threads"},
        {2, TL_PROCS, "NCCL_PROTO=LL NCCL_SHM_DISABLE=1", "ll", "tcp/proc"},
        {2, TL_PROCS, "NCCL_PROTO=LL128", "ll128", "shm/proc"},
        {4, TL_PROCS, "NCCL_PROTO=LL128", "ll128", "shm/proc"},
        {3, TL_PROCS, "NCCL_PROTO=Simple", "simple", "shm/proc"},
        /* LL up to 100 bytes, LL128 up to 20000, Simple above: one call's channels or steps
         * never mix protocols, but consecutive calls on one connector do */
        {3, TL_PROCS, "NCCL_PROTO=LL,LL128,Simple ANYCCL_LL_THRESHOLD=100 "
                      "ANYCCL_LL128_THRESHOLD=20000", "mixed", "shm/proc"},
    };
    for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
        struct tl_case c = {NULL, protos[i].mode, protos[i].np, protos[i].env, body, NULL, arg,
                            timeout_s, false};
        n = ce_add_case(out, n, max, c, "%s/proto-%s/np%d/%s", prefix, protos[i].name,
                        protos[i].np, protos[i].how);
    }
    return n;
}

ncclResult_t ce_barrier(ncclComm_t comm)
{
    int32_t x = 1;
    return ncclAllReduce(&x, &x, 1, ncclInt32, ncclSum, comm, NULL);
}
