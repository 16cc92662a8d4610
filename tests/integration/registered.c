/* Registered buffers from ncclMemAlloc: on the host backend such memory is shared (a memfd), and
 * a transfer of at least ANYCCL_CMA_MIN_BYTES from a registered buffer is read by a receiver of
 * the same host straight from the sender's pages. The receiver learns it from the first slot, so
 * the cases mix registered and plain buffers on both sides, sizes on both sides of the threshold
 * and of a slot, send/recv rings in both directions in one group, all-to-all, gather and scatter,
 * repeated calls (mappings reused) and buffers freed and allocated again (mappings replaced).
 * Every element is checked. */
#include "launcher.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t value(int rank, size_t i, int round)
{
    return (int32_t)((uint32_t)rank * 1000003u + (uint32_t)i * 7u + (uint32_t)round * 65599u);
}

struct bufs {
    int32_t *send, *recv;
    void *send_handle, *recv_handle;
    bool is_shared;
};

static bool get_bufs(struct tl_ctx *ctx, struct bufs *b, size_t count, bool is_shared)
{
    size_t bytes = (count > 0 ? count : 1) * sizeof(int32_t); /* ncclMemAlloc refuses 0 */
    memset(b, 0, sizeof(*b));
    b->is_shared = is_shared;
    if (is_shared) {
        if (!tl_ok(ctx, ncclMemAlloc((void **)&b->send, bytes), "ncclMemAlloc") ||
            !tl_ok(ctx, ncclMemAlloc((void **)&b->recv, bytes), "ncclMemAlloc") ||
            !tl_ok(ctx, ncclCommRegister(ctx->comm, b->send, bytes, &b->send_handle),
                   "ncclCommRegister") ||
            !tl_ok(ctx, ncclCommRegister(ctx->comm, b->recv, bytes, &b->recv_handle),
                   "ncclCommRegister"))
            return false;
    } else {
        b->send = malloc(bytes);
        b->recv = malloc(bytes);
        if (!b->send || !b->recv) {
            tl_failf(ctx, "out of memory");
            return false;
        }
    }
    return true;
}

static bool put_bufs(struct tl_ctx *ctx, struct bufs *b)
{
    bool ok = true;
    if (b->is_shared) {
        ok = tl_ok(ctx, ncclCommDeregister(ctx->comm, b->send_handle), "ncclCommDeregister") &&
             tl_ok(ctx, ncclCommDeregister(ctx->comm, b->recv_handle), "ncclCommDeregister") &&
             tl_ok(ctx, ncclMemFree(b->send), "ncclMemFree") &&
             tl_ok(ctx, ncclMemFree(b->recv), "ncclMemFree");
    } else {
        free(b->send);
        free(b->recv);
    }
    return ok;
}

static bool check(struct tl_ctx *ctx, const char *what, const int32_t *got, size_t count,
                  int from, size_t first, int round)
{
    for (size_t i = 0; i < count; i++)
        if (got[i] != value(from, first + i, round)) {
            tl_failf(ctx, "%s (count %zu, round %d): element %zu from rank %d is %d, want %d", what,
                     count, round, i, from, (int)got[i], (int)value(from, first + i, round));
            return false;
        }
    return true;
}

/* Rank r sends to r+1 and receives from r-1, and the other way round, in one group; ranks with
 * odd numbers use plain memory, so every pair has one registered and one plain side. */
static bool ring_round(struct tl_ctx *ctx, size_t count, int round)
{
    int n = ctx->nranks, me = ctx->rank, next = (me + 1) % n, prev = (me + n - 1) % n;
    struct bufs a, b;
    bool is_shared = me % 2 == 0 || n == 1;
    if (!get_bufs(ctx, &a, count, is_shared) || !get_bufs(ctx, &b, count, !is_shared))
        return false;
    for (size_t i = 0; i < count; i++)
        a.send[i] = b.send[i] = value(me, i, round);
    bool ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
              tl_ok(ctx, ncclSend(a.send, count, ncclInt32, next, ctx->comm, NULL), "ncclSend") &&
              tl_ok(ctx, ncclRecv(a.recv, count, ncclInt32, prev, ctx->comm, NULL), "ncclRecv") &&
              tl_ok(ctx, ncclSend(b.send, count, ncclInt32, prev, ctx->comm, NULL), "ncclSend") &&
              tl_ok(ctx, ncclRecv(b.recv, count, ncclInt32, next, ctx->comm, NULL), "ncclRecv") &&
              tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd") &&
              check(ctx, "send/recv from prev", a.recv, count, prev, 0, round) &&
              check(ctx, "send/recv from next", b.recv, count, next, 0, round);
    return put_bufs(ctx, &a) && put_bufs(ctx, &b) && ok;
}

static bool exchange_round(struct tl_ctx *ctx, size_t count, int round)
{
    int n = ctx->nranks, me = ctx->rank, root = n - 1;
    struct bufs x;
    if (!get_bufs(ctx, &x, count * (size_t)n, true))
        return false;
    for (size_t i = 0; i < count * (size_t)n; i++)
        x.send[i] = value(me, i, round);
    bool ok = tl_ok(ctx, ncclAlltoAll(x.send, x.recv, count, ncclInt32, ctx->comm, NULL),
                    "ncclAlltoAll");
    for (int p = 0; ok && p < n; p++)
        ok = check(ctx, "alltoall", x.recv + (size_t)p * count, count, p, (size_t)me * count,
                   round);
    ok = ok && tl_ok(ctx, ncclGather(x.send, x.recv, count, ncclInt32, root, ctx->comm, NULL),
                     "ncclGather");
    for (int p = 0; ok && me == root && p < n; p++)
        ok = check(ctx, "gather", x.recv + (size_t)p * count, count, p, 0, round);
    ok = ok && tl_ok(ctx, ncclScatter(x.send, x.recv, count, ncclInt32, root, ctx->comm, NULL),
                     "ncclScatter");
    ok = ok && check(ctx, "scatter", x.recv, count, root, (size_t)me * count, round);
    return put_bufs(ctx, &x) && ok;
}

static int body(struct tl_ctx *ctx)
{
    static const size_t counts[] = {0, 1, 8191, 8192, 40000, 1 << 20};
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
            if ((ctx->nranks > 1 && !ring_round(ctx, counts[i], round)) ||
                !exchange_round(ctx, counts[i], round))
                return 1;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        int np;
        const char *env, *name;
    } cfgs[] = {{1, NULL, "np1"},
                {2, NULL, "np2"},
                {3, NULL, "np3"},
                {4, NULL, "np4"},
                {3, "ANYCCL_CMA_ENABLE=1", "np3/cma"},
                {2, "NCCL_SHM_DISABLE=1", "np2/tcp"},
                {2, "ANYCCL_CMA_MIN_BYTES=0", "np2/min0"}};
    static struct tl_case cases[16];
    static char names[16][64];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        snprintf(names[n], sizeof(names[n]), "registered/%s/proc", cfgs[i].name);
        cases[n] = (struct tl_case){.name = names[n], .mode = TL_PROCS, .nranks = cfgs[i].np,
                                    .env = cfgs[i].env, .body = body, .timeout_s = 120};
        n++;
    }
    snprintf(names[n], sizeof(names[n]), "registered/np2/threads");
    cases[n++] = (struct tl_case){.name = names[n - 1], .mode = TL_THREADS, .nranks = 2,
                                  .body = body, .timeout_s = 120};
    return tl_main(argc, argv, cases, n);
}
