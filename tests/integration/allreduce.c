/* ncclAllReduce through the public API: every type x every operator (premulsum included) at counts
 * 0, 1, 7, 1000 and 33001 (not in threads), in place and out of place; 1M+3 elements for a few
 * type/op pairs; 1000 back-to-back small calls. Run on 1, 2, 3, 4 and 8 processes over shared
 * memory and over TCP (NCCL_SHM_DISABLE=1), as threads, and with ncclCommInitAll. Results are
 * compared exactly on every rank (tests/lib/expect.h explains why that is possible for fp8 and
 * bf16). */
#include "coll_expect.h"
#include "expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG_COUNT ((size_t)(1 << 20) + 3)
#define NBACK_TO_BACK 1000
#define BACK_TO_BACK_COUNT 64

struct plan {
    bool has_all_types; /* else float, bf16, f8e4m3 and int32 only */
    bool has_big;
    bool has_back_to_back;
};

static const struct plan full_plan = {true, true, true};
static const struct plan thread_plan = {false, false, true};

struct big_case {
    ncclDataType_t type;
    enum tl_op op;
    bool is_inplace;
};

static const struct big_case big_cases[] = {
    {ncclFloat32, TL_SUM, false},
    {ncclBfloat16, TL_SUM, true},
    {ncclInt8, TL_SUM, false},
    {ncclFloat32, TL_PREMULSUM, true},
};

/* One allreduce, checked: the result on this rank, and the send buffer left untouched. Returns 0,
 * CHECK_WRONG for a wrong result (the ranks are still in step), CHECK_ERROR when a call failed. */
#define CHECK_WRONG 1
#define CHECK_ERROR 2
static int check_one(struct tl_ctx *ctx, ncclDataType_t type, enum tl_op op, size_t count,
                     bool is_inplace, unsigned seed)
{
    size_t bytes = count * tl_type_size(type);
    char *send = malloc(bytes ? bytes : 1);
    char *recv = malloc(bytes ? bytes : 1);
    char why[256] = "";
    int rc = CHECK_ERROR;
    ncclRedOp_t nop;
    if (!send || !recv) {
        tl_failf(ctx, "malloc of %zu bytes failed", bytes);
        goto out_free;
    }
    if (!tl_ok(ctx, tl_op_create(op, type, ctx->comm, &nop), "ncclRedOpCreatePreMulSum"))
        goto out_free;
    tl_fill(is_inplace ? recv : send, count, type, op, ctx->rank, ctx->nranks, seed);
    if (!is_inplace)
        tl_poison(recv, bytes);
    char what[160];
    snprintf(what, sizeof(what), "allreduce %s %s count %zu %s", tl_type_name(type), tl_op_name(op),
             count, is_inplace ? "in-place" : "out-of-place");
    if (!tl_ok(ctx,
               ncclAllReduce(is_inplace ? recv : send, recv, count, type, nop, ctx->comm, NULL),
               what))
        goto out_op;
    rc = CHECK_WRONG;
    if (tl_check(recv, count, type, op, ctx->nranks, seed, why, sizeof(why))) {
        tl_failf(ctx, "%s: %s", what, why);
        goto out_op;
    }
    if (!is_inplace && count <= 1000) {
        tl_fill(recv, count, type, op, ctx->rank, ctx->nranks, seed);
        if (memcmp(send, recv, bytes) != 0) {
            tl_failf(ctx, "%s: the send buffer was modified", what);
            goto out_op;
        }
    }
    rc = 0;
out_op:
    if (!tl_ok(ctx, tl_op_destroy(op, nop, ctx->comm), "ncclRedOpDestroy"))
        rc = CHECK_ERROR;
out_free:
    free(send);
    free(recv);
    return rc;
}

static bool is_reduced_type(ncclDataType_t type)
{
    return type == ncclFloat32 || type == ncclBfloat16 || type == ncclFloat8e4m3 ||
           type == ncclInt32;
}

/* Wrong results are recorded and the matrix goes on (every rank still makes every call, so the
 * ranks stay in step); a call that returns an error stops the body. */
static int run_matrix(struct tl_ctx *ctx, const struct plan *p, unsigned *seed, int *nbad)
{
    /* 33001: above the whole-vector rounds even for 1-byte types, so 4 and 8 ranks over sockets
     * run Rabenseifner's rounds (src/core/plan.c) with blocks of unequal counts */
    static const size_t counts[] = {0, 1, 7, 1000, 33001};
    size_t ncounts = sizeof(counts) / sizeof(counts[0]) - (p->has_big ? 0 : 1);
    for (size_t t = 0; t < tl_ntypes; t++) {
        ncclDataType_t type = tl_all_types[t];
        if (!p->has_all_types && !is_reduced_type(type))
            continue;
        for (int op = 0; op < TL_OP_COUNT; op++) {
            for (size_t c = 0; c < ncounts; c++) {
                for (int is_inplace = 0; is_inplace <= 1; is_inplace++) {
                    int r = check_one(ctx, type, op, counts[c], is_inplace, (*seed)++);
                    *nbad += r != 0;
                    if (r == CHECK_ERROR || *nbad > 20)
                        return 1;
                }
            }
        }
    }
    return 0;
}

static int run_back_to_back(struct tl_ctx *ctx, unsigned *seed)
{
    float *send = malloc(BACK_TO_BACK_COUNT * sizeof(float) * (NBACK_TO_BACK + 1));
    if (!send) {
        tl_failf(ctx, "malloc failed");
        return 1;
    }
    /* Each call gets its own output slice, checked only after all calls: a call that returned
     * before its result was complete, or wrote a neighbour's slice, shows up. */
    float *recv = send + BACK_TO_BACK_COUNT;
    unsigned first = *seed;
    tl_fill(send, BACK_TO_BACK_COUNT, ncclFloat32, TL_SUM, ctx->rank, ctx->nranks, first);
    for (int k = 0; k < NBACK_TO_BACK; k++) {
        if (!tl_ok(ctx,
                   ncclAllReduce(send, recv + (size_t)k * BACK_TO_BACK_COUNT, BACK_TO_BACK_COUNT,
                                 ncclFloat32, ncclSum, ctx->comm, NULL),
                   "back-to-back allreduce")) {
            free(send);
            return 1;
        }
    }
    int rc = 0;
    char why[256];
    for (int k = 0; k < NBACK_TO_BACK && rc == 0; k++) {
        if (tl_check(recv + (size_t)k * BACK_TO_BACK_COUNT, BACK_TO_BACK_COUNT, ncclFloat32, TL_SUM,
                     ctx->nranks, first, why, sizeof(why))) {
            tl_failf(ctx, "back-to-back allreduce %d of %d: %s", k, NBACK_TO_BACK, why);
            rc = 1;
        }
    }
    (*seed)++;
    free(send);
    return rc;
}

/* Calls on the same buffers where each differs from the one before in one argument only (count,
 * type, operator, in place, the premulsum scalar): a communicator reuses the plan of an identical
 * call (src/core/plan.c), and these must each be planned anew. The scalars are 2 and 3 on int32,
 * so the expected sums are exact. */
struct same_buffers_case {
    ncclDataType_t type;
    int op; /* enum tl_op, or -2 / -3: premulsum by 2 / 3 */
    size_t count;
    bool is_inplace;
};

static const struct same_buffers_case same_buffers_cases[] = {
    {ncclFloat32, TL_SUM, 64, false}, {ncclFloat32, TL_SUM, 64, false},
    {ncclFloat32, TL_SUM, 65, false}, {ncclFloat32, TL_MAX, 65, false},
    {ncclInt32, TL_MAX, 65, false},   {ncclInt32, TL_MAX, 65, true},
    {ncclInt32, -2, 65, true},        {ncclInt32, -3, 65, true},
    {ncclInt32, -3, 65, false},       {ncclInt32, TL_SUM, 65, false},
    {ncclFloat32, TL_SUM, 64, false},
};

static int same_buffers_call(struct tl_ctx *ctx, const struct same_buffers_case *c, void *send,
                             void *recv, unsigned seed)
{
    bool is_premul = c->op < 0;
    enum tl_op op = is_premul ? TL_SUM : (enum tl_op)c->op;
    ncclRedOp_t nop;
    int32_t scalar = -c->op;
    ncclResult_t res = is_premul ? ncclRedOpCreatePreMulSum(&nop, &scalar, c->type,
                                                            ncclScalarHostImmediate, ctx->comm)
                                 : tl_op_create(op, c->type, ctx->comm, &nop);
    if (!tl_ok(ctx, res, "creating the operator"))
        return 1;
    void *in = c->is_inplace ? recv : send;
    tl_fill(in, c->count, c->type, op, ctx->rank, ctx->nranks, seed);
    char what[160], why[256];
    snprintf(what, sizeof(what), "same-buffer allreduce %s op %d count %zu %s",
             tl_type_name(c->type), c->op, c->count, c->is_inplace ? "in-place" : "out-of-place");
    int rc = 1;
    if (!tl_ok(ctx, ncclAllReduce(in, recv, c->count, c->type, nop, ctx->comm, NULL), what))
        goto out;
    if (is_premul) {
        for (size_t i = 0; i < c->count; i++) {
            int32_t want = (int32_t)tl_expected(TL_SUM, c->type, ctx->nranks, i, seed) * scalar;
            if (((int32_t *)recv)[i] != want) {
                tl_failf(ctx, "%s: element %zu is %d, want %d", what, i, ((int32_t *)recv)[i],
                         want);
                goto out;
            }
        }
    } else if (tl_check(recv, c->count, c->type, op, ctx->nranks, seed, why, sizeof(why))) {
        tl_failf(ctx, "%s: %s", what, why);
        goto out;
    }
    rc = 0;
out:
    if (is_premul ? ncclRedOpDestroy(nop, ctx->comm) != ncclSuccess
                  : !tl_ok(ctx, tl_op_destroy(op, nop, ctx->comm), "ncclRedOpDestroy"))
        rc = 1;
    return rc;
}

static int run_same_buffers(struct tl_ctx *ctx, unsigned *seed)
{
    int64_t send[128], recv[128];
    size_t n = sizeof(same_buffers_cases) / sizeof(same_buffers_cases[0]);
    for (size_t k = 0; k < n; k++)
        if (same_buffers_call(ctx, &same_buffers_cases[k], send, recv, (*seed)++) != 0)
            return 1;
    return 0;
}

/* max and min of +0 and -0 return their second operand, so the order in which a rank combines
 * the inputs decides the sign of a zero result. Every rank must still end with the same bits (the
 * ring reduces each block on one rank; the one-shot and recursive doubling fold in rank order on
 * every rank): compared through an allgather. Element i of rank r is -0 where bit r % 8 of i is
 * set, so every mix of signs occurs. */
#define SIGNED_ZERO_COUNT 256
static int run_signed_zeros(struct tl_ctx *ctx)
{
    static const ncclRedOp_t ops[] = {ncclMax, ncclMin};
    float in[SIGNED_ZERO_COUNT], out[SIGNED_ZERO_COUNT];
    float *all = malloc(sizeof(out) * (size_t)ctx->nranks);
    if (!all) {
        tl_failf(ctx, "malloc failed");
        return 1;
    }
    for (int i = 0; i < SIGNED_ZERO_COUNT; i++)
        in[i] = (i >> (ctx->rank % 8)) & 1 ? -0.0f : 0.0f;
    int rc = 0;
    for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]) && rc == 0; k++) {
        if (!tl_ok(ctx,
                   ncclAllReduce(in, out, SIGNED_ZERO_COUNT, ncclFloat32, ops[k], ctx->comm, NULL),
                   "signed-zero allreduce") ||
            !tl_ok(ctx, ncclAllGather(out, all, sizeof(out), ncclUint8, ctx->comm, NULL),
                   "allgather of the signed-zero results")) {
            rc = 1;
            break;
        }
        for (int r = 1; r < ctx->nranks && rc == 0; r++)
            for (int i = 0; i < SIGNED_ZERO_COUNT; i++)
                if (memcmp(&all[(size_t)r * SIGNED_ZERO_COUNT + i], &all[i], sizeof(float))) {
                    tl_failf(ctx,
                             "allreduce %s of signed zeros: element %d is %g on rank %d but "
                             "%g on rank 0",
                             ops[k] == ncclMax ? "max" : "min", i,
                             all[(size_t)r * SIGNED_ZERO_COUNT + i], r, all[i]);
                    rc = 1;
                    break;
                }
    }
    free(all);
    return rc;
}

static int allreduce_body(struct tl_ctx *ctx)
{
    const struct plan *p = ctx->arg;
    unsigned seed = 1;
    int nbad = 0;
    if (run_matrix(ctx, p, &seed, &nbad) != 0)
        return 1;
    for (size_t i = 0; p->has_big && i < sizeof(big_cases) / sizeof(big_cases[0]); i++) {
        const struct big_case *b = &big_cases[i];
        int r = check_one(ctx, b->type, b->op, BIG_COUNT, b->is_inplace, seed++);
        if (r == CHECK_ERROR)
            return 1;
        nbad += r != 0;
    }
    if (p->has_back_to_back && run_back_to_back(ctx, &seed) != 0)
        return 1;
    if (run_signed_zeros(ctx) != 0 || run_same_buffers(ctx, &seed) != 0)
        return 1;
    return nbad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct tl_case cases[48];
    size_t n = tl_standard_cases(cases, 32, "allreduce", allreduce_body, &full_plan, 300);
    n = ce_add_proto_cases(cases, n, 48, "allreduce", allreduce_body, &full_plan, 300);
    /* large chunks (src/core/plan.c): sockets only, ranks sharing cores (4 on this 2-core
     * machine), and from 64 KiB here instead of 32 MiB */
    struct tl_case large = {.name = NULL, .mode = TL_PROCS, .nranks = 4,
                            .env = "NCCL_SHM_DISABLE=1 ANYCCL_LARGE_CHUNK_MIN_BYTES=65536",
                            .body = allreduce_body, .arg = &full_plan, .timeout_s = 300,
                            .is_slow = true};
    n = ce_add_case(cases, n, 48, large, "allreduce/largechunk/np4/tcp/proc");
    /* the stores into shared-memory slots, each forced (src/core/exec.c, move_to_slot): the
     * big counts' reductions computed through a stage and streamed, and plain everywhere */
    static const char *const stores[][2] = {{"ANYCCL_SHM_STREAM=1", "stream"},
                                            {"ANYCCL_SHM_STREAM=0", "plain"}};
    for (size_t i = 0; i < 2; i++) {
        struct tl_case c = {.name = NULL,
                            .mode = TL_PROCS,
                            .nranks = 3,
                            .env = stores[i][0],
                            .body = allreduce_body,
                            .arg = &full_plan,
                            .timeout_s = 300};
        n = ce_add_case(cases, n, 48, c, "allreduce/store-%s/np3/shm/proc", stores[i][1]);
    }
    for (size_t i = 0; i < n; i++)
        if (cases[i].mode != TL_PROCS)
            cases[i].arg = &thread_plan;
    return tl_main(argc, argv, cases, n);
}
