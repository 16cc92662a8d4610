/* Integration test of communicator management through the public API: ncclCommSplit (colors, key
 * order, NCCL_SPLIT_NOCOLOR, splits of splits), ncclCommShrink, ncclCommInitRankScalable with one
 * and two ids, non-blocking init and split (config.blocking = 0), finalize/destroy/abort, the
 * queries, ncclMemAlloc, buffer and window registration, and a communicator destroyed right after
 * a collective that finished early on its rank while the peers still receive. */
#include "coll_expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ERR_LEN 256
#define ASYNC_DEADLINE_S 60

static int finish_body(const struct tl_ctx *ctx, int nbad)
{
    if (!tl_ok(ctx, ce_barrier(ctx->comm), "final barrier on the world comm (1-int allreduce)"))
        return 1;
    return nbad > 0;
}

/* Allreduce (sum) of (rank + 1) * (i + 1) over comm, where rank/nranks are the caller's place in
 * it and `key_sum` is the expected sum of (rank + 1). */
static bool check_allreduce(const struct tl_ctx *ctx, ncclComm_t comm, int rank, int key_sum,
                            const char *what)
{
    int32_t v[5];
    for (int i = 0; i < 5; i++)
        v[i] = (rank + 1) * (i + 1);
    if (!tl_ok(ctx, ncclAllReduce(v, v, 5, ncclInt32, ncclSum, comm, NULL), what))
        return false;
    for (int i = 0; i < 5; i++) {
        if (v[i] != key_sum * (i + 1)) {
            tl_failf(ctx, "%s: element %d is %d, expected %d", what, i, v[i], key_sum * (i + 1));
            return false;
        }
    }
    return true;
}

/* ncclCommCount and ncclCommUserRank of comm must be (nranks, rank). */
static bool check_place(const struct tl_ctx *ctx, ncclComm_t comm, int rank, int nranks,
                        const char *what)
{
    int got_rank = -1, got_n = -1;
    if (!tl_ok(ctx, ncclCommUserRank(comm, &got_rank), "ncclCommUserRank") ||
        !tl_ok(ctx, ncclCommCount(comm, &got_n), "ncclCommCount"))
        return false;
    if (got_rank != rank || got_n != nranks) {
        tl_failf(ctx, "%s: rank %d of %d, expected rank %d of %d", what, got_rank, got_n, rank,
                 nranks);
        return false;
    }
    return true;
}

/* Sum of (rank + 1) over the comm (the allreduce's expected key sum) through a sum of r + 1. */
static int tri(int n)
{
    return n * (n + 1) / 2;
}

/* ---- split ---------------------------------------------------------------------------------- */

/* color = parity, key = nranks - rank: the new comm holds the ranks of one parity, in reverse. */
static int body_split_parity(struct tl_ctx *ctx)
{
    int n = ctx->nranks, color = ctx->rank % 2;
    int members = color == 0 ? (n + 1) / 2 : n / 2;
    int newrank = (n - 1 - ctx->rank) / 2; /* members of my parity above me */
    ncclComm_t c = NULL;
    if (!tl_ok(ctx, ncclCommSplit(ctx->comm, color, n - ctx->rank, &c, NULL), "ncclCommSplit"))
        return 1;
    if (!check_place(ctx, c, newrank, members, "split by parity, reversed keys") ||
        !check_allreduce(ctx, c, newrank, tri(members), "allreduce on the parity split"))
        return 1;
    int32_t mine = ctx->rank, all[TL_MAX_RANKS];
    if (!tl_ok(ctx, ncclAllGather(&mine, all, 1, ncclInt32, c, NULL), "allgather on the split"))
        return 1;
    for (int j = 0; j < members; j++) {
        int want = (n - 1 - color) / 2 * 2 + color - 2 * j; /* largest of my parity first */
        if (all[j] != want) {
            tl_failf(ctx, "allgather of world ranks on the parity split: [%d] = %d, expected %d",
                     j, all[j], want);
            return 1;
        }
    }
    if (!tl_ok(ctx, ce_barrier(c), "barrier on the split") ||
        !tl_ok(ctx, ncclCommDestroy(c), "ncclCommDestroy of the split"))
        return 1;
    return finish_body(ctx, 0);
}

/* Rank 0 passes NCCL_SPLIT_NOCOLOR and must get NULL; the others form a comm in world order. */
static int body_split_nocolor(struct tl_ctx *ctx)
{
    int n = ctx->nranks;
    bool is_out = ctx->rank == 0;
    ncclComm_t c = (ncclComm_t)(uintptr_t)0x1; /* must be overwritten */
    if (!tl_ok(ctx, ncclCommSplit(ctx->comm, is_out ? NCCL_SPLIT_NOCOLOR : 7, ctx->rank, &c, NULL),
               "ncclCommSplit"))
        return 1;
    if (is_out) {
        if (c != NULL) {
            tl_failf(ctx, "NCCL_SPLIT_NOCOLOR: *newcomm is %p, expected NULL", (void *)c);
            return 1;
        }
        return finish_body(ctx, 0);
    }
    if (!check_place(ctx, c, ctx->rank - 1, n - 1, "split without rank 0") ||
        !check_allreduce(ctx, c, ctx->rank - 1, tri(n - 1), "allreduce without rank 0") ||
        !tl_ok(ctx, ce_barrier(c), "barrier on the split") ||
        !tl_ok(ctx, ncclCommDestroy(c), "ncclCommDestroy of the split"))
        return 1;
    return finish_body(ctx, 0);
}

/* Split by parity, then split that by parity again: world ranks equal modulo 4, in order. */
static int body_split_twice(struct tl_ctx *ctx)
{
    int n = ctx->nranks, r = ctx->rank, r1 = -1;
    ncclComm_t c1 = NULL, c2 = NULL;
    if (!tl_ok(ctx, ncclCommSplit(ctx->comm, r % 2, r, &c1, NULL), "first ncclCommSplit") ||
        !tl_ok(ctx, ncclCommUserRank(c1, &r1), "ncclCommUserRank of the first split") ||
        !tl_ok(ctx, ncclCommSplit(c1, r1 % 2, r1, &c2, NULL), "split of the split"))
        return 1;
    int members = (n - 1 - r % 4) / 4 + 1;
    if (!check_place(ctx, c2, r / 4, members, "split of a split (world ranks equal mod 4)") ||
        !check_allreduce(ctx, c2, r / 4, tri(members), "allreduce on the split of a split") ||
        !check_allreduce(ctx, c1, r / 2, tri((n - 1 - r % 2) / 2 + 1),
                         "allreduce on the first split after the second") ||
        !tl_ok(ctx, ce_barrier(c2), "barrier on the second split") ||
        !tl_ok(ctx, ncclCommDestroy(c2), "ncclCommDestroy of the second split") ||
        !tl_ok(ctx, ce_barrier(c1), "barrier on the first split") ||
        !tl_ok(ctx, ncclCommDestroy(c1), "ncclCommDestroy of the first split"))
        return 1;
    return finish_body(ctx, 0);
}

/* ---- shrink ---------------------------------------------------------------------------------- */

/* As NCCL specifies, the excluded rank does not call ncclCommShrink. The parent stays usable
 * (NCCL_SHRINK_DEFAULT): the final barrier runs on it with rank 1 again. */
static int body_shrink(struct tl_ctx *ctx)
{
    int n = ctx->nranks, r = ctx->rank, excluded[1] = {1};
    ncclComm_t c = NULL;
    if (r == 1)
        return finish_body(ctx, 0);
    if (!tl_ok(ctx, ncclCommShrink(ctx->comm, excluded, 1, &c, NULL, NCCL_SHRINK_DEFAULT),
               "ncclCommShrink excluding rank 1"))
        return 1;
    int newrank = r < 1 ? r : r - 1;
    if (!check_place(ctx, c, newrank, n - 1, "shrink without rank 1") ||
        !check_allreduce(ctx, c, newrank, tri(n - 1), "allreduce on the shrunk comm") ||
        !tl_ok(ctx, ce_barrier(c), "barrier on the shrunk comm") ||
        !tl_ok(ctx, ncclCommDestroy(c), "ncclCommDestroy of the shrunk comm"))
        return 1;
    return finish_body(ctx, 0);
}

/* ---- new communicators from unique ids made during the body ---------------------------------- */

/* Unique id i is made by rank i * nranks / nids and shared with an allgather over the world. */
static bool share_ids(const struct tl_ctx *ctx, int nids, ncclUniqueId *ids)
{
    int n = ctx->nranks;
    ncclUniqueId mine, *all = calloc((size_t)n, sizeof(*all));
    memset(&mine, 0, sizeof(mine));
    bool is_ok = all != NULL;
    for (int i = 0; i < nids && is_ok; i++)
        if (i * n / nids == ctx->rank)
            is_ok = tl_ok(ctx, ncclGetUniqueId(&mine), "ncclGetUniqueId");
    is_ok = is_ok && tl_ok(ctx, ncclAllGather(&mine, all, sizeof(mine), ncclUint8, ctx->comm,
                                              NULL), "allgather of unique ids");
    for (int i = 0; i < nids && is_ok; i++)
        ids[i] = all[i * n / nids];
    free(all);
    return is_ok;
}

static int body_scalable(struct tl_ctx *ctx)
{
    int n = ctx->nranks;
    for (int nids = 1; nids <= 2 && nids <= n; nids++) {
        ncclUniqueId ids[2];
        ncclComm_t c = NULL;
        char what[96];
        snprintf(what, sizeof(what), "ncclCommInitRankScalable with %d id(s)", nids);
        if (!share_ids(ctx, nids, ids) ||
            !tl_ok(ctx, ncclCommInitRankScalable(&c, n, ctx->rank, nids, ids, NULL), what) ||
            !check_place(ctx, c, ctx->rank, n, what) ||
            !check_allreduce(ctx, c, ctx->rank, tri(n), what) ||
            !tl_ok(ctx, ce_barrier(c), "barrier on the scalable comm") ||
            !tl_ok(ctx, ncclCommDestroy(c), "ncclCommDestroy of the scalable comm"))
            return 1;
    }
    return finish_body(ctx, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A call on a non-blocking comm returned res: wait for ncclInProgress to resolve. */
static bool settle(const struct tl_ctx *ctx, ncclComm_t comm, ncclResult_t res, const char *what)
{
    double deadline = now_s() + ASYNC_DEADLINE_S;
    if (res != ncclSuccess && res != ncclInProgress)
        return tl_ok(ctx, res, what);
    if (comm == NULL) {
        tl_failf(ctx, "%s returned %s but no communicator", what, ncclGetErrorString(res));
        return false;
    }
    for (;;) {
        ncclResult_t state = ncclInProgress;
        if (!tl_ok(ctx, ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError"))
            return false;
        if (state != ncclInProgress)
            return tl_ok(ctx, state, what);
        if (now_s() > deadline) {
            tl_failf(ctx, "%s: still ncclInProgress after %d s", what, ASYNC_DEADLINE_S);
            return false;
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static bool nb_allreduce(const struct tl_ctx *ctx, ncclComm_t c, int rank, int nranks,
                         const char *what)
{
    int32_t v[4] = {rank, rank, rank, rank};
    if (!settle(ctx, c, ncclAllReduce(v, v, 4, ncclInt32, ncclSum, c, NULL), what))
        return false;
    for (int i = 0; i < 4; i++) {
        if (v[i] != nranks * (nranks - 1) / 2) {
            tl_failf(ctx, "%s: element %d is %d, expected %d", what, i, v[i],
                     nranks * (nranks - 1) / 2);
            return false;
        }
    }
    return true;
}

static bool nb_teardown(const struct tl_ctx *ctx, ncclComm_t c, const char *what)
{
    return settle(ctx, c, ncclCommFinalize(c), what) &&
           tl_ok(ctx, ncclCommDestroy(c), "ncclCommDestroy of a non-blocking comm");
}

/* config.blocking = 0: init and split return ncclSuccess or ncclInProgress; poll
 * ncclCommGetAsyncError until ncclSuccess, then use the communicators. */
static int body_nonblocking(struct tl_ctx *ctx)
{
    int n = ctx->nranks;
    ncclUniqueId id;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER, split_config = NCCL_CONFIG_INITIALIZER;
    ncclComm_t c = NULL, s = NULL;
    config.blocking = 0;
    split_config.blocking = 0;
    if (!share_ids(ctx, 1, &id))
        return 1;
    ncclResult_t res = ncclCommInitRankConfig(&c, n, id, ctx->rank, &config);
    if (!settle(ctx, c, res, "non-blocking ncclCommInitRankConfig") ||
        !check_place(ctx, c, ctx->rank, n, "non-blocking init") ||
        !nb_allreduce(ctx, c, ctx->rank, n, "allreduce on a non-blocking comm"))
        return 1;
    res = ncclCommSplit(c, 0, n - ctx->rank, &s, &split_config);
    if (!settle(ctx, s, res, "non-blocking ncclCommSplit") ||
        !check_place(ctx, s, n - 1 - ctx->rank, n, "non-blocking split, reversed keys") ||
        !nb_allreduce(ctx, s, n - 1 - ctx->rank, n, "allreduce on a non-blocking split"))
        return 1;
    if (!nb_teardown(ctx, s, "ncclCommFinalize of the non-blocking split") ||
        !nb_teardown(ctx, c, "ncclCommFinalize of the non-blocking comm"))
        return 1;
    return finish_body(ctx, 0);
}

/* A second comm finalized then destroyed, a third aborted; the world comm still works. */
static int body_lifecycle(struct tl_ctx *ctx)
{
    int n = ctx->nranks;
    ncclUniqueId ids[2];
    ncclComm_t a = NULL, b = NULL;
    if (!share_ids(ctx, 1, &ids[0]) || !share_ids(ctx, 1, &ids[1]) ||
        !tl_ok(ctx, ncclCommInitRank(&a, n, ids[0], ctx->rank), "ncclCommInitRank (second)") ||
        !tl_ok(ctx, ncclCommInitRank(&b, n, ids[1], ctx->rank), "ncclCommInitRank (third)") ||
        !check_allreduce(ctx, a, ctx->rank, tri(n), "allreduce on the second comm") ||
        !check_allreduce(ctx, b, ctx->rank, tri(n), "allreduce on the third comm") ||
        !tl_ok(ctx, ncclCommFinalize(a), "ncclCommFinalize") ||
        !tl_ok(ctx, ncclCommDestroy(a), "ncclCommDestroy after ncclCommFinalize") ||
        !tl_ok(ctx, ncclCommAbort(b), "ncclCommAbort") ||
        !check_allreduce(ctx, ctx->comm, ctx->rank, tri(n), "allreduce on the world afterwards"))
        return 1;
    return finish_body(ctx, 0);
}

/* ---- queries, memory, registration ------------------------------------------------------------ */

static int body_queries(struct tl_ctx *ctx)
{
    int version = 0, dev = -2, count = 0;
    if (!check_place(ctx, ctx->comm, ctx->rank, ctx->nranks, "world comm") ||
        !tl_ok(ctx, ncclCommCuDevice(ctx->comm, &dev), "ncclCommCuDevice") ||
        !tl_ok(ctx, ncclGetVersion(&version), "ncclGetVersion"))
        return 1;
    if (version < NCCL_VERSION(2, 28, 0)) {
        tl_failf(ctx, "ncclGetVersion: %d, expected at least %d", version, NCCL_VERSION(2, 28, 0));
        return 1;
    }
    if (dev < -1) {
        tl_failf(ctx, "ncclCommCuDevice: %d was not written", dev);
        return 1;
    }
    ncclResult_t res = ncclCommCount(ctx->comm, NULL);
    if (res != ncclInvalidArgument) {
        tl_failf(ctx, "ncclCommCount(comm, NULL) returned %s, expected ncclInvalidArgument",
                 ncclGetErrorString(res));
        return 1;
    }
    res = ncclCommCount(NULL, &count);
    if (res != ncclInvalidArgument) {
        tl_failf(ctx, "ncclCommCount(NULL, &count) returned %s, expected ncclInvalidArgument",
                 ncclGetErrorString(res));
        return 1;
    }
    return finish_body(ctx, 0);
}

#define REG_COUNT 100003 /* floats: not a multiple of anything */

static bool reduce_in(const struct tl_ctx *ctx, float *buf, const char *what)
{
    char err[ERR_LEN];
    ce_red_fill(buf, ncclFloat32, ncclSum, ctx->nranks, ctx->rank, 0, REG_COUNT);
    if (!tl_ok(ctx, ncclAllReduce(buf, buf, REG_COUNT, ncclFloat32, ncclSum, ctx->comm, NULL),
               what))
        return false;
    if (ce_red_check(buf, ncclFloat32, ncclSum, ctx->nranks, 0, REG_COUNT, err, sizeof(err))) {
        tl_failf(ctx, "%s: %s", what, err);
        return false;
    }
    return true;
}

/* ncclMemAlloc'd memory, registered with ncclCommRegister, then as a window (collective). */
static int body_memory(struct tl_ctx *ctx)
{
    void *mem = NULL, *handle = NULL, *heap = malloc(REG_COUNT * 4), *heap_handle = NULL;
    ncclWindow_t win = NULL;
    size_t bytes = ((size_t)REG_COUNT * 4 + NCCL_WIN_REQUIRED_ALIGNMENT - 1) /
                   NCCL_WIN_REQUIRED_ALIGNMENT * NCCL_WIN_REQUIRED_ALIGNMENT;
    bool is_ok = heap && tl_ok(ctx, ncclMemAlloc(&mem, bytes), "ncclMemAlloc");
    if (is_ok && mem == NULL) {
        tl_failf(ctx, "ncclMemAlloc returned ncclSuccess and a NULL pointer");
        is_ok = false;
    }
    is_ok = is_ok && reduce_in(ctx, mem, "allreduce in ncclMemAlloc memory") &&
            tl_ok(ctx, ncclCommRegister(ctx->comm, mem, bytes, &handle), "ncclCommRegister") &&
            reduce_in(ctx, mem, "allreduce in a registered buffer") &&
            tl_ok(ctx, ncclCommDeregister(ctx->comm, handle), "ncclCommDeregister") &&
            tl_ok(ctx, ncclCommRegister(ctx->comm, heap, REG_COUNT * 4, &heap_handle),
                  "ncclCommRegister of malloc'd memory") &&
            reduce_in(ctx, heap, "allreduce in a registered malloc'd buffer") &&
            tl_ok(ctx, ncclCommDeregister(ctx->comm, heap_handle),
                  "ncclCommDeregister of malloc'd memory") &&
            tl_ok(ctx, ncclCommWindowRegister(ctx->comm, mem, bytes, &win, NCCL_WIN_DEFAULT),
                  "ncclCommWindowRegister") &&
            reduce_in(ctx, mem, "allreduce in a window") &&
            tl_ok(ctx, ncclCommWindowDeregister(ctx->comm, win), "ncclCommWindowDeregister");
    if (mem && !tl_ok(ctx, ncclMemFree(mem), "ncclMemFree"))
        is_ok = false;
    free(heap);
    return is_ok ? finish_body(ctx, 0) : 1;
}

/* ---- destroy right after a collective --------------------------------------------------------- */

/* The last rank broadcasts 4 MiB and returns at once; the launcher then destroys its comm while
 * the other ranks may still be receiving. Returning from a call means this rank's part is done, so
 * tearing down must not break the peers (no final barrier here, on purpose). */
#define EARLY_BYTES (4u << 20)

static int body_destroy_early(struct tl_ctx *ctx)
{
    int root = ctx->nranks - 1;
    struct ce_buf buf;
    char err[ERR_LEN];
    if (ce_buf_alloc(&buf, EARLY_BYTES))
        return 1;
    if (ctx->rank == root)
        ce_bytes_fill(buf.data, root, 0, EARLY_BYTES);
    int bad = !tl_ok(ctx, ncclBcast(buf.data, EARLY_BYTES, ncclUint8, root, ctx->comm, NULL),
                     "ncclBcast of 4 MiB from the last rank");
    if (!bad && (ce_bytes_check(buf.data, root, 0, EARLY_BYTES, err, sizeof(err)) ||
                 ce_buf_check_guards(&buf, "buff", err, sizeof(err)))) {
        tl_failf(ctx, "ncclBcast of 4 MiB from the last rank: %s", err);
        bad = 1;
    }
    ce_buf_free(&buf);
    return bad;
}

#define MAX_CASES 192
#define TIMEOUT_S 180

int main(int argc, char **argv)
{
    static struct tl_case cases[MAX_CASES];
    static const struct {
        const char *name;
        tl_body_fn body;
        bool needs_two;
    } bodies[] = {
        {"comm/split-parity", body_split_parity, false},
        {"comm/split-nocolor", body_split_nocolor, false},
        {"comm/split-twice", body_split_twice, false},
        {"comm/shrink", body_shrink, true},
        {"comm/initscalable", body_scalable, false},
        {"comm/nonblocking", body_nonblocking, false},
        {"comm/lifecycle", body_lifecycle, false},
        {"comm/queries", body_queries, false},
        {"comm/memory", body_memory, false},
        {"comm/destroy-early", body_destroy_early, false},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        size_t first = n;
        n = ce_add_matrix(cases, n, MAX_CASES, bodies[i].name, bodies[i].body, NULL, TIMEOUT_S);
        if (!bodies[i].needs_two)
            continue;
        size_t kept = first;
        for (size_t j = first; j < n; j++) /* drop the single-rank cases */
            if (cases[j].nranks >= 2)
                cases[kept++] = cases[j];
        n = kept;
    }
    return tl_main(argc, argv, cases, n);
}
