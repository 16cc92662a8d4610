/* Groups: ncclGroupStart/End nest per thread. Operations issued inside are copied into this
 * thread's list and run together at the outermost ncclGroupEnd, which returns when all are done
 * (host buffers). Communicator creations inside a group run concurrently at ncclGroupEnd, which is
 * how one thread initializes several ranks. As in NCCL, an invalid call inside a group is refused
 * when it is made and makes ncclGroupEnd return that error without running the group. */
#include "common/check.h"
#include "core/api.h"
#include "core/board.h"
#include "core/enqueue.h"
#include "core/stream.h"
#include "gin/gin.h"
#include "ras/ras.h"

#include <stdlib.h>
#include <string.h>

struct deferred {
    ac_deferred_fn fn;
    void *arg;
    ncclResult_t res;
    struct deferred *next;
};

static __thread int group_depth;
static __thread struct ac_op *group_head, *group_tail;
static __thread struct deferred *group_deferred;
static __thread ncclResult_t group_error;

bool ac_group_is_open(void) { return group_depth > 0; }

static void record_error(ncclResult_t res)
{
    if (group_depth > 0 && group_error == ncclSuccess)
        group_error = res;
}

ncclResult_t ac_group_defer(ac_deferred_fn fn, void *arg)
{
    struct deferred *d = calloc(1, sizeof(*d));
    if (!d)
        return AC_FAIL(ncclSystemError, "out of memory");
    d->fn = fn;
    d->arg = arg;
    d->next = group_deferred;
    group_deferred = d;
    return ncclSuccess;
}

static ncclResult_t run_now(const struct ac_op *op, uint64_t ras_seq, uint64_t coll_seq)
{
    struct ac_op copy = *op;
    copy.next = NULL;
    copy.ras_seq = ras_seq;
    copy.coll_seq = coll_seq;
    if (copy.backend)
        return ac_stream_submit(&copy);
    /* A host call must not overlap this communicator's calls on streams. */
    if (copy.comm->stream_q)
        ac_stream_drain(copy.comm);
    atomic_fetch_add(&op->comm->nactive, 1);
    ac_ras_op_start(copy.comm, ras_seq);
    bool is_gin = false;
    ncclResult_t res = ac_gin_try_op(&copy, &is_gin);
    if (!is_gin)
        res = ac_exec_ops(&copy);
    ac_ras_op_end(copy.comm, ras_seq, res);
    atomic_fetch_sub(&op->comm->nactive, 1);
    return res;
}

ncclResult_t ac_enqueue(const struct ac_op *op)
{
    op->comm->nops_issued++;
    bool is_p2p = op->coll == AC_COLL_SEND || op->coll == AC_COLL_RECV;
    uint64_t coll_seq = is_p2p ? 0 : ++op->comm->ncolls_issued;
    if (!is_p2p)
        ac_board_announce(op, coll_seq);
    uint64_t ras_seq = ac_ras_op_enqueue(op->comm, (int)op->coll, op->count, (int)op->type,
                                         (int)op->redop.kind, is_p2p ? op->peer : op->root);
    if (group_depth == 0)
        return run_now(op, ras_seq, coll_seq);
    struct ac_op *copy = malloc(sizeof(*copy));
    if (!copy) {
        record_error(ncclSystemError);
        return AC_FAIL(ncclSystemError, "out of memory queuing an operation");
    }
    *copy = *op;
    copy->next = NULL;
    copy->ras_seq = ras_seq;
    copy->coll_seq = coll_seq;
    if (group_tail)
        group_tail->next = copy;
    else
        group_head = copy;
    group_tail = copy;
    return ncclSuccess;
}

void ac_group_note_error(ncclResult_t res) { record_error(res); }

static void *deferred_thread(void *p)
{
    struct deferred *d = p;
    d->res = d->fn(d->arg);
    return NULL;
}

static ncclResult_t run_deferred(struct deferred *list)
{
    ncclResult_t res = ncclSuccess;
    int n = 0;
    for (struct deferred *d = list; d; d = d->next)
        n++;
    pthread_t *threads = calloc((size_t)n + 1, sizeof(*threads));
    bool *started = calloc((size_t)n + 1, sizeof(*started));
    int i = 0;
    for (struct deferred *d = list; d; d = d->next, i++) {
        if (n == 1 || !threads || !started)
            d->res = d->fn(d->arg);
        else
            started[i] = pthread_create(&threads[i], NULL, deferred_thread, d) == 0;
        if (n > 1 && threads && started && !started[i])
            d->res = AC_SYSFAIL("pthread_create for a grouped communicator creation");
    }
    i = 0;
    for (struct deferred *d = list; d; d = d->next, i++) {
        if (started && started[i])
            pthread_join(threads[i], NULL);
        if (d->res != ncclSuccess && res == ncclSuccess)
            res = d->res;
    }
    free(threads);
    free(started);
    return res;
}

static void take_group(struct ac_op **ops, struct deferred **deferred, ncclResult_t *err)
{
    *ops = group_head;
    *deferred = group_deferred;
    *err = group_error;
    group_head = group_tail = NULL;
    group_deferred = NULL;
    group_error = ncclSuccess;
}

static void free_group(struct ac_op *ops, struct deferred *deferred)
{
    while (ops) {
        struct ac_op *next = ops->next;
        free(ops);
        ops = next;
    }
    while (deferred) {
        struct deferred *next = deferred->next;
        free(deferred);
        deferred = next;
    }
}

AC_API(ncclResult_t, ncclGroupStart, void);
ncclResult_t ncclGroupStart(void)
{
    group_depth++;
    return ncclSuccess;
}

/* A group is either calls on streams (one job for the proxies) or host calls run here: a host
 * call returns when complete and a call on a stream returns at once, and one ncclGroupEnd cannot
 * do both. */
static ncclResult_t run_ops(struct ac_op *ops)
{
    bool has_stream = false, has_host = false;
    for (struct ac_op *op = ops; op; op = op->next) {
        if (op->backend)
            has_stream = true;
        else
            has_host = true;
    }
    if (has_stream && has_host)
        return AC_FAIL(ncclInvalidUsage, "ncclGroupEnd: the group mixes calls on host buffers "
                       "with a NULL stream and calls on a stream or on GPU buffers; put them in "
                       "separate groups (no operation of the group was run)");
    if (has_stream)
        return ac_stream_submit(ops);
    for (struct ac_op *op = ops; op; op = op->next)
        if (op->comm->stream_q)
            ac_stream_drain(op->comm);
    for (struct ac_op *op = ops; op; op = op->next) {
        atomic_fetch_add(&op->comm->nactive, 1);
        ac_ras_op_start(op->comm, op->ras_seq);
    }
    ncclResult_t res = ac_exec_ops(ops);
    for (struct ac_op *op = ops; op; op = op->next) {
        ac_ras_op_end(op->comm, op->ras_seq, res);
        atomic_fetch_sub(&op->comm->nactive, 1);
    }
    return res;
}

AC_API(ncclResult_t, ncclGroupEnd, void);
ncclResult_t ncclGroupEnd(void)
{
    if (group_depth == 0)
        return AC_FAIL(ncclInvalidUsage, "ncclGroupEnd called without a matching ncclGroupStart");
    if (--group_depth > 0)
        return ncclSuccess;
    struct ac_op *ops;
    struct deferred *deferred;
    ncclResult_t res;
    take_group(&ops, &deferred, &res);
    if (res != ncclSuccess) {
        AC_FAIL(res, "ncclGroupEnd: a call inside the group was refused (%s); no operation of "
                "the group was run", ncclGetErrorString(res));
    } else {
        if (deferred)
            res = run_deferred(deferred);
        if (res == ncclSuccess && ops)
            res = run_ops(ops);
    }
    free_group(ops, deferred);
    return res;
}

AC_API(ncclResult_t, ncclGroupSimulateEnd, ncclSimInfo_t *simInfo);
ncclResult_t ncclGroupSimulateEnd(ncclSimInfo_t *simInfo)
{
    if (!simInfo)
        return AC_FAIL(ncclInvalidArgument, "simInfo is NULL");
    if (simInfo->magic != 0x74685283)
        return AC_FAIL(ncclInvalidArgument,
                       "simInfo was not initialized with NCCL_SIM_INFO_INITIALIZER");
    if (group_depth == 0)
        return AC_FAIL(ncclInvalidUsage,
                       "ncclGroupSimulateEnd called without a matching ncclGroupStart");
    if (--group_depth > 0)
        return ncclSuccess;
    struct ac_op *ops;
    struct deferred *deferred;
    ncclResult_t res;
    take_group(&ops, &deferred, &res);
    double us = 0;
    for (struct ac_op *op = ops; op; op = op->next) {
        size_t bytes = op->count * ac_type_size(op->type);
        us += ac_tuner_estimate_us(op->coll, ac_tuner_pick(op->coll, bytes, &op->comm->layout),
                                   bytes, &op->comm->layout);
    }
    if (res == ncclSuccess)
        simInfo->estimatedTime = (float)us;
    free_group(ops, deferred);
    return res;
}
