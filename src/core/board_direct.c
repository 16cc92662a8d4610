/* Allreduces, allgathers and reduce-scatters in place on registered shared buffers (board.h):
 * where every rank's buffers that its peers read lie in memory from ncclMemAlloc (a memfd on the
 * host backend) registered with the communicator, each rank maps its peers' buffers and reads
 * them itself, instead of the data passing through the connectors' slots (two copies per byte
 * that crosses ranks there, one here).
 *
 * A call of at least the communicator's ANYCCL_P2P_DIRECT_MIN_BYTES is a candidate on every rank
 * alike. Its ranks vote on the board, each posting whether it can go direct and where its buffers
 * are (memfd, offset); a call of a group, or whose buffers this rank cannot share, votes no and
 * goes on. Every rank plans the call's connector tasks with the vote (src/core/plan.c): where it
 * voted yes they wait for the decision, and pass their turns on unexecuted when the call ran in
 * place. When every rank voted yes, each copies every rank's block (allgather) or computes its
 * own block of the result from every rank's input (reduce-scatter) and posts that it is done;
 * an allreduce's owners reduce their blocks in chunks that the others copy as they come (a
 * counter on the board), then post. A rank returns only once every rank posted its last step:
 * until then a peer may still read its buffers. */
#include "core/board.h"

#include "common/check.h"
#include "common/log.h"
#include "common/time.h"
#include "core/comm.h"
#include "device/kernels/reduce.h"
#include "transport/shm/shm_region.h"
#include "transport/slot_store.h"

#include <stdlib.h>
#include <string.h>

/* What a rank posts at a call's vote. */
struct vote {
    uint32_t can;
    uint32_t pad;
    uint64_t scalar; /* premulsum: this rank's scalar */
    struct ac_region_ref send, recv;
};

#define STORE_CLASSES 5

/* Each rank's buffers as this rank addresses them (its own, or its mappings of its peers'). */
struct ac_board_direct {
    const char *send[AC_BOARD_MAX_RANKS];
    const char *recv[AC_BOARD_MAX_RANKS];
    struct vote votes[AC_BOARD_MAX_RANKS];
    /* an allreduce's pipeline: chunks of this rank's block reduced, of each peer's copied */
    size_t nmine, ngot[AC_BOARD_MAX_RANKS];
    /* how this rank's chunks of the result have cost to write lately, by the size of its block
     * (STORE_CLASSES powers of 4 from 64 KiB) */
    struct ac_slot_stores stores[STORE_CLASSES];
    bool has_logged;
};

enum {
    PHASE_VOTE,
    PHASE_DECIDE,
    PHASE_POST_PIPE, /* allreduce: its counter of chunks reduced */
    PHASE_PIPE,
    PHASE_POST_LAST, /* this rank read what it needs from its peers' buffers */
    PHASE_WAIT_LAST,
    PHASE_DONE,
};

/* An allreduce's blocks are reduced and copied in chunks of this many bytes: a peer copies a
 * chunk of the result while its owner reduces the next, both cores busy, and the chunk still in
 * a cache. */
#define PIPE_CHUNK_BYTES (32 * 1024)

/* What a rank posts for the pipeline: the chunks of its block reduced so far, which it raises
 * (store-release) as it goes. */
struct pipe_record {
    uint64_t nready;
};

static size_t type_bytes(const struct ac_op *op)
{
    return ac_type_size(op->type);
}

/* The bytes of each buffer the peers read: the input (a reduce-scatter's whole input), and an
 * allreduce's output. */
static size_t send_bytes(const struct ac_op *op)
{
    size_t bytes = op->count * type_bytes(op);
    return op->coll == AC_COLL_REDUCESCATTER ? bytes * (size_t)op->comm->nranks : bytes;
}

bool ac_board_direct_is_candidate(const struct ac_op *op)
{
    size_t min = ac_board_direct_min(op->comm);
    if (min == 0 || op->backend || op->count == 0)
        return false;
    size_t bytes = op->count * type_bytes(op);
    switch (op->coll) {
    case AC_COLL_ALLREDUCE:
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        bytes *= (size_t)op->comm->nranks;
        break;
    default:
        return false;
    }
    return bytes >= min && !ac_board_takes(op);
}

/* Where buf lies in a registered shared region of this process; false if it does not. */
static bool find_shared(struct ncclComm *comm, const void *buf, size_t bytes,
                        struct ac_region_ref *ref)
{
    return ac_region_find(buf, bytes, ref) && ac_comm_is_registered(comm, buf, bytes);
}

/* Whether this rank can go direct: its buffers that the peers read lie in registered shared
 * regions (refs filled in), and it may open the peers' memfds (the permission cross-memory
 * attach takes, probed at init). */
static bool can_go(const struct ac_op *op, struct vote *v)
{
    struct ncclComm *comm = op->comm;
    return comm->peers[comm->rank].can_cma &&
           find_shared(comm, op->sendbuff, send_bytes(op), &v->send) &&
           (op->coll != AC_COLL_ALLREDUCE ||
            find_shared(comm, op->recvbuff, send_bytes(op), &v->recv));
}

bool ac_board_direct_can(const struct ac_op *op)
{
    struct vote v;
    return can_go(op, &v);
}

/* Rank r's buffer ref, mapped here; the buffer must lie within the region the peer named. */
static ncclResult_t map_one(const struct ac_op *op, int r, const struct ac_region_ref *ref,
                            const char **addr_out)
{
    struct ncclComm *comm = op->comm;
    const struct ac_peer_info *p = &comm->peers[r];
    size_t bytes = send_bytes(op);
    if (ref->offset > ref->region_bytes || bytes > ref->region_bytes - ref->offset)
        return AC_FAIL(ncclInternalError,
                       "rank %d: rank %d's buffer for %s (%zu bytes at offset %llu) does not lie "
                       "within its shared region of %llu bytes",
                       comm->rank, r, ac_coll_name(op->coll), bytes,
                       (unsigned long long)ref->offset, (unsigned long long)ref->region_bytes);
    const void *addr;
    AC_CHECK(ac_region_map(&comm->region_cache, p->pid, r, p->hostname, ref, &addr));
    *addr_out = addr;
    return ncclSuccess;
}

/* Maps every peer's buffers (the vote said they can be). */
static ncclResult_t map_peers(const struct ac_op *op, struct ac_board_direct *d)
{
    struct ncclComm *comm = op->comm;
    for (int r = 0; r < comm->nranks; r++) {
        if (r == comm->rank) {
            d->send[r] = op->sendbuff;
            d->recv[r] = op->recvbuff;
            continue;
        }
        d->recv[r] = NULL;
        AC_CHECK(map_one(op, r, &d->votes[r].send, &d->send[r]));
        if (op->coll == AC_COLL_ALLREDUCE)
            AC_CHECK(map_one(op, r, &d->votes[r].recv, &d->recv[r]));
    }
    return ncclSuccess;
}

/* An allreduce's block k: [*off, *off + *len) in elements, 64-byte aligned. */
static void block_of(const struct ac_op *op, int k, size_t *off, size_t *len)
{
    size_t n = (size_t)op->comm->nranks, align = 64 / type_bytes(op);
    if (align == 0)
        align = 1;
    size_t per = ((op->count + n - 1) / n + align - 1) / align * align;
    *off = (size_t)k * per < op->count ? (size_t)k * per : op->count;
    *len = op->count - *off < per ? op->count - *off : per;
}

/* dst = every rank's elements [off, off + len) of src_off bytes into its input, reduced: this
 * rank's first (dst may be its own input, in place), then the others in rank order. The block is
 * computed by one rank only and copied by the others, so the order needs no agreement. */
static void fold(const struct ac_op *op, const struct ac_board_direct *d, size_t src_off,
                 size_t len, char *dst)
{
    int n = op->comm->nranks, me = op->comm->rank;
    const struct ac_redop *r0 = &op->redop;
    if (len == 0)
        return;
    if (r0->has_premul) {
        ac_kern_load(r0, dst, d->send[me] + src_off, len, false);
        for (int k = 1; k < n; k++) {
            int r = (me + k) % n;
            struct ac_redop rr = *r0;
            rr.scalar = d->votes[r].scalar;
            ac_kern_reduce(&rr, dst, dst, d->send[r] + src_off, len, k == n - 1);
        }
        return;
    }
    ac_kern_combine(r0, dst, d->send[me] + src_off, d->send[(me + 1) % n] + src_off, len, n == 2);
    for (int k = 2; k < n; k++)
        ac_kern_combine(r0, dst, dst, d->send[(me + k) % n] + src_off, len, k == n - 1);
}

/* fold, written with non-temporal stores through a stage in L1 */
#define STAGE_BYTES 4096
static void fold_streamed(const struct ac_op *op, const struct ac_board_direct *d, size_t src_off,
                          size_t len, char *dst)
{
    static __thread char stage[STAGE_BYTES] __attribute__((aligned(64)));
    size_t ts = type_bytes(op), block = STAGE_BYTES / ts;
    for (size_t off = 0; off < len; off += block) {
        size_t n = len - off < block ? len - off : block;
        fold(op, d, src_off + off * ts, n, stage);
        ac_kern_copy_stream(dst + off * ts, stage, n * ts);
    }
}

/* Chunks written before the stores are compared: the first of a communicator. */
#define STORE_WARMUP 4

/* Writes a chunk of this rank's block of an allreduce's result (block_bytes in all), which its
 * peers read next; with plain stores, or streaming ones where plain stores have cost more
 * lately (transport/slot_store.h): the lines of the block are then still in the caches of the
 * peers that read them at the previous call, and each plain store waits for them there, which
 * costs the most where the host runs the ranks' cores apart. On 2 ranks, 128-512 KiB, in such a
 * phase: 45 -> 13, 72 -> 23, 138 -> 43 us per call; at 4 MiB plain stores did better (183
 * against 297). Not where ranks share cores: the peer is often this very core. */
static void write_chunk(const struct ac_op *op, struct ac_board_direct *d, size_t block_bytes,
                        size_t src_off, size_t len, char *dst)
{
    if (op->comm->is_oversubscribed) {
        fold(op, d, src_off, len, dst);
        return;
    }
    int c = 0;
    for (size_t b = 64 * 1024; c < STORE_CLASSES - 1 && block_bytes > b; b *= 4)
        c++;
    struct ac_slot_stores *s = &d->stores[c];
    bool is_probe;
    uint64_t t0 = ac_now_ns();
    enum ac_store store =
        ac_slot_store_pick(s, AC_STORE_COMPUTED, t0, STORE_WARMUP, AC_STORE_PLAIN, &is_probe);
    if (store == AC_STORE_STREAM)
        fold_streamed(op, d, src_off, len, dst);
    else
        fold(op, d, src_off, len, dst);
    uint64_t t1 = ac_now_ns();
    ac_slot_store_note(s, AC_STORE_COMPUTED, store, is_probe, len * type_bytes(op), t1 - t0, t1,
                       STORE_WARMUP);
}

/* An allgather's or reduce-scatter's share of this rank: every block of an allgather, its own
 * block of a reduce-scatter's result. */
static void take_share(const struct ac_op *op, const struct ac_board_direct *d)
{
    int n = op->comm->nranks, me = op->comm->rank;
    size_t blk = op->count * type_bytes(op);
    if (op->coll == AC_COLL_REDUCESCATTER) {
        fold(op, d, (size_t)me * blk, op->count, op->recvbuff);
        return;
    }
    for (int k = 0; k < n; k++) {
        int r = (me + k) % n;
        ac_kern_copy_user((char *)op->recvbuff + (size_t)r * blk, d->send[r], blk);
    }
}

static size_t chunk_elems(const struct ac_op *op)
{
    return PIPE_CHUNK_BYTES / type_bytes(op);
}

static size_t nchunks(size_t len, size_t per)
{
    return (len + per - 1) / per;
}

/* Elements [*off, *off + *len) of chunk i of rank r's block. */
static void chunk_of(const struct ac_op *op, int r, size_t i, size_t *off, size_t *len)
{
    size_t boff, blen, per = chunk_elems(op);
    block_of(op, r, &boff, &blen);
    *off = boff + i * per;
    *len = blen - i * per < per ? blen - i * per : per;
}

/* An allreduce's result from this size on is copied from the peers' blocks with streaming
 * stores: the caches no longer hold it for the caller, and plain stores would read every line
 * first. 2 ranks, alternated in one launch: 16 MiB 2380 -> 2235 us, 64 MiB 10.4 -> 9.7 ms; at 1
 * and 4 MiB streaming was 14-16 % slower. */
#define RESULT_STREAM_MIN_BYTES (16u << 20)

static void copy_result(char *dst, const char *src, size_t bytes, size_t result_bytes)
{
    if (result_bytes >= RESULT_STREAM_MIN_BYTES)
        ac_kern_copy_stream(dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}

/* One turn of an allreduce's pipeline: reduces this rank's next chunk, and copies every chunk of
 * the peers' blocks they have reduced; *is_done once all is. */
static void pipe_turn(const struct ac_op *op, struct ac_board_direct *d, uint64_t seq, bool *moved,
                      bool *is_done)
{
    int n = op->comm->nranks, me = op->comm->rank;
    size_t ts = type_bytes(op), per = chunk_elems(op), off, len, boff, blen;
    char *out = op->recvbuff;
    block_of(op, me, &boff, &blen);
    if (d->nmine < nchunks(blen, per)) {
        chunk_of(op, me, d->nmine, &off, &len);
        write_chunk(op, d, blen * ts, off * ts, len, out + off * ts);
        struct pipe_record *mine = ac_board_record(op, seq, me);
        __atomic_store_n(&mine->nready, ++d->nmine, __ATOMIC_RELEASE);
        *moved = true;
    }
    *is_done = d->nmine == nchunks(blen, per);
    for (int k = 1; k < n; k++) {
        int r = (me + k) % n;
        block_of(op, r, &boff, &blen);
        size_t all = nchunks(blen, per);
        const struct pipe_record *theirs = d->ngot[r] < all ? ac_board_record(op, seq, r) : NULL;
        size_t ready = theirs ? __atomic_load_n(&theirs->nready, __ATOMIC_ACQUIRE) : 0;
        for (; d->ngot[r] < ready; d->ngot[r]++) {
            chunk_of(op, r, d->ngot[r], &off, &len);
            copy_result(out + off * ts, d->recv[r] + off * ts, len * ts, op->count * ts);
            *moved = true;
        }
        *is_done = *is_done && d->ngot[r] == all;
    }
}

static ncclResult_t decide(const struct ac_op *op, struct ac_board_direct *d, bool *is_direct)
{
    struct ncclComm *comm = op->comm;
    *is_direct = true;
    for (int r = 0; r < comm->nranks; r++)
        *is_direct = *is_direct && d->votes[r].can;
    if (*is_direct) {
        d->nmine = 0;
        memset(d->ngot, 0, sizeof(d->ngot));
        AC_CHECK(map_peers(op, d));
        if (!d->has_logged) {
            d->has_logged = true;
            AC_INFO(AC_SUB_COLL | AC_SUB_SHM,
                    "%s of %zu elements: every rank reads its peers' registered buffers in place",
                    ac_coll_name(op->coll), op->count);
        }
    }
    return ncclSuccess;
}

ncclResult_t ac_board_direct_advance(const struct ac_op *op, struct ac_board_direct_task *t,
                                     bool *progressed)
{
    struct ncclComm *comm = op->comm;
    if (!comm->board_direct && !(comm->board_direct = calloc(1, sizeof(*comm->board_direct))))
        return AC_FAIL(ncclSystemError, "out of memory");
    struct ac_board_direct *d = comm->board_direct;
    for (;;) {
        bool is_done;
        switch (t->phase) {
        case PHASE_VOTE: {
            struct vote v = {.scalar = op->redop.scalar};
            v.can = !t->is_vote_only && can_go(op, &v);
            _Static_assert(sizeof(v) <= AC_BOARD_MAX_BYTES, "vote too large");
            if (!ac_board_post_record(op, &v, sizeof(v), &t->seq))
                return ncclSuccess;
            if (t->is_vote_only) {
                /* its no decides: nothing to read */
                ac_board_skip(op, t->seq);
                t->is_declined = true;
                t->phase = PHASE_DONE;
            } else {
                t->phase = PHASE_DECIDE;
            }
            break;
        }
        case PHASE_DECIDE: {
            AC_CHECK(ac_board_take_records(op, t->seq, d->votes, sizeof(d->votes[0]), &is_done));
            if (!is_done)
                return ncclSuccess;
            bool is_direct;
            AC_CHECK(decide(op, d, &is_direct));
            t->seq = 0;
            if (!is_direct) {
                t->is_declined = true;
                t->phase = PHASE_DONE;
            } else if (op->coll == AC_COLL_ALLREDUCE) {
                t->phase = PHASE_POST_PIPE;
            } else {
                take_share(op, d);
                t->phase = PHASE_POST_LAST;
            }
            break;
        }
        case PHASE_POST_PIPE: {
            struct pipe_record none = {0};
            if (!ac_board_post_record(op, &none, sizeof(none), &t->seq))
                return ncclSuccess;
            t->phase = PHASE_PIPE;
            break;
        }
        case PHASE_PIPE: {
            bool moved = false;
            pipe_turn(op, d, t->seq, &moved, &is_done);
            if (!moved && !is_done)
                return ncclSuccess;
            if (is_done) {
                ac_board_skip(op, t->seq); /* read through, as they went */
                t->seq = 0;
                t->phase = PHASE_POST_LAST;
            }
            break;
        }
        case PHASE_POST_LAST:
            if (!ac_board_post_record(op, NULL, 0, &t->seq))
                return ncclSuccess;
            t->phase = PHASE_WAIT_LAST;
            break;
        case PHASE_WAIT_LAST:
            AC_CHECK(ac_board_take_records(op, t->seq, NULL, 0, &is_done));
            if (!is_done)
                return ncclSuccess;
            t->seq = 0;
            t->phase = PHASE_DONE;
            break;
        default:
            return ncclSuccess;
        }
        *progressed = true;
        if (t->phase == PHASE_DONE)
            return ncclSuccess;
    }
}

int ac_board_direct_missing(const struct ac_op *op, const struct ac_board_direct_task *t)
{
    const struct ac_board_direct *d = op->comm->board_direct;
    if (t->phase != PHASE_PIPE || !d)
        return ac_board_missing(op, t->seq);
    int n = op->comm->nranks, me = op->comm->rank;
    size_t per = chunk_elems(op), off, len;
    for (int k = 1; k < n; k++) {
        int r = (me + k) % n;
        block_of(op, r, &off, &len);
        if (d->ngot[r] < nchunks(len, per))
            return r;
    }
    return -1;
}

bool ac_board_direct_is_done(const struct ac_board_direct_task *t)
{
    return t->phase == PHASE_DONE;
}
