/* Allreduces, allgathers and reduce-scatters in place on registered buffers (src/core/
 * board_direct.c): buffers from ncclMemAlloc registered with the communicator, read by the peers
 * straight from the owner's pages once every rank voted for it on the board. What must hold:
 * every type and operator, in place and out of place, at counts just above the threshold, odd
 * ones and a large one; premulsum with a different scalar on every rank; a call where one rank's
 * buffers are plain memory (every rank then takes the connectors); calls in a group (they vote
 * no) and ranks that group differently; buffers freed and allocated again between calls (stale
 * mappings replaced); a result of over 16 MiB; a peer that exits (ncclRemoteError naming it, not a
 * hang). Every element is checked, and the guard bytes around every buffer.
 * ANYCCL_P2P_DIRECT_MIN_BYTES=0 brings the threshold down to just above the board's own calls (16
 * KiB). */
#include "coll_expect.h"
#include "expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ENV_LOW "ANYCCL_P2P_DIRECT_MIN_BYTES=0"
#define ERR_LEN 256

enum coll { AR, AG, RS };
static const char *const coll_names[] = {"allreduce", "allgather", "reducescatter"};

/* A registered shared buffer with guard bytes, or (is_plain) a malloc'd one. */
struct rbuf {
    unsigned char *base;
    void *data, *handle;
    size_t bytes;
    bool is_plain;
};

static bool rbuf_get(const struct tl_ctx *ctx, struct rbuf *b, size_t bytes, bool is_plain)
{
    size_t total = bytes + 2 * CE_GUARD_BYTES;
    memset(b, 0, sizeof(*b));
    b->bytes = bytes;
    b->is_plain = is_plain;
    if (is_plain)
        b->base = malloc(total);
    else if (!tl_ok(ctx, ncclMemAlloc((void **)&b->base, total), "ncclMemAlloc") ||
             !tl_ok(ctx, ncclCommRegister(ctx->comm, b->base, total, &b->handle),
                    "ncclCommRegister"))
        return false;
    if (!b->base) {
        tl_failf(ctx, "out of memory");
        return false;
    }
    memset(b->base, CE_SENTINEL, total);
    b->data = b->base + CE_GUARD_BYTES;
    return true;
}

static bool rbuf_put(const struct tl_ctx *ctx, struct rbuf *b)
{
    if (!b->base)
        return true;
    if (b->is_plain) {
        free(b->base);
        return true;
    }
    return tl_ok(ctx, ncclCommDeregister(ctx->comm, b->handle), "ncclCommDeregister") &&
           tl_ok(ctx, ncclMemFree(b->base), "ncclMemFree");
}

static int guards(const struct rbuf *b, const char *what, char *err)
{
    struct ce_buf cb = {.base = b->base, .nbytes = b->bytes, .data = b->data};
    return ce_buf_check_guards(&cb, what, err, ERR_LEN);
}

/* One call of coll, checked. is_plain: this rank's buffers are plain memory. Returns 0, 1 for a
 * wrong result, -1 for a failed call. */
static int one(const struct tl_ctx *ctx, enum coll c, ncclDataType_t type, ncclRedOp_t op,
               size_t count, bool is_inplace, bool is_plain)
{
    int n = ctx->nranks, me = ctx->rank, bad = 0;
    size_t ts = ce_type_size(type), blk = count * ts;
    size_t send_bytes = c == RS ? blk * (size_t)n : blk,
           recv_bytes = c == AG ? blk * (size_t)n : blk;
    struct rbuf send = {0}, recv = {0};
    char label[200], err[ERR_LEN] = "";
    snprintf(label, sizeof(label), "%s %s %s count %zu %s%s", coll_names[c], ce_type_name(type),
             c == AG ? "-" : ce_op_name(op), count, is_inplace ? "in-place" : "out-of-place",
             is_plain ? " (plain memory here)" : "");
    if (!rbuf_get(ctx, &recv, c == RS && is_inplace ? send_bytes : recv_bytes, is_plain) ||
        (!is_inplace && !rbuf_get(ctx, &send, send_bytes, is_plain)))
        return -1;
    char *sendp, *recvp;
    if (is_inplace) {
        /* NCCL's in-place forms: the rank's block of the whole buffer */
        sendp = c == AG ? (char *)recv.data + (size_t)me * blk : recv.data;
        recvp = c == RS ? (char *)recv.data + (size_t)me * blk : recv.data;
    } else {
        sendp = send.data;
        recvp = recv.data;
    }
    if (c == AG)
        ce_bytes_fill(sendp, me, 0, blk);
    else
        ce_red_fill(sendp, type, op, n, me, 0, c == RS ? count * (size_t)n : count);
    ncclResult_t res = c == AR ? ncclAllReduce(sendp, recvp, count, type, op, ctx->comm, NULL)
                       : c == AG
                           ? ncclAllGather(sendp, recvp, count, type, ctx->comm, NULL)
                           : ncclReduceScatter(sendp, recvp, count, type, op, ctx->comm, NULL);
    if (!tl_ok(ctx, res, label)) {
        bad = -1;
        goto out;
    }
    if (c == AG)
        for (int r = 0; r < n && !bad; r++)
            bad = ce_bytes_check(recvp + (size_t)r * blk, r, 0, blk, err, sizeof(err));
    else
        bad = ce_red_check(recvp, type, op, n, c == RS ? (size_t)me * count : 0, count, err,
                           sizeof(err));
    bad = bad || guards(&recv, "recvbuff", err);
    if (!is_inplace) {
        bad = bad || guards(&send, "sendbuff", err);
        if (c == AG)
            bad = bad || ce_bytes_check(sendp, me, 0, blk, err, sizeof(err));
    }
    if (bad) {
        tl_failf(ctx, "%s: %s", label, err);
        bad = 1;
    }
out:
    if (!rbuf_put(ctx, &recv) || !rbuf_put(ctx, &send))
        bad = -1;
    return bad;
}

/* Every type and operator at counts around the lowered threshold (16 KiB + 1 of the call's
 * largest buffer) and a large one (sum only); wrong results are counted and the matrix goes on
 * (every rank makes every call). */
static int body_matrix(struct tl_ctx *ctx)
{
    static const size_t counts[] = {4099, 16411, 100003, (1 << 20) + 3};
    int nbad = 0;
    for (int c = AR; c <= RS; c++)
        for (int t = 0; t < ce_ntypes; t++)
            for (int o = 0; o < (c == AG ? 1 : ce_nops); o++)
                for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
                    if (k == 3 && (o > 0 || t % 4 != 0))
                        continue;
                    for (int ip = 0; ip <= 1; ip++) {
                        int r = one(ctx, (enum coll)c, ce_all_types[t], ce_all_ops[o], counts[k],
                                    ip, false);
                        if (r < 0 || (nbad += r) > 10)
                            return 1;
                    }
                }
    return nbad != 0;
}

/* A result past RESULT_STREAM_MIN_BYTES (16 MiB), copied with streaming stores: every element
 * checked, in place and out of place. */
static int body_large(struct tl_ctx *ctx)
{
    for (int ip = 0; ip <= 1; ip++)
        if (one(ctx, AR, ncclFloat32, ncclSum, (4u << 20) + 5, ip, false) != 0)
            return 1;
    return 0;
}

/* Premulsum with scalar rank + 1 on each rank (the voters pass theirs on), in place and not. */
static int body_premulsum(struct tl_ctx *ctx)
{
    size_t count = 40001, bytes = count * sizeof(float);
    for (int ip = 0; ip <= 1; ip++) {
        struct rbuf send, recv;
        if (!rbuf_get(ctx, &recv, bytes, false) || !rbuf_get(ctx, &send, bytes, false))
            return 1;
        float *s = ip ? recv.data : send.data, *d = recv.data, scalar = (float)(ctx->rank + 1);
        for (size_t i = 0; i < count; i++)
            s[i] = (float)(i % 13);
        ncclRedOp_t op;
        if (!tl_ok(ctx,
                   ncclRedOpCreatePreMulSum(&op, &scalar, ncclFloat32, ncclScalarHostImmediate,
                                            ctx->comm),
                   "ncclRedOpCreatePreMulSum") ||
            !tl_ok(ctx, ncclAllReduce(s, d, count, ncclFloat32, op, ctx->comm, NULL),
                   "premulsum allreduce") ||
            !tl_ok(ctx, ncclRedOpDestroy(op, ctx->comm), "ncclRedOpDestroy"))
            return 1;
        float k = (float)(ctx->nranks * (ctx->nranks + 1) / 2);
        for (size_t i = 0; i < count; i++)
            if (d[i] != k * (float)(i % 13)) {
                tl_failf(ctx, "premulsum %s: element %zu is %g, want %g",
                         ip ? "in-place" : "out-of-place", i, (double)d[i],
                         (double)(k * (float)(i % 13)));
                return 1;
            }
        if (!rbuf_put(ctx, &send) || !rbuf_put(ctx, &recv))
            return 1;
    }
    return 0;
}

/* Rank `plain` uses plain memory (in round r, rank r % n; then none), so the vote says no on
 * every rank in turn; fresh buffers every call replace the peers' mappings. */
static int body_mixed(struct tl_ctx *ctx)
{
    int n = ctx->nranks;
    for (int round = 0; round < 2 * n + 2; round++) {
        bool is_plain = round < 2 * n && ctx->rank == round % n;
        for (int c = AR; c <= RS; c++)
            if (one(ctx, (enum coll)c, ncclFloat32, ncclSum, 50001, round % 2, is_plain) != 0)
                return 1;
    }
    return 0;
}

/* Candidates in groups (they vote no): a group of two allreduces and an allgather on every rank,
 * then one allreduce that even ranks make in a group of its own and odd ranks alone (a vote no
 * and a vote yes: both take the connectors), then alone everywhere; all on the same buffers. */
static int body_groups(struct tl_ctx *ctx)
{
    size_t count = 30011, n = (size_t)ctx->nranks;
    struct rbuf a, b, g;
    if (!rbuf_get(ctx, &a, count * 4, false) || !rbuf_get(ctx, &b, count * 4, false) ||
        !rbuf_get(ctx, &g, count * 4 * n, false))
        return 1;
    char err[ERR_LEN] = "";
    int rc = 0;
    for (int round = 0; round < 6 && rc == 0; round++) {
        ce_red_fill(a.data, ncclInt32, ncclSum, (int)n, ctx->rank, 0, count);
        ce_red_fill(b.data, ncclInt32, ncclMax, (int)n, ctx->rank, 0, count);
        ce_bytes_fill((char *)g.data + (size_t)ctx->rank * count * 4, ctx->rank, 0, count * 4);
        bool is_grouped = round < 2 || (round < 4 && ctx->rank % 2 == 0);
        ncclResult_t res = is_grouped ? ncclGroupStart() : ncclSuccess;
        if (res == ncclSuccess)
            res = ncclAllReduce(a.data, a.data, count, ncclInt32, ncclSum, ctx->comm, NULL);
        if (res == ncclSuccess && round < 2)
            res = ncclAllReduce(b.data, b.data, count, ncclInt32, ncclMax, ctx->comm, NULL);
        if (res == ncclSuccess && round < 2)
            res = ncclAllGather((char *)g.data + (size_t)ctx->rank * count * 4, g.data, count,
                                ncclInt32, ctx->comm, NULL);
        if (res == ncclSuccess && is_grouped)
            res = ncclGroupEnd();
        if (!tl_ok(ctx, res, "grouped calls"))
            return 1;
        rc = ce_red_check(a.data, ncclInt32, ncclSum, (int)n, 0, count, err, sizeof(err));
        if (rc == 0 && round < 2)
            rc = ce_red_check(b.data, ncclInt32, ncclMax, (int)n, 0, count, err, sizeof(err));
        for (size_t r = 0; rc == 0 && round < 2 && r < n; r++)
            rc = ce_bytes_check((char *)g.data + r * count * 4, (int)r, 0, count * 4, err,
                                sizeof(err));
        if (rc != 0)
            tl_failf(ctx, "round %d: %s", round, err);
    }
    return (rbuf_put(ctx, &a) && rbuf_put(ctx, &b) && rbuf_put(ctx, &g)) ? rc != 0 : 1;
}

static bool contains(const char *text, const char *word)
{
    for (size_t n = strlen(word); text && *text; text++)
        if (strncasecmp(text, word, n) == 0)
            return true;
    return false;
}

/* Rank 1 leaves after one direct call, without a word: rank 0's next one ends with
 * ncclRemoteError naming it. */
static int raw_peer_exits(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    size_t count = 50000;
    if (!tl_ok(ctx, ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    struct tl_ctx c = *ctx;
    c.comm = comm;
    struct rbuf a;
    if (!rbuf_get(&c, &a, count * 4, false) ||
        !tl_ok(ctx, ncclAllReduce(a.data, a.data, count, ncclFloat32, ncclSum, comm, NULL),
               "first allreduce"))
        return 1;
    if (ctx->rank == 1)
        _exit(0);
    ncclResult_t res = ncclAllReduce(a.data, a.data, count, ncclFloat32, ncclSum, comm, NULL);
    if (res != ncclRemoteError || !contains(ncclGetLastError(comm), "rank 1")) {
        tl_failf(ctx,
                 "allreduce with a peer gone returned %s (%s), want ncclRemoteError naming "
                 "rank 1",
                 ncclGetErrorString(res), ncclGetLastError(comm));
        return 1;
    }
    return tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort") ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct tl_case cases[32];
    size_t n = 0, max = sizeof(cases) / sizeof(cases[0]);
    static const int nps[] = {2, 3, 4};
    for (size_t i = 0; i < sizeof(nps) / sizeof(nps[0]); i++)
        n = ce_add_case(cases, n, max,
                        (struct tl_case){.mode = TL_PROCS,
                                         .nranks = nps[i],
                                         .env = ENV_LOW,
                                         .body = body_matrix,
                                         .timeout_s = 240},
                        "board-direct/matrix/np%d/proc", nps[i]);
    n = ce_add_case(
        cases, n, max,
        (struct tl_case){
            .mode = TL_THREADS, .nranks = 2, .env = ENV_LOW, .body = body_matrix, .timeout_s = 240},
        "board-direct/matrix/np2/threads");
    n = ce_add_case(
        cases, n, max,
        (struct tl_case){
            .mode = TL_PROCS, .nranks = 8, .env = ENV_LOW, .body = body_mixed, .timeout_s = 240},
        "board-direct/mixed/np8/proc");
    static const struct {
        const char *what;
        tl_body_fn body;
    } small[] = {{"premulsum", body_premulsum},
                 {"mixed", body_mixed},
                 {"groups", body_groups},
                 {"large", body_large}};
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
        for (int np = 2; np <= 3; np++)
            n = ce_add_case(
                cases, n, max,
                (struct tl_case){
                    .mode = TL_PROCS, .nranks = np, .body = small[i].body, .timeout_s = 60},
                "board-direct/%s/np%d/proc", small[i].what, np);
    n = ce_add_case(
        cases, n, max,
        (struct tl_case){.mode = TL_THREADS, .nranks = 3, .body = body_groups, .timeout_s = 60},
        "board-direct/groups/np3/threads");
    n = ce_add_case(cases, n, max,
                    (struct tl_case){.mode = TL_PROCS,
                                     .nranks = 2,
                                     .env = "ANYCCL_LOCAL_REGISTER=0",
                                     .body = body_mixed,
                                     .timeout_s = 60},
                    "board-direct/mixed/np2/off");
    /* allgathers then read by cross-memory attach, whose tasks release their connectors early */
    n = ce_add_case(cases, n, max,
                    (struct tl_case){.mode = TL_PROCS,
                                     .nranks = 3,
                                     .env = "ANYCCL_CMA_ENABLE=1 " ENV_LOW,
                                     .body = body_mixed,
                                     .timeout_s = 60},
                    "board-direct/mixed/np3/cma");
    n = ce_add_case(cases, n, max,
                    (struct tl_case){
                        .mode = TL_PROCS, .nranks = 2, .raw_body = raw_peer_exits, .timeout_s = 30},
                    "board-direct/peer-exits/np2/proc");
    return tl_main(argc, argv, cases, n);
}
