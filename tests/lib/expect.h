/* Expected values for collective tests, computed independently of the library: per-rank inputs
 * chosen so that every partial result of every reduction order is exactly representable in the
 * data type (fp8 e4m3/e5m2, fp16, bf16 included), and our own conversions to and from each type.
 * Comparisons are therefore exact, whatever order the algorithm reduces in. */
#ifndef TL_EXPECT_H
#define TL_EXPECT_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reductions as the tests name them; premulsum is created per comm with tl_op_create. */
enum tl_op {
    TL_SUM,
    TL_PROD,
    TL_MAX,
    TL_MIN,
    TL_AVG,
    TL_PREMULSUM,
    TL_OP_COUNT,
};

/* The scalar every premulsum test multiplies by (a power of two keeps products exact). */
#define TL_PREMUL_SCALAR 2.0

size_t tl_type_size(ncclDataType_t type);
const char *tl_type_name(ncclDataType_t type);
const char *tl_op_name(enum tl_op op);
bool tl_type_is_signed(ncclDataType_t type);

/* Element i of buf, as a double (exact for every value the tests use). */
double tl_load(ncclDataType_t type, const void *buf, size_t i);
/* Stores v (which must be exactly representable in type) into element i of buf. */
void tl_store(ncclDataType_t type, void *buf, size_t i, double v);

/* Independent conversions, exact for the small integers and powers of two the tests use;
 * rounding to nearest even otherwise. */
uint16_t tl_double_to_half(double v);
double tl_half_to_double(uint16_t h);
uint16_t tl_double_to_bf16(double v);
double tl_bf16_to_double(uint16_t b);
uint8_t tl_double_to_fp8e4m3(double v);
double tl_fp8e4m3_to_double(uint8_t b);
uint8_t tl_double_to_fp8e5m2(double v);
double tl_fp8e5m2_to_double(uint8_t b);

/* The largest M such that every integer in [-M, M] (or [0, M] for unsigned types) is exact in
 * type and fits it; sums whose partial sums stay within M are exact in any order. */
int64_t tl_exact_bound(ncclDataType_t type);

/* Rank `rank`'s input element i for a reduction `op` over nranks ranks. `seed` varies the pattern
 * between calls (e.g. an iteration number) so that stale results are caught. */
double tl_value(enum tl_op op, ncclDataType_t type, int rank, int nranks, size_t i, unsigned seed);
/* The exact result of `op` over every rank's tl_value(...) at element i. */
double tl_expected(enum tl_op op, ncclDataType_t type, int nranks, size_t i, unsigned seed);

/* buf[i] = tl_value(op, type, rank, nranks, i, seed) for i < count. */
void tl_fill(void *buf, size_t count, ncclDataType_t type, enum tl_op op, int rank, int nranks,
             unsigned seed);
/* Fills every byte of buf with a pattern that no test value takes (to catch unwritten output). */
void tl_poison(void *buf, size_t bytes);
/* Compares buf[0..count) with tl_expected; returns the number of mismatches and describes the
 * first one in why ("[3] got 5 want 6"). */
size_t tl_check(const void *buf, size_t count, ncclDataType_t type, enum tl_op op, int nranks,
                unsigned seed, char *why, size_t why_len);
/* Compares buf[0..count) with want(i) computed by the caller; same contract as tl_check. */
size_t tl_check_fn(const void *buf, size_t count, ncclDataType_t type,
                   double (*want)(size_t i, const void *arg), const void *arg, char *why,
                   size_t why_len);

/* ncclSum... for builtin ops; for TL_PREMULSUM creates ncclRedOpCreatePreMulSum with
 * TL_PREMUL_SCALAR of `type` (host immediate). Destroy with tl_op_destroy. */
ncclResult_t tl_op_create(enum tl_op op, ncclDataType_t type, ncclComm_t comm, ncclRedOp_t *out);
ncclResult_t tl_op_destroy(enum tl_op op, ncclRedOp_t nccl_op, ncclComm_t comm);

/* Every data type and every operator, for loops. */
extern const ncclDataType_t tl_all_types[];
extern const size_t tl_ntypes;

#endif
