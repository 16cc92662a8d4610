/* The step schedule of the ring, chain, tree and one-shot algorithms, written once: what step k of
 * one rank's task on one channel receives, computes, sends and stores. The host executor
 * (src/core/exec.c, through ac_task_step) and the device collective engine (engine.h, kernel
 * ac_k_coll) both run these functions, so both ends of every connector agree on the sequence of
 * slot sizes wherever the task runs. The planning (peers, positions, number of steps) stays in
 * src/collectives/ring.c and tree.c.
 *
 * Plain C with fixed-size members (addresses as uint64_t), so that gcc, nvcc and hipcc lay out
 * struct ac_sched the same way: the host fills it (ac_sched_from_task) and the device reads it.
 *
 * Ring allreduce on n ranks works in loops of n chunks: steps 0..n-1 are the reduce-scatter phase
 * (chunk (pos-1-s) mod n, finished at step n-1 on the rank that owns it), steps n..2n-2 the
 * allgather phase (chunk (pos-(s-n+1)) mod n). In place is safe: each chunk is read before the
 * step that overwrites it. */
#ifndef AC_DEVICE_KERNELS_SCHED_H
#define AC_DEVICE_KERNELS_SCHED_H

#include "device/kernels/compat.h"

#include <stddef.h>
#include <stdint.h>

enum ac_coll {
    AC_COLL_ALLREDUCE,
    AC_COLL_ALLGATHER,
    AC_COLL_REDUCESCATTER,
    AC_COLL_BROADCAST,
    AC_COLL_REDUCE,
    AC_COLL_ALLTOALL,
    AC_COLL_GATHER,
    AC_COLL_SCATTER,
    AC_COLL_SEND,
    AC_COLL_RECV,
    AC_COLL_COUNT,
};

/* What a step does. RECV: take the next incoming slot. REDUCE: combine it with the local input
 * at src (otherwise the received data is passed on as is). Without RECV the value is the local
 * input at src (with the reduction's premultiplier when the collective reduces). FINAL applies the
 * reduction's final division (avg). SEND: put the value in the next outgoing slot. DST: store it at
 * dst. */
enum {
    AC_STEP_RECV = 1u << 0,
    AC_STEP_SEND = 1u << 1,
    AC_STEP_REDUCE = 1u << 2,
    AC_STEP_DST = 1u << 3,
    AC_STEP_FINAL = 1u << 4,
};

enum ac_algo {
    AC_ALGO_RING,
    AC_ALGO_TREE,
    AC_ALGO_COUNT,
};

struct ac_step {
    const void *src;
    void *dst;
    size_t count;            /* elements; may be 0 (an empty slot still travels) */
    unsigned flags;
};

/* The fields of a task (struct ac_task, src/collectives/coll.h) that the schedule and the device
 * engine read. A step receives from every recv peer (and reduces them all together) and sends
 * the same data to every send peer. */
struct ac_sched {
    uint64_t sendbuff;       /* addresses, as the side that runs the task sees them */
    uint64_t recvbuff;
    uint64_t ring;           /* address of nranks int: the ring order (rank at each position) */
    uint64_t count;          /* the user's count argument */
    uint64_t type_bytes;
    uint64_t region_off;     /* this channel's share, in elements of one block */
    uint64_t region_count;
    uint64_t chunk_elems;    /* elements per slot */
    uint64_t nsteps;
    uint64_t red_scalar;     /* premulsum: the scalar, a value of red_type in the low bytes */
    uint32_t coll;           /* enum ac_coll */
    uint32_t algo;           /* enum ac_algo */
    int32_t nranks;
    int32_t pos;             /* this rank's position in the ring or chain (0 = chain head) */
    int32_t rank;            /* one-shot: this rank (its place in the fold); else unused */
    uint32_t tree_flags;     /* tree tasks: the flags of every step */
    int32_t nrecv, nsend;
    uint32_t is_oneshot;
    uint32_t is_reduction;
    uint32_t red_type;       /* ncclDataType_t */
    uint32_t red_kind;       /* enum ac_op_kind */
    uint32_t red_has_premul;
    uint32_t red_postdiv;    /* avg: divide by this in the final step; 0 = none */
};

AC_DEVFN uint64_t ac_sched_div_up(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

AC_DEVFN int ac_sched_mod(int a, int n)
{
    return ((a % n) + n) % n;
}

AC_DEVFN uint64_t ac_sched_steps_per_loop(uint32_t coll, int nranks)
{
    switch (coll) {
    case AC_COLL_ALLREDUCE:
        return nranks == 1 ? 1 : (uint64_t)(2 * nranks - 1);
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        return (uint64_t)nranks;
    default:
        return 1;
    }
}

/* Elements of the region one loop of steps covers. */
AC_DEVFN uint64_t ac_sched_loop_elems(uint32_t coll, uint64_t chunk_elems, int nranks)
{
    return coll == AC_COLL_ALLREDUCE ? chunk_elems * (uint64_t)nranks : chunk_elems;
}

AC_DEVFN const void *ac_sched_cptr(uint64_t base, uint64_t elem, uint64_t type_bytes)
{
    return (const void *)(uintptr_t)(base + elem * type_bytes);
}

AC_DEVFN void *ac_sched_ptr(uint64_t base, uint64_t elem, uint64_t type_bytes)
{
    return (void *)(uintptr_t)(base + elem * type_bytes);
}

/* The slice of the channel's region that loop l covers: [*lo, *lo + *cnt). */
AC_DEVFN void ac_sched_loop_slice(const struct ac_sched *s, uint64_t l, uint64_t *lo,
                                  uint64_t *cnt)
{
    uint64_t span = ac_sched_loop_elems(s->coll, s->chunk_elems, s->nranks);
    uint64_t start = l * span;
    uint64_t left = s->region_count - start;
    *lo = s->region_off + start;
    *cnt = left < span ? left : span;
}

AC_DEVFN void ac_sched_allreduce_step(const struct ac_sched *s, uint64_t l, int st,
                                      struct ac_step *out)
{
    int n = s->nranks;
    uint64_t lo, cnt;
    ac_sched_loop_slice(s, l, &lo, &cnt);
    if (n == 1) {
        out->src = ac_sched_cptr(s->sendbuff, lo, s->type_bytes);
        out->dst = ac_sched_ptr(s->recvbuff, lo, s->type_bytes);
        out->count = (size_t)cnt;
        out->flags = AC_STEP_DST | AC_STEP_FINAL;
        return;
    }
    uint64_t cs = ac_sched_div_up(cnt, (uint64_t)n);
    int chunk = st < n ? ac_sched_mod(s->pos - 1 - st, n) : ac_sched_mod(s->pos - (st - n + 1), n);
    uint64_t coff = cs * (uint64_t)chunk;
    uint64_t ccnt = coff >= cnt ? 0 : (cnt - coff < cs ? cnt - coff : cs);
    out->src = ac_sched_cptr(s->sendbuff, lo + coff, s->type_bytes);
    out->dst = ac_sched_ptr(s->recvbuff, lo + coff, s->type_bytes);
    out->count = (size_t)ccnt;
    if (st == 0)
        out->flags = AC_STEP_SEND;
    else if (st < n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND;
    else if (st == n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND | AC_STEP_DST | AC_STEP_FINAL;
    else if (st < 2 * n - 2)
        out->flags = AC_STEP_RECV | AC_STEP_SEND | AC_STEP_DST;
    else
        out->flags = AC_STEP_RECV | AC_STEP_DST;
}

/* Allgather and reduce-scatter: step st of a loop moves block b of the rank-ordered blocks. */
AC_DEVFN void ac_sched_blocks_step(const struct ac_sched *s, uint64_t l, int st,
                                   struct ac_step *out)
{
    int n = s->nranks;
    const int *ring = (const int *)(uintptr_t)s->ring;
    uint64_t lo, cnt;
    ac_sched_loop_slice(s, l, &lo, &cnt);
    out->count = (size_t)cnt;
    if (s->coll == AC_COLL_ALLGATHER) {
        int b = ring[ac_sched_mod(s->pos - st, n)];
        out->src = ac_sched_cptr(s->sendbuff, lo, s->type_bytes);
        out->dst = ac_sched_ptr(s->recvbuff, (uint64_t)b * s->count + lo, s->type_bytes);
        if (n == 1)
            out->flags = AC_STEP_DST;
        else if (st == 0)
            out->flags = AC_STEP_SEND | AC_STEP_DST;
        else if (st < n - 1)
            out->flags = AC_STEP_RECV | AC_STEP_SEND | AC_STEP_DST;
        else
            out->flags = AC_STEP_RECV | AC_STEP_DST;
        return;
    }
    int b = ring[ac_sched_mod(s->pos - 1 - st, n)];
    out->src = ac_sched_cptr(s->sendbuff, (uint64_t)b * s->count + lo, s->type_bytes);
    out->dst = ac_sched_ptr(s->recvbuff, lo, s->type_bytes);
    if (n == 1)
        out->flags = AC_STEP_DST | AC_STEP_FINAL;
    else if (st == 0)
        out->flags = AC_STEP_SEND;
    else if (st < n - 1)
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_SEND;
    else
        out->flags = AC_STEP_RECV | AC_STEP_REDUCE | AC_STEP_DST | AC_STEP_FINAL;
}

/* Broadcast, reduce, send and recv: one slot per step along a chain or a pair. */
AC_DEVFN void ac_sched_chain_step(const struct ac_sched *s, uint64_t l, struct ac_step *out)
{
    uint64_t lo, cnt;
    if (s->coll == AC_COLL_SEND || s->coll == AC_COLL_RECV) {
        lo = l * s->chunk_elems;
        cnt = s->count - lo < s->chunk_elems ? s->count - lo : s->chunk_elems;
    } else {
        ac_sched_loop_slice(s, l, &lo, &cnt);
    }
    out->src = ac_sched_cptr(s->sendbuff, lo, s->type_bytes);
    out->dst = ac_sched_ptr(s->recvbuff, lo, s->type_bytes);
    out->count = (size_t)cnt;
    unsigned in = s->nrecv ? AC_STEP_RECV : 0;
    unsigned send = s->nsend ? AC_STEP_SEND : 0;
    switch (s->coll) {
    case AC_COLL_BROADCAST:
        out->flags = in | send | (s->pos == 0 && out->src == out->dst ? 0 : AC_STEP_DST);
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

/* One-shot allreduce, allgather and reduce-scatter: step 0 sends the whole input to every peer,
 * step 1 folds them all (allreduce), stores each at its peer's place (allgather) or folds this
 * rank's block of each (reduce-scatter, whose input is nranks blocks). */
AC_DEVFN void ac_sched_oneshot_step(const struct ac_sched *s, uint64_t k, struct ac_step *out)
{
    out->src = ac_sched_cptr(s->sendbuff, 0, 0);
    out->dst = ac_sched_ptr(s->recvbuff, 0, 0);
    out->count = (size_t)s->count * (s->coll == AC_COLL_REDUCESCATTER ? (size_t)s->nranks : 1);
    if (k == 0)
        out->flags = AC_STEP_SEND;
    else
        out->flags = AC_STEP_RECV | AC_STEP_DST | AC_STEP_FINAL |
                     (s->coll == AC_COLL_ALLGATHER ? 0 : AC_STEP_REDUCE);
}

/* Tree tasks: every step moves one chunk of the channel's region with the same flags. */
AC_DEVFN void ac_sched_tree_step(const struct ac_sched *s, uint64_t k, struct ac_step *out)
{
    uint64_t lo = s->region_off + k * s->chunk_elems;
    uint64_t end = s->region_off + s->region_count;
    out->count = (size_t)(end - lo < s->chunk_elems ? end - lo : s->chunk_elems);
    out->src = ac_sched_cptr(s->sendbuff, lo, s->type_bytes);
    out->dst = ac_sched_ptr(s->recvbuff, lo, s->type_bytes);
    out->flags = s->tree_flags;
}

/* Step k (0 <= k < s->nsteps) of a planned task. */
AC_DEVFN void ac_sched_step(const struct ac_sched *s, uint64_t k, struct ac_step *out)
{
    if (s->is_oneshot) {
        ac_sched_oneshot_step(s, k, out);
        return;
    }
    if (s->algo == AC_ALGO_TREE) {
        ac_sched_tree_step(s, k, out);
        return;
    }
    uint64_t spl = s->coll == AC_COLL_SEND || s->coll == AC_COLL_RECV
                       ? 1
                       : ac_sched_steps_per_loop(s->coll, s->nranks);
    uint64_t l = k / spl;
    int st = (int)(k % spl);
    switch (s->coll) {
    case AC_COLL_ALLREDUCE:
        ac_sched_allreduce_step(s, l, st, out);
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        ac_sched_blocks_step(s, l, st, out);
        break;
    default:
        ac_sched_chain_step(s, l, out);
        break;
    }
}

#endif
