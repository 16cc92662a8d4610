/* What each rank runs: communicator and buffers, then for every (type, op, root) the warm-up and
 * the size sweep; per size an out-of-place and an in-place run, each timed over -n iterations
 * and then checked (-c) against values computed from formulas (perf/data.c). Rank 0 prints. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"
#include "perf_internal.h"

#define PERF_ALIGN 4096

static void alloc_buffers(struct perf_rank *r)
{
    const struct perf_opts *o = &perf_world.opts;
    r->buf_bytes = (o->max_bytes + PERF_ALIGN - 1) / PERF_ALIGN * PERF_ALIGN;
    if (r->buf_bytes == 0)
        r->buf_bytes = PERF_ALIGN;
    /* -R: buffers from ncclMemAlloc, as nccl-tests allocates registered buffers (on the host
     * backend that is shared memory, which a peer of the same host can read directly) */
    if (o->reg != 0) {
        PERF_NCCLCHECK(ncclMemAlloc(&r->sendbuf, r->buf_bytes), NULL, r->rank);
        PERF_NCCLCHECK(ncclMemAlloc(&r->recvbuf, r->buf_bytes), NULL, r->rank);
    } else if (posix_memalign(&r->sendbuf, PERF_ALIGN, r->buf_bytes) != 0 ||
               posix_memalign(&r->recvbuf, PERF_ALIGN, r->buf_bytes) != 0) {
        fprintf(stderr, "rank %d: cannot allocate 2 buffers of %zu bytes; lower -e\n", r->rank,
                r->buf_bytes);
        perf_fatal();
    }
    memset(r->sendbuf, 0, r->buf_bytes);
    memset(r->recvbuf, 0, r->buf_bytes);
}

static void register_buffers(struct perf_rank *r)
{
    int reg = perf_world.opts.reg;
    if (reg == 1) {
        PERF_NCCLCHECK(ncclCommRegister(r->comm, r->sendbuf, r->buf_bytes, &r->send_handle),
                       r->comm, r->rank);
        PERF_NCCLCHECK(ncclCommRegister(r->comm, r->recvbuf, r->buf_bytes, &r->recv_handle),
                       r->comm, r->rank);
    } else if (reg == 2) {
        PERF_NCCLCHECK(ncclCommWindowRegister(r->comm, r->sendbuf, r->buf_bytes, &r->send_win,
                                              NCCL_WIN_COLL_SYMMETRIC),
                       r->comm, r->rank);
        PERF_NCCLCHECK(ncclCommWindowRegister(r->comm, r->recvbuf, r->buf_bytes, &r->recv_win,
                                              NCCL_WIN_COLL_SYMMETRIC),
                       r->comm, r->rank);
    }
}

static void deregister_buffers(struct perf_rank *r)
{
    if (r->send_handle != NULL)
        PERF_NCCLCHECK(ncclCommDeregister(r->comm, r->send_handle), r->comm, r->rank);
    if (r->recv_handle != NULL)
        PERF_NCCLCHECK(ncclCommDeregister(r->comm, r->recv_handle), r->comm, r->rank);
    if (r->send_win != NULL)
        PERF_NCCLCHECK(ncclCommWindowDeregister(r->comm, r->send_win), r->comm, r->rank);
    if (r->recv_win != NULL)
        PERF_NCCLCHECK(ncclCommWindowDeregister(r->comm, r->recv_win), r->comm, r->rank);
}

static void make_call(const struct perf_rank *r, const struct perf_counts *counts,
                      ncclDataType_t type, int root, bool is_inplace, struct perf_call *call)
{
    size_t ts = perf_type_size(type);
    char *recv = r->recvbuf;
    *call = (struct perf_call){
        .sendbuff = r->sendbuf,
        .recvbuff = r->recvbuf,
        .count = counts->param_count,
        .type = type,
        .op = ncclSum,
        .root = root,
        .rank = r->rank,
        .nranks = perf_world.nranks,
        .comm = r->comm,
    };
    if (is_inplace) {
        call->sendbuff = recv + counts->send_inplace_off * (size_t)r->rank * ts;
        call->recvbuff = recv + counts->recv_inplace_off * (size_t)r->rank * ts;
    }
}

/* One call as nccl-tests' startColl: a PreMulSum op is created for the call and destroyed after
 * it; with -z every call is followed by a barrier. */
static void run_call(const struct perf_rank *r, const struct perf_call *tmpl, enum perf_op op)
{
    const struct perf_coll *coll = perf_world.coll;
    struct perf_call call = *tmpl;
    uint64_t scalar = 0; /* storage for one element of any type */
    if (op == PERF_OP_MULSUM) {
        perf_put(call.type, &scalar, 0, perf_data_scalar(r->rank));
        PERF_NCCLCHECK(ncclRedOpCreatePreMulSum(&call.op, &scalar, call.type,
                                                ncclScalarHostImmediate, r->comm),
                       r->comm, r->rank);
    } else if (op != PERF_OP_NONE) {
        call.op = (ncclRedOp_t)op; /* PERF_OP_SUM..AVG have ncclSum..ncclAvg's values */
    }
    ncclResult_t res = coll->run(&call);
    if (res != ncclSuccess)
        perf_nccl_failed(coll->api, __FILE__, __LINE__, res, r->comm, r->rank);
    if (op == PERF_OP_MULSUM)
        PERF_NCCLCHECK(ncclRedOpDestroy(call.op, r->comm), r->comm, r->rank);
    __atomic_add_fetch(&perf_world.progress, 1, __ATOMIC_RELAXED);
    if (perf_world.opts.blocking)
        perf_barrier(r->thread);
}

static void fill_data(const struct perf_call *call, const struct perf_counts *counts,
                      const struct perf_data *d, bool is_inplace, void *recvbuf)
{
    const struct perf_coll *coll = perf_world.coll;
    size_t ts = perf_type_size(call->type), region = counts->recv_count, g;
    if (is_inplace) {
        size_t send_end = counts->send_inplace_off * (size_t)call->rank + counts->send_count;
        size_t recv_end = counts->recv_inplace_off * (size_t)call->rank + counts->recv_count;
        region = send_end > recv_end ? send_end : recv_end;
    }
    perf_fill_sentinel(recvbuf, region * ts);
    for (size_t i = 0; i < counts->send_count; i++) {
        if (coll->input_index(call, i, &g))
            perf_put(call->type, (void *)call->sendbuff, i, perf_data_gen(d, call->rank, g));
    }
}

static double count_wrong(const struct perf_call *call, const struct perf_counts *counts,
                          const struct perf_data *d)
{
    const struct perf_coll *coll = perf_world.coll;
    double wrong = 0, want;
    struct perf_expect e;
    for (size_t j = 0; j < counts->recv_count; j++) {
        coll->expect(call, j, &e);
        if (e.kind == PERF_EXPECT_NONE)
            continue;
        if (e.kind == PERF_EXPECT_COPY)
            want = perf_data_gen(d, e.src_rank, e.g);
        else
            want = perf_data_reduce(d, e.g);
        if (!perf_data_match(d, perf_get(call->type, call->recvbuff, j), want))
            wrong++;
    }
    return wrong;
}

/* Runs -c checked calls; returns the number of wrong elements over all ranks, -1 if unchecked. */
static double check_call(struct perf_rank *r, const struct perf_call *call,
                         const struct perf_counts *counts, enum perf_op op, bool is_inplace)
{
    const struct perf_opts *o = &perf_world.opts;
    struct perf_data d;
    double wrong = 0;
    if (o->check <= 0 || (is_inplace && !perf_world.coll->check_inplace))
        return -1;
    for (int c = 0; c < o->check && wrong == 0; c++) {
        perf_data_init(&d, call->type, op, perf_world.nranks, r->rep++);
        fill_data(call, counts, &d, is_inplace, r->recvbuf);
        perf_barrier(r->thread); /* no rank's data may arrive before the sentinel is in place */
        run_call(r, call, op);
        double local = count_wrong(call, counts, &d);
        if (local > 0) {
            pthread_mutex_lock(&perf_world.lock);
            perf_world.errors++;
            pthread_mutex_unlock(&perf_world.lock);
        }
        wrong = perf_allreduce(r->thread, local, PERF_RED_SUM);
    }
    return wrong;
}

static void print_result(double sec, const struct perf_counts *counts, ncclDataType_t type,
                         double wrong)
{
    const struct perf_coll *coll = perf_world.coll;
    int n = perf_world.nranks;
    double bytes = (double)counts->param_count * (double)perf_type_size(type);
    double algbw = (coll->bw_times_nranks ? bytes * n : bytes) / 1.0e9 / sec;
    double busbw = algbw * coll->bus_factor(n);
    double usec = sec * 1.0e6;
    char time_str[32], wrong_str[32];
    snprintf(time_str, sizeof(time_str),
             usec >= 10000.0 ? "%7.0f"
             : usec >= 100.0 ? "%7.1f"
                             : "%7.2f",
             usec);
    if (wrong < 0)
        snprintf(wrong_str, sizeof(wrong_str), "%5s", "N/A");
    else
        snprintf(wrong_str, sizeof(wrong_str), "%5g", wrong);
    printf("  %7s  %6.2f  %6.2f  %s", time_str, algbw, busbw, wrong_str);
    perf_world.bw_sum += busbw;
    perf_world.bw_count++;
}

static void bench(struct perf_rank *r, const struct perf_counts *counts, ncclDataType_t type,
                  enum perf_op op, int root, bool is_inplace)
{
    const struct perf_opts *o = &perf_world.opts;
    struct perf_call call;
    make_call(r, counts, type, root, is_inplace, &call);
    run_call(r, &call, op); /* first call outside the timing, as nccl-tests */
    perf_barrier(r->thread);
    double start = perf_now();
    for (int it = 0; it < o->iters; it++) {
        if (o->agg_iters > 1)
            PERF_NCCLCHECK(ncclGroupStart(), r->comm, r->rank);
        for (int a = 0; a < o->agg_iters; a++)
            run_call(r, &call, op);
        if (o->agg_iters > 1)
            PERF_NCCLCHECK(ncclGroupEnd(), r->comm, r->rank);
    }
    double sec = (perf_now() - start) / ((double)o->iters * o->agg_iters);
    sec = perf_allreduce(r->thread, sec, (enum perf_red)o->average);
    perf_barrier(r->thread);
    double wrong = check_call(r, &call, counts, op, is_inplace);
    if (r->rank == 0)
        print_result(sec, counts, type, wrong);
}

static void get_counts(size_t bytes, ncclDataType_t type, struct perf_counts *counts)
{
    perf_world.coll->get_counts(bytes / perf_type_size(type), perf_world.nranks, counts);
}

static void warmup(struct perf_rank *r, size_t bytes, ncclDataType_t type, enum perf_op op,
                   int root)
{
    struct perf_counts counts;
    struct perf_call call;
    get_counts(bytes, type, &counts);
    make_call(r, &counts, type, root, false, &call);
    for (int it = 0; it < perf_world.opts.warmup; it++)
        run_call(r, &call, op);
}

static size_t next_size(size_t size)
{
    const struct perf_opts *o = &perf_world.opts;
    size_t next = o->step_factor > 1 ? size * o->step_factor : size + o->step_bytes;
    if (size == 0 && o->step_factor > 1)
        next = 1;
    return next > size ? next : (size_t)-1; /* overflow or no progress: stop */
}

static void time_test(struct perf_rank *r, ncclDataType_t type, enum perf_op op, int root)
{
    const struct perf_opts *o = &perf_world.opts;
    size_t ts = perf_type_size(type);
    perf_barrier(r->thread);
    warmup(r, o->max_bytes, type, op, root);
    warmup(r, o->min_bytes, type, op, root);
    for (size_t size = o->min_bytes; size <= o->max_bytes; size = next_size(size)) {
        struct perf_counts counts;
        get_counts(size, type, &counts);
        if (r->rank == 0) {
            size_t send = counts.send_count * ts, recv = counts.recv_count * ts;
            printf("%12zu  %12zu  %8s  %6s  %6d", send > recv ? send : recv, counts.param_count,
                   perf_type_name(type), perf_op_name(op), root);
        }
        bench(r, &counts, type, op, root, false);
        bench(r, &counts, type, op, root, true);
        if (r->rank == 0)
            printf("\n");
    }
}

/* Loops over -d, -o and -r ("all" expands to every type, op or root). */
static void run_tests(struct perf_rank *r)
{
    const struct perf_opts *o = &perf_world.opts;
    const struct perf_coll *coll = perf_world.coll;
    int t0 = o->type < 0 ? 0 : o->type, t1 = o->type < 0 ? ncclNumTypes - 1 : o->type;
    int op0 = PERF_OP_NONE, op1 = PERF_OP_NONE, root0 = -1, root1 = -1;
    if (coll->has_op) {
        op0 = o->op < 0 ? 0 : o->op;
        op1 = o->op < 0 ? PERF_OP_COUNT - 1 : o->op;
    }
    if (coll->has_root) {
        root0 = o->root < 0 ? 0 : o->root;
        root1 = o->root < 0 ? perf_world.nranks - 1 : o->root;
    }
    for (int t = t0; t <= t1; t++)
        for (int op = op0; op <= op1; op++)
            for (int root = root0; root <= root1; root++)
                time_test(r, (ncclDataType_t)t, (enum perf_op)op, root);
}

void perf_run_rank(struct perf_rank *r)
{
    const struct perf_opts *o = &perf_world.opts;
    alloc_buffers(r);
    PERF_NCCLCHECK(ncclCommInitRank(&r->comm, perf_world.nranks, r->id, r->rank), NULL, r->rank);
    __atomic_add_fetch(&perf_world.progress, 1, __ATOMIC_RELAXED); /* -T counts from here */
    register_buffers(r);
    for (int cycle = 0; o->run_cycles == 0 || cycle < o->run_cycles; cycle++)
        run_tests(r);
    deregister_buffers(r);
    PERF_NCCLCHECK(ncclCommDestroy(r->comm), NULL, r->rank);
    if (o->reg != 0) {
        PERF_NCCLCHECK(ncclMemFree(r->sendbuf), NULL, r->rank);
        PERF_NCCLCHECK(ncclMemFree(r->recvbuf), NULL, r->rank);
    } else {
        free(r->sendbuf);
        free(r->recvbuf);
    }
}
