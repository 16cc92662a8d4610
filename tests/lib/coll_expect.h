/* Expected values for collective integration tests, from formulas only (never from the library).
 * Reduction inputs are small integers (and powers of two for prod) chosen per type and rank count
 * so that every partial result is exactly representable in the type: the results are exact for
 * every type and op except avg on floating types (NCCL multiplies by 1/n first, AnyCCL divides
 * last: both are accepted within a few ulps). Data-movement collectives are checked byte by byte
 * against a pattern that depends on the source rank and the byte offset. */
#ifndef TESTS_COLL_EXPECT_H
#define TESTS_COLL_EXPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "launcher.h"
#include "nccl.h"

#define CE_SENTINEL 0xA5
#define CE_GUARD_BYTES 64

extern const ncclDataType_t ce_all_types[];
extern const int ce_ntypes;
extern const ncclRedOp_t ce_all_ops[];
extern const int ce_nops;

size_t ce_type_size(ncclDataType_t type);
const char *ce_type_name(ncclDataType_t type);
const char *ce_op_name(ncclRedOp_t op);

/* Element i of buf as a double / written from a double (rounded to nearest for small floats). */
double ce_get(const void *buf, ncclDataType_t type, size_t i);
void ce_set(void *buf, ncclDataType_t type, size_t i, double v);

/* Reduction input of rank `rank` at global element index i, and the expected result there. */
double ce_red_input(ncclDataType_t type, ncclRedOp_t op, int nranks, int rank, size_t i);
double ce_red_expected(ncclDataType_t type, ncclRedOp_t op, int nranks, size_t i);
/* Fill buf[k] = input(first + k) for k < count. */
void ce_red_fill(void *buf, ncclDataType_t type, ncclRedOp_t op, int nranks, int rank,
                 size_t first, size_t count);
/* Check buf[k] == expected(first + k); on mismatch write a message into err and return -1. */
int ce_red_check(const void *buf, ncclDataType_t type, ncclRedOp_t op, int nranks, size_t first,
                 size_t count, char *err, size_t errlen);

/* Byte j of the data that rank `rank` contributes to a data-movement collective. */
uint8_t ce_byte(int rank, size_t j);
void ce_bytes_fill(void *buf, int rank, size_t first, size_t nbytes);
int ce_bytes_check(const void *buf, int rank, size_t first, size_t nbytes, char *err,
                   size_t errlen);

/* A buffer with CE_GUARD_BYTES of sentinel on each side, everything sentinel-filled. */
struct ce_buf {
    unsigned char *base;
    size_t nbytes;
    void *data;
};
int ce_buf_alloc(struct ce_buf *b, size_t nbytes);
void ce_buf_free(struct ce_buf *b);
void ce_buf_reset(struct ce_buf *b);
/* -1 with a message if a guard byte changed (the library wrote out of bounds). */
int ce_buf_check_guards(const struct ce_buf *b, const char *what, char *err, size_t errlen);
/* -1 with a message if p[0..nbytes) is not all sentinel (the library wrote where it must not). */
int ce_check_untouched(const void *p, size_t nbytes, const char *what, char *err, size_t errlen);

/* A one-int allreduce: bodies end with it so that no rank destroys its communicator while a peer
 * still receives from it (that case has its own test in comm_mgmt.c). */
ncclResult_t ce_barrier(ncclComm_t comm);

/* Appends the collective matrix for body to out[n..max): prefix/np{1,2,3,4,5,8}/{shm,tcp}/proc
 * (TCP: NCCL_SHM_DISABLE=1), prefix/np{2,4}/threads and prefix/np3/initall. As in the launcher's
 * standard matrix, 5 and 8 ranks, 4 threads and TCP beyond 2 ranks are slow cases. Returns the
 * new count (never above max); names live as long as the program. */
size_t ce_add_matrix(struct tl_case *out, size_t n, size_t max, const char *prefix,
                     tl_body_fn body, const void *arg, int timeout_s);
/* Appends the protocol cases for body: every protocol forced by NCCL_PROTO (Simple, LL, LL128,
 * and LL+LL128 split by size), over shared memory on 2-4 processes, LL on threads and LL over
 * TCP (where the transport carries it as Simple). Names: prefix/proto-<p>/np<N>/<how>. */
size_t ce_add_proto_cases(struct tl_case *out, size_t n, size_t max, const char *prefix,
                          tl_body_fn body, const void *arg, int timeout_s);
/* Appends one case (unless out is full) and returns the new count; name is formatted. */
size_t ce_add_case(struct tl_case *out, size_t n, size_t max, struct tl_case c, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

#endif
