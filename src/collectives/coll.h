/* Schedules: how a collective becomes, on each rank and channel, a sequence of steps over at most
 * one incoming and one outgoing connector. A step receives one slot (or not), combines it with local
 * data (or not), and sends one slot and/or stores to the user's buffer. Both ends of a connector
 * compute the same sequence of slot sizes, so a size that differs from the expected one means the
 * ranks called different operations. Nothing here names a transport or a backend. */
#ifndef AC_COLLECTIVES_COLL_H
#define AC_COLLECTIVES_COLL_H

#include "collectives/graph.h"
#include "device/kernels/ll.h"
#include "device/kernels/reduce.h"
#include "device/kernels/sched.h"
#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

const char *ac_coll_name(enum ac_coll coll);
/* Allreduce, reduce and reduce-scatter: the collectives that combine values. */
static inline bool ac_coll_reduces(enum ac_coll coll)
{
    return coll == AC_COLL_ALLREDUCE || coll == AC_COLL_REDUCE || coll == AC_COLL_REDUCESCATTER;
}

const char *ac_algo_name(enum ac_algo algo);
const char *ac_proto_name(enum ac_proto proto);

/* One rank's part of one collective on one channel. A step receives from every recv peer (and
 * reduces them all together) and sends the same data to every send peer. */
#define AC_TASK_MAX_PEERS 7
struct ac_task {
    enum ac_coll coll;
    enum ac_algo algo;
    const char *sendbuff;
    char *recvbuff;
    size_t count;            /* the user's count argument */
    size_t type_bytes;
    bool is_reduction;
    struct ac_redop op;
    int nranks;
    int pos;                 /* this rank's position in the ring or chain (0 = chain head) */
    const int *ring;         /* ring order (rank at each position) */
    size_t region_off;       /* this channel's share, in elements of one block */
    size_t region_count;
    size_t chunk_elems;      /* elements per slot */
    uint64_t nsteps;
    unsigned tree_flags;     /* tree tasks: the flags of every step */
    int nrecv, nsend;
    int recv_peers[AC_TASK_MAX_PEERS];
    int send_peers[AC_TASK_MAX_PEERS];
    int conn_index;          /* which connector set: a ring channel or a p2p channel */
    /* Single-copy transfer (SEND/RECV tasks between ranks of one host): the sender passes the
     * address of its buffer on conn_index, the receiver reads it with cross-memory attach and
     * acknowledges on ack_set. */
    bool is_direct;
    int ack_set;
    enum ac_coll op_coll;    /* the user's call this task belongs to (messages, mismatches) */
    int root;                /* the user's root (rooted collectives), otherwise -1 */
    /* One-shot allreduce of a small vector: every rank sends its whole input to every other
     * (step 0) and reduces all of them in rank order (step 1), one latency instead of the
     * ring's 2(n-1). recv_peers are in rank order; the fold order makes every rank's result
     * bitwise identical. A one-shot allgather stores each peer's block at its place instead; a
     * one-shot reduce-scatter sends its whole input and folds only its own block of each. */
    bool is_oneshot;
    /* A one-shot between one pair of ranks: a round of the recursive-doubling allreduce
     * (src/core/plan.c). Both fold the pair's partial results lower rank first. */
    bool is_pair_fold;
    /* A point-to-point receive that reduces what arrives with sendbuff into recvbuff: a round of
     * the recursive-halving reduce-scatter (src/core/plan.c). */
    bool is_recv_reduce;
    /* A small collective on the communicator's board (src/core/board.h): no connectors. */
    bool is_board;
    enum ac_proto proto; /* how slots are laid out (ac_tuner_pick_proto): same on every rank */
};

/* Fills the ring/chain fields (pos, ring, nsteps, peers) of a collective task whose coll,
 * buffers, count, type, op, nranks, region and chunk_elems are set. */
void ac_ring_plan(struct ac_task *t, const struct ac_layout *l, int rank, int root);

/* Tree tasks. Allreduce runs an "up" task (reduce towards the tree's root, which also starts the
 * way down) and, except at the root, a "down" task (broadcast from the root); reduce runs only
 * the up part and broadcast only the down part, on a tree rooted at the root. Returns false when
 * this rank has no task of that kind. */
enum ac_tree_part {
    AC_TREE_UP,
    AC_TREE_DOWN,
};
bool ac_tree_plan(struct ac_task *t, const struct ac_layout *l, int rank, int root, int channel,
                  enum ac_tree_part part);
/* Fills the peers and steps of a one-shot allreduce, allgather or reduce-scatter task (coll,
 * buffers, count, op set). */
#define AC_ONESHOT_MAX_BYTES (16 * 1024)
void ac_oneshot_plan(struct ac_task *t, int rank);
/* Fills nsteps and the peer of an AC_COLL_SEND or AC_COLL_RECV task (peer in recv_peers[0] or
 * send_peers[0] on entry). */
void ac_p2p_plan(struct ac_task *t);
/* The schedule of a planned task, as the device engine reads it (device/kernels/sched.h):
 * addresses as the task holds them, the ring order by the address of t->ring. */
void ac_sched_from_task(const struct ac_task *t, struct ac_sched *out);
/* The reduction fields of a schedule (the device path's direct tasks fill the rest themselves). */
void ac_sched_set_op(struct ac_sched *out, bool is_reduction, const struct ac_redop *op);
/* Step k (0 <= k < t->nsteps) of a planned task: sched.h's ac_sched_step, the code the device
 * engine runs. */
void ac_task_step(const struct ac_task *t, uint64_t k, struct ac_step *out);

/* The slice [off, off + n) of `total` elements that channel c of nchannels works on. Channels
 * get contiguous shares rounded to `align` elements so that slots stay aligned. */
void ac_channel_share(size_t total, int c, int nchannels, size_t align, size_t *off, size_t *n);

/* The cost model: estimated microseconds for a collective of `bytes` per rank (the user's count
 * times the type size) with an algorithm on a layout. */
double ac_tuner_estimate_us(enum ac_coll coll, enum ac_algo algo, size_t bytes,
                            const struct ac_layout *l);
/* The algorithm for a call: the cheapest by the model among those NCCL_ALGO allows. */
enum ac_algo ac_tuner_pick(enum ac_coll coll, size_t bytes, const struct ac_layout *l);
/* The protocol for a call of `bytes` (per rank, or per transfer for point-to-point and the
 * exchanges), among those NCCL_PROTO allows: LL up to ANYCCL_LL_THRESHOLD, LL128 up to
 * ANYCCL_LL128_THRESHOLD, Simple above; a protocol NCCL_PROTO leaves alone takes over the sizes
 * of an excluded one. Depends only on its arguments and the configuration, so every rank picks
 * the same. */
enum ac_proto ac_tuner_pick_proto(enum ac_coll coll, size_t bytes);
/* Elements per step for protocol proto on connectors of slot_bytes (LL protocols carry less). */
size_t ac_proto_chunk_elems(enum ac_proto proto, size_t slot_bytes, size_t type_bytes);

#endif
