/* Schedules: how a collective becomes, on each rank and channel, a sequence of steps over at most
 * one incoming and one outgoing connector. A step receives one slot (or not), combines it with local
 * data (or not), and sends one slot and/or stores to the user's buffer. Both ends of a connector
 * compute the same sequence of slot sizes, so a size that differs from the expected one means the
 * ranks called different operations. Nothing here names a transport or a backend. */
#ifndef AC_COLLECTIVES_COLL_H
#define AC_COLLECTIVES_COLL_H

#include "device/kernels/reduce.h"
#include "nccl.h"

#include <stdbool.h>
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

const char *ac_coll_name(enum ac_coll coll);

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

struct ac_step {
    const void *src;
    void *dst;
    size_t count;            /* elements; may be 0 (an empty slot still travels) */
    unsigned flags;
};

/* One rank's part of one collective on one channel. */
struct ac_task {
    enum ac_coll coll;
    const char *sendbuff;
    char *recvbuff;
    size_t count;            /* the user's count argument */
    size_t type_bytes;
    bool is_reduction;
    struct ac_redop op;
    int nranks;
    int pos;                 /* this rank's position in the ring or chain (0 = chain head) */
    size_t region_off;       /* this channel's share, in elements of one block */
    size_t region_count;
    size_t chunk_elems;      /* elements per slot */
    uint64_t nsteps;
    bool uses_recv, uses_send;
    int recv_peer, send_peer;     /* ranks */
    int conn_index;               /* which connector set: a ring channel or a p2p channel */
};

/* Fills the ring/chain fields (pos, nsteps, uses_*) of a collective task whose coll, buffers,
 * count, type, op, nranks, region and chunk_elems are set. rank, root: the caller's and the root. */
void ac_ring_plan(struct ac_task *t, int rank, int root);
/* Fills nsteps/uses_* of an AC_COLL_SEND or AC_COLL_RECV task. */
void ac_p2p_plan(struct ac_task *t);
/* Step k (0 <= k < t->nsteps) of a planned task. */
void ac_task_step(const struct ac_task *t, uint64_t k, struct ac_step *out);

/* The slice [off, off + n) of `total` elements that channel c of nchannels works on. Channels
 * get contiguous shares rounded to `align` elements so that slots stay aligned. */
void ac_channel_share(size_t total, int c, int nchannels, size_t align, size_t *off, size_t *n);

/* The cost model: estimated microseconds for a collective of `bytes` per rank (the user's count
 * times the type size) on nranks ranks. */
double ac_tuner_estimate_us(enum ac_coll coll, size_t bytes, int nranks, bool is_same_host);

#endif
