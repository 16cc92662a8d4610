/* Planning: each operation of a call or group becomes tasks, one per channel and tree part for
 * collectives, one per peer for point-to-point traffic; the tuner picks ring or tree. A rank's
 * sends to itself are matched with its receives from itself here and done as local copies. */
#include "common/check.h"
#include "common/config.h"
#include "core/board.h"
#include "core/plan.h"
#include "transport/shm/shm_region.h"

#include <stdlib.h>
#include <string.h>

/* Below this size a ring collective uses one channel: more would only add steps. */
#define AC_MULTI_CHANNEL_MIN_BYTES (256 * 1024)
/* Trees always come in pairs (the double binary tree), one per channel. */
#define AC_TREE_NCHANNELS 2

static ncclResult_t add_task(struct ac_run *run, struct ncclComm *comm, const struct ac_task *t)
{
    if (run->ntasks == run->cap) {
        int cap = 2 * run->cap;
        bool is_inline = run->tasks == run->inline_tasks;
        struct ac_run_task *grown =
            realloc(is_inline ? NULL : run->tasks, (size_t)cap * sizeof(*grown));
        if (!grown)
            return AC_FAIL(ncclSystemError, "out of memory for %d tasks", cap);
        if (is_inline)
            memcpy(grown, run->inline_tasks, sizeof(run->inline_tasks));
        run->tasks = grown;
        run->cap = cap;
    }
    struct ac_run_task *rt = &run->tasks[run->ntasks++];
    memset(rt, 0, sizeof(*rt));
    rt->t = *t;
    rt->comm = comm;
    return ncclSuccess;
}

static ncclResult_t add_comm(struct ac_run *run, struct ncclComm *comm)
{
    for (int i = 0; i < run->ncomms; i++)
        if (run->comms[i] == comm)
            return ncclSuccess;
    if (run->ncomms == run->comms_cap) {
        int cap = 2 * run->comms_cap;
        bool is_inline = run->comms == run->inline_comms;
        struct ncclComm **grown = realloc(is_inline ? NULL : run->comms, (size_t)cap * sizeof(*grown));
        if (!grown)
            return AC_FAIL(ncclSystemError, "out of memory for %d communicators", cap);
        if (is_inline)
            memcpy(grown, run->inline_comms, sizeof(run->inline_comms));
        run->comms = grown;
        run->comms_cap = cap;
    }
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
    t->is_reduction = ac_coll_reduces(op->coll);
    t->nranks = op->comm->nranks;
    t->op_coll = op->coll;
    t->root = op->coll == AC_COLL_BROADCAST || op->coll == AC_COLL_REDUCE ||
                      op->coll == AC_COLL_GATHER || op->coll == AC_COLL_SCATTER
                  ? op->root
                  : -1;
}

/* Large allreduces between ranks that share cores over sockets move in larger chunks
 * (agree_on_cma in src/core/init.c has the measurements). Every rank takes the same chunk: the
 * vector's size, the protocol and the communicator's sizes agree everywhere. Measured for the
 * other collectives too, without a consistent gain: broadcast's pipeline fills in larger steps,
 * and allgather and reduce-scatter were faster in some alternations and slower in others. The
 * device path's connectors keep the usual slots. */
static size_t chunk_slot_bytes(const struct ac_run *run, const struct ac_op *op,
                               enum ac_proto proto)
{
    const struct ncclComm *comm = op->comm;
    bool is_large = !run->is_device && op->coll == AC_COLL_ALLREDUCE &&
                    proto == AC_PROTO_SIMPLE &&
                    op->count * ac_type_size(op->type) >= comm->large_chunk_min_bytes;
    return is_large ? comm->large_slot_bytes : comm->slot_bytes;
}

static ncclResult_t add_channel_tasks(struct ac_run *run, const struct ac_op *op,
                                      enum ac_algo algo, enum ac_proto proto, int c, int nch)
{
    struct ncclComm *comm = op->comm;
    size_t tb = ac_type_size(op->type);
    struct ac_task t;
    base_task(op, &t);
    ac_channel_share(op->count, c, nch, tb >= 64 ? 1 : 64 / tb, &t.region_off, &t.region_count);
    if (t.region_count == 0)
        return ncclSuccess;
    t.proto = proto;
    t.chunk_elems = ac_proto_chunk_elems(proto, chunk_slot_bytes(run, op, proto), tb);
    t.conn_index = c;
    int root = op->coll == AC_COLL_ALLREDUCE ? -1 : op->root;
    if (algo == AC_ALGO_RING) {
        ac_ring_plan(&t, &comm->layout, comm->rank, op->root);
        return t.nsteps > 0 ? add_task(run, comm, &t) : ncclSuccess;
    }
    struct ac_task down = t;
    if (op->coll != AC_COLL_BROADCAST && ac_tree_plan(&t, &comm->layout, comm->rank, root, c,
                                                      AC_TREE_UP))
        AC_CHECK(add_task(run, comm, &t));
    if (op->coll != AC_COLL_REDUCE && ac_tree_plan(&down, &comm->layout, comm->rank, root, c,
                                                   AC_TREE_DOWN))
        AC_CHECK(add_task(run, comm, &down));
    return ncclSuccess;
}

/* Whether the ranks are joined by the network (sockets, RDMA) rather than shared memory. */
static bool is_network_joined(const struct ncclComm *comm)
{
    return comm->layout.nnodes > 1 || ac_config_get()->shm_disable;
}

/* Between such ranks the steps of shared memory, which cost little, each cost a network latency
 * (4 ranks over loopback TCP: about 20 us), and recursive doubling's log2(n) rounds beat a ring's
 * n - 1 steps and a one-shot's n - 1 messages per rank. An explicit NCCL_ALGO keeps the
 * algorithm it names. */
static bool is_doubling_worth(const struct ac_run *run, const struct ac_op *op)
{
    const struct ncclComm *comm = op->comm;
    int n = comm->nranks;
    const char *algo = ac_config_get()->algo;
    return !run->is_device && n >= 4 && (n & (n - 1)) == 0 && (!algo || !*algo) &&
           is_network_joined(comm);
}

/* The tasks added since `round` start once the operation's earlier ones, from `first`, are done. */
static void wait_for_earlier(struct ac_run *run, int first, int round)
{
    for (int i = round; i < run->ntasks; i++) {
        run->tasks[i].wait_first = first;
        run->tasks[i].wait_end = round;
    }
}

/* Small allreduces between ranks joined by the network, on 2^k ranks: log2(n) rounds in which
 * the ranks whose numbers differ in one bit swap their whole partial results and combine them
 * (one-shot tasks between a pair, each round waiting for the last). 4 ranks over loopback TCP,
 * alternated launches (built from send/recv): 64 B 70 -> 50 us, 16 KiB 135 -> 73 against the
 * one-shot. Not for avg and premulsum: their inputs are scaled once, before the first round.
 * Up to 32 KiB: against add_halving_allreduce's 2 log2(n) rounds of smaller messages, blocks of
 * 10 calls alternated in one launch over loopback TCP, 4 ranks: 16 KiB 80 against 107 us, 32
 * KiB 105 against 132, 64 KiB 120 against 115, 128 KiB 253 against 168; 8 ranks: 32 KiB 259
 * against 357, 64 KiB 437 against 364. */
#define DOUBLING_ALLREDUCE_MAX_BYTES (32 * 1024)
static bool use_doubling_allreduce(const struct ac_run *run, const struct ac_op *op,
                                   enum ac_proto proto)
{
    size_t tb = ac_type_size(op->type), bytes = op->count * tb;
    return op->coll == AC_COLL_ALLREDUCE && is_doubling_worth(run, op) &&
           bytes <= DOUBLING_ALLREDUCE_MAX_BYTES && !op->redop.has_premul &&
           op->redop.postdiv <= 1 &&
           op->count <= ac_proto_chunk_elems(proto, op->comm->slot_bytes, tb);
}

static ncclResult_t add_doubling_allreduce(struct ac_run *run, const struct ac_op *op,
                                           enum ac_proto proto)
{
    struct ncclComm *comm = op->comm;
    int first = run->ntasks;
    for (int d = 1; d < comm->nranks; d <<= 1) {
        int round = run->ntasks;
        struct ac_task t;
        base_task(op, &t);
        t.proto = proto;
        t.region_count = t.chunk_elems = op->count;
        t.sendbuff = d == 1 ? op->sendbuff : op->recvbuff; /* then the partial result */
        t.is_oneshot = t.is_pair_fold = true;
        t.nsteps = 2;
        t.nrecv = t.nsend = 1;
        t.recv_peers[0] = t.send_peers[0] = comm->rank ^ d;
        AC_CHECK(add_task(run, comm, &t));
        wait_for_earlier(run, first, round);
    }
    return ncclSuccess;
}

/* Small allreduces on one node: one exchange of whole vectors (src/collectives/ring.c). Small
 * allgathers on 3 ranks or more likewise (on 2 the ring is that exchange already): each rank
 * writes its block into n - 1 slots where the ring's n - 1 steps each wait for the rank before,
 * a turn of the scheduler per step where ranks share cores. 4 ranks over shared memory on 2
 * cores, alternated launches: 64 B per rank 6.7 -> 3.9 us, 16 KiB per rank 14.5 -> 10.7 (32 KiB:
 * mixed); 8 ranks 64 B 27.9 -> 8.8 us. Small reduce-scatters too: every rank sends its whole
 * input and folds its own block of all of them, n times the ring's bytes, so only up to
 * ONESHOT_RS_MAX_BYTES of input: 4 ranks 64 B 5.5 -> 4.7 us, 8 KiB 6.6 -> 5.2, 16 KiB 8.0 -> 9.1;
 * 8 ranks 256 B 21.2 -> 9.6, 8 KiB 32.5 -> 20.6, 16 KiB 26.2 -> 36.5. A one-shot broadcast (the
 * root writing n - 1 slots) was no faster from 128 B on 4 ranks and at 64 B on 3 and 8. Host runs
 * only: the device engine folds one-shot allreduces alone. An explicit NCCL_ALGO keeps the
 * algorithm it names. Where the communicator has a board (src/core/board.h), the calls it takes
 * never get here. */
#define ONESHOT_RS_MAX_BYTES (8 * 1024)

static bool use_oneshot(const struct ac_run *run, const struct ac_op *op, enum ac_proto proto)
{
    const struct ncclComm *comm = op->comm;
    bool is_rs = op->coll == AC_COLL_REDUCESCATTER;
    size_t tb = ac_type_size(op->type), elems = op->count * (is_rs ? (size_t)comm->nranks : 1);
    size_t max = is_rs ? ONESHOT_RS_MAX_BYTES : AC_ONESHOT_MAX_BYTES;
    const char *algo = ac_config_get()->algo;
    bool is_coll = op->coll == AC_COLL_ALLREDUCE || ((op->coll == AC_COLL_ALLGATHER || is_rs) &&
                                                     !run->is_device && comm->nranks > 2);
    /* one step carries the whole vector: it must fit the protocol's slots */
    return is_coll && comm->nranks > 1 && comm->nranks <= AC_TASK_MAX_PEERS + 1 &&
           comm->layout.nnodes == 1 && elems * tb <= max && (!algo || !*algo) &&
           elems <= ac_proto_chunk_elems(proto, comm->slot_bytes, tb);
}

static ncclResult_t add_coll_op(struct ac_run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    size_t bytes = op->count * ac_type_size(op->type);
    enum ac_proto proto = ac_tuner_pick_proto(op->coll, bytes);
    if (use_doubling_allreduce(run, op, proto))
        return add_doubling_allreduce(run, op, proto);
    if (use_oneshot(run, op, proto)) {
        struct ac_task t;
        base_task(op, &t);
        t.proto = proto;
        t.region_count = op->count;
        t.chunk_elems = op->count;
        ac_oneshot_plan(&t, comm->rank);
        return add_task(run, comm, &t);
    }
    enum ac_algo algo = comm->nranks > 1 ? ac_tuner_pick(op->coll, bytes, &comm->layout)
                                         : AC_ALGO_RING;
    int nch = algo == AC_ALGO_TREE ? AC_TREE_NCHANNELS
              : bytes >= AC_MULTI_CHANNEL_MIN_BYTES ? comm->nchannels : 1;
    for (int c = 0; c < nch; c++)
        AC_CHECK(add_channel_tasks(run, op, algo, proto, c, nch));
    return ncclSuccess;
}

/* One point-to-point transfer of count elements at buf with peer (never self), on connector set
 * `set` (user send/recv or a collective's exchange). Between ranks of one host that can map each
 * other's memory, each transfer also holds the acknowledgement connector back from the receiver,
 * and a transfer of at least cma_min_bytes can be single-copy: the sender passes its buffer (a
 * registered buffer from ncclMemAlloc, or with ANYCCL_CMA_ENABLE any buffer) and waits for the
 * acknowledgement (two steps); the receiver reads and acknowledges (one step). The receiver
 * learns that from the first slot when only the sender could know (src/core/exec.c).
 * may_be_direct false keeps the transfer in slots (a receive that reduces what it gets). */
static ncclResult_t add_p2p_how(struct ac_run *run, const struct ac_op *op, enum ac_coll coll,
                                int peer, const void *buf, size_t count, int set,
                                bool may_be_direct)
{
    if (count == 0)
        return ncclSuccess;
    struct ncclComm *comm = op->comm;
    struct ac_task t;
    base_task(op, &t);
    t.coll = coll;
    t.count = count;
    t.sendbuff = buf;
    t.recvbuff = (char *)buf;
    t.proto = ac_tuner_pick_proto(coll, count * t.type_bytes);
    t.chunk_elems = ac_proto_chunk_elems(t.proto, comm->p2p_slot_bytes, t.type_bytes);
    t.conn_index = set;
    t.recv_peers[0] = t.send_peers[0] = peer;
    ac_p2p_plan(&t);
    if (run->is_device || !ac_comm_pair_can_map(comm, peer))
        return add_task(run, comm, &t);
    t.ack_set = set == AC_P2P_CONN_BASE ? AC_P2P_ACK_SET : AC_XCHG_ACK_SET;
    t.nsend = t.nrecv = 1;
    size_t bytes = count * t.type_bytes;
    struct ac_region_ref ref;
    bool is_big = bytes >= comm->cma_min_bytes;
    bool is_mapped = coll == AC_COLL_SEND && is_big && ac_region_find(buf, bytes, &ref) &&
                     ac_comm_is_registered(comm, buf, bytes);
    if (may_be_direct && ((is_big && ac_comm_pair_cma(comm, peer)) || is_mapped)) {
        t.is_direct = true;
        t.nsteps = coll == AC_COLL_SEND ? 2 : 1;
    }
    return add_task(run, comm, &t);
}

static ncclResult_t add_p2p(struct ac_run *run, const struct ac_op *op, enum ac_coll coll, int peer,
                            const void *buf, size_t count, int set)
{
    return add_p2p_how(run, op, coll, peer, buf, count, set, true);
}

#define XCHG AC_XCHG_CONN_SET

/* A copy of the rank's own block that planning does (and a reused plan repeats). */
struct own_copy {
    void *dst;
    const void *src;
    size_t bytes;
};

/* An all-to-all's, gather's or scatter's own block, which no transfer touches: where the ranks
 * are joined by the network, whose transfers leave a rank waiting while the kernel or the NIC
 * moves the data, large ones are left to the executor, which copies them in those waits (struct
 * ac_local_copy). Blocks of calls alternated in one launch, all-to-all over loopback TCP: 2 ranks
 * 64 MiB 18.2 -> 16.2 ms, 4 ranks 16 MiB 12.8 -> 12.1. Over shared memory the ranks copy the
 * transfers themselves and wait little: 2 ranks 1 MiB 81 -> 88 us, 16 MiB equal; so not there. */
#define DEFERRED_COPY_MIN_BYTES (256 * 1024)

static void copy_own_block(struct ac_run *run, const struct ncclComm *comm,
                           const struct own_copy *own)
{
    if (is_network_joined(comm) && own->bytes >= DEFERRED_COPY_MIN_BYTES &&
        run->ncopies < AC_RUN_MAX_COPIES &&
        !ac_buffers_overlap(own->dst, own->bytes, own->src, own->bytes))
        run->copies[run->ncopies++] =
            (struct ac_local_copy){.dst = own->dst, .src = own->src, .bytes = own->bytes};
    else
        ac_kern_copy_user(own->dst, own->src, own->bytes);
}

/* All-to-all, gather and scatter: point-to-point transfers, plus the rank's own block (*own,
 * which the caller copies). Peers are visited in a rotating order so that all ranks do not send
 * to the same peer first, and a rank issues all its sends before its receives so that no peer
 * waits for an address (single-copy transfers) while this rank reads from another. */
static ncclResult_t add_exchange_op(struct ac_run *run, const struct ac_op *op,
                                    struct own_copy *own)
{
    struct ncclComm *comm = op->comm;
    int n = comm->nranks, me = comm->rank;
    size_t cnt = op->count, blk = cnt * ac_type_size(op->type);
    const char *sb = op->sendbuff;
    char *rb = op->recvbuff;
    bool is_root = me == op->root;
    for (int i = 1; i < n; i++) {
        int to = (me + i) % n;
        if (op->coll == AC_COLL_ALLTOALL || (op->coll == AC_COLL_SCATTER && is_root))
            AC_CHECK(add_p2p(run, op, AC_COLL_SEND, to, sb + (size_t)to * blk, cnt, XCHG));
    }
    if (op->coll == AC_COLL_GATHER && !is_root)
        AC_CHECK(add_p2p(run, op, AC_COLL_SEND, op->root, sb, cnt, XCHG));
    for (int i = 1; i < n; i++) {
        int from = (me - i + n) % n;
        if (op->coll == AC_COLL_ALLTOALL || (op->coll == AC_COLL_GATHER && is_root))
            AC_CHECK(add_p2p(run, op, AC_COLL_RECV, from, rb + (size_t)from * blk, cnt, XCHG));
    }
    if (op->coll == AC_COLL_SCATTER && !is_root)
        AC_CHECK(add_p2p(run, op, AC_COLL_RECV, op->root, rb, cnt, XCHG));
    if (run->is_device)
        return ncclSuccess;
    if (op->coll == AC_COLL_ALLTOALL)
        *own = (struct own_copy){rb + (size_t)me * blk, sb + (size_t)me * blk, blk};
    else if (op->coll == AC_COLL_GATHER && is_root)
        *own = (struct own_copy){rb + (size_t)me * blk, sb, blk};
    else if (op->coll == AC_COLL_SCATTER && is_root)
        *own = (struct own_copy){rb, sb + (size_t)me * blk, blk};
    return ncclSuccess;
}

/* An exchange's plan can be reused while none of its transfers could be single-copy: whether
 * one is depends on the buffer's registration, which may change between identical calls. */
static bool is_exchange_reusable(const struct ac_op *op)
{
    return op->count * ac_type_size(op->type) < op->comm->cma_min_bytes;
}

/* Broadcast and allgather between ranks that can all read each other's memory: every rank reads
 * what it lacks straight from the rank that has it (one copy per byte received), instead of
 * passing it along a ring (a copy into each slot and one out of it). */
static bool use_direct(const struct ac_op *op)
{
    const struct ncclComm *comm = op->comm;
    size_t bytes = op->count * ac_type_size(op->type);
    return comm->nranks > 1 && comm->is_cma_all && bytes > 0 && bytes >= comm->cma_min_bytes &&
           (op->coll == AC_COLL_BROADCAST || op->coll == AC_COLL_ALLGATHER);
}

static ncclResult_t add_direct_op(struct ac_run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    int n = comm->nranks, me = comm->rank;
    size_t cnt = op->count, blk = cnt * ac_type_size(op->type);
    if (op->coll == AC_COLL_BROADCAST) {
        if (me != op->root)
            return add_p2p(run, op, AC_COLL_RECV, op->root, op->recvbuff, cnt, XCHG);
        for (int i = 1; i < n; i++)
            AC_CHECK(add_p2p(run, op, AC_COLL_SEND, (me + i) % n, op->sendbuff, cnt, XCHG));
        ac_kern_copy_user(op->recvbuff, op->sendbuff, blk);
        return ncclSuccess;
    }
    for (int i = 1; i < n; i++)
        AC_CHECK(add_p2p(run, op, AC_COLL_SEND, (me + i) % n, op->sendbuff, cnt, XCHG));
    for (int i = 1; i < n; i++) {
        int from = (me - i + n) % n;
        AC_CHECK(add_p2p(run, op, AC_COLL_RECV, from, (char *)op->recvbuff + (size_t)from * blk,
                         cnt, XCHG));
    }
    ac_kern_copy_user((char *)op->recvbuff + (size_t)me * blk, op->sendbuff, blk);
    return ncclSuccess;
}

/* Small allgathers between ranks joined by the network, on 2^k ranks (is_doubling_worth):
 * recursive doubling, log2(n) rounds in which a rank swaps all the blocks it has with the rank
 * whose number differs in one bit, instead of the ring's n - 1 steps; the bytes each rank sends
 * are the same. Over loopback TCP, alternated launches: 4 ranks, 4 KiB per rank 96 -> 61 us,
 * 32 KiB 161 -> 138, 128 KiB 547 -> 423, equal at 256 KiB; 8 ranks, 2 KiB 312 -> 180, equal at
 * 64 KiB. Beyond, the ring, whose steps overlap, is faster. */
#define AC_DOUBLING_MAX_BYTES (512 * 1024) /* of the gathered result */
/* Between the ranks of one host, blocks of calls alternated with the ring in one launch: 4 ranks,
 * 1 MiB gathered 1113 -> 700 and 435 -> 350 us, 2 MiB 1412 -> 825, 4 MiB 3267 -> 2212 and 4485
 * -> 2844, 8 MiB 4204 -> 4902 (slower), 16 MiB 13.5 -> 11.6 and 8.7 -> 11.5 ms (the ring's time
 * moves with the machine's phase); 8 ranks, 1 MiB 3114 -> 1875, 2 MiB 3185 -> 2989, 4 MiB 7398
 * -> 6422, 8 MiB 15.8 -> 17.5 ms. Across nodes the limit above stays: with several ranks per
 * node the last round's pairs cross between nodes with half the result each. */
#define DOUBLING_ALLGATHER_HOST_MAX_BYTES (4u << 20)

/* The rounds use channel 0's connectors, as the ring and the one-shot do, not the exchange set:
 * ranks that disagree about the operation (one calls allreduce, the others allgather) then read
 * each other's slots and see the difference, instead of each waiting on a connector the other
 * never writes. */
#define ROUNDS_SET 0

static bool use_doubling(const struct ac_run *run, const struct ac_op *op)
{
    size_t bytes = op->count * ac_type_size(op->type);
    return op->coll == AC_COLL_ALLGATHER && is_doubling_worth(run, op) && bytes > 0 &&
           bytes <= (op->comm->layout.nnodes == 1 ? DOUBLING_ALLGATHER_HOST_MAX_BYTES
                                                  : AC_DOUBLING_MAX_BYTES) /
                        (size_t)op->comm->nranks;
}

/* Where block b of n starts in a vector of count elements: floor(count * b / n), without the
 * product overflowing. */
static size_t block_start(size_t count, int n, int b)
{
    size_t q = count / (size_t)n, r = count % (size_t)n;
    return q * (size_t)b + r * (size_t)b / (size_t)n;
}

/* The allgather rounds over the n blocks of the count elements at rb (block_start), each rank's
 * own block already in place; they start once the operation's tasks from `first` are done. */
static ncclResult_t add_doubling_rounds(struct ac_run *run, const struct ac_op *op, char *rb,
                                        size_t count, int first)
{
    int n = op->comm->nranks, me = op->comm->rank;
    size_t tb = ac_type_size(op->type);
    for (int d = 1; d < n; d <<= 1) {
        int peer = me ^ d, mine = me & ~(d - 1), theirs = peer & ~(d - 1);
        size_t m0 = block_start(count, n, mine), m1 = block_start(count, n, mine + d);
        size_t t0 = block_start(count, n, theirs), t1 = block_start(count, n, theirs + d);
        int round = run->ntasks;
        /* the blocks of the rank's group of d, which the last round completed, for the peer's */
        AC_CHECK(add_p2p(run, op, AC_COLL_SEND, peer, rb + m0 * tb, m1 - m0, ROUNDS_SET));
        AC_CHECK(add_p2p(run, op, AC_COLL_RECV, peer, rb + t0 * tb, t1 - t0, ROUNDS_SET));
        wait_for_earlier(run, first, round);
    }
    return ncclSuccess;
}

static ncclResult_t add_doubling_op(struct ac_run *run, const struct ac_op *op)
{
    int n = op->comm->nranks, me = op->comm->rank;
    size_t blk = op->count * ac_type_size(op->type);
    char *rb = op->recvbuff;
    ac_kern_copy_user(rb + (size_t)me * blk, op->sendbuff, blk);
    return add_doubling_rounds(run, op, rb, op->count * (size_t)n, run->ntasks);
}

/* Reduce-scatters between ranks joined by the network, on 2^k ranks (is_doubling_worth), up to
 * AC_DOUBLING_MAX_BYTES of input: recursive halving, log2(n) rounds instead of the ring's n - 1
 * steps. In the round at distance d a rank swaps half of its group's blocks with the rank whose
 * number differs in bit d: it sends the half the peer keeps and reduces the peer's values of
 * its own half into a scratch buffer (the last round into recvbuff). Each block is reduced on
 * its owner only, so no order needs to agree between ranks. Not for avg and premulsum (their
 * inputs are scaled once); the reducing receives never read the sender's memory directly (that
 * would skip the reduction). 4 ranks over loopback TCP: 16 B 69 -> 42 us (Open MPI: 45); blocks
 * of calls alternated with the ring in one launch, 4 ranks: 64 KiB of input 98 -> 77 us, 256
 * KiB 338 -> 265, 512 KiB 707 -> 433; 8 ranks: 128 KiB 423 -> 320, 512 KiB 1238 -> 838. Across
 * nodes only while each transfer stays below HALVING_NODES_MAX_BYTES, as far as it was measured
 * there: with several ranks per node the pairs cross between nodes more often than the ring. */
#define HALVING_NODES_MAX_BYTES (32 * 1024)

static bool use_halving(const struct ac_run *run, const struct ac_op *op)
{
    size_t blk = op->count * ac_type_size(op->type);
    size_t n = (size_t)op->comm->nranks;
    bool is_one_host = op->comm->layout.nnodes == 1;
    return op->coll == AC_COLL_REDUCESCATTER && is_doubling_worth(run, op) && blk > 0 &&
           blk <= AC_DOUBLING_MAX_BYTES / n &&
           (is_one_host || blk * (n / 2) < HALVING_NODES_MAX_BYTES) && !op->redop.has_premul &&
           op->redop.postdiv <= 1;
}

static ncclResult_t add_halving_op(struct ac_run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    int n = comm->nranks, me = comm->rank;
    size_t cnt = op->count, blk = cnt * ac_type_size(op->type);
    size_t bytes = (sizeof(struct ac_scratch) + blk * (size_t)(n / 2) + 63) & ~(size_t)63;
    struct ac_scratch *s = aligned_alloc(64, bytes); /* a multiple of the alignment, as C11 asks */
    if (!s)
        return AC_FAIL(ncclSystemError, "out of memory for a reduce-scatter's partial results");
    s->next = run->scratch;
    run->scratch = s;
    int held = me & (n / 2); /* the first block of the half the scratch holds */
    int first = run->ntasks;
    for (int d = n / 2; d >= 1; d /= 2) {
        int peer = me ^ d, lo = me & ~(2 * d - 1);
        int mine = lo | (me & d), theirs = lo | (peer & d); /* first blocks of the halves */
        int round = run->ntasks;
        /* the first round reads the input and fills the scratch; later ones reduce in it, the
         * last into recvbuff */
        bool is_first = d == n / 2;
        const char *from = is_first ? (const char *)op->sendbuff : s->data;
        int base = is_first ? 0 : held; /* `from` holds the blocks from this one on */
        char *dst = d == 1 ? op->recvbuff : s->data + (size_t)(mine - held) * blk;
        AC_CHECK(add_p2p_how(run, op, AC_COLL_SEND, peer, from + (size_t)(theirs - base) * blk,
                             (size_t)d * cnt, ROUNDS_SET, false));
        AC_CHECK(add_p2p_how(run, op, AC_COLL_RECV, peer, dst, (size_t)d * cnt, ROUNDS_SET, false));
        struct ac_task *rr = &run->tasks[run->ntasks - 1].t;
        rr->sendbuff = from + (size_t)(mine - base) * blk;
        rr->is_recv_reduce = true;
        wait_for_earlier(run, first, round);
    }
    return ncclSuccess;
}

/* Larger allreduces between the ranks of one host joined by sockets, on 2^k ranks
 * (is_doubling_worth): Rabenseifner's algorithm, a reduce-scatter by recursive halving into the
 * output, then an allgather by recursive doubling there. 2 log2(n) rounds where the ring takes
 * 2 (n - 1) steps, each a trip through the network stack and, where ranks share cores, a turn of
 * the scheduler; each rank sends the same bytes as in the ring. The vector is cut into n blocks
 * of nearly equal counts (block_start); as in add_halving_op each element is reduced on one rank
 * only, not for avg and premulsum, and the reducing receives never read the sender's memory
 * directly (that would skip the reduction). Blocks of calls alternated in one launch (ring
 * against this), loopback TCP, 4 ranks on 2 cores: 48 KiB 196 -> 121 us, 256 KiB 353 -> 279, 1
 * MiB 1413 -> 890, 4 MiB 8447 -> 5866, 16 MiB 29.7 -> 23.6 ms, 32 MiB 52.5 -> 50.6 (within the
 * noise), 64 MiB 129 -> 136; 8 ranks: 64 KiB 570 -> 369, 1 MiB 5233 -> 3240, 8 MiB 45.3 -> 31.1
 * ms. One host only: several ranks per node would send a third more bytes between nodes than
 * the ring (2 nodes of 2 ranks: 2 against 1.5 times the vector out of each node), and with one
 * rank per node it was slower on the multi-node bed (4 nodes, NICs capped at 1 Gb/s: 4 MiB 76-88
 * against the ring's 52 ms, 16 MiB 252-304 against 210). */
#define HALVING_ALLREDUCE_MAX_BYTES (16u << 20)

static bool use_halving_allreduce(const struct ac_run *run, const struct ac_op *op)
{
    size_t bytes = op->count * ac_type_size(op->type);
    return op->coll == AC_COLL_ALLREDUCE && is_doubling_worth(run, op) &&
           op->comm->layout.nnodes == 1 && bytes > DOUBLING_ALLREDUCE_MAX_BYTES &&
           bytes <= HALVING_ALLREDUCE_MAX_BYTES && op->count >= (size_t)op->comm->nranks &&
           !op->redop.has_premul && op->redop.postdiv <= 1;
}

static ncclResult_t add_halving_allreduce(struct ac_run *run, const struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    int n = comm->nranks, me = comm->rank;
    size_t cnt = op->count, tb = ac_type_size(op->type);
    char *rb = op->recvbuff;
    int first = run->ntasks;
    for (int d = n / 2; d >= 1; d /= 2) {
        int peer = me ^ d, lo = me & ~(2 * d - 1);
        int mine = lo | (me & d), theirs = lo | (peer & d); /* first blocks of the halves */
        size_t m0 = block_start(cnt, n, mine), m1 = block_start(cnt, n, mine + d);
        size_t t0 = block_start(cnt, n, theirs), t1 = block_start(cnt, n, theirs + d);
        int round = run->ntasks;
        /* the first round reads the input, later ones the partial results in the output */
        const char *from = d == n / 2 ? (const char *)op->sendbuff : rb;
        AC_CHECK(
            add_p2p_how(run, op, AC_COLL_SEND, peer, from + t0 * tb, t1 - t0, ROUNDS_SET, false));
        AC_CHECK(
            add_p2p_how(run, op, AC_COLL_RECV, peer, rb + m0 * tb, m1 - m0, ROUNDS_SET, false));
        struct ac_task *rr = &run->tasks[run->ntasks - 1].t;
        rr->sendbuff = from + m0 * tb;
        rr->is_recv_reduce = true;
        wait_for_earlier(run, first, round);
    }
    return add_doubling_rounds(run, op, rb, cnt, first);
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
        ac_kern_copy_user(r->recvbuff, s->sendbuff, s->count * ac_type_size(s->type));
        s->peer = r->peer = -1; /* consumed */
    }
    for (struct ac_op *r = ops; r; r = r->next)
        if (r->coll == AC_COLL_RECV && r->peer == r->comm->rank)
            return AC_FAIL(ncclInvalidUsage,
                           "rank %d: ncclRecv from itself without a matching ncclSend to itself "
                           "in the same group", r->comm->rank);
    return ncclSuccess;
}

/* A lone collective's tasks depend only on the call's arguments, the settings and the
 * communicator's fixed shape, and loops repeat the same call: the communicator keeps the last lone
 * call's tasks and an identical next call takes them as they are. Planning was a quarter of a
 * small allreduce's path, and about 1000 instructions of a small all-to-all's. Only plans whose
 * one side effect is the copy of the rank's own block are kept (which the reused plan repeats):
 * no scratch, no rounds; with tuning logs on, every call is planned so that each logs its
 * choice. */
#define MEMO_MAX_TASKS AC_RUN_INLINE_TASKS

struct ac_plan_memo {
    const struct ac_config *cfg; /* the settings it was planned under (ac_config_reload) */
    enum ac_coll coll;
    const void *sendbuff;
    void *recvbuff;
    size_t count;
    ncclDataType_t type;
    struct ac_redop redop;
    int root;
    struct own_copy own;
    int ntasks;
    struct ac_task tasks[MEMO_MAX_TASKS];
};

static bool is_memo_of(const struct ac_plan_memo *m, const struct ac_op *op)
{
    const struct ac_redop *a = &m->redop, *b = &op->redop;
    return m->cfg == ac_config_get() && m->coll == op->coll && m->sendbuff == op->sendbuff &&
           m->recvbuff == op->recvbuff && m->count == op->count && m->type == op->type &&
           m->root == op->root && a->type == b->type && a->kind == b->kind &&
           a->has_premul == b->has_premul && a->scalar == b->scalar && a->postdiv == b->postdiv;
}

/* A call on registered buffers whose ranks vote whether to run it in place (board_direct.c).
 * Not over cross-memory attach's single-copy tasks, whose senders pass their connector on after
 * their first step: a task skipped unexecuted (the call done in place) has no first step. */
static bool takes_vote(const struct ac_run *run, const struct ac_op *op)
{
    return !run->is_device && ac_board_direct_is_candidate(op) && !use_direct(op);
}

/* Not a call that takes a vote: a plan recalled would skip it. */
static bool can_memo(const struct ac_run *run, const struct ac_op *ops)
{
    return !ops->next && !run->is_device && !ac_log_enabled(AC_LOG_INFO, AC_SUB_TUNING) &&
           !takes_vote(run, ops);
}

static bool recall(struct ac_run *run, const struct ac_op *op)
{
    const struct ac_plan_memo *m = op->comm->plan_memo;
    if (!m || !is_memo_of(m, op))
        return false;
    run->comms[run->ncomms++] = op->comm;
    for (int i = 0; i < m->ntasks; i++) {
        struct ac_run_task *rt = &run->tasks[run->ntasks++];
        memset(rt, 0, sizeof(*rt));
        rt->t = m->tasks[i];
        rt->comm = op->comm;
    }
    copy_own_block(run, op->comm, &m->own);
    return true;
}

static void remember(const struct ac_run *run, const struct ac_op *op, const struct own_copy *own)
{
    struct ncclComm *comm = op->comm;
    if (run->ntasks > MEMO_MAX_TASKS || run->scratch)
        return;
    for (int i = 0; i < run->ntasks; i++)
        if (run->tasks[i].wait_end > run->tasks[i].wait_first)
            return;
    if (!comm->plan_memo && !(comm->plan_memo = malloc(sizeof(*comm->plan_memo))))
        return; /* only a missed shortcut */
    struct ac_plan_memo *m = comm->plan_memo;
    m->cfg = ac_config_get();
    m->coll = op->coll;
    m->sendbuff = op->sendbuff;
    m->recvbuff = op->recvbuff;
    m->count = op->count;
    m->type = op->type;
    m->redop = op->redop;
    m->root = op->root;
    m->own = *own;
    m->ntasks = run->ntasks;
    for (int i = 0; i < run->ntasks; i++)
        m->tasks[i] = run->tasks[i].t;
}

/* A call on the board (src/core/board.h): one task, no connectors. */
static ncclResult_t add_board_task(struct ac_run *run, const struct ac_op *op)
{
    struct ac_task t;
    base_task(op, &t);
    t.is_board = true;
    t.nsteps = 1;
    AC_CHECK(add_task(run, op->comm, &t));
    struct ac_run_task *rt = &run->tasks[run->ntasks - 1];
    rt->board_op = op;
    rt->board_prev = -1;
    for (int k = run->ntasks - 2; k >= 0 && rt->board_prev < 0; k--)
        if (run->tasks[k].t.is_board && run->tasks[k].comm == op->comm)
            rt->board_prev = k;
    return ncclSuccess;
}

/* A call on registered buffers (board.h): the task that votes and, alone in its run, does the
 * work when every rank voted yes. In a group, or where this rank's buffers are not shared, it
 * only votes no. */
static ncclResult_t add_board_direct_task(struct ac_run *run, const struct ac_op *op,
                                          bool is_vote_only)
{
    AC_CHECK(add_board_task(run, op));
    struct ac_run_task *rt = &run->tasks[run->ntasks - 1];
    rt->is_board_direct = true;
    rt->direct.is_vote_only = is_vote_only;
    return ncclSuccess;
}

ncclResult_t ac_plan_build(struct ac_run *run, struct ac_op *ops)
{
    bool is_memo = can_memo(run, ops);
    if (is_memo && recall(run, ops))
        return ncclSuccess;
    AC_CHECK(match_self(ops));
    for (struct ac_op *op = ops; op; op = op->next) {
        AC_CHECK(add_comm(run, op->comm));
        if (!run->is_device && ac_board_takes(op)) {
            AC_CHECK(add_board_task(run, op));
            continue;
        }
        int gate = 0, first_gated = 0;
        if (takes_vote(run, op)) {
            /* the connectors' tasks come with the vote, to run only if some rank votes no: the
             * ranks then all use the same connections in that run */
            bool is_vote_only = ops->next != NULL || !ac_board_direct_can(op);
            AC_CHECK(add_board_direct_task(run, op, is_vote_only));
            gate = is_vote_only ? 0 : run->ntasks;
            first_gated = run->ntasks;
        }
        switch (op->coll) {
        case AC_COLL_SEND:
        case AC_COLL_RECV:
            if (op->peer >= 0)
                AC_CHECK(add_p2p(run, op, op->coll, op->peer,
                                 op->coll == AC_COLL_SEND ? op->sendbuff : op->recvbuff,
                                 op->count, AC_P2P_CONN_BASE));
            break;
        case AC_COLL_ALLTOALL:
        case AC_COLL_GATHER:
        case AC_COLL_SCATTER: {
            struct own_copy own = {0};
            AC_CHECK(add_exchange_op(run, op, &own));
            copy_own_block(run, op->comm, &own);
            if (is_memo && is_exchange_reusable(op))
                remember(run, op, &own);
            break;
        }
        default:
            if (!run->is_device && use_direct(op))
                AC_CHECK(add_direct_op(run, op));
            else if (use_doubling(run, op))
                AC_CHECK(add_doubling_op(run, op));
            else if (use_halving(run, op))
                AC_CHECK(add_halving_op(run, op));
            else if (use_halving_allreduce(run, op))
                AC_CHECK(add_halving_allreduce(run, op));
            else if (op->count > 0) {
                AC_CHECK(add_coll_op(run, op));
                if (is_memo)
                    remember(run, op, &(struct own_copy){0});
            }
            break;
        }
        for (int i = first_gated; gate > 0 && i < run->ntasks; i++)
            run->tasks[i].direct_gate = gate;
    }
    return ncclSuccess;
}

void ac_plan_init(struct ac_run *run)
{
    run->scratch = NULL;
    run->tasks = run->inline_tasks;
    run->ntasks = 0;
    run->cap = AC_RUN_INLINE_TASKS;
    run->comms = run->inline_comms;
    run->ncomms = 0;
    run->comms_cap = AC_RUN_INLINE_COMMS;
    run->ncopies = 0;
    run->is_device = false;
}

void ac_plan_free(struct ac_run *run)
{
    while (run->scratch) {
        struct ac_scratch *next = run->scratch->next;
        free(run->scratch);
        run->scratch = next;
    }
    if (run->tasks != run->inline_tasks)
        free(run->tasks);
    if (run->comms != run->inline_comms)
        free(run->comms);
    ac_plan_init(run);
}
