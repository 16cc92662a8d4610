/* The board (board.h): one shared-memory segment per communicator, created by rank 0 and mapped
 * by every rank of the host. Rank r's part: its current collective on one line, then
 * BOARD_NSLOTS slots, each a header line and AC_BOARD_MAX_BYTES of data. Ordering: the writer
 * fills a slot's data and header, then store-releases its number; a reader load-acquires the
 * number before reading. */
#include "core/board.h"

#include "common/check.h"
#include "common/config.h"
#include "common/time.h"
#include "core/api.h"
#include "core/comm.h"
#include "device/backend.h"
#include "device/kernels/reduce.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LINE 128

/* What a call is, as ranks compare it (as the connectors' tags do: collectives that only move
 * data compare bytes, whatever types carry them). */
struct board_call {
    uint32_t coll;
    int32_t type; /* -1: not a reduction */
    uint32_t op;  /* kind | 4 premulsum | 8 avg: the scalar may differ between ranks */
    int32_t root;
    uint64_t count; /* bytes where type is -1 */
};

/* A rank's current collective: `version` is odd while the rank rewrites it (a sequence lock:
 * peers read it only in health checks). */
struct board_now {
    _Alignas(LINE) uint64_t version;
    uint64_t coll_seq;
    struct board_call call;
};

/* The data starts in the header's line: a small input crosses cores with its number. */
struct board_slot {
    _Alignas(LINE) uint64_t seq; /* the board operation whose input the data is */
    struct board_call call;
    char data[AC_BOARD_MAX_BYTES];
};

/* Slots per rank: operation b uses slot b % BOARD_NSLOTS. More than two let a broadcast's root
 * post a few operations ahead of the others while knowing they have read the slot it rewrites,
 * without looking at their slots at every post. */
#define BOARD_NSLOTS 4

struct board_part {
    struct board_now now;
    struct board_slot slot[BOARD_NSLOTS];
};

struct ac_board {
    char *base;
    size_t bytes;
    size_t stride;           /* bytes per rank: a whole number of pages */
    uint64_t nposted, ndone; /* this rank's board operations */
    uint64_t *seen;          /* [rank]: the latest operation it was seen to have posted */
    bool has_bcast;          /* broadcasts too: no rank shares its core (agreed at init) */
    size_t direct_min; /* calls on registered buffers from this size (board_direct.c); 0: off */
};

static struct board_part *part(const struct ac_board *b, int rank)
{
    return (struct board_part *)(b->base + (size_t)rank * b->stride);
}

static struct board_call call_of(const struct ac_op *op)
{
    const struct ac_redop *r = &op->redop;
    bool is_rooted = op->coll == AC_COLL_BROADCAST || op->coll == AC_COLL_REDUCE ||
                     op->coll == AC_COLL_GATHER || op->coll == AC_COLL_SCATTER;
    bool is_reduction = ac_coll_reduces(op->coll);
    return (struct board_call){
        .coll = (uint32_t)op->coll,
        .type = is_reduction ? (int32_t)op->type : -1,
        .op = is_reduction ? (uint32_t)r->kind | (r->has_premul ? 4u : 0u) | (r->postdiv ? 8u : 0u)
                           : 0u,
        .root = is_rooted ? op->root : -1,
        .count = is_reduction ? op->count : op->count * ac_type_size(op->type),
    };
}

/* The board takes the collectives in which every rank needs every rank's input; and broadcasts,
 * whose root posts and returns, where no rank shares its core and up to BOARD_BCAST_MAX_BYTES.
 * Blocks of calls alternated in one launch between a communicator with the board and one
 * without, 2 ranks: 64 B 0.219 -> 0.144 us, 4 KiB 0.523 -> 0.384, 16 KiB 1.65 -> 1.89 (slower);
 * 4 ranks on 2 cores, 64 B 1.07 -> 3.90 us (with two slots per rank): a root posts only once
 * every rank has posted an operation a few before, where the connectors' slots let it run
 * further ahead, and where ranks share cores each wait is a turn of the scheduler. The other
 * rooted collectives keep the connectors: a reduce's or gather's other ranks return once their
 * data is sent, where on the board they would wait for the root. */
#define BOARD_BCAST_MAX_BYTES 4096 /* the INFO line at set-up says so */

/* ---- set-up ---- */

struct board_vote {
    uint32_t can;
    uint32_t is_oversubscribed;
    int64_t direct_min; /* rank 0's applies: -1 when registered buffers are not used in place */
    char name[64]; /* rank 0's: the segment's shm_open name */
};

/* This rank's part of the vote: the settings that keep small collectives off the board. */
static bool can_host(void)
{
    const struct ac_config *cfg = ac_config_get();
    return cfg->board && !cfg->shm_disable && (!cfg->algo || !*cfg->algo) &&
           (!cfg->proto || !*cfg->proto) && !ac_backends_have_gpu();
}

static size_t part_stride(void)
{
    size_t page = 4096;
    return (sizeof(struct board_part) + page - 1) / page * page;
}

/* Maps the segment (creating it when flags say so, its memory reserved: tmpfs would otherwise
 * overcommit and kill the process with SIGBUS on first touch). A failure only leaves the board
 * off, the connectors doing the same work: an INFO line, no error. */
static bool map_name(const char *name, int flags, size_t bytes, char **base_out)
{
    const char *what = "shm_open";
    int fd = shm_open(name, flags, 0600), err = 0;
    if (fd >= 0 && (flags & O_CREAT)) {
        what = "posix_fallocate";
        do {
            err = posix_fallocate(fd, 0, (off_t)bytes);
        } while (err == EINTR);
    }
    void *base = MAP_FAILED;
    if (fd >= 0 && err == 0) {
        what = "mmap";
        base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (err == 0 && (fd < 0 || base == MAP_FAILED))
        err = errno;
    if (fd >= 0)
        close(fd);
    if (err != 0 || base == MAP_FAILED) {
        AC_INFO(AC_SUB_INIT | AC_SUB_SHM,
                "no board for small collectives: %s of %s (%zu bytes) "
                "failed: %s",
                what, name, bytes, strerror(err));
        return false;
    }
    *base_out = base;
    return true;
}

static void board_free(struct ac_board *b)
{
    if (!b)
        return;
    if (b->base)
        munmap(b->base, b->bytes);
    free(b->seen);
    free(b);
}

static bool all_can(const struct board_vote *votes, int n)
{
    for (int r = 0; r < n; r++)
        if (!votes[r].can)
            return false;
    return true;
}

ncclResult_t ac_board_setup(struct ncclComm *comm)
{
    int n = comm->nranks, me = comm->rank;
    if (n < 2 || n > AC_BOARD_MAX_RANKS || comm->layout.nnodes != 1)
        return ncclSuccess; /* the same answer everywhere: no vote needed */
    struct board_vote *votes = calloc((size_t)n, sizeof(*votes));
    struct ac_board *b = calloc(1, sizeof(*b));
    if (b)
        b->seen = calloc((size_t)n, sizeof(*b->seen));
    if (!votes || !b || !b->seen) {
        free(votes);
        board_free(b);
        return AC_FAIL(ncclSystemError, "out of memory");
    }
    b->stride = part_stride();
    b->bytes = b->stride * (size_t)n;
    struct board_vote *mine = &votes[me];
    mine->can = can_host();
    mine->is_oversubscribed = comm->is_oversubscribed;
    const struct ac_config *cfg = ac_config_get();
    mine->direct_min = cfg->local_register ? cfg->p2p_direct_min_bytes : -1;
    if (mine->can && me == 0) {
        /* the clock tells apart a name a killed process with a reused pid left behind */
        snprintf(mine->name, sizeof(mine->name), "/anyccl-board-%016" PRIx64 "-%d-%08" PRIx32,
                 comm->comm_hash, (int)getpid(), (uint32_t)ac_now_ns());
        mine->can = map_name(mine->name, O_CREAT | O_EXCL | O_RDWR, b->bytes, &b->base);
    }
    ncclResult_t res = ac_bootstrap_allgather(comm->bs, votes, sizeof(*votes));
    bool is_on = res == ncclSuccess && all_can(votes, n);
    if (is_on && me != 0) {
        votes[0].name[sizeof(votes[0].name) - 1] = '\0';
        mine->can = map_name(votes[0].name, O_RDWR, b->bytes, &b->base);
    }
    /* rank 0 removes the name once every rank opened it (or gave up) */
    if (is_on)
        res = ac_bootstrap_allgather(comm->bs, votes, sizeof(*votes));
    is_on = is_on && res == ncclSuccess && all_can(votes, n);
    if (me == 0 && b->base)
        shm_unlink(mine->name);
    if (is_on) {
        comm->board = b;
        b->has_bcast = true;
        /* the smallest calls stay on the board itself */
        if (votes[0].direct_min >= 0)
            b->direct_min = (size_t)votes[0].direct_min > AC_BOARD_MAX_BYTES
                                ? (size_t)votes[0].direct_min
                                : AC_BOARD_MAX_BYTES + 1;
        for (int r = 0; r < n; r++)
            b->has_bcast &= !votes[r].is_oversubscribed;
        AC_INFO(AC_SUB_INIT | AC_SUB_SHM,
                "allreduces, allgathers, reduce-scatters and all-to-alls of up to %d bytes "
                "of input%s run on a shared board (%zu bytes)",
                AC_BOARD_MAX_BYTES, b->has_bcast ? ", broadcasts of up to 4096," : "", b->bytes);
    } else {
        board_free(b);
    }
    free(votes);
    return res;
}

void ac_board_free(struct ncclComm *comm)
{
    board_free(comm->board);
    comm->board = NULL;
    free(comm->board_direct);
    comm->board_direct = NULL;
}

size_t ac_board_direct_min(const struct ncclComm *comm)
{
    return comm->board ? comm->board->direct_min : 0;
}

/* ---- calls ---- */

/* The bytes `rank` posts for op: its whole input (a broadcast's other ranks post only the
 * operation's number). */
static size_t posted_bytes(const struct ac_op *op, int rank)
{
    size_t bytes = op->count * ac_type_size(op->type);
    if (op->coll == AC_COLL_BROADCAST)
        return rank == op->root ? bytes : 0;
    bool is_whole = op->coll == AC_COLL_REDUCESCATTER || op->coll == AC_COLL_ALLTOALL;
    return is_whole ? bytes * (size_t)op->comm->nranks : bytes;
}

bool ac_board_takes(const struct ac_op *op)
{
    const struct ac_board *b = op->comm->board;
    if (!b || op->backend || op->count == 0)
        return false;
    if (op->coll == AC_COLL_BROADCAST)
        return b->has_bcast && posted_bytes(op, op->root) <= BOARD_BCAST_MAX_BYTES;
    bool is_coll = op->coll == AC_COLL_ALLREDUCE || op->coll == AC_COLL_ALLGATHER ||
                   op->coll == AC_COLL_REDUCESCATTER || op->coll == AC_COLL_ALLTOALL;
    return is_coll && posted_bytes(op, 0) <= AC_BOARD_MAX_BYTES;
}

void ac_board_announce(const struct ac_op *op, uint64_t coll_seq)
{
    struct ac_board *b = op->comm->board;
    if (!b)
        return;
    struct board_now *now = &part(b, op->comm->rank)->now;
    uint64_t v = now->version;
    __atomic_store_n(&now->version, v + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    now->coll_seq = coll_seq;
    now->call = call_of(op);
    __atomic_store_n(&now->version, v + 2, __ATOMIC_RELEASE);
}

/* The first peer that has not started board operation seq + 1 - BOARD_NSLOTS (it has not
 * finished seq - BOARD_NSLOTS, the last to read the slot operation seq rewrites), -1 when all
 * have. What is seen of a peer's latest post is kept: a root of broadcasts looks again only every
 * few posts. */
static int blocking_peer(struct ac_board *b, const struct ncclComm *comm, uint64_t seq)
{
    uint64_t need = seq + 1 - BOARD_NSLOTS;
    for (int r = 0; seq > BOARD_NSLOTS && r < comm->nranks; r++) {
        if (r == comm->rank || b->seen[r] >= need)
            continue;
        for (uint64_t k = seq - 1; k >= need && b->seen[r] < need; k--)
            if (__atomic_load_n(&part(b, r)->slot[k % BOARD_NSLOTS].seq, __ATOMIC_ACQUIRE) == k)
                b->seen[r] = k;
        if (b->seen[r] < need)
            return r;
    }
    return -1;
}

/* The slot of this rank's next board operation, claimed (*seq_out its number), or NULL while
 * the previous one is not finished or a peer has not read the slot yet. */
static struct board_slot *claim(const struct ac_op *op, uint64_t *seq_out)
{
    struct ac_board *b = op->comm->board;
    uint64_t seq = b->nposted + 1;
    if (b->ndone != b->nposted || blocking_peer(b, op->comm, seq) >= 0)
        return NULL;
    b->nposted = seq;
    *seq_out = seq;
    return &part(b, op->comm->rank)->slot[seq % BOARD_NSLOTS];
}

static void publish(struct board_slot *s, const struct ac_op *op, uint64_t seq)
{
    s->call = call_of(op);
    __atomic_store_n(&s->seq, seq, __ATOMIC_RELEASE);
}

bool ac_board_post(const struct ac_op *op, uint64_t *seq_out)
{
    struct board_slot *s = claim(op, seq_out);
    if (!s)
        return false;
    size_t bytes = posted_bytes(op, op->comm->rank);
    if (ac_coll_reduces(op->coll) && op->redop.has_premul)
        ac_kern_load(&op->redop, s->data, op->sendbuff, bytes / ac_type_size(op->type), false);
    else if (bytes > 0)
        memcpy(s->data, op->sendbuff, bytes);
    publish(s, op, *seq_out);
    return true;
}

bool ac_board_post_record(const struct ac_op *op, const void *rec, size_t bytes, uint64_t *seq_out)
{
    struct board_slot *s = claim(op, seq_out);
    if (!s)
        return false;
    if (bytes > 0)
        memcpy(s->data, rec, bytes);
    publish(s, op, *seq_out);
    return true;
}

void *ac_board_record(const struct ac_op *op, uint64_t seq, int rank)
{
    struct board_slot *s = &part(op->comm->board, rank)->slot[seq % BOARD_NSLOTS];
    return __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == seq ? s->data : NULL;
}

void ac_board_skip(const struct ac_op *op, uint64_t seq)
{
    op->comm->board->ndone = seq;
}

static const char *op_name(uint32_t code)
{
    static const char *const kinds[] = {"sum", "prod", "max", "min"};
    return code & 8 ? "avg" : code & 4 ? "premulsum" : kinds[code & 3];
}

/* The error for ranks that made different calls at the same position. */
static ncclResult_t call_mismatch(int rank, const struct board_call *mine, int peer,
                                  const struct board_call *theirs)
{
    const char *name = ac_coll_name((enum ac_coll)mine->coll);
    if (mine->coll != theirs->coll)
        return AC_FAIL(ncclInvalidUsage,
                       "rank %d called %s while rank %d called %s: the ranks "
                       "issued different collectives in the same position",
                       rank, name, peer,
                       theirs->coll < AC_COLL_COUNT ? ac_coll_name((enum ac_coll)theirs->coll)
                                                    : "?");
    if (mine->type != theirs->type)
        return AC_FAIL(ncclInvalidUsage, "%s: rank %d passed type %s while rank %d passed %s", name,
                       rank, ac_type_name((ncclDataType_t)mine->type), peer,
                       ac_type_name((ncclDataType_t)theirs->type));
    if (mine->op != theirs->op)
        return AC_FAIL(ncclInvalidUsage, "%s: rank %d reduces with %s while rank %d uses %s", name,
                       rank, op_name(mine->op), peer, op_name(theirs->op));
    if (mine->root != theirs->root)
        return AC_FAIL(ncclInvalidUsage, "%s: rank %d passed root %d while rank %d passed %d", name,
                       rank, mine->root, peer, theirs->root);
    if (mine->type < 0)
        return AC_FAIL(ncclInvalidUsage,
                       "%s: rank %d passed %" PRIu64 " bytes while rank %d "
                       "passed %" PRIu64,
                       name, rank, mine->count, peer, theirs->count);
    return AC_FAIL(ncclInvalidUsage,
                   "%s: rank %d passed count %" PRIu64 " while rank %d passed %" PRIu64, name, rank,
                   mine->count, peer, theirs->count);
}

static bool same_call(const struct board_call *a, const struct board_call *b)
{
    return a->coll == b->coll && a->type == b->type && a->op == b->op && a->root == b->root &&
           a->count == b->count;
}

/* Whether rank r's post of op is one this rank waits for: everyone's, or a broadcast's root's
 * (whose own call waits for nobody). */
static bool is_awaited(const struct ac_op *op, int r)
{
    if (op->coll != AC_COLL_BROADCAST)
        return r != op->comm->rank;
    return op->comm->rank != op->root && r == op->root;
}

int ac_board_missing(const struct ac_op *op, uint64_t seq)
{
    const struct ncclComm *comm = op->comm;
    struct ac_board *b = comm->board;
    if (!b)
        return -1;
    if (seq == 0)
        return blocking_peer(b, comm, b->nposted + 1);
    for (int r = 0; r < comm->nranks; r++)
        if (is_awaited(op, r) &&
            __atomic_load_n(&part(b, r)->slot[seq % BOARD_NSLOTS].seq, __ATOMIC_ACQUIRE) != seq)
            return r;
    return -1;
}

/* Folds element range [off, off + count) of every rank's input into dst in rank order, so that
 * every rank computing it holds the same bits (max and min return their second operand for +0
 * and -0). */
static void fold(const struct ac_op *op, int slot, size_t off, void *dst)
{
    const struct ac_board *b = op->comm->board;
    int n = op->comm->nranks;
    size_t at = off * ac_type_size(op->type);
    ac_kern_combine(&op->redop, dst, part(b, 0)->slot[slot].data + at,
                    part(b, 1)->slot[slot].data + at, op->count, n == 2);
    for (int r = 2; r < n; r++)
        ac_kern_combine(&op->redop, dst, dst, part(b, r)->slot[slot].data + at, op->count,
                        r == n - 1);
}

/* This rank's output of op from every rank's post. */
static void collect(const struct ac_op *op, int slot)
{
    const struct ac_board *b = op->comm->board;
    int n = op->comm->nranks, me = op->comm->rank;
    size_t blk = op->count * ac_type_size(op->type);
    char *dst = op->recvbuff;
    if (op->coll == AC_COLL_BROADCAST)
        memcpy(dst, part(b, op->root)->slot[slot].data, blk);
    else if (op->coll == AC_COLL_ALLREDUCE)
        fold(op, slot, 0, dst);
    else if (op->coll == AC_COLL_REDUCESCATTER)
        fold(op, slot, (size_t)me * op->count, dst);
    else if (op->coll == AC_COLL_ALLTOALL)
        for (int r = 0; r < n; r++)
            memcpy(dst + (size_t)r * blk, part(b, r)->slot[slot].data + (size_t)me * blk, blk);
    else /* allgather */
        for (int r = 0; r < n; r++)
            memcpy(dst + (size_t)r * blk, part(b, r)->slot[slot].data, blk);
}

/* Whether every rank op awaits posted board operation seq; then, whether they made the same
 * call (an error naming the difference if not). */
static ncclResult_t all_posted(const struct ac_op *op, uint64_t seq, bool *is_posted)
{
    const struct ac_board *b = op->comm->board;
    int n = op->comm->nranks, me = op->comm->rank, slot = (int)(seq % BOARD_NSLOTS);
    *is_posted = false;
    for (int r = 0; r < n; r++)
        if (is_awaited(op, r) &&
            __atomic_load_n(&part(b, r)->slot[slot].seq, __ATOMIC_ACQUIRE) != seq)
            return ncclSuccess;
    const struct board_call *mine = &part(b, me)->slot[slot].call;
    for (int r = 0; r < n; r++) {
        const struct board_call *theirs = &part(b, r)->slot[slot].call;
        if (is_awaited(op, r) && !same_call(mine, theirs))
            return call_mismatch(me, mine, r, theirs);
    }
    *is_posted = true;
    return ncclSuccess;
}

/* After reading the slots of operation seq: none may have been rewritten meanwhile (the rule in
 * board.h). One that was would be this library's fault, reported rather than handed back as a
 * result. Then the operation is finished. */
static ncclResult_t finish_reads(const struct ac_op *op, uint64_t seq)
{
    struct ac_board *b = op->comm->board;
    int n = op->comm->nranks, me = op->comm->rank, slot = (int)(seq % BOARD_NSLOTS);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (int r = 0; r < n; r++)
        if (is_awaited(op, r) &&
            __atomic_load_n(&part(b, r)->slot[slot].seq, __ATOMIC_RELAXED) != seq)
            return AC_FAIL(ncclInternalError,
                           "rank %d: rank %d rewrote its board slot of "
                           "operation %llu while this rank read it",
                           me, r, (unsigned long long)seq);
    for (int r = 0; r < n; r++)
        if (is_awaited(op, r))
            b->seen[r] = seq;
    b->ndone = seq;
    return ncclSuccess;
}

/* A broadcast's root is done once it posted (its other ranks cannot post the next operation
 * before they read this one: blocking_peer); every other rank waits for the posts it reads. */
ncclResult_t ac_board_finish(const struct ac_op *op, uint64_t seq, bool *done)
{
    AC_CHECK(all_posted(op, seq, done));
    if (!*done)
        return ncclSuccess;
    if (op->coll == AC_COLL_BROADCAST && op->comm->rank == op->root) {
        if (op->recvbuff != op->sendbuff)
            memmove(op->recvbuff, op->sendbuff, op->count * ac_type_size(op->type));
    } else {
        collect(op, (int)(seq % BOARD_NSLOTS));
    }
    return finish_reads(op, seq);
}

ncclResult_t ac_board_take_records(const struct ac_op *op, uint64_t seq, void *recs, size_t bytes,
                                   bool *done)
{
    const struct ac_board *b = op->comm->board;
    AC_CHECK(all_posted(op, seq, done));
    if (!*done)
        return ncclSuccess;
    for (int r = 0; r < op->comm->nranks && bytes > 0; r++)
        memcpy((char *)recs + (size_t)r * bytes, part(b, r)->slot[seq % BOARD_NSLOTS].data, bytes);
    return finish_reads(op, seq);
}

/* A consistent copy of rank r's current collective; false while it is being rewritten. */
static bool read_now(const struct ac_board *b, int r, uint64_t *coll_seq, struct board_call *call)
{
    const struct board_now *now = &part(b, r)->now;
    uint64_t v = __atomic_load_n(&now->version, __ATOMIC_ACQUIRE);
    if (v & 1)
        return false;
    *coll_seq = __atomic_load_n(&now->coll_seq, __ATOMIC_RELAXED);
    memcpy(call, (const void *)&now->call, sizeof(*call));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&now->version, __ATOMIC_RELAXED) == v;
}

ncclResult_t ac_board_check_peers(const struct ncclComm *comm)
{
    const struct ac_board *b = comm->board;
    uint64_t seq, theirs_seq;
    struct board_call mine, theirs;
    if (!b || !read_now(b, comm->rank, &seq, &mine) || seq == 0)
        return ncclSuccess;
    for (int r = 0; r < comm->nranks; r++)
        if (r != comm->rank && read_now(b, r, &theirs_seq, &theirs) && theirs_seq == seq &&
            !same_call(&mine, &theirs))
            return call_mismatch(comm->rank, &mine, r, &theirs);
    return ncclSuccess;
}
