/* Integration test of ncclSend/ncclRecv on host buffers with a NULL stream: every ordered pair of
 * ranks (a rank with itself too, inside a group), a ring shift, an all-to-all-v with per-pair
 * counts (0 included) posted in a different random order on every rank, and many messages to one
 * peer in one group (NCCL matches them in posting order). Exact byte patterns, guarded buffers. */
#include "coll_expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_LEN 128
#define ERR_LEN 256

static int report(const struct tl_ctx *ctx, const char *label, int is_bad, const char *err)
{
    if (!is_bad)
        return 0;
    tl_failf(ctx, "%s: %s", label, err);
    return 1;
}

/* After an API error the ranks are out of step: no barrier then, the launcher aborts. */
static int finish_body(const struct tl_ctx *ctx, int nbad, int rc)
{
    if (rc < 0 || !tl_ok(ctx, ce_barrier(ctx->comm), "final barrier (1-int allreduce)"))
        return 1;
    return nbad > 0;
}

/* Byte offset inside rank src's pattern of what it sends to dst: disjoint per destination. */
static size_t stream_offset(int dst)
{
    return (size_t)dst << 20;
}

/* ---- every ordered pair ------------------------------------------------------------------- */

struct p2p_case {
    ncclDataType_t type;
    size_t count;
};
static const struct p2p_case pair_cases[] = {
    {ncclInt8, 1}, {ncclFloat32, 7}, {ncclFloat64, 1001}, {ncclUint8, 0}, {ncclBfloat16, 33},
};
#define NPAIR_CASES (sizeof(pair_cases) / sizeof(pair_cases[0]))

/* One exchange src -> dst inside a group on both sides (on one rank when src == dst). Ranks
 * other than src and dst do nothing. Returns -1 on an API error, 1 on wrong data. */
static int one_pair(const struct tl_ctx *ctx, int src, int dst, const struct p2p_case *pc)
{
    size_t bytes = pc->count * ce_type_size(pc->type);
    bool is_src = ctx->rank == src, is_dst = ctx->rank == dst;
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    int bad = 0;
    if (!is_src && !is_dst)
        return 0;
    snprintf(label, sizeof(label), "send %d -> %d %s count %zu", src, dst,
             ce_type_name(pc->type), pc->count);
    if (ce_buf_alloc(&send, bytes) || ce_buf_alloc(&recv, bytes))
        return report(ctx, label, 1, "out of memory");
    ce_bytes_fill(send.data, src, stream_offset(dst), bytes);
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart");
    if (is_ok && is_src)
        is_ok = tl_ok(ctx, ncclSend(send.data, pc->count, pc->type, dst, ctx->comm, NULL), label);
    if (is_ok && is_dst)
        is_ok = tl_ok(ctx, ncclRecv(recv.data, pc->count, pc->type, src, ctx->comm, NULL), label);
    if (!tl_ok(ctx, ncclGroupEnd(), label) || !is_ok) {
        bad = -1;
        goto out;
    }
    if (is_dst)
        bad = ce_bytes_check(recv.data, src, stream_offset(dst), bytes, err, sizeof(err));
    else
        bad = ce_check_untouched(recv.data, bytes, "recvbuff of a rank that only sent", err,
                                 sizeof(err));
    bad = bad || ce_bytes_check(send.data, src, stream_offset(dst), bytes, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = bad || ce_buf_check_guards(&send, "sendbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

static int body_pairs(struct tl_ctx *ctx)
{
    int nbad = 0, rc = 0;
    for (int src = 0; src < ctx->nranks && rc >= 0; src++)
        for (int dst = 0; dst < ctx->nranks && rc >= 0; dst++)
            for (size_t i = 0; i < NPAIR_CASES && rc >= 0; i++)
                nbad += (rc = one_pair(ctx, src, dst, &pair_cases[i])) > 0;
    return finish_body(ctx, nbad, rc);
}

/* ---- ring shift ---------------------------------------------------------------------------- */

static int one_ring(const struct tl_ctx *ctx, size_t nbytes, int shift)
{
    int n = ctx->nranks;
    int next = (ctx->rank + shift) % n, prev = (ctx->rank - shift % n + n) % n;
    struct ce_buf send, recv;
    char label[LABEL_LEN], err[ERR_LEN];
    int bad = 0;
    snprintf(label, sizeof(label), "ring shift by %d, %zu bytes", shift, nbytes);
    if (ce_buf_alloc(&send, nbytes) || ce_buf_alloc(&recv, nbytes))
        return report(ctx, label, 1, "out of memory");
    ce_bytes_fill(send.data, ctx->rank, stream_offset(next), nbytes);
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
                 tl_ok(ctx, ncclSend(send.data, nbytes, ncclUint8, next, ctx->comm, NULL), label) &&
                 tl_ok(ctx, ncclRecv(recv.data, nbytes, ncclUint8, prev, ctx->comm, NULL), label);
    if (!tl_ok(ctx, ncclGroupEnd(), label) || !is_ok) {
        bad = -1;
        goto out;
    }
    bad = ce_bytes_check(recv.data, prev, stream_offset(ctx->rank), nbytes, err, sizeof(err));
    bad = bad || ce_buf_check_guards(&recv, "recvbuff", err, sizeof(err));
    bad = report(ctx, label, bad, err);
out:
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return bad;
}

static int body_ring(struct tl_ctx *ctx)
{
    static const size_t sizes[] = {1, 4096, 1000003};
    int nbad = 0, rc = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && rc >= 0; i++)
        for (int shift = 1; shift <= 2 && rc >= 0; shift++)
            nbad += (rc = one_ring(ctx, sizes[i], shift)) > 0;
    return finish_body(ctx, nbad, rc);
}

/* ---- all-to-all-v in random order ---------------------------------------------------------- */

/* Elements (int32) that src sends to dst: 0 for about one pair in seven. */
static size_t a2av_count(int src, int dst, size_t scale)
{
    return (size_t)((src * 3 + dst * 5 + 1) % 7) * scale;
}

/* Post the 2n operations (n sends, n receives) in an order shuffled with a per-rank seed. */
static bool post_a2av(const struct tl_ctx *ctx, char **sendp, char **recvp, size_t scale,
                      unsigned seed)
{
    int n = ctx->nranks, order[2 * TL_MAX_RANKS];
    for (int i = 0; i < 2 * n; i++)
        order[i] = i;
    for (int i = 2 * n - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    bool is_ok = true;
    for (int i = 0; i < 2 * n && is_ok; i++) {
        int peer = order[i] % n;
        if (order[i] < n)
            is_ok = tl_ok(ctx, ncclSend(sendp[peer], a2av_count(ctx->rank, peer, scale), ncclInt32,
                                        peer, ctx->comm, NULL), "a2av ncclSend");
        else
            is_ok = tl_ok(ctx, ncclRecv(recvp[peer], a2av_count(peer, ctx->rank, scale), ncclInt32,
                                        peer, ctx->comm, NULL), "a2av ncclRecv");
    }
    return is_ok;
}

static int check_a2av(const struct tl_ctx *ctx, struct ce_buf *recv, size_t scale, char *err)
{
    for (int s = 0; s < ctx->nranks; s++) {
        size_t bytes = a2av_count(s, ctx->rank, scale) * 4;
        if (ce_bytes_check(recv[s].data, s, stream_offset(ctx->rank), bytes, err, ERR_LEN) ||
            ce_buf_check_guards(&recv[s], "recvbuff", err, ERR_LEN)) {
            size_t len = strlen(err);
            snprintf(err + len, ERR_LEN - len, " (from rank %d)", s);
            return 1;
        }
    }
    return 0;
}

static int one_a2av(const struct tl_ctx *ctx, size_t scale, unsigned iter)
{
    int n = ctx->nranks, bad = 0, nalloc = 0;
    struct ce_buf send[TL_MAX_RANKS], recv[TL_MAX_RANKS];
    char *sendp[TL_MAX_RANKS], *recvp[TL_MAX_RANKS];
    char label[LABEL_LEN], err[ERR_LEN] = "";
    snprintf(label, sizeof(label), "all-to-all-v scale %zu, random order %u", scale, iter);
    for (; nalloc < n; nalloc++) {
        if (ce_buf_alloc(&send[nalloc], a2av_count(ctx->rank, nalloc, scale) * 4) ||
            ce_buf_alloc(&recv[nalloc], a2av_count(nalloc, ctx->rank, scale) * 4)) {
            bad = report(ctx, label, 1, "out of memory");
            goto out;
        }
        sendp[nalloc] = send[nalloc].data;
        recvp[nalloc] = recv[nalloc].data;
        ce_bytes_fill(sendp[nalloc], ctx->rank, stream_offset(nalloc), send[nalloc].nbytes);
    }
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
                 post_a2av(ctx, sendp, recvp, scale, iter * 7919u + (unsigned)ctx->rank * 31u);
    if (!tl_ok(ctx, ncclGroupEnd(), label) || !is_ok) {
        bad = -1;
        goto out;
    }
    bad = report(ctx, label, check_a2av(ctx, recv, scale, err), err);
out:
    for (int i = 0; i < nalloc; i++) {
        ce_buf_free(&send[i]);
        ce_buf_free(&recv[i]);
    }
    return bad;
}

/* Scale 65536 makes each message up to 1.5 MiB: more than one slot, so a library that runs the
 * group's operations one after the other in posting order deadlocks here. */
static int body_a2av(struct tl_ctx *ctx)
{
    static const size_t scales[] = {1, 33, 65536};
    int nbad = 0, rc = 0;
    for (size_t i = 0; i < sizeof(scales) / sizeof(scales[0]) && rc >= 0; i++)
        for (unsigned iter = 0; iter < 3 && rc >= 0; iter++)
            nbad += (rc = one_a2av(ctx, scales[i], iter)) > 0;
    return finish_body(ctx, nbad, rc);
}

/* ---- many messages to one peer in one group ------------------------------------------------ */

#define NMSGS 16

/* Message k is k*97+1 bytes (k = 0 is a 1-byte message, one in five is empty). */
static size_t msg_bytes(int k)
{
    return k % 5 == 4 ? 0 : (size_t)k * 97 + 1;
}

static int body_same_peer(struct tl_ctx *ctx)
{
    int n = ctx->nranks, next = (ctx->rank + 1) % n, prev = (ctx->rank + n - 1) % n, bad = 0;
    struct ce_buf send[NMSGS], recv[NMSGS];
    char err[ERR_LEN] = "";
    for (int k = 0; k < NMSGS; k++) {
        if (ce_buf_alloc(&send[k], msg_bytes(k)) || ce_buf_alloc(&recv[k], msg_bytes(k)))
            return report(ctx, "same peer", 1, "out of memory");
        ce_bytes_fill(send[k].data, ctx->rank, ((size_t)k << 16), msg_bytes(k));
    }
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart");
    for (int k = 0; k < NMSGS && is_ok; k++)
        is_ok = tl_ok(ctx, ncclSend(send[k].data, msg_bytes(k), ncclUint8, next, ctx->comm, NULL),
                      "ncclSend");
    for (int k = 0; k < NMSGS && is_ok; k++)
        is_ok = tl_ok(ctx, ncclRecv(recv[k].data, msg_bytes(k), ncclUint8, prev, ctx->comm, NULL),
                      "ncclRecv");
    if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd of 16 sends and 16 recvs") || !is_ok)
        bad = -1;
    for (int k = 0; k < NMSGS && bad == 0; k++) {
        if (ce_bytes_check(recv[k].data, prev, ((size_t)k << 16), msg_bytes(k), err,
                           sizeof(err)) ||
            ce_buf_check_guards(&recv[k], "recvbuff", err, sizeof(err))) {
            tl_failf(ctx, "message %d of %d from rank %d (posted in order): %s", k, NMSGS, prev,
                     err);
            bad = 1;
        }
    }
    for (int k = 0; k < NMSGS; k++) {
        ce_buf_free(&send[k]);
        ce_buf_free(&recv[k]);
    }
    return finish_body(ctx, bad > 0, bad);
}

#define MAX_CASES 192
#define TIMEOUT_S 300

int main(int argc, char **argv)
{
    static struct tl_case cases[MAX_CASES];
    size_t n = 0;
    n = ce_add_matrix(cases, n, MAX_CASES, "sendrecv/pairs", body_pairs, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "sendrecv/ring", body_ring, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "sendrecv/alltoallv", body_a2av, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "sendrecv/samepeer", body_same_peer, NULL, TIMEOUT_S);
    n = ce_add_proto_cases(cases, n, MAX_CASES, "sendrecv/pairs", body_pairs, NULL, TIMEOUT_S);
    n = ce_add_proto_cases(cases, n, MAX_CASES, "sendrecv/alltoallv", body_a2av, NULL,
                           TIMEOUT_S);
    return tl_main(argc, argv, cases, n);
}
