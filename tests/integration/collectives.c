/* Integration test of every collective beyond allreduce (allgather, reduce-scatter, broadcast and
 * bcast, reduce, alltoall, gather, scatter) through the public API on host buffers with a NULL
 * stream: every type, every op, counts 0/1/odd, out-of-place and in-place as NCCL defines it, roots
 * 0 and last, on 1-8 ranks over shared memory and TCP. Outputs start as sentinel with guards on both
 * sides, so writes out of bounds or where NCCL says a buffer is unused are caught. */
#include "coll_expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_LEN 128
#define ERR_LEN 256

/* One (type, count) combination of the sweep. */
struct tcase {
    ncclDataType_t type;
    size_t count;
};

/* Every type at counts 1 and 7; count 0 and odd larger counts for a few element sizes. */
static size_t sweep(struct tcase *out, size_t max)
{
    static const struct tcase extra[] = {
        {ncclFloat32, 0},
        {ncclInt8, 0},
        {ncclInt8, 1001},
        {ncclBfloat16, 1001},
        {ncclFloat32, 1001},
        {ncclFloat64, 1001},
        /* 8-64 KiB steps: written into shared-memory slots with non-temporal stores between
         * ranks that each have a core (src/core/exec.c, is_slot_streamed); odd lengths end in a
         * partial vector */
        {ncclInt8, 16411},
        {ncclFloat32, 12289},
        {ncclFloat32, 100003}, /* 4 and 8 ranks over sockets: doubling rounds of whole MiBs */
        {ncclFloat32, 300007}, /* over a MiB: several slots / chunks per step */
    };
    size_t n = 0;
    for (int t = 0; t < ce_ntypes && n + 2 <= max; t++) {
        out[n++] = (struct tcase){ce_all_types[t], 1};
        out[n++] = (struct tcase){ce_all_types[t], 7};
    }
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]) && n < max; i++)
        out[n++] = extra[i];
    return n;
}

/* The big count runs only with sum: the ops are covered by the small counts. */
static bool is_op_swept(const struct tcase *tc, ncclRedOp_t op)
{
    return tc->count < 100000 || op == ncclSum;
}

static int report(const struct tl_ctx *ctx, const char *label, int is_bad, const char *err)
{
    if (!is_bad)
        return 0;
    tl_failf(ctx, "%s: %s", label, err);
    return 1;
}

static int check_same(const void *got, const void *want, size_t nbytes, const char *what,
                      char *err, size_t errlen)
{
    const unsigned char *g = got, *w = want;
    for (size_t j = 0; j < nbytes; j++) {
        if (g[j] != w[j]) {
            snprintf(err, errlen, "%s: byte %zu changed from 0x%02x to 0x%02x", what, j, w[j],
                     g[j]);
            return -1;
        }
    }
    return 0;
}

static void *dup_bytes(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q)
        memcpy(q, p, n);
    return q;
}

/* ---- allgather ---------------------------------------------------------------------------- */

static int one_allgather(const struct tl_ctx *ctx, const struct tcase *tc, bool is_inplace)
{
    int n = ctx->nranks, bad = 0;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf recv, send = {0};
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "allgather %s count %zu %s", ce_type_name(tc->type),
             tc->count, is_inplace ? "in-place" : "out-of-place");
    if (ce_buf_alloc(&recv, bytes * n) || (!is_inplace && ce_buf_alloc(&send, bytes)))
        return report(ctx, label, 1, "out of memory");
    char *sendp = is_inplace ? (char *)recv.data + ctx->rank * bytes : send.data;
    ce_bytes_fill(sendp, ctx->rank, 0, bytes);
    if (!tl_ok(ctx, ncclAllGather(sendp, recv.data, tc->count, tc->type, ctx->comm, NULL),
               label)) {
        bad = -1;
        goto out;
    }
    for (int r = 0; r < n && !bad; r++)
        bad = ce_bytes_check((char *)recv.data + r * bytes, r, 0, bytes, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    if (!is_inplace) {
        bad = bad || ce_bytes_check(send.data, ctx->rank, 0, bytes, err, sizeof(err));
        bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    }
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&recv);
    if (!is_inplace)
        ce_buf_free(&send);
    return bad;
}

/* ---- reduce-scatter ----------------------------------------------------------------------- */

static int one_reduce_scatter(const struct tl_ctx *ctx, const struct tcase *tc, ncclRedOp_t op,
                              bool is_inplace)
{
    int n = ctx->nranks, bad = 0;
    size_t esize = ce_type_size(tc->type), bytes = tc->count * esize;
    struct ce_buf send, recv = {0};
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "reducescatter %s %s count %zu %s", ce_type_name(tc->type),
             ce_op_name(op), tc->count, is_inplace ? "in-place" : "out-of-place");
    if (ce_buf_alloc(&send, bytes * n) || (!is_inplace && ce_buf_alloc(&recv, bytes)))
        return report(ctx, label, 1, "out of memory");
    ce_red_fill(send.data, tc->type, op, n, ctx->rank, 0, tc->count * n);
    void *orig = dup_bytes(send.data, bytes * n);
    char *recvp = is_inplace ? (char *)send.data + ctx->rank * bytes : recv.data;
    if (!tl_ok(ctx, ncclReduceScatter(send.data, recvp, tc->count, tc->type, op, ctx->comm, NULL),
               label)) {
        bad = -1;
        goto out;
    }
    bad = ce_red_check(recvp, tc->type, op, n, ctx->rank * tc->count, tc->count, err,
                       sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    if (!is_inplace) {
        bad = bad || check_same(send.data, orig, bytes * n, "sendbuff", err, sizeof(err));
        bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    }
    bad = report(ctx, label, bad, err);
out:
    free(orig);
    ce_buf_free(&send);
    if (!is_inplace)
        ce_buf_free(&recv);
    return bad;
}

/* ---- broadcast / bcast -------------------------------------------------------------------- */

enum bcast_kind { BCAST_OUT_OF_PLACE, BCAST_IN_PLACE, BCAST_LEGACY, BCAST_KIND_COUNT };
static const char *const bcast_names[] = {"broadcast out-of-place", "broadcast in-place",
                                          "ncclBcast"};

static ncclResult_t call_bcast(const struct tl_ctx *ctx, enum bcast_kind kind, const void *send,
                               void *recv, const struct tcase *tc, int root)
{
    if (kind == BCAST_LEGACY)
        return ncclBcast(recv, tc->count, tc->type, root, ctx->comm, NULL);
    return ncclBroadcast(kind == BCAST_IN_PLACE ? recv : send, recv, tc->count, tc->type, root,
                         ctx->comm, NULL);
}

/* Non-root ranks pass a sentinel sendbuff in the out-of-place case: NCCL ignores it there. */
static int one_broadcast(const struct tl_ctx *ctx, const struct tcase *tc, int root,
                         enum bcast_kind kind)
{
    int bad = 0;
    bool is_root = ctx->rank == root;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "%s %s count %zu root %d", bcast_names[kind],
             ce_type_name(tc->type), tc->count, root);
    if (ce_buf_alloc(&recv, bytes) || ce_buf_alloc(&send, bytes))
        return report(ctx, label, 1, "out of memory");
    if (is_root)
        ce_bytes_fill(kind == BCAST_OUT_OF_PLACE ? send.data : recv.data, root, 0, bytes);
    if (!tl_ok(ctx, call_bcast(ctx, kind, send.data, recv.data, tc, root), label)) {
        bad = -1;
        goto out;
    }
    bad = ce_bytes_check(recv.data, root, 0, bytes, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    if (kind == BCAST_OUT_OF_PLACE && is_root)
        bad = bad || ce_bytes_check(send.data, root, 0, bytes, err, sizeof(err));
    if (kind == BCAST_OUT_OF_PLACE && !is_root)
        bad = bad || ce_check_untouched(send.data, bytes, "non-root sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&recv);
    ce_buf_free(&send);
    return bad;
}

/* ---- reduce ------------------------------------------------------------------------------- */

/* recvbuff is only used on the root: elsewhere it must stay sentinel (out-of-place) or keep the
 * rank's input (in-place, where it is also the const sendbuff). */
static int one_reduce(const struct tl_ctx *ctx, const struct tcase *tc, ncclRedOp_t op, int root,
                      bool is_inplace)
{
    int n = ctx->nranks, bad = 0;
    bool is_root = ctx->rank == root;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "reduce %s %s count %zu root %d %s", ce_type_name(tc->type),
             ce_op_name(op), tc->count, root, is_inplace ? "in-place" : "out-of-place");
    if (ce_buf_alloc(&send, bytes) || ce_buf_alloc(&recv, bytes))
        return report(ctx, label, 1, "out of memory");
    struct ce_buf *in = is_inplace ? &recv : &send;
    ce_red_fill(in->data, tc->type, op, n, ctx->rank, 0, tc->count);
    void *orig = dup_bytes(in->data, bytes);
    if (!tl_ok(ctx, ncclReduce(in->data, recv.data, tc->count, tc->type, op, root, ctx->comm,
                               NULL), label)) {
        bad = -1;
        goto out;
    }
    if (is_root)
        bad = ce_red_check(recv.data, tc->type, op, n, 0, tc->count, err, sizeof(err));
    else if (is_inplace)
        bad = check_same(recv.data, orig, bytes, "non-root buffer", err, sizeof(err));
    else
        bad = ce_check_untouched(recv.data, bytes, "non-root recvbuff", err, sizeof(err));
    if (!is_inplace)
        bad = bad || check_same(send.data, orig, bytes, "sendbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    free(orig);
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

/* ---- alltoall ----------------------------------------------------------------------------- */

/* Rank s sends bytes [d*bytes, (d+1)*bytes) of its pattern to rank d. */
static int one_alltoall(const struct tl_ctx *ctx, const struct tcase *tc)
{
    int n = ctx->nranks, bad = 0;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "alltoall %s count %zu", ce_type_name(tc->type), tc->count);
    if (ce_buf_alloc(&send, bytes * n) || ce_buf_alloc(&recv, bytes * n))
        return report(ctx, label, 1, "out of memory");
    ce_bytes_fill(send.data, ctx->rank, 0, bytes * n);
    if (!tl_ok(ctx, ncclAlltoAll(send.data, recv.data, tc->count, tc->type, ctx->comm, NULL),
               label)) {
        bad = -1;
        goto out;
    }
    for (int s = 0; s < n && !bad; s++)
        bad = ce_bytes_check((char *)recv.data + s * bytes, s, ctx->rank * bytes, bytes, err,
                             sizeof(err));
    bad = bad || ce_bytes_check(send.data, ctx->rank, 0, bytes * n, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

/* ---- gather ------------------------------------------------------------------------------- */

/* In-place (root only): sendbuff == recvbuff + root * count. Non-root recvbuff stays sentinel. */
static int one_gather(const struct tl_ctx *ctx, const struct tcase *tc, int root, bool is_inplace)
{
    int n = ctx->nranks, bad = 0;
    bool is_root = ctx->rank == root, is_root_inplace = is_inplace && is_root;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "gather %s count %zu root %d %s", ce_type_name(tc->type),
             tc->count, root, is_inplace ? "in-place" : "out-of-place");
    if (ce_buf_alloc(&send, bytes) || ce_buf_alloc(&recv, bytes * n))
        return report(ctx, label, 1, "out of memory");
    char *sendp = is_root_inplace ? (char *)recv.data + root * bytes : send.data;
    ce_bytes_fill(sendp, ctx->rank, 0, bytes);
    if (!tl_ok(ctx, ncclGather(sendp, recv.data, tc->count, tc->type, root, ctx->comm, NULL),
               label)) {
        bad = -1;
        goto out;
    }
    for (int s = 0; s < n && is_root && !bad; s++)
        bad = ce_bytes_check((char *)recv.data + s * bytes, s, 0, bytes, err, sizeof(err));
    if (!is_root)
        bad = ce_check_untouched(recv.data, bytes * n, "non-root recvbuff", err, sizeof(err));
    if (!is_root_inplace)
        bad = bad || ce_bytes_check(send.data, ctx->rank, 0, bytes, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

/* ---- scatter ------------------------------------------------------------------------------ */

/* In-place (root only): recvbuff == sendbuff + root * count. Non-root sendbuff stays sentinel. */
static int one_scatter(const struct tl_ctx *ctx, const struct tcase *tc, int root, bool is_inplace)
{
    int n = ctx->nranks, bad = 0;
    bool is_root = ctx->rank == root, is_root_inplace = is_inplace && is_root;
    size_t bytes = tc->count * ce_type_size(tc->type);
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    snprintf(label, sizeof(label), "scatter %s count %zu root %d %s", ce_type_name(tc->type),
             tc->count, root, is_inplace ? "in-place" : "out-of-place");
    if (ce_buf_alloc(&send, bytes * n) || ce_buf_alloc(&recv, bytes))
        return report(ctx, label, 1, "out of memory");
    if (is_root)
        ce_bytes_fill(send.data, root, 0, bytes * n);
    char *recvp = is_root_inplace ? (char *)send.data + root * bytes : recv.data;
    if (!tl_ok(ctx, ncclScatter(send.data, recvp, tc->count, tc->type, root, ctx->comm, NULL),
               label)) {
        bad = -1;
        goto out;
    }
    bad = ce_bytes_check(recvp, root, ctx->rank * bytes, bytes, err, sizeof(err));
    if (is_root)
        bad = bad || ce_bytes_check(send.data, root, 0, bytes * n, err, sizeof(err));
    else
        bad = bad || ce_check_untouched(send.data, bytes * n, "non-root sendbuff", err,
                                        sizeof(err));
    if (!is_root_inplace)
        bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

/* ---- bodies: sweep everything; stop at the first API error (the ranks are out of step), keep
 * going after a wrong value (every rank makes the same calls) -------------------------------- */

#define MAX_SWEEP 64

/* After an API error the ranks are out of step: no barrier then, the launcher aborts. */
static int finish_body(const struct tl_ctx *ctx, int nbad, int rc)
{
    if (rc < 0 || !tl_ok(ctx, ce_barrier(ctx->comm), "final barrier (1-int allreduce)"))
        return 1;
    return nbad > 0;
}

static int body_allgather(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0;
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int inplace = 0; inplace <= 1 && rc >= 0; inplace++)
            nbad += (rc = one_allgather(ctx, &tcs[i], inplace)) > 0;
    return finish_body(ctx, nbad, rc);
}

static int body_reduce_scatter(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0;
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int o = 0; o < ce_nops && rc >= 0; o++)
            for (int inplace = 0; inplace <= 1 && rc >= 0 && is_op_swept(&tcs[i], o); inplace++)
                nbad += (rc = one_reduce_scatter(ctx, &tcs[i], ce_all_ops[o], inplace)) > 0;
    return finish_body(ctx, nbad, rc);
}

static int body_broadcast(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0, roots[2] = {0, ctx->nranks - 1};
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int ri = 0; ri < 2 && rc >= 0; ri++)
            for (int k = 0; k < BCAST_KIND_COUNT && rc >= 0; k++)
                nbad += (rc = one_broadcast(ctx, &tcs[i], roots[ri], k)) > 0;
    return finish_body(ctx, nbad, rc);
}

static int body_reduce(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0, roots[2] = {0, ctx->nranks - 1};
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int o = 0; o < ce_nops && rc >= 0; o++)
            for (int ri = 0; ri < 2 && rc >= 0 && is_op_swept(&tcs[i], o); ri++)
                for (int inplace = 0; inplace <= 1 && rc >= 0; inplace++)
                    nbad += (rc = one_reduce(ctx, &tcs[i], ce_all_ops[o], roots[ri],
                                             inplace)) > 0;
    return finish_body(ctx, nbad, rc);
}

/* Calls on the same buffers: again with new data, then with another count, root or type. A
 * reused plan (src/core/plan.c) must still copy the rank's own block, and a changed argument must
 * be planned anew. Element i from rank s for rank d in call k: k 10^8 + s 10^5 + d 10^3 + i. */
enum exchange { EXCHANGE_ALLTOALL, EXCHANGE_GATHER, EXCHANGE_SCATTER };
#define SAME_MAX_COUNT 64

static int32_t exchange_value(int k, int s, int d, size_t i)
{
    return k * 100000000 + s * 100000 + d * 1000 + (int32_t)i;
}

static int same_buffers_exchange(const struct tl_ctx *ctx, enum exchange what)
{
    static const struct {
        size_t count;
        int root;
        ncclDataType_t type;
    } calls[] = {{64, 0, ncclInt32}, {64, 0, ncclInt32},  {48, 0, ncclInt32},
                 {48, 1, ncclInt32}, {48, 1, ncclUint32}, {64, 0, ncclInt32}};
    int n = ctx->nranks, me = ctx->rank, bad = 0;
    size_t cap = (size_t)n * SAME_MAX_COUNT;
    int32_t *send = malloc(cap * sizeof(*send)), *recv = malloc(cap * sizeof(*recv));
    char label[LABEL_LEN];
    if (!send || !recv) {
        free(send);
        free(recv);
        return report(ctx, "same-buffers exchange", 1, "out of memory");
    }
    for (int k = 0; k < (int)(sizeof(calls) / sizeof(calls[0])) && !bad; k++) {
        size_t cnt = calls[k].count;
        int root = calls[k].root % n;
        ncclResult_t res;
        for (int d = 0; d < n; d++)
            for (size_t i = 0; i < cnt; i++)
                send[(size_t)d * cnt + i] =
                    exchange_value(k, me, what == EXCHANGE_GATHER ? root : d, i);
        for (size_t i = 0; i < cap; i++)
            recv[i] = -1;
        static const char *const names[] = {"alltoall", "gather", "scatter"};
        snprintf(label, sizeof(label), "%s call %d on the same buffers (count %zu, root %d)",
                 names[what], k, cnt, root);
        if (what == EXCHANGE_ALLTOALL)
            res = ncclAlltoAll(send, recv, cnt, calls[k].type, ctx->comm, NULL);
        else if (what == EXCHANGE_GATHER)
            res = ncclGather(send, recv, cnt, calls[k].type, root, ctx->comm, NULL);
        else
            res = ncclScatter(send, recv, cnt, calls[k].type, root, ctx->comm, NULL);
        if (!tl_ok(ctx, res, label)) {
            bad = -1;
            break;
        }
        /* what this rank must hold: from every rank (all-to-all, the gather's root) or from the
         * root (scatter); nothing else written */
        bool is_from_all = what == EXCHANGE_ALLTOALL || (what == EXCHANGE_GATHER && me == root);
        size_t filled = is_from_all ? (size_t)n * cnt : what == EXCHANGE_SCATTER ? cnt : 0;
        for (size_t j = 0; j < cap && !bad; j++) {
            int s = what == EXCHANGE_SCATTER ? root : (int)(j / cnt);
            int d = what == EXCHANGE_GATHER ? root : me;
            int32_t want = j < filled ? exchange_value(k, s, d, j % cnt) : -1;
            if (recv[j] != want) {
                char err[ERR_LEN];
                snprintf(err, sizeof(err), "element %zu is %d, want %d", j, (int)recv[j],
                         (int)want);
                bad = report(ctx, label, 1, err);
            }
        }
    }
    free(send);
    free(recv);
    return bad;
}

static int body_alltoall(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0;
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        nbad += (rc = one_alltoall(ctx, &tcs[i])) > 0;
    if (rc >= 0)
        nbad += (rc = same_buffers_exchange(ctx, EXCHANGE_ALLTOALL)) > 0;
    return finish_body(ctx, nbad, rc);
}

static int body_gather(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0, roots[2] = {0, ctx->nranks - 1};
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int ri = 0; ri < 2 && rc >= 0; ri++)
            for (int inplace = 0; inplace <= 1 && rc >= 0; inplace++)
                nbad += (rc = one_gather(ctx, &tcs[i], roots[ri], inplace)) > 0;
    if (rc >= 0)
        nbad += (rc = same_buffers_exchange(ctx, EXCHANGE_GATHER)) > 0;
    return finish_body(ctx, nbad, rc);
}

static int body_scatter(struct tl_ctx *ctx)
{
    struct tcase tcs[MAX_SWEEP];
    size_t ntc = sweep(tcs, MAX_SWEEP);
    int nbad = 0, rc = 0, roots[2] = {0, ctx->nranks - 1};
    for (size_t i = 0; i < ntc && rc >= 0; i++)
        for (int ri = 0; ri < 2 && rc >= 0; ri++)
            for (int inplace = 0; inplace <= 1 && rc >= 0; inplace++)
                nbad += (rc = one_scatter(ctx, &tcs[i], roots[ri], inplace)) > 0;
    if (rc >= 0)
        nbad += (rc = same_buffers_exchange(ctx, EXCHANGE_SCATTER)) > 0;
    return finish_body(ctx, nbad, rc);
}

/* 64 MiB in total: the allgather's output and the reduce-scatter's input, float32 sum. */
#define LARGE_BYTES (64u << 20)

static int body_large_allgather(struct tl_ctx *ctx)
{
    struct tcase tc = {ncclFloat32, LARGE_BYTES / 4 / ctx->nranks};
    int rc = one_allgather(ctx, &tc, false);
    return finish_body(ctx, rc > 0, rc);
}

static int body_large_broadcast(struct tl_ctx *ctx)
{
    struct tcase tc = {ncclFloat32, LARGE_BYTES / 4};
    int rc = one_broadcast(ctx, &tc, ctx->nranks - 1, BCAST_OUT_OF_PLACE);
    return finish_body(ctx, rc > 0, rc);
}

static int body_large_reduce_scatter(struct tl_ctx *ctx)
{
    struct tcase tc = {ncclFloat32, LARGE_BYTES / 4 / ctx->nranks};
    int rc = one_reduce_scatter(ctx, &tc, ncclSum, true);
    return finish_body(ctx, rc > 0, rc);
}

/* ---- the case table ----------------------------------------------------------------------- */

#define MAX_CASES 256
#define TIMEOUT_S 300

static size_t add_large(struct tl_case *out, size_t n, const char *prefix, tl_body_fn body)
{
    static const struct {
        int np;
        const char *env, *name;
        bool is_slow;
    } cfgs[] = {{2, NULL, "shm", false},
                {4, NULL, "shm", false},
                {2, "ANYCCL_CMA_ENABLE=1", "cma", false},
                {2, "ANYCCL_SHM_STREAM=1", "stream", false},
                {2, "NCCL_SHM_DISABLE=1", "tcp", true}};
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        struct tl_case c = {NULL, TL_PROCS, cfgs[i].np, cfgs[i].env, body, NULL, NULL, TIMEOUT_S,
                            cfgs[i].is_slow};
        n = ce_add_case(out, n, MAX_CASES, c, "large/%s/np%d/%s/proc", prefix, cfgs[i].np,
                        cfgs[i].name);
    }
    return n;
}

int main(int argc, char **argv)
{
    static struct tl_case cases[MAX_CASES];
    size_t n = 0;
    static const struct {
        const char *name;
        tl_body_fn body;
    } colls[] = {
        {"allgather", body_allgather}, {"reducescatter", body_reduce_scatter},
        {"broadcast", body_broadcast}, {"reduce", body_reduce},
        {"alltoall", body_alltoall},   {"gather", body_gather},
        {"scatter", body_scatter},
    };
    for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
        n = ce_add_matrix(cases, n, MAX_CASES, colls[i].name, colls[i].body, NULL, TIMEOUT_S);
        n = ce_add_proto_cases(cases, n, MAX_CASES, colls[i].name, colls[i].body, NULL,
                               TIMEOUT_S);
        /* every slot of 8 KiB and more streamed (src/core/exec.c, move_to_slot) */
        struct tl_case c = {NULL, TL_PROCS,  3,    "ANYCCL_SHM_STREAM=1", colls[i].body, NULL,
                            NULL, TIMEOUT_S, false};
        n = ce_add_case(cases, n, MAX_CASES, c, "%s/store-stream/np3/shm/proc", colls[i].name);
    }
    n = add_large(cases, n, "allgather", body_large_allgather);
    n = add_large(cases, n, "reducescatter", body_large_reduce_scatter);
    n = add_large(cases, n, "broadcast", body_large_broadcast);
    return tl_main(argc, argv, cases, n);
}
