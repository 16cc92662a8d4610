/* Ring and chain planning (NCCL's ring algorithm family) for allreduce, allgather, reduce-scatter,
 * broadcast and reduce: every rank receives from its ring predecessor and sends to its successor;
 * chains (broadcast, reduce) are the ring cut open at the root. The steps themselves are
 * device/kernels/sched.h's, shared with the device engine. */
#include "collectives/coll.h"

#include <string.h>

static const char *const algo_names[AC_ALGO_COUNT] = {"Ring", "Tree"};

const char *ac_algo_name(enum ac_algo algo)
{
    return (unsigned)algo < AC_ALGO_COUNT ? algo_names[algo] : "unknown";
}

static const char *const proto_names[AC_PROTO_COUNT] = {"Simple", "LL", "LL128"};

const char *ac_proto_name(enum ac_proto proto)
{
    return (unsigned)proto < AC_PROTO_COUNT ? proto_names[proto] : "unknown";
}

static const char *const coll_names[AC_COLL_COUNT] = {
    [AC_COLL_ALLREDUCE] = "AllReduce",       [AC_COLL_ALLGATHER] = "AllGather",
    [AC_COLL_REDUCESCATTER] = "ReduceScatter", [AC_COLL_BROADCAST] = "Broadcast",
    [AC_COLL_REDUCE] = "Reduce",             [AC_COLL_ALLTOALL] = "AllToAll",
    [AC_COLL_GATHER] = "Gather",             [AC_COLL_SCATTER] = "Scatter",
    [AC_COLL_SEND] = "Send",                 [AC_COLL_RECV] = "Recv",
};

const char *ac_coll_name(enum ac_coll coll)
{
    return (unsigned)coll < AC_COLL_COUNT ? coll_names[coll] : "unknown";
}

static size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }
static int mod(int a, int n) { return ((a % n) + n) % n; }

void ac_channel_share(size_t total, int c, int nchannels, size_t align, size_t *off, size_t *n)
{
    size_t per = div_up(div_up(total, (size_t)nchannels), align) * align;
    size_t lo = per * (size_t)c;
    size_t hi = per * (size_t)(c + 1);
    if (lo > total)
        lo = total;
    if (hi > total)
        hi = total;
    *off = lo;
    *n = hi - lo;
}

void ac_ring_plan(struct ac_task *t, const struct ac_layout *l, int rank, int root)
{
    int n = t->nranks;
    int me = l->ring_pos[rank];
    int root_pos = root >= 0 ? l->ring_pos[root] : 0;
    uint64_t nloops = div_up(t->region_count,
                             ac_sched_loop_elems(t->coll, t->chunk_elems, t->nranks));

    t->algo = AC_ALGO_RING;
    t->ring = l->ring;
    switch (t->coll) {
    case AC_COLL_BROADCAST:
        t->pos = mod(me - root_pos, n);
        break;
    case AC_COLL_REDUCE:
        t->pos = mod(me - root_pos - 1, n);   /* the root is the chain's tail */
        break;
    default:
        t->pos = me;
        break;
    }
    t->nsteps = nloops * ac_sched_steps_per_loop(t->coll, n);
    t->recv_peers[0] = l->ring[mod(me - 1, n)];
    t->send_peers[0] = l->ring[mod(me + 1, n)];
    if (t->coll == AC_COLL_BROADCAST || t->coll == AC_COLL_REDUCE) {
        t->nrecv = t->pos > 0;
        t->nsend = t->pos < n - 1;
    } else {
        t->nrecv = t->nsend = n > 1;
    }
}

void ac_p2p_plan(struct ac_task *t)
{
    t->nsteps = div_up(t->count, t->chunk_elems);
    t->nsend = t->coll == AC_COLL_SEND;
    t->nrecv = t->coll == AC_COLL_RECV;
    t->pos = 0;
}

void ac_oneshot_plan(struct ac_task *t, int rank)
{
    t->is_oneshot = true;
    t->nsteps = 2;
    t->nrecv = t->nsend = 0;
    for (int r = 0; r < t->nranks; r++)
        if (r != rank) {
            t->recv_peers[t->nrecv++] = r;
            t->send_peers[t->nsend++] = r;
        }
}

/* Only what the schedule reads: ac_task_step inlines this and ac_sched_step, and the compiler
 * keeps the local struct in registers, so the executor's step costs what it did before the
 * schedule moved to sched.h. */
static inline void sched_fill(const struct ac_task *t, struct ac_sched *s)
{
    s->sendbuff = (uint64_t)(uintptr_t)t->sendbuff;
    s->recvbuff = (uint64_t)(uintptr_t)t->recvbuff;
    s->ring = (uint64_t)(uintptr_t)t->ring;
    s->count = t->count;
    s->type_bytes = t->type_bytes;
    s->region_off = t->region_off;
    s->region_count = t->region_count;
    s->chunk_elems = t->chunk_elems;
    s->nsteps = t->nsteps;
    s->coll = (uint32_t)t->coll;
    s->algo = (uint32_t)t->algo;
    s->nranks = t->nranks;
    s->pos = t->pos;
    s->tree_flags = t->tree_flags;
    s->nrecv = t->nrecv;
    s->nsend = t->nsend;
    s->is_oneshot = t->is_oneshot;
}

void ac_sched_set_op(struct ac_sched *out, bool is_reduction, const struct ac_redop *op)
{
    out->is_reduction = is_reduction;
    out->red_type = (uint32_t)op->type;
    out->red_kind = (uint32_t)op->kind;
    out->red_has_premul = op->has_premul;
    out->red_scalar = op->scalar;
    out->red_postdiv = op->postdiv;
}

void ac_sched_from_task(const struct ac_task *t, struct ac_sched *out)
{
    memset(out, 0, sizeof(*out));
    sched_fill(t, out);
    ac_sched_set_op(out, t->is_reduction, &t->op);
    /* one-shot: recv_peers are every other rank in rank order, so this rank is where they first
     * skip one */
    out->rank = t->nrecv;
    for (int k = 0; k < t->nrecv; k++)
        if (t->recv_peers[k] != k) {
            out->rank = k;
            break;
        }
}

/* Out of line: its many live values would otherwise make every step save registers first. */
static __attribute__((noinline)) void ring_step(const struct ac_task *t, uint64_t k,
                                                struct ac_step *out)
{
    struct ac_sched s;
    sched_fill(t, &s);
    ac_sched_step(&s, k, out);
}

/* The one-shot and tree steps read few fields: filling only those keeps their steps as cheap as
 * before. */
void ac_task_step(const struct ac_task *t, uint64_t k, struct ac_step *out)
{
    struct ac_sched s;
    if (t->is_oneshot) {
        s.sendbuff = (uint64_t)(uintptr_t)t->sendbuff;
        s.recvbuff = (uint64_t)(uintptr_t)t->recvbuff;
        s.count = t->count;
        s.coll = (uint32_t)t->coll;
        s.nranks = t->nranks;
        ac_sched_oneshot_step(&s, k, out);
        return;
    }
    if (t->algo == AC_ALGO_TREE) {
        s.sendbuff = (uint64_t)(uintptr_t)t->sendbuff;
        s.recvbuff = (uint64_t)(uintptr_t)t->recvbuff;
        s.type_bytes = t->type_bytes;
        s.region_off = t->region_off;
        s.region_count = t->region_count;
        s.chunk_elems = t->chunk_elems;
        s.tree_flags = t->tree_flags;
        ac_sched_tree_step(&s, k, out);
        return;
    }
    ring_step(t, k, out);
    if (t->is_recv_reduce) /* host runs only: the device engine never gets such a task */
        out->flags |= AC_STEP_REDUCE;
}
