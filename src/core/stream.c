/* Calls on streams (v1: staged through pinned host memory). A call puts on the user's stream:
 * copy the input into a staging buffer, signal READY, wait for DONE, copy the result out, signal
 * RELEASED; and returns. A proxy thread per communicator waits for READY, runs the collective on
 * the staging buffers with the host engine (ac_exec_ops), in the order the calls were made, and
 * writes DONE. The operations of one group are one job, run together once all their inputs are
 * staged; a job spanning several communicators is run by the proxy of its first one, once it is at
 * the head of every one's queue. A stream is never left waiting: a failed or cancelled job still
 * writes DONE (the outputs are then undefined, and the communicator's asynchronous error says so).
 * The flags are sequence numbers in pinned memory compared as (int32_t)(flag - seq) >= 0, so that
 * no flag is ever reset. Host calls (NULL stream, host buffers) never come here. */
#include "core/stream.h"

#include "common/check.h"
#include "common/log.h"
#include "common/time.h"
#include "core/devpath.h"
#include "device/backend.h"
#include "ras/ras.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { FLAG_READY, FLAG_DONE, FLAG_RELEASED, NFLAGS = 16 /* one 64-byte line per slot */ };

#define STAGE_MIN_BYTES 4096
#define STAGE_ALIGN 64
/* How long ncclCommDestroy waits for streams to copy results out of the staging memory before it
 * leaves that memory allocated rather than free what a GPU may still read. */
#define RELEASE_WAIT_NS (10ull * 1000000000ull)

/* One call's staging memory and flags; reused once its stream signalled RELEASED. */
struct slot {
    const struct ac_backend *be;
    volatile uint32_t *flags; /* NFLAGS words of be->host_alloc memory */
    char *stage;              /* be->host_alloc memory, stage_bytes long (NULL while 0) */
    size_t stage_bytes;
    uint32_t seq;          /* of its latest use */
    bool is_busy;          /* submitted: free again when RELEASED reaches seq */
    bool is_lost;          /* its stream calls failed: RELEASED may never come, never reuse it */
    bool has_stream_work;  /* this use put something on a stream */
    struct ac_op op;       /* the call, on the staging buffers */
    struct slot *next;     /* the communicator's cache */
    struct slot *job_next; /* the job's slots, in call order */
};

struct job {
    struct slot *slots;
    struct ncclComm **comms; /* distinct communicators; comms[0]'s proxy runs the job */
    int ncomms;
    _Atomic bool is_cancelled; /* a communicator of the job is being aborted */
};

struct ac_stream_q {
    struct ncclComm *comm;
    pthread_t proxy;
    struct job **ring; /* queued jobs, under qlock */
    size_t cap, head, count;
    bool is_stopping; /* under qlock */
    pthread_mutex_t slot_lock;
    struct slot *slots;
};

/* One lock for every queue: a job may sit in several, and is pushed to all of them at once, so that
 * any two jobs are in the same order in every queue they share (no cycle among the proxies). */
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;

static bool reached(const volatile uint32_t *flag, uint32_t seq)
{
    return (int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - seq) >= 0;
}

/* Spins a little, then sleeps: the thread writing the flag may need this core. */
static void backoff(unsigned *npolls)
{
    if ((*npolls)++ < 64) {
        sched_yield();
    } else {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

ncclResult_t ac_stream_pick_backend(const void *sendbuff, bool reads, const void *recvbuff,
                                    bool writes, void *stream, const struct ac_backend **be_out)
{
    const struct ac_backend *bs = NULL, *br = NULL, *be;
    char why[512];

    if (ac_backends_have_gpu()) {
        if (reads && sendbuff && (bs = ac_backend_for_pointer(sendbuff))->kind == AC_MEM_HOST)
            bs = NULL;
        if (writes && recvbuff && (br = ac_backend_for_pointer(recvbuff))->kind == AC_MEM_HOST)
            br = NULL;
    }
    if (bs && br && bs != br)
        return AC_FAIL(ncclInvalidUsage,
                       "sendbuff %p is %s memory and recvbuff %p is %s memory: "
                       "one call takes buffers of one kind of GPU",
                       sendbuff, bs->name, recvbuff, br->name);
    be = bs ? bs : br;
    if (be == NULL && stream != NULL) {
        be = ac_backend_first_gpu(why, sizeof why);
        if (be == NULL)
            return AC_FAIL(ncclInvalidUsage,
                           "stream %p is not NULL, but no GPU backend is usable "
                           "in this process (%s): pass a NULL stream with host buffers, or fix the "
                           "GPU driver (anyccl-info lists the backends)",
                           stream, why);
    }
    *be_out = be;
    return ncclSuccess;
}

/* ---- staging ---- */

/* Bytes of sendbuff and recvbuff a call covers on this rank, and whether it reads / writes them
 * (NCCL: only the root's recvbuff for reduce and gather, only the root's sendbuff for broadcast
 * and scatter). */
static void extents(const struct ac_op *op, size_t *send_bytes, size_t *recv_bytes, bool *reads,
                    bool *writes)
{
    size_t b = op->count * ac_type_size(op->type), nb = b * (size_t)op->comm->nranks;
    bool is_root = op->comm->rank == op->root;

    *send_bytes = *recv_bytes = b;
    switch (op->coll) {
    case AC_COLL_REDUCESCATTER:
    case AC_COLL_SCATTER:
        *send_bytes = nb;
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_GATHER:
        *recv_bytes = nb;
        break;
    case AC_COLL_ALLTOALL:
        *send_bytes = *recv_bytes = nb;
        break;
    default:
        break;
    }
    *reads = op->coll != AC_COLL_RECV && (op->coll != AC_COLL_BROADCAST || is_root) &&
             (op->coll != AC_COLL_SCATTER || is_root);
    *writes = op->coll != AC_COLL_SEND && (op->coll != AC_COLL_REDUCE || is_root) &&
              (op->coll != AC_COLL_GATHER || is_root);
    if (!*reads || !op->sendbuff)
        *send_bytes = 0;
    if (!*writes || !op->recvbuff)
        *recv_bytes = 0;
}

/* Where the staged buffers lie in the staging memory. In-place calls keep their layout (sendbuff
 * inside recvbuff or the reverse), so that the engine sees the same in-place call. */
static size_t layout(const struct ac_op *op, size_t send_bytes, size_t recv_bytes, size_t *send_off,
                     size_t *recv_off)
{
    uintptr_t s = (uintptr_t)op->sendbuff, r = (uintptr_t)op->recvbuff;

    if (send_bytes && recv_bytes && s >= r && s + send_bytes <= r + recv_bytes) {
        *recv_off = 0;
        *send_off = s - r;
        return recv_bytes;
    }
    if (send_bytes && recv_bytes && r >= s && r + recv_bytes <= s + send_bytes) {
        *send_off = 0;
        *recv_off = r - s;
        return send_bytes;
    }
    *send_off = 0;
    *recv_off = (send_bytes + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
    return *recv_off + recv_bytes;
}

static void slot_free(struct slot *s)
{
    if (s->stage)
        s->be->host_free(s->stage);
    if (s->flags)
        s->be->host_free((void *)s->flags);
    free(s);
}

static ncclResult_t grow_stage(struct slot *s, size_t need)
{
    size_t bytes = STAGE_MIN_BYTES;
    void *p;

    while (bytes < need)
        bytes *= 2;
    AC_CHECK(s->be->host_alloc(bytes, &p));
    if (s->stage)
        s->be->host_free(s->stage);
    s->stage = p;
    s->stage_bytes = bytes;
    return ncclSuccess;
}

/* A free slot of be with at least need bytes of staging: the smallest that fits, else a free one
 * grown, else a new one. Marks it busy for its next sequence number. */
static ncclResult_t take_slot(struct ac_stream_q *q, const struct ac_backend *be, size_t need,
                              struct slot **slot_out)
{
    struct slot *fit = NULL, *spare = NULL, *s;
    ncclResult_t res = ncclSuccess;

    pthread_mutex_lock(&q->slot_lock);
    for (s = q->slots; s; s = s->next) {
        if (s->is_busy && reached(&s->flags[FLAG_RELEASED], s->seq))
            s->is_busy = false;
        if (s->is_busy || s->is_lost || s->be != be)
            continue;
        if (s->stage_bytes >= need && (!fit || s->stage_bytes < fit->stage_bytes))
            fit = s;
        else if (!spare)
            spare = s;
    }
    if (!fit && spare) {
        AC_CHECK_GOTO(grow_stage(spare, need), res, out);
        fit = spare;
    }
    if (!fit) {
        if (!(fit = calloc(1, sizeof *fit))) {
            res = AC_FAIL(ncclSystemError, "out of memory for a stream call's staging");
            goto out;
        }
        fit->be = be;
        AC_CHECK_GOTO(be->host_alloc(NFLAGS * sizeof(uint32_t), (void **)&fit->flags), res, drop);
        if (need)
            AC_CHECK_GOTO(grow_stage(fit, need), res, drop);
        fit->next = q->slots;
        q->slots = fit;
    }
    fit->seq++;
    fit->is_busy = true;
    *slot_out = fit;
    goto out;
drop:
    slot_free(fit);
out:
    pthread_mutex_unlock(&q->slot_lock);
    return res;
}

/* ---- the proxy ---- */

static bool is_cancelled(struct job *j)
{
    if (atomic_load(&j->is_cancelled))
        return true;
    for (int i = 0; i < j->ncomms; i++)
        if (j->comms[i]->abort_flag)
            return true;
    return false;
}

static ncclResult_t failed_before(const struct job *j)
{
    for (int i = 0; i < j->ncomms; i++) {
        ncclResult_t state = (ncclResult_t)atomic_load(&j->comms[i]->async_error);
        if (state != ncclSuccess && state != ncclInProgress)
            return state;
    }
    return ncclSuccess;
}

static ncclResult_t wait_inputs(struct job *j)
{
    for (struct slot *s = j->slots; s; s = s->job_next) {
        unsigned npolls = 0;
        while (!reached(&s->flags[FLAG_READY], s->seq)) {
            if (is_cancelled(j))
                return AC_FAIL(ncclInvalidUsage,
                               "rank %d: a call on a stream was cancelled by "
                               "ncclCommAbort before its input was staged",
                               j->comms[0]->rank);
            backoff(&npolls);
        }
    }
    return ncclSuccess;
}

static ncclResult_t exec_job(struct job *j)
{
    struct slot *s;
    ncclResult_t res;

    for (s = j->slots; s; s = s->job_next) {
        s->op.next = s->job_next ? &s->job_next->op : NULL;
        atomic_fetch_add(&s->op.comm->nactive, 1);
        ac_ras_op_start(s->op.comm, s->op.ras_seq);
    }
    res = ac_exec_ops(&j->slots->op);
    for (s = j->slots; s; s = s->job_next) {
        ac_ras_op_end(s->op.comm, s->op.ras_seq, res);
        atomic_fetch_sub(&s->op.comm->nactive, 1);
    }
    return res;
}

static void run_job(struct job *j)
{
    ncclResult_t res = failed_before(j);

    if (res != ncclSuccess)
        AC_FAIL(res, "rank %d: a call on a stream was not run: its communicator failed earlier",
                j->comms[0]->rank);
    else if (is_cancelled(j))
        res = AC_FAIL(ncclInvalidUsage,
                      "rank %d: a call on a stream was cancelled by "
                      "ncclCommAbort",
                      j->comms[0]->rank);
    if (res == ncclSuccess)
        res = wait_inputs(j);
    if (res == ncclSuccess)
        res = exec_job(j);
    if (res != ncclSuccess) {
        AC_WARN("%s on a stream failed: %s; its stream goes on with the output not written "
                "(ncclCommGetAsyncError reports %s)",
                ac_coll_name(j->slots->op.coll), ac_last_error(), ncclGetErrorString(res));
        for (int i = 0; i < j->ncomms; i++) {
            int expected = ncclSuccess;
            atomic_compare_exchange_strong(&j->comms[i]->async_error, &expected, (int)res);
        }
    }
    /* Once DONE is out, the stream may release the slot and the next call take it: read
     * nothing of a slot after its DONE. */
    for (struct slot *s = j->slots, *next; s; s = next) {
        next = s->job_next;
        __atomic_store_n(&s->flags[FLAG_DONE], s->seq, __ATOMIC_RELEASE);
    }
}

static bool is_head_everywhere(const struct job *j)
{
    for (int i = 0; i < j->ncomms; i++) {
        const struct ac_stream_q *q = j->comms[i]->stream_q;
        if (q->count == 0 || q->ring[q->head] != j)
            return false;
    }
    return true;
}

static void pop_everywhere(struct job *j)
{
    for (int i = 0; i < j->ncomms; i++) {
        struct ac_stream_q *q = j->comms[i]->stream_q;
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
}

static void *proxy_main(void *arg)
{
    struct ac_stream_q *q = arg;

    ac_log_set_rank(q->comm->rank);
    pthread_mutex_lock(&qlock);
    for (;;) {
        struct job *j = q->count ? q->ring[q->head] : NULL;
        if (!j && q->is_stopping)
            break;
        if (!j || j->comms[0] != q->comm || !is_head_everywhere(j)) {
            pthread_cond_wait(&qcond, &qlock);
            continue;
        }
        pthread_mutex_unlock(&qlock);
        run_job(j);
        pthread_mutex_lock(&qlock);
        pop_everywhere(j);
        pthread_cond_broadcast(&qcond);
        free(j->comms);
        free(j);
    }
    pthread_mutex_unlock(&qlock);
    return NULL;
}

static ncclResult_t queue_of(struct ncclComm *comm, struct ac_stream_q **q_out)
{
    struct ac_stream_q *q = comm->stream_q;
    int err;

    if (q) {
        *q_out = q;
        return ncclSuccess;
    }
    if (!(q = calloc(1, sizeof *q)))
        return AC_FAIL(ncclSystemError, "out of memory for a communicator's stream queue");
    q->comm = comm;
    pthread_mutex_init(&q->slot_lock, NULL);
    err = pthread_create(&q->proxy, NULL, proxy_main, q);
    if (err != 0) {
        pthread_mutex_destroy(&q->slot_lock);
        free(q);
        errno = err;
        return AC_SYSFAIL("pthread_create for the stream proxy thread");
    }
    pthread_mutex_lock(&qlock);
    comm->stream_q = q;
    pthread_mutex_unlock(&qlock);
    *q_out = q;
    return ncclSuccess;
}

/* Under qlock. */
static ncclResult_t reserve(struct ac_stream_q *q)
{
    if (q->count < q->cap)
        return ncclSuccess;
    size_t cap = q->cap ? 2 * q->cap : 16;
    struct job **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return AC_FAIL(ncclSystemError, "out of memory queuing a call on a stream");
    for (size_t i = 0; i < q->count; i++)
        ring[i] = q->ring[(q->head + i) % q->cap];
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return ncclSuccess;
}

static ncclResult_t push_job(struct job *j)
{
    ncclResult_t res = ncclSuccess;

    pthread_mutex_lock(&qlock);
    for (int i = 0; i < j->ncomms && res == ncclSuccess; i++)
        res = reserve(j->comms[i]->stream_q);
    for (int i = 0; i < j->ncomms && res == ncclSuccess; i++) {
        struct ac_stream_q *q = j->comms[i]->stream_q;
        q->ring[(q->head + q->count) % q->cap] = j;
        q->count++;
    }
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    return res;
}

/* ---- submission ---- */

static ncclResult_t stage_in(struct slot *s, const struct ac_op *op)
{
    size_t send_bytes, recv_bytes, send_off, recv_off, need;
    bool reads, writes;

    extents(op, &send_bytes, &recv_bytes, &reads, &writes);
    need = layout(op, send_bytes, recv_bytes, &send_off, &recv_off);
    if (need > s->stage_bytes)
        return AC_FAIL(ncclInternalError, "stream staging of %zu bytes for %zu", s->stage_bytes,
                       need);
    s->op = *op;
    s->op.backend = NULL;
    s->op.stream = NULL;
    s->op.next = NULL;
    s->op.sendbuff = op->sendbuff && reads ? s->stage + send_off : NULL;
    s->op.recvbuff = op->recvbuff && writes ? s->stage + recv_off : NULL;
    /* NULL buffers are only legal with count 0 or where unused: keep them so for the engine. */
    if (op->count == 0) {
        s->op.sendbuff = op->sendbuff ? s->stage : NULL;
        s->op.recvbuff = op->recvbuff ? s->stage : NULL;
    }
    s->has_stream_work = true;
    if (send_bytes)
        AC_CHECK(s->be->memcpy_async(s->stage + send_off, op->sendbuff, send_bytes, op->stream));
    return s->be->stream_signal(op->stream, &s->flags[FLAG_READY], s->seq);
}

static ncclResult_t stage_out(struct slot *s, const struct ac_op *op)
{
    size_t send_bytes, recv_bytes;
    bool reads, writes;

    extents(op, &send_bytes, &recv_bytes, &reads, &writes);
    AC_CHECK(s->be->stream_wait(op->stream, &s->flags[FLAG_DONE], s->seq));
    if (recv_bytes)
        AC_CHECK(s->be->memcpy_async(op->recvbuff, s->op.recvbuff, recv_bytes, op->stream));
    return s->be->stream_signal(op->stream, &s->flags[FLAG_RELEASED], s->seq);
}

static ncclResult_t add_comm(struct job *j, struct ncclComm *comm)
{
    for (int i = 0; i < j->ncomms; i++)
        if (j->comms[i] == comm)
            return ncclSuccess;
    struct ncclComm **comms = realloc(j->comms, (size_t)(j->ncomms + 1) * sizeof *comms);
    if (!comms)
        return AC_FAIL(ncclSystemError, "out of memory queuing a call on a stream");
    comms[j->ncomms++] = comm;
    j->comms = comms;
    return ncclSuccess;
}

/* A submission that failed half-way: streams already told to wait are released at once, and
 * slots whose RELEASED may never come are never reused. */
static void abandon(struct job *j)
{
    struct ac_stream_q *q;

    for (struct slot *s = j->slots; s; s = s->job_next) {
        q = s->op.comm->stream_q;
        __atomic_store_n(&s->flags[FLAG_DONE], s->seq, __ATOMIC_RELEASE);
        pthread_mutex_lock(&q->slot_lock);
        if (s->has_stream_work)
            s->is_lost = true;
        else
            s->is_busy = false;
        pthread_mutex_unlock(&q->slot_lock);
    }
    free(j->comms);
    free(j);
}

static ncclResult_t submit_staged(const struct ac_op *ops)
{
    struct job *j = calloc(1, sizeof *j);
    struct slot **tail, *s = NULL;
    const struct ac_op *op;
    ncclResult_t res = ncclSuccess;

    if (!j)
        return AC_FAIL(ncclSystemError, "out of memory queuing a call on a stream");
    tail = &j->slots;
    for (op = ops; op; op = op->next) {
        struct ac_stream_q *q = NULL;
        size_t send_bytes, recv_bytes, send_off, recv_off;
        bool reads, writes;

        extents(op, &send_bytes, &recv_bytes, &reads, &writes);
        AC_CHECK_GOTO(queue_of(op->comm, &q), res, fail);
        AC_CHECK_GOTO(add_comm(j, op->comm), res, fail);
        AC_CHECK_GOTO(
            take_slot(q, op->backend, layout(op, send_bytes, recv_bytes, &send_off, &recv_off), &s),
            res, fail);
        s->op = *op;
        s->has_stream_work = false;
        s->job_next = NULL;
        *tail = s;
        tail = &s->job_next;
    }
    /* Every input is staged and signalled before any stream waits: the ops of a group may share a
     * stream, and the job runs only when all of them are ready. */
    for (op = ops, s = j->slots; op; op = op->next, s = s->job_next)
        AC_CHECK_GOTO(stage_in(s, op), res, fail);
    for (op = ops, s = j->slots; op; op = op->next, s = s->job_next)
        AC_CHECK_GOTO(stage_out(s, op), res, fail);
    AC_CHECK_GOTO(push_job(j), res, fail);
    return ncclSuccess;
fail:
    abandon(j);
    return res;
}

/* Collectives on GPU buffers of a communicator whose ranks reach each other's GPUs go the device
 * path (src/core/devpath.c); the rest are staged. */
ncclResult_t ac_stream_submit(const struct ac_op *ops)
{
    struct ac_op *rest = NULL;
    bool has_device = false;
    ncclResult_t res;

    AC_CHECK(ac_devpath_submit(ops, &rest, &has_device));
    if (!has_device)
        return submit_staged(ops);
    res = rest ? submit_staged(rest) : ncclSuccess;
    free(rest);
    return res;
}

void ac_stream_drain(struct ncclComm *comm)
{
    struct ac_stream_q *q = comm->stream_q;

    if (!q)
        return;
    pthread_mutex_lock(&qlock);
    while (q->count > 0)
        pthread_cond_wait(&qcond, &qlock);
    pthread_mutex_unlock(&qlock);
}

/* The streams still copying out of the staging memory have it until RELEASED: wait for them a
 * while, then leave what they still hold allocated. */
static void free_slots(struct ac_stream_q *q)
{
    uint64_t deadline = ac_now_ns() + RELEASE_WAIT_NS;
    struct slot *s, *next;

    for (s = q->slots; s; s = next) {
        unsigned npolls = 0;
        next = s->next;
        while (s->is_busy && !s->is_lost && !reached(&s->flags[FLAG_RELEASED], s->seq) &&
               ac_now_ns() < deadline)
            backoff(&npolls);
        if (s->is_busy && !reached(&s->flags[FLAG_RELEASED], s->seq)) {
            AC_WARN("a stream has not finished copying the result of a call out of its staging "
                    "memory (%zu bytes): left allocated",
                    s->stage_bytes);
            continue;
        }
        slot_free(s);
    }
    q->slots = NULL;
}

void ac_stream_free(struct ncclComm *comm)
{
    struct ac_stream_q *q = comm->stream_q;

    if (!q)
        return;
    pthread_mutex_lock(&qlock);
    if (comm->abort_flag)
        for (size_t i = 0; i < q->count; i++)
            atomic_store(&q->ring[(q->head + i) % q->cap]->is_cancelled, true);
    q->is_stopping = true;
    pthread_cond_broadcast(&qcond);
    while (q->count > 0)
        pthread_cond_wait(&qcond, &qlock);
    pthread_mutex_unlock(&qlock);
    pthread_join(q->proxy, NULL);
    free_slots(q);
    pthread_mutex_lock(&qlock);
    comm->stream_q = NULL;
    pthread_mutex_unlock(&qlock);
    pthread_mutex_destroy(&q->slot_lock);
    free(q->ring);
    free(q);
}
