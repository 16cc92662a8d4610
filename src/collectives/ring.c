/* Ring and chain schedules (NCCL's ring algorithm family) for allreduce, allgather, reduce-scatter,
 * broadcast and reduce. Every rank receives from its ring predecessor and sends to its successor;
 * chains (broadcast, reduce) are the ring cut open at the root.
 *
 * Allreduce on n ranks works in loops of n chunks: steps 0..n-1 are the reduce-scatter phase
 * (chunk (pos-1-s) mod n, finished at step n-1 on the rank that owns it), steps n..2n-2 the
 * allgather phase (chunk (pos-(s-n+1)) mod n). In place is safe: each chunk is read before the
 * step that overwrites it. */
#include "collectives/coll.h"

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

static uint64_t steps_per_loop(const struct ac_task *t)
{
    int n = t->nranks;
    switch (t->coll) {
    case AC_COLL_ALLREDUCE:
        return n == 1 ? 1 : (uint64_t)(2 * n - 1);
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        return (uint64_t)n;
    default:
        return 1;
    }
}

static size_t loop_elems(const struct ac_task *t)
{
    return t->coll == AC_COLL_ALLREDUCE ? t->chunk_elems * (size_t)t->nranks : t->chunk_elems;
}

void ac_ring_plan(struct ac_task *t, const struct ac_layout *l, int rank, int root)
{
    int n = t->nranks;
    int me = l->ring_pos[rank];
    int root_pos = root >= 0 ? l->ring_pos[root] : 0;
    uint64_t nloops = div_up(t->region_count, loop_elems(t));

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
    t->nsteps = nloops * steps_per_loop(t);
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

/* The slice of the channel's region that loop l covers: [*lo, *lo + *cnt). */
static void loop_slice(const struct ac_task *t, uint64_t l, size_t *lo, size_t *cnt)
{
    size_t span = loop_elems(t);
    size_t start = (size_t)l * span;
    size_t left = t->region_count - start;
    *lo = t->region_off + start;
    *cnt = left < span ? left : span;
}

static void allreduce_step(const struct ac_task *t, uint64_t l, int s, struct ac_step *out)
{
    int n = t->nranks;
    size_t lo, cnt;
    loop_slice(t, l, &lo, &cnt);
    if (n == 1) {
        out->src = t->sendbuff + lo * t->type_bytes;
        out->dst = t->recvbuff + lo * t->type_bytes;
        out->count = cnt;
        out->flags = AC_STEP_DST | AC_STEP_FINAL;
        return;
    }
    size_t cs = div_up(cnt, (size_t)n);
    int chunk = s < n ? mod(t->pos - 1 - s, n) : mod(t->pos - (s - n + 1), n);
    size_t coff = cs * (size_t)chunk;
    size_t ccnt = coff >= cnt ? 0 : (cnt - coff < cs ? cnt - coff : cs);
    size_t byte_off = (lo + coff) * t->type_bytes;
    out->src = t->sendbuff + byte_off;
    out->dst = t->recvbuff + byte_off;
    out->count = ccnt;
    if (s == 0)
        out->flags = AC_STEP_SEND;
    else if (s < n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND;
    else if (s == n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND | AC_STEP_DST | AC_STEP_FINAL;
    else if (s < 2 * n - 2)
        out->flags = AC_STEP_RECV | AC_STEP_SEND | AC_STEP_DST;
    else
        out->flags = AC_STEP_RECV | AC_STEP_DST;
}

/* Allgather and reduce-scatter: step s of a loop moves block b of the rank-ordered blocks. */
static void blocks_step(const struct ac_task *t, uint64_t l, int s, struct ac_step *out)
{
    int n = t->nranks;
    size_t lo, cnt;
    loop_slice(t, l, &lo, &cnt);
    out->count = cnt;
    if (t->coll == AC_COLL_ALLGATHER) {
        int b = t->ring[mod(t->pos - s, n)];
        out->src = t->sendbuff + lo * t->type_bytes;
        out->dst = t->recvbuff + ((size_t)b * t->count + lo) * t->type_bytes;
        if (n == 1)
            out->flags = AC_STEP_DST;
        else if (s == 0)
            out->flags = AC_STEP_SEND | AC_STEP_DST;
        else if (s < n - 1)
            out->flags = AC_STEP_RECV | AC_STEP_SEND | AC_STEP_DST;
        else
            out->flags = AC_STEP_RECV | AC_STEP_DST;
        return;
    }
    int b = t->ring[mod(t->pos - 1 - s, n)];
    out->src = t->sendbuff + ((size_t)b * t->count + lo) * t->type_bytes;
    out->dst = t->recvbuff + lo * t->type_bytes;
    if (n == 1)
        out->flags = AC_STEP_DST | AC_STEP_FINAL;
    else if (s == 0)
        out->flags = AC_STEP_SEND;
    else if (s < n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND;
    else
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_DST | AC_STEP_FINAL;
}

/* Broadcast, reduce, send and recv: one slot per step along a chain or a pair. */
static void chain_step(const struct ac_task *t, uint64_t l, struct ac_step *out)
{
    size_t lo, cnt;
    if (t->coll == AC_COLL_SEND || t->coll == AC_COLL_RECV) {
        lo = (size_t)l * t->chunk_elems;
        cnt = t->count - lo < t->chunk_elems ? t->count - lo : t->chunk_elems;
    } else {
        loop_slice(t, l, &lo, &cnt);
    }
    out->src = t->sendbuff + lo * t->type_bytes;
    out->dst = t->recvbuff + lo * t->type_bytes;
    out->count = cnt;
    unsigned in = t->nrecv ? AC_STEP_RECV : 0;
    unsigned send = t->nsend ? AC_STEP_SEND : 0;
    switch (t->coll) {
    case AC_COLL_BROADCAST:
        out->flags = in | send | (t->pos == 0 && out->src == out->dst ? 0 : AC_STEP_DST);
        break;
    case AC_COLL_REDUCE:
        out->flags = in | send | (in ? AC_STEP_REDUCE : 0) |
                     (send ? 0 : AC_STEP_DST | AC_STEP_FINAL);
        break;
    case AC_COLL_SEND:
        out->flags = AC_STEP_SEND;
        break;
    default: /* AC_COLL_RECV */
        out->flags = AC_STEP_RECV | AC_STEP_DST;
        break;
    }
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

static void oneshot_step(const struct ac_task *t, uint64_t k, struct ac_step *out)
{
    out->src = t->sendbuff;
    out->dst = t->recvbuff;
    out->count = t->count;
    out->flags = k == 0 ? AC_STEP_SEND
                        : AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_DST | AC_STEP_FINAL;
}

void ac_task_step(const struct ac_task *t, uint64_t k, struct ac_step *out)
{
    if (t->is_oneshot) {
        oneshot_step(t, k, out);
        return;
    }
    if (t->algo == AC_ALGO_TREE) {
        ac_tree_step(t, k, out);
        return;
    }
    uint64_t spl = t->coll == AC_COLL_SEND || t->coll == AC_COLL_RECV ? 1 : steps_per_loop(t);
    uint64_t l = k / spl;
    int s = (int)(k % spl);
    switch (t->coll) {
    case AC_COLL_ALLREDUCE:
        allreduce_step(t, l, s, out);
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        blocks_step(t, l, s, out);
        break;
    default:
        chain_step(t, l, out);
        break;
    }
}
