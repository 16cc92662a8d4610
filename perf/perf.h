/* nccl-tests style benchmarks: what each binary (one collective) gives the shared driver in
 * perf/common.c, and the data helpers of perf/data.c. The binaries use only the public API
 * (nccl.h), so they run unchanged against any library exporting NCCL's ABI. */
#ifndef PERF_PERF_H_
#define PERF_PERF_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nccl.h"

/* Reduction ops as the benchmark names them; PERF_OP_MULSUM stands for a per-rank
 * ncclRedOpCreatePreMulSum op, PERF_OP_NONE for collectives that do not reduce. */
enum perf_op {
    PERF_OP_SUM,
    PERF_OP_PROD,
    PERF_OP_MAX,
    PERF_OP_MIN,
    PERF_OP_AVG,
    PERF_OP_MULSUM,
    PERF_OP_COUNT,
    PERF_OP_NONE = PERF_OP_COUNT
};

/* Element counts of one call for a given size, as nccl-tests' getCollByteCount: the in-place
 * offsets are in elements per rank (the in-place send/recv pointer is recvbuff + off * rank). */
struct perf_counts {
    size_t send_count;
    size_t recv_count;
    size_t param_count; /* the count argument of the call, printed in the "count" column */
    size_t send_inplace_off;
    size_t recv_inplace_off;
};

/* One rank's view of one call. */
struct perf_call {
    const void *sendbuff;
    void *recvbuff;
    size_t count; /* param_count */
    ncclDataType_t type;
    ncclRedOp_t op;
    int root;
    int rank;
    int nranks;
    ncclComm_t comm;
};

/* What element j of a rank's receive buffer must hold after a checked call. */
enum perf_expect_kind {
    PERF_EXPECT_NONE,   /* not checked (e.g. receive buffer of a non-root rank) */
    PERF_EXPECT_COPY,   /* the input element of rank src_rank with generator index g */
    PERF_EXPECT_REDUCE, /* the reduction over all ranks of their elements with index g */
};

struct perf_expect {
    enum perf_expect_kind kind;
    int src_rank;
    size_t g;
};

/* A collective under test. Inputs: send element i of rank r holds gen(r, input_index(i)), where
 * gen is a deterministic function of (rank, index, type, op) chosen so that every result is
 * exact in every type; input_index returns false where the rank provides no input there. */
struct perf_coll {
    const char *name;     /* the binary's name, e.g. "all_reduce_perf" */
    const char *api;      /* the call under test, for error messages, e.g. "ncclAllReduce" */
    bool has_op;          /* -o applies and the redop column shows it; else "none" */
    bool has_root;        /* -r applies and the root column shows it; else -1 */
    bool check_inplace;   /* false: the in-place run is timed but not verified (nccl-tests) */
    bool bw_times_nranks; /* algbw counts param_count * nranks elements, else param_count */
    double (*bus_factor)(int nranks);
    void (*get_counts)(size_t count, int nranks, struct perf_counts *out);
    ncclResult_t (*run)(const struct perf_call *call);
    bool (*input_index)(const struct perf_call *call, size_t i, size_t *g_out);
    void (*expect)(const struct perf_call *call, size_t j, struct perf_expect *out);
};

/* Runs the benchmark for coll with the command line; returns the process exit status. */
int perf_main(int argc, char **argv, const struct perf_coll *coll);

/* Bus-bandwidth factors shared by several collectives. */
double perf_factor_one(int nranks);
double perf_factor_gather(int nranks); /* (n-1)/n */

/* data.c: element types and exact data. */
size_t perf_type_size(ncclDataType_t type);
const char *perf_type_name(ncclDataType_t type);
/* Decodes element i of buf to a double (exact for every type). */
double perf_get(ncclDataType_t type, const void *buf, size_t i);
/* Stores v, rounded to nearest even, as element i of buf. */
void perf_put(ncclDataType_t type, void *buf, size_t i, double v);
/* Fills bytes of buf with a value no check ever expects (NaN, or all ones for integers). */
void perf_fill_sentinel(void *buf, size_t bytes);

/* The generator and the expected values for one (type, op, nranks, seed). */
struct perf_data {
    ncclDataType_t type;
    enum perf_op op;
    int nranks;
    unsigned seed;
    unsigned modulus; /* values cycle through [0, modulus) */
    int nz_ranks;     /* only ranks below this contribute non-zero values (sum-like ops) */
};

void perf_data_init(struct perf_data *d, ncclDataType_t type, enum perf_op op, int nranks,
                    unsigned seed);
double perf_data_gen(const struct perf_data *d, int rank, size_t g);
double perf_data_reduce(const struct perf_data *d, size_t g);
/* The PreMulSum scalar of a rank (1 or 2), exact in every type. */
double perf_data_scalar(int rank);
/* Whether got matches want for this data set (exact, or within rounding for float avg). */
bool perf_data_match(const struct perf_data *d, double got, double want);

#endif
