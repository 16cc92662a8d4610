/* Reduction and copy kernels, written once for every backend (the host build is plain C here; the
 * CUDA and HIP builds include the same element functions). Every NCCL data type, every operator:
 * sum, prod, max, min, and the two that NCCL builds on them: avg (sum, then divide by nranks in the
 * final step) and premulsum (each rank's own input multiplied by a scalar before the sum).
 * fp16, bf16 and fp8 compute in float and round to nearest even on every store; fp8 conversions
 * saturate to the largest finite value as CUDA's __nv_fp8_* constructors do (SATFINITE). */
#ifndef AC_DEVICE_KERNELS_REDUCE_H
#define AC_DEVICE_KERNELS_REDUCE_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ac_op_kind {
    AC_OP_SUM,
    AC_OP_PROD,
    AC_OP_MAX,
    AC_OP_MIN,
    AC_OP_KIND_COUNT,
};

/* A reduction as the kernels run it. Built by src/core from (ncclRedOp_t, type, nranks). */
struct ac_redop {
    ncclDataType_t type;
    enum ac_op_kind kind;
    bool has_premul;           /* premulsum: local inputs are multiplied by scalar */
    uint64_t scalar;           /* the premul scalar, stored as a value of `type` in the low bytes */
    uint32_t postdiv;          /* avg: divide by this in the final step; 0 = none */
};

size_t ac_type_size(ncclDataType_t type);          /* 0 for an invalid type */
const char *ac_type_name(ncclDataType_t type);     /* "float", "half", ... (nccl-tests' names) */

/* dst[i] = pre(local[i]), then divided by postdiv if is_final. dst may equal local. */
void ac_kern_load(const struct ac_redop *op, void *dst, const void *local, size_t count,
                  bool is_final);
/* dst[i] = recvd[i] OP pre(local[i]), then divided by postdiv if is_final. dst may equal either. */
void ac_kern_reduce(const struct ac_redop *op, void *dst, const void *recvd, const void *local,
                    size_t count, bool is_final);
/* dst[i] = a[i] OP b[i] (no premul: both are partial results), then postdiv if is_final. */
void ac_kern_combine(const struct ac_redop *op, void *dst, const void *a, const void *b,
                     size_t count, bool is_final);

/* Copies a result into the user's buffer (bytes, not elements); may bypass the cache for large
 * copies. dst and src must not overlap unless equal. */
void ac_kern_copy_out(void *dst, const void *src, size_t bytes);
/* The same between two buffers of the user's that may also overlap without being equal (then a
 * memmove). */
void ac_kern_copy_user(void *dst, const void *src, size_t bytes);
/* The same for one part of a larger copy of whole_bytes, which decides how to store. */
void ac_kern_copy_out_part(void *dst, const void *src, size_t bytes, size_t whole_bytes);
/* Copies with non-temporal stores where the CPU has them (plain memcpy elsewhere): for a
 * destination whose lines another core holds, which plain stores would take back one by one. */
void ac_kern_copy_stream(void *dst, const void *src, size_t bytes);

/* Element conversions, exposed for tests and for the host side of other backends. */
float ac_half_to_float(uint16_t h);
uint16_t ac_float_to_half(float f);
float ac_bf16_to_float(uint16_t b);
uint16_t ac_float_to_bf16(float f);
float ac_fp8e4m3_to_float(uint8_t v);
uint8_t ac_float_to_fp8e4m3(float f);
float ac_fp8e5m2_to_float(uint8_t v);
uint8_t ac_float_to_fp8e5m2(float f);

#endif
