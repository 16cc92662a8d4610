/* The host executor: makes sure the connectors of a run's tasks exist, and runs every task to
 * completion in the calling thread. All tasks make progress together, one step at a time, so
 * send/recv pairs posted in any order cannot deadlock. Operations that share a connector use it
 * in the order they were issued (tickets), which is the same on both of its ends. Waiting spins,
 * then yields, then sleeps (ac_backoff), and checks for abort, the timeout and dead peers every
 * ANYCCL_PEER_CHECK_MS. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "core/board.h"
#include "core/plan.h"
#include "transport/cma/cma.h"
#include "transport/shm/shm_region.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- connecting ---- */

/* The connector set a task uses in one direction: single-copy transfers get their
 * acknowledgements on a set of their own. */
static int task_set(const struct ac_task *t, bool is_send)
{
    return t->ack_set > 0 && is_send != (t->coll == AC_COLL_SEND) ? t->ack_set : t->conn_index;
}

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

static void need_conn(struct connect_job *job, int set, int peer, bool is_send)
{
    if (*ac_conn_slot(job->comm, set, peer, is_send))
        return;
    for (int i = 0; i < job->nneed; i++)
        if (job->need[i].set == set && job->need[i].peer == peer && job->need[i].is_send == is_send)
            return;
    job->need[job->nneed++] = (struct ac_conn_need){.set = set, .peer = peer, .is_send = is_send};
}

static ncclResult_t collect_needs(const struct ac_run *run, struct ncclComm *comm,
                                  struct connect_job *job)
{
    job->comm = comm;
    job->need = calloc((size_t)run->ntasks * 2 * AC_TASK_MAX_PEERS + 1, sizeof(*job->need));
    if (!job->need)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int i = 0; i < run->ntasks; i++) {
        const struct ac_task *t = &run->tasks[i].t;
        if (run->tasks[i].comm != comm)
            continue;
        for (int k = 0; k < t->nrecv; k++)
            need_conn(job, task_set(t, false), t->recv_peers[k], false);
        for (int k = 0; k < t->nsend; k++)
            need_conn(job, task_set(t, true), t->send_peers[k], true);
    }
    return ncclSuccess;
}

/* Several communicators set up at once (one thread driving several ranks) must not wait on each
 * other, so each gets its own thread; a single one connects in the calling thread. */
/* After the first calls every connector exists: checking that is all the set-up a run needs. */
static bool is_connected(const struct ac_run *run)
{
    for (int i = 0; i < run->ntasks; i++) {
        const struct ac_task *t = &run->tasks[i].t;
        struct ncclComm *comm = run->tasks[i].comm;
        for (int k = 0; k < t->nrecv; k++)
            if (!*ac_conn_slot(comm, task_set(t, false), t->recv_peers[k], false))
                return false;
        for (int k = 0; k < t->nsend; k++)
            if (!*ac_conn_slot(comm, task_set(t, true), t->send_peers[k], true))
                return false;
    }
    return true;
}

static ncclResult_t connect_all(const struct ac_run *run)
{
    ncclResult_t res = ncclSuccess;
    if (is_connected(run))
        return ncclSuccess;
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

/* ---- describing operations on the wire ---- */

/* The first slot of an operation on each connector carries a 32-bit description of it, so that
 * ranks that called different collectives (or the same one with a different type, operator,
 * count, root or algorithm) fail with a sentence naming the difference instead of hanging or
 * mixing data. Layout: bit 31 set (0 means "no tag"), bits 27-30 the collective, 23-26 the type,
 * 19-22 the operator, 0-18 a hash of the count, root and algorithm. Point-to-point transfers carry
 * only their byte count (NCCL matches a send and a receive by size alone). */
#define TAG_COLL_SHIFT 27
#define TAG_TYPE_SHIFT 23
#define TAG_OP_SHIFT 19
#define TAG_HASH_MASK ((1u << TAG_OP_SHIFT) - 1)
/* The tag of a slot that holds a single-copy message rather than data (never a real call's). */
#define TAG_DIRECT (1u << 31 | 15u << TAG_COLL_SHIFT)

static uint32_t hash_words(uint64_t a, uint64_t b)
{
    uint64_t h = (a ^ 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ b ^ (h >> 31)) * 0x94d049bb133111ebull;
    return (uint32_t)(h ^ (h >> 29));
}

static unsigned op_code(const struct ac_redop *op)
{
    return (unsigned)op->kind | (op->has_premul ? 4u : 0u) | (op->postdiv ? 8u : 0u);
}

static const char *op_code_name(unsigned code)
{
    static const char *const kinds[] = {"sum", "prod", "max", "min"};
    return code & 8 ? "avg" : code & 4 ? "premulsum" : kinds[code & 3];
}

static uint32_t task_tag(const struct ac_task *t)
{
    if (t->op_coll == AC_COLL_SEND || t->op_coll == AC_COLL_RECV)
        return 1u << 31 | (uint32_t)AC_COLL_SEND << TAG_COLL_SHIFT |
               (hash_words(t->count * t->type_bytes, t->proto) & TAG_HASH_MASK);
    unsigned type = t->is_reduction ? (unsigned)t->op.type & 15u : 0;
    unsigned op = t->is_reduction ? op_code(&t->op) : 0;
    uint64_t what = t->is_reduction ? t->count : t->count * t->type_bytes;
    uint64_t how = (uint64_t)(uint32_t)t->root << 8 | (uint64_t)t->proto << 4 |
                   (uint64_t)t->algo << 1 | t->is_oneshot;
    return 1u << 31 | (uint32_t)t->op_coll << TAG_COLL_SHIFT | type << TAG_TYPE_SHIFT |
           op << TAG_OP_SHIFT | (hash_words(what, how) & TAG_HASH_MASK);
}

static ncclResult_t tag_mismatch(const struct ac_run_task *rt, int peer, uint32_t got)
{
    const struct ac_task *t = &rt->t;
    uint32_t want = rt->tag;
    unsigned gcoll = got >> TAG_COLL_SHIFT & 15u, wcoll = want >> TAG_COLL_SHIFT & 15u;
    unsigned gtype = got >> TAG_TYPE_SHIFT & 15u, wtype = want >> TAG_TYPE_SHIFT & 15u;
    unsigned gop = got >> TAG_OP_SHIFT & 15u, wop = want >> TAG_OP_SHIFT & 15u;
    int rank = rt->comm->rank;
    const char *name = ac_coll_name(t->op_coll);
    if (gcoll != wcoll)
        return AC_FAIL(ncclInvalidUsage, "rank %d called %s while rank %d called %s: the ranks "
                       "issued different collectives in the same position", rank,
                       ac_coll_name((enum ac_coll)wcoll), peer,
                       gcoll < AC_COLL_COUNT ? ac_coll_name((enum ac_coll)gcoll) : "?");
    if (gtype != wtype)
        return AC_FAIL(ncclInvalidUsage, "%s: rank %d passed type %s while rank %d passed %s",
                       name, rank, ac_type_name((ncclDataType_t)wtype), peer,
                       ac_type_name((ncclDataType_t)gtype));
    if (gop != wop)
        return AC_FAIL(ncclInvalidUsage, "%s: rank %d reduces with %s while rank %d uses %s",
                       name, rank, op_code_name(wop), peer, op_code_name(gop));
    if (t->op_coll == AC_COLL_SEND || t->op_coll == AC_COLL_RECV)
        return AC_FAIL(ncclInvalidUsage, "rank %d: %s of %zu bytes with rank %d, whose matching "
                       "call has a different size (or a different NCCL_PROTO)", rank,
                       t->coll == AC_COLL_SEND ? "ncclSend" : "ncclRecv",
                       t->count * t->type_bytes, peer);
    return AC_FAIL(ncclInvalidUsage, "%s: rank %d and rank %d passed different counts, roots or "
                   "algorithm/protocol settings (NCCL_ALGO, NCCL_PROTO) (rank %d: count %zu of "
                   "%s, %s)", name, rank, peer, rank, t->count, ac_type_name(t->op.type),
                   ac_proto_name(t->proto));
}

/* A transfer through slots moves in chunks of its connector's slot size, which the transport
 * chose when connecting (has_full_p2p_slots); the planner assumed the point-to-point one. Both
 * ends see the same size. */
static void size_chunks(struct ac_run_task *rt)
{
    struct ac_task *t = &rt->t;
    bool is_p2p = t->coll == AC_COLL_SEND || t->coll == AC_COLL_RECV;
    if (!is_p2p || t->is_direct || t->count == 0)
        return;
    struct ac_conn *c = t->coll == AC_COLL_SEND ? rt->send[0] : rt->recv[0];
    size_t chunk = ac_proto_chunk_elems(t->proto, c->slot_bytes, t->type_bytes);
    if (chunk == t->chunk_elems || chunk == 0)
        return;
    t->chunk_elems = chunk;
    t->nsteps = (t->count + chunk - 1) / chunk; /* as ac_p2p_plan */
}

static void take_tickets(struct ac_run *run)
{
    for (int i = 0; i < run->ntasks; i++) {
        struct ac_run_task *rt = &run->tasks[i];
        for (int k = 0; k < rt->t.nrecv; k++) {
            rt->recv[k] = *ac_conn_slot(rt->comm, task_set(&rt->t, false), rt->t.recv_peers[k],
                                        false);
            rt->recv_ticket[k] = rt->recv[k]->next_ticket++;
        }
        for (int k = 0; k < rt->t.nsend; k++) {
            rt->send[k] = *ac_conn_slot(rt->comm, task_set(&rt->t, true), rt->t.send_peers[k],
                                        true);
            rt->send_ticket[k] = rt->send[k]->next_ticket++;
        }
        rt->tag = task_tag(&rt->t);
        size_chunks(rt);
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
        else if (out != in + b) /* not landed in place (recv_direct) */
            memcpy(out, in + b, n * t->type_bytes);
    } else if (t->is_reduction) {
        ac_kern_load(&t->op, out, src, n, is_final);
    } else if (out != src) {
        memcpy(out, src, n * t->type_bytes);
    }
}

/* Steps that both send and store compute block by block into the slot and copy each block to
 * the user's buffer while it is still in L1: one pass over the inputs instead of two. The copy
 * to the user's buffer is a result like any other (ac_kern_copy_out_part: large steps bypass the
 * cache, which made an out-of-place 16 MiB allreduce on 2 ranks 1.4x faster: a plain store
 * first reads every line of the output it overwrites). An in-place step keeps plain stores: it
 * has just read those lines. */
#define DUAL_STORE_BLOCK_BYTES (16 * 1024)

/* Whether a step that receives nothing sends its input's bytes as they are (no premultiplier,
 * no final division). */
static bool sends_input_as_is(const struct ac_task *t, const struct ac_step *st)
{
    if (st->flags & AC_STEP_RECV)
        return false;
    if (!t->is_reduction)
        return true;
    return !t->op.has_premul && (!(st->flags & AC_STEP_FINAL) || t->op.postdiv <= 1);
}

/* A sending step whose value lies, or can be computed, in the user's memory sends it from there
 * when the connector takes a reference (send_post_ref): the input itself, or the output it
 * stores (computed straight into dst). Safe because neither is written again by this call: the
 * schedules store every output element once, and an in-place input is overwritten only by a
 * value that depends on what this step sent, i.e. after the transport passed it on. Not the
 * one-shot allreduce: its peers' inputs, which do not depend on this rank's, may arrive and be
 * folded into an in-place buffer before the transport has sent it. Returns where the payload
 * lies; NULL: it must go through the slot. */
static const void *move_data_ref(const struct ac_task *t, const struct ac_step *st,
                                 const void *in)
{
    size_t bytes = st->count * t->type_bytes;
    bool has_dst = st->flags & AC_STEP_DST;
    if (bytes == 0 || t->is_oneshot)
        return NULL;
    if (sends_input_as_is(t, st)) {
        if (has_dst && st->dst != st->src)
            ac_kern_copy_out(st->dst, st->src, bytes);
        return st->src;
    }
    if (!has_dst)
        return NULL;
    compute(t, st, in, st->dst, 0, st->count);
    return st->dst;
}

/* Slots written with non-temporal stores (transport.h, is_slot_peer_cached): chunks large
 * enough for streaming to pay whose connector's other slots, filled with chunks of the same size
 * since the receiver last read this one, fit in a core's L2, where its lines then still are (a
 * run of same-size operations). Larger chunks have pushed them out: plain stores find them in
 * the shared L3 and the receiver reads them from there, not from memory. Not where ranks
 * outnumber cores: the receiver then often runs on this very core, and its cache is ours. On 2
 * ranks over shared memory, in-place broadcast: 64 KiB 7.1 -> 4.4 us; streaming 128 KiB chunks
 * made allgather and all-to-all slower (docs/performance.md). */
#define SLOT_STREAM_MIN_BYTES (8 * 1024)
#define PEER_CACHE_BYTES (512 * 1024)

static bool is_slot_streamed(const struct ac_run_task *rt, const struct ac_conn *c, size_t bytes)
{
    return !rt->comm->is_oversubscribed && bytes * (size_t)(c->nslots - 1) <= PEER_CACHE_BYTES;
}

/* Larger chunks: the store that has cost the sender less lately (transport/slot_store.h). */
#define STORE_MEASURE_MIN_BYTES (64 * 1024)

/* A step whose value is a copy of its input (what it received, or its source), not a
 * reduction of it. */
static bool is_copy_step(const struct ac_task *t, const struct ac_step *st)
{
    if (st->flags & AC_STEP_RECV)
        return !(st->flags & AC_STEP_REDUCE);
    return !t->is_reduction;
}

static void move_data(const struct ac_task *t, const struct ac_step *st, const void *in, void *slot,
                      enum ac_store store)
{
    size_t bytes = st->count * t->type_bytes;
    bool has_send = st->flags & AC_STEP_SEND, has_dst = st->flags & AC_STEP_DST;
    bool is_streamed = store == AC_STORE_STREAM;
    if (bytes == 0 || (!has_send && !has_dst))
        return;
    if (!has_send) {
        if ((st->flags & (AC_STEP_RECV | AC_STEP_REDUCE)) == AC_STEP_RECV) {
            if (in != st->dst)
                ac_kern_copy_out(st->dst, in, bytes);
        } else
            compute(t, st, in, st->dst, 0, st->count);
        return;
    }
    if (is_streamed && is_copy_step(t, st)) {
        /* both destinations from the input: nothing reads the streamed slot back */
        const char *from = (st->flags & AC_STEP_RECV) ? in : st->src;
        ac_kern_copy_stream(slot, from, bytes);
        if (has_dst && st->dst != from)
            ac_kern_copy_out(st->dst, from, bytes);
        return;
    }
    if (!is_streamed && (!has_dst || st->dst == st->src)) {
        compute(t, st, in, slot, 0, st->count);
        if (has_dst && st->dst != slot)
            memcpy(st->dst, slot, bytes);
        return;
    }
    /* Block by block, into the slot (or, streamed, a stage in L1 that is streamed into it),
     * and from there to the user's buffer. */
    static __thread char stage[DUAL_STORE_BLOCK_BYTES] __attribute__((aligned(64)));
    size_t block = DUAL_STORE_BLOCK_BYTES / t->type_bytes;
    for (size_t off = 0; off < st->count; off += block) {
        size_t n = st->count - off < block ? st->count - off : block, b = off * t->type_bytes;
        char *out = is_streamed ? stage : (char *)slot + b;
        compute(t, st, in, out, off, n);
        if (is_streamed)
            ac_kern_copy_stream((char *)slot + b, out, n * t->type_bytes);
        if (has_dst && st->dst == st->src) /* in place: it has just read those lines */
            memcpy((char *)st->dst + b, out, n * t->type_bytes);
        else if (has_dst)
            ac_kern_copy_out_part((char *)st->dst + b, out, n * t->type_bytes, bytes);
    }
}

/* A step that fills one slot (and maybe the user's buffer), with the store ac_slot_store_pick
 * chooses where the receiver reads the slot with its own core (LL and LL128 steps are written into
 * a private stage that the transport packs at once). */
static void move_to_slot(const struct ac_run_task *rt, struct ac_conn *c, const struct ac_step *st,
                         const void *in, void *slot)
{
    size_t bytes = st->count * rt->t.type_bytes;
    if (!c->tp->is_slot_peer_cached || rt->t.proto != AC_PROTO_SIMPLE ||
        bytes < SLOT_STREAM_MIN_BYTES) {
        move_data(&rt->t, st, in, slot, AC_STORE_PLAIN);
        return;
    }
    int64_t forced = ac_config_get()->shm_stream; /* ANYCCL_SHM_STREAM */
    if (forced >= 0) {
        move_data(&rt->t, st, in, slot, forced ? AC_STORE_STREAM : AC_STORE_PLAIN);
        return;
    }
    bool is_streamed = is_slot_streamed(rt, c, bytes);
    if (is_streamed || bytes < STORE_MEASURE_MIN_BYTES) {
        move_data(&rt->t, st, in, slot, is_streamed ? AC_STORE_STREAM : AC_STORE_PLAIN);
        return;
    }
    struct ac_slot_stores *s = &c->stores;
    enum ac_store_kind kind = is_copy_step(&rt->t, st) ? AC_STORE_COPY : AC_STORE_COMPUTED;
    /* The first lap of slots, not measured (its writes fault the pages in), streams: a wrong
     * guess costs those writes at most twice the time that way, where plain stores cost ten
     * times more in the wrong phase. Not where ranks share cores (is_slot_streamed). */
    enum ac_store first = rt->comm->is_oversubscribed ? AC_STORE_PLAIN : AC_STORE_STREAM;
    bool is_probe;
    uint64_t t0 = ac_now_ns();
    enum ac_store store = ac_slot_store_pick(s, kind, t0, (uint32_t)c->nslots, first, &is_probe);
    move_data(&rt->t, st, in, slot, store);
    uint64_t t1 = ac_now_ns();
    ac_slot_store_note(s, kind, store, is_probe, bytes, t1 - t0, t1, (uint32_t)c->nslots);
}

static ncclResult_t size_mismatch(const struct ac_run_task *rt, int peer, size_t got,
                                  size_t want)
{
    return AC_FAIL(ncclInvalidUsage,
                   "rank %d: %s #%llu received a slot of %zu bytes from rank %d where %zu were "
                   "expected: the ranks called different collectives, counts or types",
                   rt->comm->rank, ac_coll_name(rt->t.coll),
                   (unsigned long long)rt->comm->nops_issued, got, peer, want);
}

/* Tree steps with several children or several send peers: reduce every received slot into the
 * first output, then copy it to the other outputs. */
static void move_data_multi(const struct ac_task *t, const struct ac_step *st,
                            const void *const *in, int nin, void *const *slots, int nslots)
{
    size_t bytes = st->count * t->type_bytes;
    bool is_final = st->flags & AC_STEP_FINAL;
    void *first = nslots > 0 ? slots[0] : st->dst;
    if (bytes == 0)
        return;
    if (nin == 0) {
        if (t->is_reduction)
            ac_kern_load(&t->op, first, st->src, st->count, is_final);
        else if (first != st->src)
            memcpy(first, st->src, bytes);
    } else if (st->flags & AC_STEP_REDUCE) {
        ac_kern_reduce(&t->op, first, in[0], st->src, st->count, is_final && nin == 1);
        for (int i = 1; i < nin; i++)
            ac_kern_combine(&t->op, first, first, in[i], st->count, is_final && i == nin - 1);
    } else {
        memcpy(first, in[0], bytes);
    }
    for (int i = 1; i < nslots; i++)
        memcpy(slots[i], first, bytes);
    if ((st->flags & AC_STEP_DST) && st->dst != first)
        ac_kern_copy_out(st->dst, first, bytes);
}

/* The last step of a one-shot allreduce: folds the n inputs (this rank's own, raw, at position
 * rank; the others as received, already premultiplied) in rank order, so that every rank
 * computes ((x0 op x1) op x2) ... bit for bit the same way (max and min return their second
 * operand for +0 and -0: with two ranks, each used to keep its own zero). An in-place call first
 * loads its own input aside, since the fold writes dst before it reaches position rank; so does
 * rank 0 with a premultiplier, whose own input comes first. */
static void oneshot_fold(const struct ac_task *t, const struct ac_step *st, const void *const *in,
                         int rank)
{
    _Alignas(64) char aside[AC_ONESHOT_MAX_BYTES];
    const void *x[AC_TASK_MAX_PEERS + 1];
    bool is_raw[AC_TASK_MAX_PEERS + 1];
    int n = t->nranks;
    for (int j = 0, k = 0; j < n; j++) {
        is_raw[j] = j == rank;
        x[j] = j == rank ? st->src : in[k++];
    }
    if ((st->dst == st->src && rank >= 2) || (rank == 0 && t->op.has_premul)) {
        ac_kern_load(&t->op, aside, st->src, st->count, false);
        x[rank] = aside;
        is_raw[rank] = false;
    }
    if (is_raw[1])
        ac_kern_reduce(&t->op, st->dst, x[0], x[1], st->count, n == 2);
    else /* x[0] raw only without a premultiplier: then raw is premultiplied */
        ac_kern_combine(&t->op, st->dst, x[0], x[1], st->count, n == 2);
    for (int j = 2; j < n; j++) {
        if (is_raw[j])
            ac_kern_reduce(&t->op, st->dst, st->dst, x[j], st->count, j == n - 1);
        else
            ac_kern_combine(&t->op, st->dst, st->dst, x[j], st->count, j == n - 1);
    }
}

/* The last step of a one-shot allgather: this rank's own block to its place first (an input
 * that overlaps a peer's place is read before that place is written), then each peer's. */
static void oneshot_gather(const struct ac_task *t, const struct ac_step *st, const void *const *in,
                           int rank)
{
    size_t bytes = st->count * t->type_bytes;
    char *dst = st->dst;
    if (dst + (size_t)rank * bytes != st->src)
        memmove(dst + (size_t)rank * bytes, st->src, bytes);
    for (int k = 0; k < t->nrecv; k++)
        memcpy(dst + (size_t)t->recv_peers[k] * bytes, in[k], bytes);
}

/* The last step of a one-shot reduce-scatter: the inputs arrived whole; this rank folds its own
 * block of them as the one-shot allreduce folds whole vectors (same order, same bits). */
static void oneshot_fold_block(const struct ac_task *t, const struct ac_step *st,
                               const void *const *in, int rank)
{
    size_t off = (size_t)rank * t->count * t->type_bytes;
    const void *blocks[AC_TASK_MAX_PEERS];
    for (int k = 0; k < t->nrecv; k++)
        blocks[k] = (const char *)in[k] + off;
    struct ac_step mine = *st;
    mine.src = (const char *)st->src + off;
    mine.count = t->count;
    oneshot_fold(t, &mine, blocks, rank);
}

/* The last step of a one-shot, by collective. */
static void oneshot_finish(const struct ac_task *t, const struct ac_step *st, const void *const *in,
                           int rank)
{
    if (t->coll == AC_COLL_ALLGATHER)
        oneshot_gather(t, st, in, rank);
    else if (t->coll == AC_COLL_REDUCESCATTER)
        oneshot_fold_block(t, st, in, rank);
    else
        oneshot_fold(t, st, in, rank);
}

/* The last step of a round of the recursive-doubling allreduce: this rank's partial result and
 * its pair's, combined lower rank first on both sides, so that both hold the same bits (max and
 * min return their second operand for +0 and -0). Operators with a premultiplier or a final
 * division do not take this path (src/core/plan.c). */
static void pair_fold(const struct ncclComm *comm, const struct ac_task *t,
                      const struct ac_step *st, const void *in)
{
    bool is_low = comm->rank < t->recv_peers[0];
    ac_kern_combine(&t->op, st->dst, is_low ? st->src : in, is_low ? in : st->src, st->count,
                    false);
}

/* A step that stores what it receives from its one peer as it is can have it land in the
 * user's buffer, where the transport allows (recv_direct): no copy out of the slot. Not a
 * direct (single-copy) receive, whose first slot carries the sender's address. */
static bool lands_in_dst(const struct ac_run_task *rt, const struct ac_step *st)
{
    return rt->t.nrecv == 1 && rt->recv[0]->tp->recv_direct && rt->t.ack_set <= 0 &&
           (st->flags & (AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_DST)) ==
               (AC_STEP_RECV | AC_STEP_DST) &&
           st->count > 0;
}

/* Polls the connectors a step needs; true when every incoming slot is there and every outgoing
 * one is free. */
static ncclResult_t step_ready(struct ac_run_task *rt, const struct ac_step *st,
                               const void **in, void **slots, bool *ready_out)
{
    size_t bytes = st->count * rt->t.type_bytes;
    *ready_out = false;
    for (int k = 0; (st->flags & AC_STEP_RECV) && k < rt->t.nrecv; k++) {
        struct ac_conn *c = rt->recv[k];
        size_t got = 0;
        if (c->serving_ticket != rt->recv_ticket[k])
            return ncclSuccess;
        /* Not for a receive that may turn single-copy: its first slot is the sender's address. */
        if (c->tp->recv_expect && rt->t.ack_set <= 0)
            c->tp->recv_expect(c, bytes);
        /* The hint goes before the read: what is read before it goes through a slot and is
         * copied out, and the sender is often ahead (the transport stops reading after a landed
         * message, so that the next one waits for its own hint). Over TCP, 1 MiB on 4 ranks:
         * allgather 628 -> 454 us, broadcast 596 -> 489; 4 MiB allgather on 2: 783 -> 611. */
        if (lands_in_dst(rt, st))
            c->tp->recv_direct(c, st->dst, bytes);
        if (c->tp->progress)
            AC_CHECK(c->tp->progress(c));
        c->proto = rt->t.proto;
        AC_CHECK(c->tp->recv_slot(c, &in[k], &got));
        if (!in[k])
            return ncclSuccess;
        /* A receive planned through slots finds out from the first slot's tag that the sender
         * chose a single-copy transfer (only the sender knows its buffer is registered shared
         * memory): the task continues as one. */
        if (c->rx_tag == TAG_DIRECT && rt->t.coll == AC_COLL_RECV && rt->t.ack_set > 0 &&
            rt->step == 0) {
            rt->t.is_direct = true;
            rt->t.nsteps = 1;
            return ncclSuccess;
        }
        if (!(rt->tag_seen & 1u << k)) {
            if (c->rx_tag != 0 && c->rx_tag != rt->tag)
                return tag_mismatch(rt, c->peer, c->rx_tag);
            rt->tag_seen |= (uint8_t)(1u << k);
        }
        if (got != bytes)
            return size_mismatch(rt, c->peer, got, bytes);
    }
    for (int k = 0; (st->flags & AC_STEP_SEND) && k < rt->t.nsend; k++) {
        struct ac_conn *c = rt->send[k];
        if (c->serving_ticket != rt->send_ticket[k])
            return ncclSuccess;
        if (c->tp->progress)
            AC_CHECK(c->tp->progress(c));
        c->proto = rt->t.proto;
        AC_CHECK(c->tp->send_slot(c, &slots[k]));
        if (!slots[k])
            return ncclSuccess;
    }
    *ready_out = true;
    return ncclSuccess;
}

/* ---- single-copy transfers ---- */

#define DIRECT_MAGIC 0x41434d41u /* "ACMA" */
/* ADDR: read `addr` of the sender's memory by cross-memory attach. MAP: read offset `addr` of
 * the sender's shared region (fd, region_id, region_bytes) through a mapping. ACK: done. */
enum { DIRECT_ADDR = 1, DIRECT_ACK = 2, DIRECT_MAP = 3 };

/* What travels in a slot of a single-copy transfer: the sender's buffer, or the reader's
 * acknowledgement. Both sides check every field, so that ranks that called different operations
 * or counts get an error naming the difference instead of reading the wrong memory. */
struct direct_msg {
    uint32_t magic;
    uint32_t kind;
    uint64_t addr;
    uint64_t bytes;
    uint32_t op_coll;
    int32_t status;          /* acknowledgement: 0, or the reader's ncclResult_t */
    int32_t fd;              /* MAP: the region's descriptor in the sender */
    uint32_t pad;
    uint64_t region_id;
    uint64_t region_bytes;
};

/* Both ends of a user's send/recv pair carry the same name on the wire. */
static uint32_t wire_coll(enum ac_coll c)
{
    return (uint32_t)(c == AC_COLL_RECV ? AC_COLL_SEND : c);
}

static const char *direct_what(const struct ac_task *t)
{
    return t->op_coll == AC_COLL_SEND || t->op_coll == AC_COLL_RECV
               ? (t->coll == AC_COLL_SEND ? "ncclSend" : "ncclRecv")
               : ac_coll_name(t->op_coll);
}

static ncclResult_t direct_check(const struct ac_run_task *rt, const void *slot, size_t got,
                                 uint32_t kind, struct direct_msg *msg)
{
    const struct ac_task *t = &rt->t;
    int rank = rt->comm->rank, peer = t->recv_peers[0];
    size_t bytes = t->count * t->type_bytes;
    if (got != sizeof(*msg))
        return AC_FAIL(ncclInvalidUsage, "rank %d: %s of %zu bytes with rank %d: rank %d sent a "
                       "slot of %zu bytes where a single-copy %s was expected: the ranks called "
                       "different operations or counts (or set ANYCCL_CMA_* differently)",
                       rank, direct_what(t), bytes, peer, peer, got,
                       kind == DIRECT_ADDR ? "address" : "acknowledgement");
    memcpy(msg, slot, sizeof(*msg));
    if (kind == DIRECT_ADDR && msg->kind == DIRECT_MAP && msg->magic == DIRECT_MAGIC)
        kind = DIRECT_MAP; /* either way of reading is fine */
    if (msg->magic != DIRECT_MAGIC || msg->kind != kind)
        return AC_FAIL(ncclInvalidUsage, "rank %d: %s with rank %d: a malformed single-copy "
                       "message arrived (magic %#x kind %u): the ranks called different "
                       "operations", rank, direct_what(t), peer, msg->magic, msg->kind);
    if (kind == DIRECT_ACK && msg->status != ncclSuccess)
        return AC_FAIL(msg->status == ncclInvalidUsage ? ncclInvalidUsage : ncclRemoteError,
                       "rank %d: %s of %zu bytes to rank %d failed there: %s (see rank %d's "
                       "error)", rank, direct_what(t), bytes, peer,
                       msg->status == ncclInvalidUsage
                           ? "its matching call differs (collective or size)"
                           : "it could not read this rank's buffer",
                       peer);
    if (kind != DIRECT_ACK && msg->op_coll != wire_coll(t->op_coll))
        return AC_FAIL(ncclInvalidUsage, "rank %d called %s while rank %d called %s (same call "
                       "in the order of operations between the two)", rank,
                       ac_coll_name(t->op_coll), peer,
                       msg->op_coll < AC_COLL_COUNT ? ac_coll_name((enum ac_coll)msg->op_coll)
                                                    : "an unknown operation");
    if (msg->bytes != bytes)
        return AC_FAIL(ncclInvalidUsage, "rank %d: %s expects %zu bytes from rank %d, which "
                       "%s %llu bytes: the ranks passed different counts or types", rank,
                       direct_what(t), bytes, peer, kind == DIRECT_ACK ? "acknowledged" : "sends",
                       (unsigned long long)msg->bytes);
    if (kind == DIRECT_MAP && (msg->addr > msg->region_bytes ||
                               msg->bytes > msg->region_bytes - msg->addr))
        return AC_FAIL(ncclInvalidUsage, "rank %d: %s from rank %d: its buffer (offset %llu, "
                       "%llu bytes) does not lie within its shared region of %llu bytes", rank,
                       direct_what(t), peer, (unsigned long long)msg->addr,
                       (unsigned long long)msg->bytes, (unsigned long long)msg->region_bytes);
    return ncclSuccess;
}

/* Reads the sender's buffer into dst, by mapping (MAP) or cross-memory attach (ADDR). */
static ncclResult_t direct_read(struct ac_run_task *rt, const struct direct_msg *msg, void *dst)
{
    struct ncclComm *comm = rt->comm;
    int peer = rt->t.recv_peers[0];
    const struct ac_peer_info *p = &comm->peers[peer];
    if (msg->kind == DIRECT_ADDR)
        return ac_cma_read(p->pid, peer, p->hostname, dst, msg->addr, msg->bytes);
    struct ac_region_ref ref = {msg->fd, msg->region_id, msg->region_bytes, msg->addr};
    const void *src;
    AC_CHECK(ac_region_map(&comm->region_cache, p->pid, peer, p->hostname, &ref, &src));
    ac_kern_copy_out(dst, src, msg->bytes);
    return ncclSuccess;
}

static bool is_turn(const struct ac_conn *c, uint64_t ticket)
{
    return c->serving_ticket == ticket;
}

/* Sender: step 0 passes the buffer's address, and frees the data connector for the next
 * operation at once; step 1 waits for the reader's acknowledgement. Receiver: one step reads
 * and acknowledges. */
static ncclResult_t advance_direct(struct ac_run_task *rt, bool *progressed)
{
    struct ac_task *t = &rt->t;
    struct ac_conn *in = rt->recv[0], *out = rt->send[0];
    size_t bytes = t->count * t->type_bytes;
    const void *islot = NULL;
    void *oslot = NULL;
    size_t got = 0;
    struct direct_msg msg;
    in->proto = out->proto = t->proto; /* the task holds both connectors' turns below */
    if (t->coll == AC_COLL_SEND && rt->step == 0) {
        if (!is_turn(out, rt->send_ticket[0]))
            return ncclSuccess;
        AC_CHECK(out->tp->send_slot(out, &oslot));
        if (!oslot)
            return ncclSuccess;
        msg = (struct direct_msg){.magic = DIRECT_MAGIC, .kind = DIRECT_ADDR,
                                  .addr = (uint64_t)(uintptr_t)t->sendbuff, .bytes = bytes,
                                  .op_coll = wire_coll(t->op_coll)};
        struct ac_region_ref ref;
        if (ac_region_find(t->sendbuff, bytes, &ref) &&
            ac_comm_is_registered(rt->comm, t->sendbuff, bytes)) {
            msg.kind = DIRECT_MAP;
            msg.addr = ref.offset;
            msg.fd = ref.fd;
            msg.region_id = ref.id;
            msg.region_bytes = ref.region_bytes;
        }
        memcpy(oslot, &msg, sizeof(msg));
        out->tx_tag = TAG_DIRECT;
        ncclResult_t res = out->tp->send_post(out, sizeof(msg));
        out->tx_tag = 0;
        AC_CHECK(res);
        out->serving_ticket++;
        rt->step = 1;
        *progressed = true;
    }
    if (t->coll == AC_COLL_SEND) {
        if (!is_turn(in, rt->recv_ticket[0]))
            return ncclSuccess;
        AC_CHECK(in->tp->recv_slot(in, &islot, &got));
        if (!islot)
            return ncclSuccess;
        ncclResult_t res = direct_check(rt, islot, got, DIRECT_ACK, &msg);
        AC_CHECK(in->tp->recv_release(in));
        AC_CHECK(res);
        rt->step = 2;
        *progressed = true;
        return ncclSuccess;
    }
    if (!is_turn(in, rt->recv_ticket[0]) || !is_turn(out, rt->send_ticket[0]))
        return ncclSuccess;
    AC_CHECK(in->tp->recv_slot(in, &islot, &got));
    if (!islot)
        return ncclSuccess;
    AC_CHECK(out->tp->send_slot(out, &oslot));
    if (!oslot)
        return ncclSuccess;
    /* The sender waits for the acknowledgement: it gets one even when this side fails. */
    ncclResult_t res = direct_check(rt, islot, got, DIRECT_ADDR, &msg);
    if (res == ncclSuccess)
        res = direct_read(rt, &msg, t->recvbuff);
    msg = (struct direct_msg){.magic = DIRECT_MAGIC, .kind = DIRECT_ACK, .bytes = bytes,
                              .op_coll = wire_coll(t->op_coll), .status = (int32_t)res};
    memcpy(oslot, &msg, sizeof(msg));
    AC_CHECK(out->tp->send_post(out, sizeof(msg)));
    AC_CHECK(in->tp->recv_release(in));
    AC_CHECK(res);
    rt->step = 1;
    *progressed = true;
    return ncclSuccess;
}

/* ---- steps ---- */

/* A task on the board: posts its input once the previous board operation is done, then takes
 * its result when every rank posted. */
static ncclResult_t advance_board(const struct ac_run *run, struct ac_run_task *rt,
                                  bool *progressed)
{
    /* a post can wait for a peer (a broadcast's root for the others' previous posts): a later
     * call must not take its place meanwhile */
    if (rt->board_seq == 0 && rt->board_prev >= 0 && run->tasks[rt->board_prev].board_seq == 0)
        return ncclSuccess;
    if (rt->is_board_direct) {
        AC_CHECK(ac_board_direct_advance(rt->board_op, &rt->direct, progressed));
        if (rt->board_seq == 0)
            rt->board_seq = rt->direct.seq; /* its vote, the first of its operations, is posted */
        if (ac_board_direct_is_done(&rt->direct))
            rt->step = rt->t.nsteps;
        return ncclSuccess;
    }
    if (rt->board_seq == 0) {
        if (!ac_board_post(rt->board_op, &rt->board_seq))
            return ncclSuccess;
        *progressed = true;
    }
    bool is_done;
    AC_CHECK(ac_board_finish(rt->board_op, rt->board_seq, &is_done));
    if (is_done) {
        rt->step = rt->t.nsteps;
        *progressed = true;
    }
    return ncclSuccess;
}

/* Performs as many steps of one task as its connectors allow right now. */
static ncclResult_t advance(const struct ac_run *run, struct ac_run_task *rt, bool *progressed)
{
    if (rt->t.is_board)
        return advance_board(run, rt, progressed);
    if (rt->t.is_direct)
        return advance_direct(rt, progressed);
    while (rt->step < rt->t.nsteps) {
        struct ac_step st;
        const void *in[AC_TASK_MAX_PEERS] = {0};
        void *slots[AC_TASK_MAX_PEERS] = {0};
        bool is_ready;
        ac_task_step(&rt->t, rt->step, &st);
        AC_CHECK(step_ready(rt, &st, in, slots, &is_ready));
        if (!is_ready)
            return ncclSuccess;
        int nin = (st.flags & AC_STEP_RECV) ? rt->t.nrecv : 0;
        int nout = (st.flags & AC_STEP_SEND) ? rt->t.nsend : 0;
        const void *ref = NULL;
        if (rt->t.is_pair_fold && nin == 1)
            pair_fold(rt->comm, &rt->t, &st, in[0]);
        else if (rt->t.is_oneshot && nin > 0)
            oneshot_finish(&rt->t, &st, in, rt->comm->rank);
        else if (nin <= 1 && nout == 1 && rt->send[0]->tp->send_post_ref &&
                 (ref = move_data_ref(&rt->t, &st, in[0])) != NULL)
            ; /* the payload stays where it is */
        else if (nin <= 1 && nout == 1)
            move_to_slot(rt, rt->send[0], &st, in[0], slots[0]);
        else if (nin <= 1 && nout == 0)
            move_data(&rt->t, &st, in[0], NULL, AC_STORE_PLAIN);
        else
            move_data_multi(&rt->t, &st, in, nin, slots, nout);
        size_t bytes = st.count * rt->t.type_bytes;
        for (int k = 0; k < nout; k++) {
            struct ac_conn *c = rt->send[k];
            c->tx_tag = rt->tag_sent & 1u << k ? 0 : rt->tag;
            rt->tag_sent |= (uint8_t)(1u << k);
            c->proto = rt->t.proto;
            ncclResult_t res =
                ref ? c->tp->send_post_ref(c, ref, bytes) : c->tp->send_post(c, bytes);
            c->tx_tag = 0;
            AC_CHECK(res);
        }
        for (int k = 0; k < nin; k++) {
            rt->recv[k]->proto = rt->t.proto;
            AC_CHECK(rt->recv[k]->tp->recv_release(rt->recv[k]));
        }
        rt->step++;
        *progressed = true;
    }
    return ncclSuccess;
}

/* A task may finish its steps before it is its turn on a connector it holds but did not need
 * (a transfer through slots holds the acknowledgement connector too): it passes each connector
 * on only in ticket order. */
static bool has_all_turns(const struct ac_run_task *rt)
{
    bool is_send_released = rt->t.is_direct && rt->t.coll == AC_COLL_SEND;
    for (int k = 0; k < rt->t.nrecv; k++)
        if (!is_turn(rt->recv[k], rt->recv_ticket[k]))
            return false;
    for (int k = 0; k < rt->t.nsend && !is_send_released; k++)
        if (!is_turn(rt->send[k], rt->send_ticket[k]))
            return false;
    return true;
}

static void finish_task(struct ac_run_task *rt)
{
    bool is_send_released = rt->t.is_direct && rt->t.coll == AC_COLL_SEND; /* after step 0 */
    for (int k = 0; k < rt->t.nrecv; k++)
        rt->recv[k]->serving_ticket++;
    for (int k = 0; k < rt->t.nsend && !is_send_released; k++)
        rt->send[k]->serving_ticket++;
}

/* Socket connectors keep posted data in staging until the kernel takes it: drive them while
 * they still hold some, or the peer would wait for data that never leaves this process. Receive
 * sides are driven only while their task still needs them. */
static ncclResult_t flush_task(struct ac_run_task *rt, bool *busy)
{
    bool is_running = rt->step < rt->t.nsteps;
    for (int k = 0; k < rt->t.nsend; k++) {
        struct ac_conn *c = rt->send[k];
        if (!c->tp->progress)
            continue;
        AC_CHECK(c->tp->progress(c));
        if (c->tp->is_flushing && c->tp->is_flushing(c))
            *busy = true;
    }
    for (int k = 0; is_running && k < rt->t.nrecv; k++)
        if (rt->recv[k]->tp->progress)
            AC_CHECK(rt->recv[k]->tp->progress(rt->recv[k]));
    return ncclSuccess;
}

static bool peer_is_dead(const struct ncclComm *comm, int peer)
{
    return ac_peer_has_exited(&comm->peers[comm->rank], &comm->peers[peer]);
}

static ncclResult_t check_task(const struct ac_run_task *rt, uint64_t start_ns,
                               bool *is_second_look)
{
    const struct ac_config *cfg = ac_config_get();
    struct ncclComm *comm = rt->comm;
    const char *what = ac_coll_name(rt->t.coll);
    if (comm->abort_flag)
        return AC_FAIL(ncclRemoteError, "rank %d: %s aborted (ncclCommAbort or ncclCommRevoke on "
                       "this communicator)", comm->rank, what);
    int dead = atomic_load(&comm->ras_dead_rank);
    if (dead >= 0) {
        char addr[AC_SOCKADDR_STRLEN];
        ac_socket_addr_str(&comm->peers[dead].addr, addr, sizeof(addr));
        char *port = strrchr(addr, ':'); /* the address a rank publishes has port 0 */
        if (port != NULL && strcmp(port, ":0") == 0)
            *port = '\0';
        return AC_FAIL(ncclRemoteError, "rank %d: peer rank %d (pid %d on %s, address %s) is "
                       "dead or unreachable (RAS: missed heartbeats or closed connection: the "
                       "process died, or the network between the hosts failed); %s cannot "
                       "complete", comm->rank, dead, comm->peers[dead].pid,
                       comm->peers[dead].hostname, addr, what);
    }
    /* a board task waits for the first rank that has not posted */
    int board_peer = rt->is_board_direct ? ac_board_direct_missing(rt->board_op, &rt->direct)
                     : rt->t.is_board    ? ac_board_missing(rt->board_op, rt->board_seq)
                                         : -1;
    int npeers = rt->t.is_board ? board_peer >= 0 : rt->t.nrecv + rt->t.nsend;
    for (int k = 0; k < npeers; k++) {
        int peer = rt->t.is_board    ? board_peer
                   : k < rt->t.nrecv ? rt->t.recv_peers[k]
                                     : rt->t.send_peers[k - rt->t.nrecv];
        if (!peer_is_dead(comm, peer))
            continue;
        /* It may have delivered its last data just before exiting: fail only if a second
         * check, after another pass over the connectors, finds it dead and nothing moved. */
        if (!*is_second_look) {
            *is_second_look = true;
            return ncclSuccess;
        }
        return AC_FAIL(ncclRemoteError, "rank %d: peer rank %d (pid %d on %s) exited during %s",
                       comm->rank, peer, comm->peers[peer].pid, comm->peers[peer].hostname, what);
    }
    if (cfg->timeout_s > 0 && ac_now_ns() - start_ns > (uint64_t)cfg->timeout_s * 1000000000ull) {
        int peer = rt->t.is_board ? (board_peer >= 0 ? board_peer : (comm->rank + 1) % comm->nranks)
                   : rt->t.nrecv  ? rt->t.recv_peers[0]
                                  : rt->t.send_peers[0];
        return AC_FAIL(ncclRemoteError, "rank %d: %s timed out after %lld s (ANYCCL_TIMEOUT) "
                       "waiting for rank %d (%s, step %llu of %llu)", comm->rank, what,
                       (long long)cfg->timeout_s, peer, comm->peers[peer].hostname,
                       (unsigned long long)rt->step, (unsigned long long)rt->t.nsteps);
    }
    return ncclSuccess;
}

/* Whether a socket connector of the task still holds posted data the kernel has not taken. */
static bool is_task_flushing(const struct ac_run_task *rt)
{
    for (int k = 0; k < rt->t.nsend; k++) {
        struct ac_conn *c = rt->send[k];
        if (c->tp->is_flushing && c->tp->is_flushing(c))
            return true;
    }
    return false;
}

/* A task that has done its steps but still flushes (its last slots wait for room in a socket a
 * stopped or unreachable peer no longer drains) is checked too: abort, a dead peer and the
 * timeout end that wait as they end any other. */
static ncclResult_t check_health(const struct ac_run *run, uint64_t start_ns,
                                 bool *is_second_look)
{
    /* first: a peer that saw a difference between the calls may already have left */
    for (int i = 0; i < run->ncomms; i++)
        if (!run->comms[i]->abort_flag)
            AC_CHECK(ac_board_check_peers(run->comms[i]));
    for (int i = 0; i < run->ntasks; i++) {
        const struct ac_run_task *rt = &run->tasks[i];
        if (rt->step < rt->t.nsteps || is_task_flushing(rt))
            AC_CHECK(check_task(rt, start_ns, is_second_look));
    }
    for (int i = 0; i < run->ncomms; i++)
        AC_CHECK(ac_connect_check_stray(run->comms[i]));
    return ncclSuccess;
}

/* Whether the tasks this one waits for (plan.h) are done; once they are, it no longer waits. */
static bool can_start(const struct ac_run *run, struct ac_run_task *rt)
{
    for (int i = rt->wait_first; i < rt->wait_end; i++)
        if (!run->tasks[i].is_done)
            return false;
    rt->wait_end = 0;
    if (rt->direct_gate > 0) {
        const struct ac_run_task *d = &run->tasks[rt->direct_gate - 1];
        if (!d->is_done)
            return false;
        if (!d->direct.is_declined)
            rt->step = rt->t.nsteps; /* done in place: only the connectors' turns pass on */
        rt->direct_gate = 0;
    }
    return true;
}

/* A piece of the run's local copies (struct ac_local_copy): what one idle pass does, small
 * enough that a peer's data waits for it no more than a few microseconds. */
#define LOCAL_COPY_PIECE_BYTES (128 * 1024)

static bool copy_some(struct ac_run *run)
{
    for (int i = 0; i < run->ncopies; i++) {
        struct ac_local_copy *c = &run->copies[i];
        if (c->done == c->bytes)
            continue;
        size_t n = c->bytes - c->done;
        if (n > LOCAL_COPY_PIECE_BYTES)
            n = LOCAL_COPY_PIECE_BYTES;
        ac_kern_copy_out_part(c->dst + c->done, c->src + c->done, n, c->bytes);
        c->done += n;
        return true;
    }
    return false;
}

/* While spinning, the clock (for health checks and the timeout) is read only every
 * AC_SPIN_POLLS_PER_CLOCK idle polls: a run that waits only briefly (a small message) reads it not
 * at all. */
static ncclResult_t run_loop(struct ac_run *run)
{
    const struct ac_config *cfg = ac_config_get();
    struct ac_backoff backoff = {0};
    uint64_t start = 0, next_check = 0, check_ns = (uint64_t)cfg->peer_check_ms * 1000000ull;
    uint32_t idle_polls = 0;
    int remaining = run->ntasks;
    bool is_flushing = true, is_second_look = false;
    for (int i = 0; i < run->ncomms; i++)
        backoff.is_oversubscribed |= run->comms[i]->is_oversubscribed;
    while (remaining > 0 || is_flushing) {
        bool progressed = false;
        is_flushing = false;
        for (int i = 0; i < run->ntasks; i++) {
            struct ac_run_task *rt = &run->tasks[i];
            if (!rt->is_done && can_start(run, rt)) {
                if (rt->step < rt->t.nsteps)
                    AC_CHECK(advance(run, rt, &progressed));
                if (rt->step == rt->t.nsteps && has_all_turns(rt)) {
                    finish_task(rt);
                    rt->is_done = true;
                    remaining--;
                    progressed = true;
                }
            }
            AC_CHECK(flush_task(rt, &is_flushing));
        }
        if (progressed) {
            ac_backoff_reset(&backoff);
            is_second_look = false;
            continue;
        }
        if (copy_some(run)) /* time the run would wait anyway */
            continue;
        if (remaining == 0 && !is_flushing)
            break;
        ac_backoff_idle(&backoff);
        if (ac_backoff_is_spinning(&backoff) && ++idle_polls % AC_SPIN_POLLS_PER_CLOCK != 0)
            continue;
        uint64_t now = ac_now_ns();
        if (start == 0) {
            /* the timeout counts from the first wait: the run started a few polls ago */
            start = now;
            next_check = now + check_ns;
        }
        if (now >= next_check) {
            bool was_second_look = is_second_look;
            AC_CHECK(check_health(run, start, &is_second_look));
            /* a suspected death is looked at again right after one more pass */
            next_check = is_second_look && !was_second_look ? now : now + check_ns;
        }
    }
    while (copy_some(run)) /* what the waits left */
        ;
    return ncclSuccess;
}

/* A failure in the middle of a run leaves connectors with partial data: the communicators
 * involved are not usable any more (NCCL's asynchronous error). */
static void mark_failed(const struct ac_run *run, ncclResult_t res)
{
    for (int i = 0; i < run->ncomms; i++)
        atomic_store(&run->comms[i]->async_error, (int)res);
}

/* After an error, data already posted on network connectors is still pushed out for a moment:
 * a peer that called a different operation then sees the first slot and reports the difference
 * itself, instead of only seeing this rank's connection close. */
#define FLUSH_AFTER_ERROR_NS (200 * 1000000ull)

static void flush_after_error(const struct ac_run *run)
{
    char *saved = strdup(ac_last_error());
    uint64_t end = ac_now_ns() + FLUSH_AFTER_ERROR_NS;
    bool is_busy = true;
    while (is_busy && ac_now_ns() < end) {
        is_busy = false;
        for (int i = 0; i < run->ntasks; i++)
            for (int k = 0; k < run->tasks[i].t.nsend; k++) {
                struct ac_conn *c = run->tasks[i].send[k];
                if (!c || !c->tp->progress || !c->tp->is_flushing)
                    continue;
                if (c->tp->progress(c) == ncclSuccess && c->tp->is_flushing(c))
                    is_busy = true;
            }
        if (is_busy)
            sched_yield();
    }
    if (saved)
        ac_restore_error(saved);
    free(saved);
}

/* Each communicator's latest collective of the run, for its connectors (src/core/connect.c). */
static void stamp_colls(const struct ac_op *ops)
{
    for (const struct ac_op *op = ops; op; op = op->next)
        if (op->coll_seq > op->comm->running_coll.seq)
            op->comm->running_coll = (struct ac_coll_stamp){
                .seq = op->coll_seq, .count = op->count, .coll = (uint32_t)op->coll,
                .type = (int32_t)op->type};
}

/* Polls of a lone board call before the run loop takes over (health checks, the timeout, and
 * yielding where ranks share cores): a peer a few microseconds behind is met here. */
#define BOARD_SPIN_POLLS 4096

/* A lone call on the board, without a plan: posts, then waits a little. *seq_out: the
 * board operation, unfinished when *done is false. */
static ncclResult_t run_board_alone(const struct ac_op *op, uint64_t *seq_out, bool *done)
{
    *done = false;
    if (!ac_board_post(op, seq_out))
        return ncclSuccess; /* not after a finished run: the run loop sorts it out */
    int polls = op->comm->is_oversubscribed ? 1 : BOARD_SPIN_POLLS;
    for (int i = 0; i < polls && !*done; i++) {
        AC_CHECK(ac_board_finish(op, *seq_out, done));
        if (!*done)
            ac_cpu_relax();
    }
    return ncclSuccess;
}

ncclResult_t ac_exec_ops(struct ac_op *ops)
{
    struct ac_run run;
    ncclResult_t res;
    uint64_t board_seq = 0;
    stamp_colls(ops);
    if (!ops->next && ac_board_takes(ops)) {
        bool is_done;
        res = run_board_alone(ops, &board_seq, &is_done);
        if (res != ncclSuccess)
            atomic_store(&ops->comm->async_error, (int)res);
        if (res != ncclSuccess || is_done)
            return res;
    }
    ac_plan_init(&run);
    AC_CHECK_GOTO(ac_plan_build(&run, ops), res, out);
    if (board_seq)
        run.tasks[0].board_seq = board_seq; /* posted above */
    AC_CHECK_GOTO(connect_all(&run), res, fail);
    take_tickets(&run);
    AC_CHECK_GOTO(run_loop(&run), res, fail);
    goto out;
fail:
    mark_failed(&run, res);
    flush_after_error(&run);
out:
    ac_plan_free(&run);
    return res;
}
