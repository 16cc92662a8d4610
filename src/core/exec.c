/* The host executor: turns a list of operations (one call, or a whole group) into tasks, makes sure
 * their connectors exist, and runs every task to completion in the calling thread. All tasks make
 * progress together, one step at a time, so send/recv pairs posted in any order cannot deadlock.
 * Operations that share a connector use it in the order they were issued (tickets), which is the
 * same on both of its ends. Waiting spins, then yields, then sleeps (ac_backoff), and checks for
 * abort, the timeout and dead peers every ANYCCL_PEER_CHECK_MS. */
#include "common/check.h"
#include "common/config.h"
#include "common/time.h"
#include "core/enqueue.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct run_task {
    struct ac_task t;
    struct ncclComm *comm;
    struct ac_conn *recv;
    struct ac_conn *send;
    uint64_t recv_ticket;
    uint64_t send_ticket;
    uint64_t step;
};

struct run {
    struct run_task *tasks;
    int ntasks;
    int cap;
    struct ncclComm **comms;       /* distinct communicators of the run */
    int ncomms;
};

/* Below this size a collective uses one channel: more would only add steps. */
#define AC_MULTI_CHANNEL_MIN_BYTES (256 * 1024)

static ncclResult_t add_task(struct run *run, struct ncclComm *comm, const struct ac_task *t)
{
    if (run->ntasks == run->cap) {
        int cap = run->cap ? 2 * run->cap : 16;
        struct run_task *grown = realloc(run->tasks, (size_t)cap * sizeof(*grown));
        if (!grown)
            return AC_FAIL(ncclSystemError, "out of memory for %d tasks", cap);
        run->tasks = grown;
        run->cap = cap;
    }
    struct run_task *rt = &run->tasks[run->ntasks++];
    memset(rt, 0, sizeof(*rt));
    rt->t = *t;
    rt->comm = comm;
    return ncclSuccess;
}

static ncclResult_t add_comm(struct run *run, struct ncclComm *comm)
{
    for (int i = 0; i < run->ncomms; i++)
        if (run->comms[i] == comm)
            return ncclSuccess;
    struct ncclComm **grown = realloc(run->comms, (size_t)(run->ncomms + 1) * sizeof(*grown));
    if (!grown)
        return AC_FAIL(ncclSystemError, "out of memory");
    run->comms = grown;
    run->comms[run->ncomms++] = comm;
    return ncclSuccess;
}

static void base_task(const struct ac_op *op, struct ac_task *t)
{
    memset(t, 0, sizeof(*t));
    t->coll = op->coll;
    t->sendbuff = op->sendbuff;
    t->recvbuff = op->recvbuff;
    t->count = op->count;
    t->type_bytes = ac_type_size(op->type);
    t->op = op->redop;
    t->is_reduction = op->coll == AC_COLL_ALLREDUCE || op->coll == AC_COLL_REDUCESCATTER ||
                      op->coll == AC_COLL_REDUCE;
    t->nranks = op->comm->nranks;
}

static ncclResult_t add_ring_op(struct run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    size_t tb = ac_type_size(op->type);
    int nch = op->count * tb >= AC_MULTI_CHANNEL_MIN_BYTES ? comm->nchannels : 1;
    size_t align = tb >= 64 ? 1 : 64 / tb;
    for (int c = 0; c < nch; c++) {
        struct ac_task t;
        base_task(op, &t);
        ac_channel_share(op->count, c, nch, align, &t.region_off, &t.region_count);
        if (t.region_count == 0)
            continue;
        t.chunk_elems = comm->slot_bytes / tb;
        t.conn_index = c;
        ac_ring_plan(&t, comm->rank, op->root);
        if (t.nsteps > 0)
            AC_CHECK(add_task(run, comm, &t));
    }
    return ncclSuccess;
}

/* One point-to-point transfer of count elements at buf with peer (never self). */
static ncclResult_t add_p2p(struct run *run, const struct ac_op *op, enum ac_coll coll, int peer,
                            const void *buf, size_t count)
{
    if (count == 0)
        return ncclSuccess;
    struct ac_task t;
    base_task(op, &t);
    t.coll = coll;
    t.count = count;
    t.sendbuff = buf;
    t.recvbuff = (char *)buf;
    t.chunk_elems = op->comm->p2p_slot_bytes / t.type_bytes;
    t.conn_index = AC_P2P_CONN_BASE;
    t.recv_peer = t.send_peer = peer;
    ac_p2p_plan(&t);
    return add_task(run, op->comm, &t);
}

static void local_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src && bytes > 0)
        memmove(dst, src, bytes);
}

/* All-to-all, gather and scatter: point-to-point transfers, plus the rank's own block. */
static ncclResult_t add_exchange_op(struct run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    int n = comm->nranks, me = comm->rank;
    size_t blk = op->count * ac_type_size(op->type);
    const char *sb = op->sendbuff;
    char *rb = op->recvbuff;
    for (int i = 1; i < n; i++) {
        int to = (me + i) % n, from = (me - i + n) % n;
        if (op->coll == AC_COLL_ALLTOALL) {
            AC_CHECK(add_p2p(run, op, AC_COLL_SEND, to, sb + (size_t)to * blk, op->count));
            AC_CHECK(add_p2p(run, op, AC_COLL_RECV, from, rb + (size_t)from * blk, op->count));
        } else if (op->coll == AC_COLL_GATHER && me == op->root) {
            AC_CHECK(add_p2p(run, op, AC_COLL_RECV, from, rb + (size_t)from * blk, op->count));
        } else if (op->coll == AC_COLL_SCATTER && me == op->root) {
            AC_CHECK(add_p2p(run, op, AC_COLL_SEND, to, sb + (size_t)to * blk, op->count));
        }
    }
    if (op->coll == AC_COLL_ALLTOALL)
        local_copy(rb + (size_t)me * blk, sb + (size_t)me * blk, blk);
    else if (op->coll == AC_COLL_GATHER && me != op->root)
        AC_CHECK(add_p2p(run, op, AC_COLL_SEND, op->root, sb, op->count));
    else if (op->coll == AC_COLL_GATHER)
        local_copy(rb + (size_t)me * blk, sb, blk);
    else if (me != op->root)
        AC_CHECK(add_p2p(run, op, AC_COLL_RECV, op->root, rb, op->count));
    else
        local_copy(rb, sb + (size_t)me * blk, blk);
    return ncclSuccess;
}

/* A rank's sends to itself are matched, in order, with its receives from itself. */
static ncclResult_t match_self(struct ac_op *ops)
{
    for (struct ac_op *s = ops; s; s = s->next) {
        if (s->coll != AC_COLL_SEND || s->peer != s->comm->rank)
            continue;
        struct ac_op *r = ops;
        for (; r; r = r->next)
            if (r->coll == AC_COLL_RECV && r->comm == s->comm && r->peer == r->comm->rank)
                break;
        if (!r)
            return AC_FAIL(ncclInvalidUsage,
                           "rank %d: ncclSend to itself without a matching ncclRecv from itself "
                           "in the same group", s->comm->rank);
        if (r->count != s->count || r->type != s->type)
            return AC_FAIL(ncclInvalidUsage,
                           "rank %d: ncclSend to itself of %zu elements of type %d, but the "
                           "matching ncclRecv expects %zu of type %d", s->comm->rank, s->count,
                           (int)s->type, r->count, (int)r->type);
        local_copy(r->recvbuff, s->sendbuff, s->count * ac_type_size(s->type));
        s->peer = r->peer = -1; /* consumed */
    }
    for (struct ac_op *r = ops; r; r = r->next)
        if (r->coll == AC_COLL_RECV && r->comm && r->peer == r->comm->rank)
            return AC_FAIL(ncclInvalidUsage,
                           "rank %d: ncclRecv from itself without a matching ncclSend to itself "
                           "in the same group", r->comm->rank);
    return ncclSuccess;
}

static ncclResult_t build_tasks(struct run *run, struct ac_op *ops)
{
    AC_CHECK(match_self(ops));
    for (struct ac_op *op = ops; op; op = op->next) {
        AC_CHECK(add_comm(run, op->comm));
        switch (op->coll) {
        case AC_COLL_SEND:
        case AC_COLL_RECV:
            if (op->peer >= 0)
                AC_CHECK(add_p2p(run, op, op->coll, op->peer,
                                 op->coll == AC_COLL_SEND ? op->sendbuff : op->recvbuff,
                                 op->count));
            break;
        case AC_COLL_ALLTOALL:
        case AC_COLL_GATHER:
        case AC_COLL_SCATTER:
            AC_CHECK(add_exchange_op(run, op));
            break;
        default:
            if (op->count > 0)
                AC_CHECK(add_ring_op(run, op));
            break;
        }
    }
    return ncclSuccess;
}

/* ---- connecting ---- */

struct connect_job {
    struct ncclComm *comm;
    struct ac_conn_need *need;
    int nneed;
    ncclResult_t res;
};

static void *connect_thread(void *arg)
{
    struct connect_job *job = arg;
    job->res = ac_connect(job->comm, job->need, job->nneed);
    return NULL;
}

static ncclResult_t collect_needs(const struct run *run, struct ncclComm *comm,
                                  struct connect_job *job)
{
    job->comm = comm;
    job->need = calloc((size_t)run->ntasks * 2 + 1, sizeof(*job->need));
    if (!job->need)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int i = 0; i < run->ntasks; i++) {
        const struct run_task *rt = &run->tasks[i];
        if (rt->comm != comm)
            continue;
        if (rt->t.uses_recv && !*ac_conn_slot(comm, rt->t.conn_index, rt->t.recv_peer, false))
            job->need[job->nneed++] =
                (struct ac_conn_need){.set = rt->t.conn_index, .peer = rt->t.recv_peer};
        if (rt->t.uses_send && !*ac_conn_slot(comm, rt->t.conn_index, rt->t.send_peer, true))
            job->need[job->nneed++] = (struct ac_conn_need){
                .set = rt->t.conn_index, .peer = rt->t.send_peer, .is_send = true};
    }
    return ncclSuccess;
}

/* Several communicators set up at once (one thread driving several ranks) must not wait on each
 * other, so each gets its own thread; a single one connects in the calling thread. */
static ncclResult_t connect_all(const struct run *run)
{
    ncclResult_t res = ncclSuccess;
    struct connect_job *jobs = calloc((size_t)run->ncomms, sizeof(*jobs));
    pthread_t *threads = calloc((size_t)run->ncomms, sizeof(*threads));
    int nstarted = 0;
    if (!jobs || !threads) {
        res = AC_FAIL(ncclSystemError, "out of memory");
        goto out;
    }
    for (int i = 0; i < run->ncomms; i++)
        AC_CHECK_GOTO(collect_needs(run, run->comms[i], &jobs[i]), res, out);
    if (run->ncomms == 1) {
        res = ac_connect(jobs[0].comm, jobs[0].need, jobs[0].nneed);
        goto out;
    }
    for (; nstarted < run->ncomms; nstarted++)
        if (pthread_create(&threads[nstarted], NULL, connect_thread, &jobs[nstarted]) != 0) {
            res = AC_SYSFAIL("pthread_create for connection set-up");
            break;
        }
    for (int i = 0; i < nstarted; i++) {
        pthread_join(threads[i], NULL);
        if (jobs[i].res != ncclSuccess && res == ncclSuccess)
            res = jobs[i].res;
    }
out:
    for (int i = 0; jobs && i < run->ncomms; i++)
        free(jobs[i].need);
    free(jobs);
    free(threads);
    return res;
}

static void take_tickets(struct run *run)
{
    for (int i = 0; i < run->ntasks; i++) {
        struct run_task *rt = &run->tasks[i];
        if (rt->t.uses_recv) {
            rt->recv = *ac_conn_slot(rt->comm, rt->t.conn_index, rt->t.recv_peer, false);
            rt->recv_ticket = rt->recv->next_ticket++;
        }
        if (rt->t.uses_send) {
            rt->send = *ac_conn_slot(rt->comm, rt->t.conn_index, rt->t.send_peer, true);
            rt->send_ticket = rt->send->next_ticket++;
        }
    }
}

/* ---- running ---- */

/* The value of a step into `out`, for elements [off, off + n) of the step. */
static void compute(const struct ac_task *t, const struct ac_step *st, const char *in, char *out,
                    size_t off, size_t n)
{
    size_t b = off * t->type_bytes;
    bool is_final = st->flags & AC_STEP_FINAL;
    const char *src = (const char *)st->src + b;
    if (st->flags & AC_STEP_RECV) {
        if (st->flags & AC_STEP_REDUCE)
            ac_kern_reduce(&t->op, out, in + b, src, n, is_final);
        else
            memcpy(out, in + b, n * t->type_bytes);
    } else if (t->is_reduction) {
        ac_kern_load(&t->op, out, src, n, is_final);
    } else if (out != src) {
        memcpy(out, src, n * t->type_bytes);
    }
}

/* Steps that both send and store compute block by block into the slot and copy each block to
 * the user's buffer while it is still in L1: one pass over the inputs instead of two. */
#define DUAL_STORE_BLOCK_BYTES (16 * 1024)

static void move_data(const struct ac_task *t, const struct ac_step *st, const void *in,
                      void *slot)
{
    size_t bytes = st->count * t->type_bytes;
    bool has_send = st->flags & AC_STEP_SEND, has_dst = st->flags & AC_STEP_DST;
    if (bytes == 0 || (!has_send && !has_dst))
        return;
    if (!has_send) {
        if ((st->flags & (AC_STEP_RECV | AC_STEP_REDUCE)) == AC_STEP_RECV)
            ac_kern_copy_out(st->dst, in, bytes);
        else
            compute(t, st, in, st->dst, 0, st->count);
        return;
    }
    if (!has_dst || st->dst == st->src) {
        compute(t, st, in, slot, 0, st->count);
        if (has_dst && st->dst != slot)
            memcpy(st->dst, slot, bytes);
        return;
    }
    size_t block = DUAL_STORE_BLOCK_BYTES / t->type_bytes;
    for (size_t off = 0; off < st->count; off += block) {
        size_t n = st->count - off < block ? st->count - off : block;
        char *out = (char *)slot + off * t->type_bytes;
        compute(t, st, in, out, off, n);
        memcpy((char *)st->dst + off * t->type_bytes, out, n * t->type_bytes);
    }
}

static ncclResult_t size_mismatch(const struct run_task *rt, size_t got, size_t want)
{
    return AC_FAIL(ncclInvalidUsage,
                   "rank %d: %s #%llu received a slot of %zu bytes from rank %d where %zu were "
                   "expected: the ranks called different collectives, counts or types",
                   rt->comm->rank, ac_coll_name(rt->t.coll),
                   (unsigned long long)rt->comm->nops_issued, got, rt->t.recv_peer, want);
}

/* Performs as many steps of one task as its connectors allow right now. */
static ncclResult_t advance(struct run_task *rt, bool *progressed)
{
    while (rt->step < rt->t.nsteps) {
        struct ac_step st;
        const void *in = NULL;
        void *slot = NULL;
        size_t in_bytes = 0;
        ac_task_step(&rt->t, rt->step, &st);
        size_t bytes = st.count * rt->t.type_bytes;
        if (st.flags & AC_STEP_RECV) {
            if (rt->recv->serving_ticket != rt->recv_ticket)
                return ncclSuccess;
            if (rt->recv->tp->progress)
                AC_CHECK(rt->recv->tp->progress(rt->recv));
            AC_CHECK(rt->recv->tp->recv_slot(rt->recv, &in, &in_bytes));
            if (!in)
                return ncclSuccess;
            if (in_bytes != bytes)
                return size_mismatch(rt, in_bytes, bytes);
        }
        if (st.flags & AC_STEP_SEND) {
            if (rt->send->serving_ticket != rt->send_ticket)
                return ncclSuccess;
            if (rt->send->tp->progress)
                AC_CHECK(rt->send->tp->progress(rt->send));
            AC_CHECK(rt->send->tp->send_slot(rt->send, &slot));
            if (!slot)
                return ncclSuccess;
        }
        move_data(&rt->t, &st, in, slot);
        if (st.flags & AC_STEP_SEND)
            AC_CHECK(rt->send->tp->send_post(rt->send, bytes));
        if (st.flags & AC_STEP_RECV)
            AC_CHECK(rt->recv->tp->recv_release(rt->recv));
        rt->step++;
        *progressed = true;
    }
    return ncclSuccess;
}

static void finish_task(struct run_task *rt)
{
    if (rt->recv)
        rt->recv->serving_ticket++;
    if (rt->send)
        rt->send->serving_ticket++;
}

/* Socket connectors keep posted data in staging until the kernel takes it: drive them while
 * they still hold some, or the peer would wait for data that never leaves this process. */
static ncclResult_t flush_conn(struct ac_conn *c, bool *busy)
{
    if (!c || !c->tp->progress)
        return ncclSuccess;
    AC_CHECK(c->tp->progress(c));
    if (c->tp->is_flushing && c->tp->is_flushing(c))
        *busy = true;
    return ncclSuccess;
}

static bool peer_is_dead(const struct ncclComm *comm, int peer)
{
    const struct ac_peer_info *me = &comm->peers[comm->rank], *p = &comm->peers[peer];
    if (me->host_hash != p->host_hash || me->pid_ns_hash != p->pid_ns_hash)
        return false; /* the network transports report a closed connection themselves */
    return kill(p->pid, 0) != 0 && errno == ESRCH;
}

static ncclResult_t check_health(const struct run *run, uint64_t start_ns)
{
    const struct ac_config *cfg = ac_config_get();
    for (int i = 0; i < run->ntasks; i++) {
        const struct run_task *rt = &run->tasks[i];
        if (rt->step >= rt->t.nsteps)
            continue;
        struct ncclComm *comm = rt->comm;
        if (comm->abort_flag)
            return AC_FAIL(ncclRemoteError, "rank %d: %s aborted (ncclCommAbort or "
                           "ncclCommRevoke on this communicator)", comm->rank,
                           ac_coll_name(rt->t.coll));
        int dead = atomic_load(&comm->ras_dead_rank);
        if (dead >= 0)
            return AC_FAIL(ncclRemoteError, "rank %d: peer rank %d (pid %d on %s) is dead (RAS: "
                           "missed heartbeats or closed connection); %s cannot complete",
                           comm->rank, dead, comm->peers[dead].pid, comm->peers[dead].hostname,
                           ac_coll_name(rt->t.coll));
        int peers[2] = {rt->t.uses_recv ? rt->t.recv_peer : -1,
                        rt->t.uses_send ? rt->t.send_peer : -1};
        for (int k = 0; k < 2; k++)
            if (peers[k] >= 0 && peer_is_dead(comm, peers[k]))
                return AC_FAIL(ncclRemoteError,
                               "rank %d: peer rank %d (pid %d on %s) exited during %s",
                               comm->rank, peers[k], comm->peers[peers[k]].pid,
                               comm->peers[peers[k]].hostname, ac_coll_name(rt->t.coll));
        if (cfg->timeout_s > 0 && ac_now_ns() - start_ns > (uint64_t)cfg->timeout_s * 1000000000ull)
            return AC_FAIL(ncclRemoteError,
                           "rank %d: %s timed out after %lld s "
                           "(ANYCCL_TIMEOUT) waiting for rank %d (step %llu of %llu)",
                           comm->rank, ac_coll_name(rt->t.coll), (long long)cfg->timeout_s,
                           rt->t.uses_recv ? rt->t.recv_peer : rt->t.send_peer,
                           (unsigned long long)rt->step, (unsigned long long)rt->t.nsteps);
    }
    return ncclSuccess;
}

static ncclResult_t run_loop(struct run *run)
{
    const struct ac_config *cfg = ac_config_get();
    struct ac_backoff backoff = {0};
    uint64_t start = ac_now_ns(), next_check = start + (uint64_t)cfg->peer_check_ms * 1000000ull;
    int remaining = run->ntasks;
    bool is_flushing = true;
    while (remaining > 0 || is_flushing) {
        bool progressed = false;
        is_flushing = false;
        for (int i = 0; i < run->ntasks; i++) {
            struct run_task *rt = &run->tasks[i];
            if (rt->step < rt->t.nsteps) {
                AC_CHECK(advance(rt, &progressed));
                if (rt->step == rt->t.nsteps) {
                    finish_task(rt);
                    remaining--;
                }
            }
            AC_CHECK(flush_conn(rt->send, &is_flushing));
            if (rt->step < rt->t.nsteps)
                AC_CHECK(flush_conn(rt->recv, &is_flushing));
        }
        if (progressed) {
            ac_backoff_reset(&backoff);
            continue;
        }
        if (remaining == 0 && !is_flushing)
            break;
        ac_backoff_idle(&backoff);
        uint64_t now = ac_now_ns();
        if (now >= next_check) {
            AC_CHECK(check_health(run, start));
            next_check = now + (uint64_t)cfg->peer_check_ms * 1000000ull;
        }
    }
    return ncclSuccess;
}

/* A failure in the middle of a run leaves connectors with partial data: the communicators
 * involved are not usable any more (NCCL's asynchronous error). */
static void mark_failed(const struct run *run, ncclResult_t res)
{
    for (int i = 0; i < run->ncomms; i++)
        atomic_store(&run->comms[i]->async_error, (int)res);
}

ncclResult_t ac_exec_ops(struct ac_op *ops)
{
    struct run run = {0};
    ncclResult_t res;
    AC_CHECK_GOTO(build_tasks(&run, ops), res, out);
    AC_CHECK_GOTO(connect_all(&run), res, fail);
    take_tickets(&run);
    AC_CHECK_GOTO(run_loop(&run), res, fail);
    goto out;
fail:
    mark_failed(&run, res);
out:
    free(run.tasks);
    free(run.comms);
    return res;
}
