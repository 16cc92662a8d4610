/* Shared between the driver (common.c) and the per-rank benchmark loop (bench.c): options,
 * the process-wide state and the cross-rank reductions. Not used by the per-collective files. */
#ifndef PERF_PERF_INTERNAL_H_
#define PERF_PERF_INTERNAL_H_

#include <pthread.h>

#include "perf.h"

struct perf_opts {
    int nthreads;
    int ngpus;
    size_t min_bytes;
    size_t max_bytes;
    size_t step_bytes;
    size_t step_factor;
    int iters;
    int warmup;
    int agg_iters;
    int run_cycles; /* 0: forever */
    int check;      /* number of checked runs per size (0: none) */
    int parallel_init;
    int blocking;
    int stream_null;
    int timeout_s;
    int graph;
    int report_cputime;
    int average; /* enum perf_red for times: 0 rank 0, 1 average, 2 min, 3 max */
    int reg;     /* 1: ncclCommRegister, 2: ncclCommWindowRegister */
    int op;      /* enum perf_op, or -1 for all */
    int type;    /* ncclDataType_t, or -1 for all */
    int root;    /* -1 for all */
};

/* Values match nccl-tests' -a. */
enum perf_red {
    PERF_RED_RANK0 = 0,
    PERF_RED_AVG = 1,
    PERF_RED_MIN = 2,
    PERF_RED_MAX = 3,
    PERF_RED_SUM = 4,
};

/* One process: its threads are its ranks. */
struct perf_world {
    int nprocs;
    int proc;
    int nthreads;
    int nranks;
    struct perf_opts opts;
    const struct perf_coll *coll;
    char hostname[256];
    pthread_mutex_t lock; /* guards the reduction state below */
    pthread_cond_t cond;
    int arrived;
    unsigned long generation;
    double acc;
    double result;
    unsigned long progress; /* calls completed, read by the -T watchdog (atomic) */
    /* Written only by the rank that prints (rank 0) and by each rank under lock (errors). */
    double bw_sum;
    int bw_count;
    int errors; /* failed checks of this process' ranks */
};

extern struct perf_world perf_world;

struct perf_rank {
    int thread;
    int rank;
    ncclUniqueId id;
    pthread_t tid;
    ncclComm_t comm;
    void *sendbuf;
    void *recvbuf;
    size_t buf_bytes;
    void *send_handle;
    void *recv_handle;
    ncclWindow_t send_win;
    ncclWindow_t recv_win;
    unsigned rep; /* checked runs so far: the data seed */
};

const char *perf_op_name(enum perf_op op);
double perf_now(void);
double perf_allreduce(int thread, double v, enum perf_red mode);
void perf_barrier(int thread);
/* Ends the whole run (all processes under MPI) with status 1. */
void perf_fatal(void);
void perf_nccl_failed(const char *what, const char *file, int line, ncclResult_t res,
                      ncclComm_t comm, int rank);
void perf_run_rank(struct perf_rank *r);

#define PERF_NCCLCHECK(call, comm, rank)                                                           \
    do {                                                                                           \
        ncclResult_t res_ = (call);                                                                \
        if (res_ != ncclSuccess)                                                                   \
            perf_nccl_failed(#call, __FILE__, __LINE__, res_, (comm), (rank));                     \
    } while (0)

#endif
