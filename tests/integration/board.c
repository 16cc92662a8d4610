/* The board (src/core/board.h): small allreduces, allgathers, reduce-scatters and all-to-alls
 * between the ranks of one host, which every rank posts to a shared segment. What its own design
 * must get right: calls of several board operations in one group (each rank's two slots are reused
 * only after the operation before finished), board calls between calls through the connectors,
 * ranks that disagree about a call while taking different paths (one the board, one a ring), and a
 * peer that never comes (dead, or late beyond ANYCCL_TIMEOUT). Every result is checked exactly;
 * ANYCCL_BOARD=0 runs the same sequences through the connectors. */
#include "launcher.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_S 60
#define ROUNDS 40
#define MAXN 5000 /* elements: 20000 bytes of int32, past the board's 16 KiB */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool contains(const char *text, const char *word)
{
    for (size_t n = strlen(word); text && *text; text++)
        if (strncasecmp(text, word, n) == 0)
            return true;
    return false;
}

/* sum of (r + 1) * (j + 1) + round over the ranks */
static int32_t want_sum(int n, size_t j, int round)
{
    return (int32_t)((j + 1) * (size_t)(n * (n + 1) / 2) + (size_t)(n * round));
}

static void fill_sum(int32_t *v, size_t count, int rank, int round)
{
    for (size_t j = 0; j < count; j++)
        v[j] = (int32_t)((size_t)(rank + 1) * (j + 1)) + round;
}

static bool check_sum(const struct tl_ctx *ctx, const int32_t *v, size_t count, int round,
                      const char *what)
{
    for (size_t j = 0; j < count; j++)
        if (v[j] != want_sum(ctx->nranks, j, round)) {
            tl_failf(ctx, "%s, round %d: element %zu of %zu is %d, want %d", what, round, j, count,
                     v[j], want_sum(ctx->nranks, j, round));
            return false;
        }
    return true;
}

/* Per round, one group: four allreduces (1 and 1000 elements in place, 7 floats by max, 4096
 * int32 = the board's largest), one through the connectors (5000 elements), an allgather, a
 * reduce-scatter, an all-to-all (all three on the board) and a broadcast (through the
 * connectors); then the same calls one by one. */
static int body_sequences(struct tl_ctx *ctx)
{
    static const size_t counts[] = {1, 1000, 4096, MAXN};
    int n = ctx->nranks, me = ctx->rank;
    ncclComm_t comm = ctx->comm;
    int32_t *ar[4], *gather_in = malloc(3 * sizeof(int32_t)), *gathered = malloc((size_t)n * 3 * 4);
    int32_t rs_in[8 * 5], rs_out[5], a2a_in[8 * 3], a2a_out[8 * 3];
    float fmax_in[7], fmax_out[7];
    double bcast[5];
    int rc = 1;
    for (int k = 0; k < 4; k++)
        ar[k] = malloc(MAXN * sizeof(int32_t));
    for (int round = 0; round < ROUNDS; round++) {
        bool is_grouped = round % 2 == 0;
        for (int k = 0; k < 4; k++)
            fill_sum(ar[k], counts[k], me, round);
        for (int j = 0; j < 7; j++)
            fmax_in[j] = (float)(me * 3 + j + round) * (me % 2 ? 1.0f : 0.5f);
        for (int j = 0; j < 3; j++)
            gather_in[j] = me * 100 + j + round;
        for (int j = 0; j < 5; j++)
            bcast[j] = me == n - 1 ? 1.5 * j + round : -1.0;
        for (int j = 0; j < n * 5; j++)
            rs_in[j] = (me + 1) * (j + 1) + round; /* block b of rank r: (r + 1)(5b + i + 1) */
        for (int j = 0; j < n * 3; j++)
            a2a_in[j] = me * 1000 + j + round; /* block j / 3 goes to rank j / 3 */
        if (is_grouped && !tl_ok(ctx, ncclGroupStart(), "ncclGroupStart"))
            goto out;
        bool is_ok = true;
        for (int k = 0; k < 4 && is_ok; k++)
            is_ok =
                tl_ok(ctx, ncclAllReduce(ar[k], ar[k], counts[k], ncclInt32, ncclSum, comm, NULL),
                      "ncclAllReduce");
        is_ok =
            is_ok &&
            tl_ok(ctx, ncclAllReduce(fmax_in, fmax_out, 7, ncclFloat32, ncclMax, comm, NULL),
                  "ncclAllReduce max") &&
            tl_ok(ctx, ncclAllGather(gather_in, gathered, 3, ncclInt32, comm, NULL),
                  "ncclAllGather") &&
            tl_ok(ctx, ncclReduceScatter(rs_in, rs_out, 5, ncclInt32, ncclSum, comm, NULL),
                  "ncclReduceScatter") &&
            tl_ok(ctx, ncclAlltoAll(a2a_in, a2a_out, 3, ncclInt32, comm, NULL), "ncclAlltoAll") &&
            tl_ok(ctx, ncclBroadcast(bcast, bcast, 5, ncclFloat64, n - 1, comm, NULL),
                  "ncclBroadcast");
        if (is_grouped)
            is_ok = tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd") && is_ok;
        if (!is_ok)
            goto out;
        const char *what = is_grouped ? "grouped allreduce" : "allreduce";
        for (int k = 0; k < 4; k++)
            if (!check_sum(ctx, ar[k], counts[k], round, what))
                goto out;
        for (int j = 0; j < 7; j++) {
            float want = 0;
            for (int r = 0; r < n; r++) {
                float x = (float)(r * 3 + j + round) * (r % 2 ? 1.0f : 0.5f);
                want = r == 0 || x > want ? x : want;
            }
            if (fmax_out[j] != want) {
                tl_failf(ctx, "%s max, round %d: element %d is %g, want %g", what, round, j,
                         (double)fmax_out[j], (double)want);
                goto out;
            }
        }
        for (int r = 0; r < n; r++)
            for (int j = 0; j < 3; j++)
                if (gathered[r * 3 + j] != r * 100 + j + round) {
                    tl_failf(ctx, "allgather, round %d: block %d element %d is %d", round, r, j,
                             gathered[r * 3 + j]);
                    goto out;
                }
        for (int i = 0; i < 5; i++) {
            int32_t want = (int32_t)((me * 5 + i + 1) * (n * (n + 1) / 2) + n * round);
            if (rs_out[i] != want) {
                tl_failf(ctx, "reduce-scatter, round %d: element %d is %d, want %d", round, i,
                         rs_out[i], want);
                goto out;
            }
        }
        for (int j = 0; j < n * 3; j++) {
            int32_t want = (j / 3) * 1000 + me * 3 + j % 3 + round;
            if (a2a_out[j] != want) {
                tl_failf(ctx, "all-to-all, round %d: element %d is %d, want %d", round, j,
                         a2a_out[j], want);
                goto out;
            }
        }
        for (int j = 0; j < 5; j++)
            if (bcast[j] != 1.5 * j + round) {
                tl_failf(ctx, "broadcast, round %d: element %d is %g", round, j, bcast[j]);
                goto out;
            }
    }
    rc = 0;
out:
    for (int k = 0; k < 4; k++)
        free(ar[k]);
    free(gather_in);
    free(gathered);
    return rc;
}

/* Rank 0 calls an allreduce the board takes, the others one of 5000 elements, which runs in a
 * ring: neither path ever sees the other's data. Rank 0 must fail with the difference named; the
 * others with it too, or with a remote error once rank 0 has left. The ring is connected first by
 * a call that agrees (connection requests carry a description of their call too). */
static int body_paths_differ(struct tl_ctx *ctx)
{
    int32_t *v = calloc(MAXN, sizeof(int32_t));
    size_t count = ctx->rank == 0 ? 1000 : MAXN;
    if (!tl_ok(ctx, ncclAllReduce(v, v, MAXN, ncclInt32, ncclSum, ctx->comm, NULL),
               "the first allreduce")) {
        free(v);
        return 1;
    }
    double t0 = now_s();
    ncclResult_t res = ncclAllReduce(v, v, count, ncclInt32, ncclSum, ctx->comm, NULL);
    const char *msg = ncclGetLastError(ctx->comm);
    double took = now_s() - t0;
    free(v);
    if (res == ncclRemoteError && ctx->rank != 0)
        return 0;
    if (res != ncclInvalidUsage) {
        tl_failf(ctx,
                 "allreduce of %zu elements against one of %d: returned %s after %.1f s, "
                 "want ncclInvalidUsage (%s)",
                 count, ctx->rank == 0 ? MAXN : 1000, ncclGetErrorString(res), took,
                 msg ? msg : "");
        return 1;
    }
    if (!contains(msg, "count") || !contains(msg, "5000")) {
        tl_failf(ctx, "message \"%s\" does not name the counts", msg ? msg : "(null)");
        return 1;
    }
    return 0;
}

/* Groups that start with a broadcast: its root is done once it posted, and the next call's post
 * may wait for the other ranks to reach the broadcast; a later call of the group must not post
 * in its place meanwhile (all ranks number the calls in the order they made them). */
static int body_bcast_groups(struct tl_ctx *ctx)
{
    int n = ctx->nranks, me = ctx->rank;
    for (int round = 0; round < 400; round++) {
        int root = round % n;
        int32_t bc[8], ar[4], ag_in[2], ag[2 * 8];
        for (int j = 0; j < 8; j++)
            bc[j] = me == root ? round * 10 + j : -1;
        for (int j = 0; j < 4; j++)
            ar[j] = me + j + round;
        ag_in[0] = me;
        ag_in[1] = round;
        bool is_ok =
            tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
            tl_ok(ctx, ncclBroadcast(bc, bc, 8, ncclInt32, root, ctx->comm, NULL),
                  "ncclBroadcast") &&
            tl_ok(ctx, ncclAllReduce(ar, ar, 4, ncclInt32, ncclSum, ctx->comm, NULL),
                  "ncclAllReduce") &&
            tl_ok(ctx, ncclAllGather(ag_in, ag, 2, ncclInt32, ctx->comm, NULL), "ncclAllGather");
        if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd") || !is_ok)
            return 1;
        for (int j = 0; j < 8; j++)
            if (bc[j] != round * 10 + j) {
                tl_failf(ctx, "round %d: broadcast element %d is %d", round, j, bc[j]);
                return 1;
            }
        for (int j = 0; j < 4; j++)
            if (ar[j] != n * (n - 1) / 2 + n * (j + round)) {
                tl_failf(ctx, "round %d: allreduce element %d is %d", round, j, ar[j]);
                return 1;
            }
        for (int r = 0; r < n; r++)
            if (ag[2 * r] != r || ag[2 * r + 1] != round) {
                tl_failf(ctx, "round %d: allgather block %d is %d %d", round, r, ag[2 * r],
                         ag[2 * r + 1]);
                return 1;
            }
    }
    return 0;
}

/* Collectives that only move data compare bytes, not types (as the connectors' tags do): rank 0
 * gathers and exchanges int32, the others the same bytes as float16. */
static int body_bytes_agree(struct tl_ctx *ctx)
{
    int n = ctx->nranks, me = ctx->rank;
    bool is_wide = me == 0;
    ncclDataType_t type = is_wide ? ncclInt32 : ncclFloat16;
    size_t per = is_wide ? 6 : 12; /* 24 bytes per rank (all-to-all: per peer) */
    unsigned char in[8 * 24] = {0}, out[8 * 24] = {0};
    for (int i = 0; i < n * 24; i++)
        in[i] = (unsigned char)(me * 31 + i);
    if (!tl_ok(ctx, ncclAllGather(in, out, per, type, ctx->comm, NULL), "ncclAllGather"))
        return 1;
    for (int i = 0; i < n * 24; i++)
        if (out[i] != (unsigned char)((i / 24) * 31 + i % 24)) {
            tl_failf(ctx, "allgather byte %d is %d", i, out[i]);
            return 1;
        }
    if (!tl_ok(ctx, ncclAlltoAll(in, out, per, type, ctx->comm, NULL), "ncclAlltoAll"))
        return 1;
    for (int i = 0; i < n * 24; i++)
        if (out[i] != (unsigned char)((i / 24) * 31 + me * 24 + i % 24)) {
            tl_failf(ctx, "all-to-all byte %d is %d", i, out[i]);
            return 1;
        }
    return 0;
}

/* Rank 1 leaves without calling: rank 0's board allreduce must end with ncclRemoteError, soon. */
static int raw_peer_exits(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    int32_t v[4] = {1, 2, 3, 4};
    if (!tl_ok(ctx, ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    if (ctx->rank == 1)
        _exit(0); /* without a word to anyone */
    double t0 = now_s();
    ncclResult_t res = ncclAllReduce(v, v, 4, ncclInt32, ncclSum, comm, NULL);
    double took = now_s() - t0;
    if (res != ncclRemoteError || !contains(ncclGetLastError(comm), "rank 1")) {
        tl_failf(ctx,
                 "allreduce with a peer gone returned %s after %.1f s (%s), want "
                 "ncclRemoteError naming rank 1",
                 ncclGetErrorString(res), took, ncclGetLastError(comm));
        return 1;
    }
    return tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort") ? 0 : 1;
}

/* Rank 1 comes late, beyond ANYCCL_TIMEOUT=1: rank 0 times out naming it. */
static int body_peer_late(struct tl_ctx *ctx)
{
    int32_t v[4] = {1, 2, 3, 4};
    if (ctx->rank == 1) {
        sleep(4);
        return 0;
    }
    double t0 = now_s();
    ncclResult_t res = ncclAllReduce(v, v, 4, ncclInt32, ncclSum, ctx->comm, NULL);
    double took = now_s() - t0;
    const char *msg = ncclGetLastError(ctx->comm);
    if (res != ncclRemoteError || !contains(msg, "timed out") || !contains(msg, "rank 1") ||
        took > 3.5) {
        tl_failf(ctx,
                 "allreduce with a late peer returned %s after %.1f s (%s), want "
                 "ncclRemoteError naming the timeout and rank 1 within 3.5 s",
                 ncclGetErrorString(res), took, msg ? msg : "");
        return 1;
    }
    return 0;
}

static struct tl_case cases[32];
static size_t ncases;

/* A case named after its pieces: "board/<what>/np<n>/<how>". */
static void add(const char *what, const char *how, enum tl_mode mode, int nranks, const char *env,
                tl_body_fn body, int timeout_s)
{
    static char names[32][64];
    size_t k = ncases++;
    snprintf(names[k], sizeof names[k], "board/%s/np%d/%s", what, nranks, how);
    cases[k] = (struct tl_case){.name = names[k],
                                .mode = mode,
                                .nranks = nranks,
                                .env = env,
                                .body = body,
                                .timeout_s = timeout_s};
}

int main(int argc, char **argv)
{
    static const int nps[] = {2, 3, 8};
    for (size_t i = 0; i < sizeof nps / sizeof nps[0]; i++)
        add("sequences", "board/proc", TL_PROCS, nps[i], NULL, body_sequences, TIMEOUT_S);
    for (size_t i = 0; i < sizeof nps / sizeof nps[0]; i++)
        add("sequences", "connectors/proc", TL_PROCS, nps[i], "ANYCCL_BOARD=0", body_sequences,
            TIMEOUT_S);
    add("sequences", "threads", TL_THREADS, 4, NULL, body_sequences, TIMEOUT_S);
    add("sequences", "oversubscribed/proc", TL_PROCS, 6, NULL, body_sequences, TIMEOUT_S);
    add("paths-differ", "proc", TL_PROCS, 2, NULL, body_paths_differ, 30);
    add("paths-differ", "proc", TL_PROCS, 3, NULL, body_paths_differ, 30);
    add("bcast-groups", "proc", TL_PROCS, 2, NULL, body_bcast_groups, TIMEOUT_S);
    add("bcast-groups", "threads", TL_THREADS, 2, NULL, body_bcast_groups, TIMEOUT_S);
    add("bytes-agree", "board/proc", TL_PROCS, 3, NULL, body_bytes_agree, 30);
    add("bytes-agree", "connectors/proc", TL_PROCS, 3, "ANYCCL_BOARD=0", body_bytes_agree, 30);
    add("peer-exits", "proc", TL_PROCS, 2, NULL, NULL, 30);
    cases[ncases - 1].raw_body = raw_peer_exits;
    add("peer-late", "proc", TL_PROCS, 2, "ANYCCL_TIMEOUT=1", body_peer_late, 30);
    return tl_main(argc, argv, cases, ncases);
}
