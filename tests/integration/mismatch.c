/* Mismatched calls: ranks that call different collectives, or the same one with a different
 * type, operator or count, or a send and a receive of different sizes, must get an error instead
 * of hanging or mixing data. Rank 0 is the odd one out and always receives from a rank that
 * disagrees with it: it must get ncclInvalidUsage with a message naming the difference. A rank
 * whose neighbours agree with it cannot see the difference itself: it must get either the same
 * error or ncclRemoteError when the rank that saw it leaves (or frees a buffer being read). Both
 * paths are covered: data through slots (the operation's tag on the first slot) and single-copy
 * transfers (the address message). */
#include "expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum scenario {
    MIS_OP,        /* allreduce: sum on rank 0, max elsewhere */
    MIS_TYPE,      /* allreduce: float on rank 0, int32 elsewhere */
    MIS_COLL,      /* allreduce (ring) on rank 0, allgather elsewhere */
    MIS_COUNT,     /* allreduce: 1000 elements on rank 0, 1001 elsewhere */
    MIS_BIG_OP,    /* allreduce of 4 MiB (ring, several slots): sum vs min */
    MIS_P2P_SIZE,  /* single-copy send of 1 MiB, receive of 512 KiB */
    MIS_A2A_COUNT, /* single-copy all-to-all: 64 Ki elements per peer vs 32 Ki */
    MIS_PROTO_COUNT, /* allreduce: 200 elements on rank 0 (LL), 2000 elsewhere (Simple) */
    MIS_CONN,      /* ring allreduce on rank 0, one-shot allgather elsewhere: other connectors */
};

struct mis_arg {
    enum scenario what;
    const char *word;   /* the message must contain it (case-insensitive) */
};

static bool contains(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; p && *p; p++)
        if (strncasecmp(p, word, n) == 0)
            return true;
    return false;
}

static ncclResult_t call(const struct tl_ctx *ctx, enum scenario what, void *a, void *b)
{
    bool first = ctx->rank == 0;
    ncclComm_t comm = ctx->comm;
    switch (what) {
    case MIS_OP:
        return ncclAllReduce(a, b, 1000, ncclFloat32, first ? ncclSum : ncclMax, comm, NULL);
    case MIS_TYPE:
        return ncclAllReduce(a, b, 1000, first ? ncclFloat32 : ncclInt32, ncclSum, comm, NULL);
    case MIS_COLL: /* large enough for rings (not one-shots): the same connectors */
        return first ? ncclAllReduce(a, b, 48000, ncclFloat32, ncclSum, comm, NULL)
                     : ncclAllGather(a, b, 48000 / ctx->nranks, ncclFloat32, comm, NULL);
    case MIS_COUNT:
        return ncclAllReduce(a, b, first ? 1000 : 1001, ncclFloat32, ncclSum, comm, NULL);
    case MIS_BIG_OP:
        return ncclAllReduce(a, b, 1 << 20, ncclFloat32, first ? ncclSum : ncclMin, comm, NULL);
    case MIS_P2P_SIZE:
        return first ? ncclSend(a, 1 << 18, ncclFloat32, 1, comm, NULL)
                     : ncclRecv(b, 1 << 17, ncclFloat32, 0, comm, NULL);
    case MIS_A2A_COUNT:
        return ncclAlltoAll(a, b, first ? 1 << 16 : 1 << 15, ncclFloat32, comm, NULL);
    case MIS_PROTO_COUNT: /* each side waits where its own protocol says a slot arrives */
        return ncclAllReduce(a, b, first ? 200 : 2000, ncclFloat32, ncclSum, comm, NULL);
    case MIS_CONN: /* from 3 ranks the allgather needs connectors rank 0 never sets up: rank 0
                    * sees a peer's description for them (src/core/connect.c) */
        return first ? ncclAllReduce(a, b, 48000, ncclFloat32, ncclSum, comm, NULL)
                     : ncclAllGather(a, b, 1000, ncclFloat32, comm, NULL);
    }
    return ncclInternalError;
}

static int body(struct tl_ctx *ctx)
{
    const struct mis_arg *arg = ctx->arg;
    size_t bytes = (size_t)ctx->nranks << 20; /* enough for every scenario */
    void *a = calloc(1, bytes), *b = calloc(1, bytes);
    if (!a || !b) {
        tl_failf(ctx, "out of memory");
        return 1;
    }
    if (arg->what == MIS_P2P_SIZE && ctx->rank > 1) {
        free(a);
        free(b);
        return 0; /* only ranks 0 and 1 take part */
    }
    ncclResult_t res = call(ctx, arg->what, a, b);
    const char *msg = ncclGetLastError(ctx->comm);
    int rc = 0;
    if (res == ncclRemoteError && ctx->rank != 0) {
        rc = 0; /* a rank that agreed with its neighbours: the one that saw it left (or freed the
                 * buffer this rank was reading) */
    } else if (res != ncclInvalidUsage) {
        tl_failf(ctx, "mismatched call returned %d (%s), want ncclInvalidUsage (%s)", (int)res,
                 ncclGetErrorString(res), msg ? msg : "");
        rc = 1;
    } else if (!msg || !contains(msg, arg->word)) {
        tl_failf(ctx, "message \"%s\" does not name '%s'", msg ? msg : "(null)", arg->word);
        rc = 1;
    }
    free(a);
    free(b);
    return rc;
}

static const struct mis_arg args[] = {
    [MIS_OP] = {MIS_OP, "max"},
    [MIS_TYPE] = {MIS_TYPE, "int32"},
    [MIS_COLL] = {MIS_COLL, "allgather"},
    [MIS_COUNT] = {MIS_COUNT, "rank"},
    [MIS_BIG_OP] = {MIS_BIG_OP, "min"},
    [MIS_P2P_SIZE] = {MIS_P2P_SIZE, "bytes"},
    [MIS_A2A_COUNT] = {MIS_A2A_COUNT, "bytes"},
    [MIS_PROTO_COUNT] = {MIS_PROTO_COUNT, "rank"},
    [MIS_CONN] = {MIS_CONN, "allgather"},
};
static const char *const names[] = {"op", "type", "coll", "count", "big-op", "p2p-size",
                                    "alltoall-count", "count-ll-vs-simple", "conn"};

int main(int argc, char **argv)
{
    static struct tl_case cases[48];
    static char case_names[48][64];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        for (int np = 2; np <= (args[i].what == MIS_CONN ? 4 : 3); np++) {
            if (args[i].what == MIS_P2P_SIZE && np == 3)
                continue;
            snprintf(case_names[n], sizeof(case_names[n]), "mismatch/%s/np%d/proc", names[i], np);
            /* single-copy transfers are opt-in: the scenarios that check them turn them on,
             * and the board off (its record of each rank's call would name the difference
             * before the address message does); LL too (its threshold puts 200 elements in LL,
             * 2000 in Simple) */
            bool is_cma = args[i].what == MIS_P2P_SIZE || args[i].what == MIS_A2A_COUNT;
            bool is_ll = args[i].what == MIS_PROTO_COUNT;
            cases[n] = (struct tl_case){.name = case_names[n],
                                        .mode = TL_PROCS,
                                        .nranks = np,
                                        .env = is_cma  ? "ANYCCL_CMA_ENABLE=1 ANYCCL_BOARD=0"
                                               : is_ll ? "ANYCCL_LL_THRESHOLD=1024"
                                                       : NULL,
                                        .body = body,
                                        .arg = &args[i],
                                        .timeout_s = 60};
            n++;
        }
    /* the same over sockets, for the scenarios that go through slots */
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
        if (args[i].what == MIS_P2P_SIZE || args[i].what == MIS_A2A_COUNT)
            continue;
        snprintf(case_names[n], sizeof(case_names[n]), "mismatch/%s/np2/tcp/proc", names[i]);
        cases[n] = (struct tl_case){.name = case_names[n],
                                    .mode = TL_PROCS,
                                    .nranks = 2,
                                    .env = args[i].what == MIS_PROTO_COUNT
                                               ? "NCCL_SHM_DISABLE=1 ANYCCL_LL_THRESHOLD=1024"
                                               : "NCCL_SHM_DISABLE=1",
                                    .body = body,
                                    .arg = &args[i],
                                    .timeout_s = 60};
        n++;
    }
    /* 4 ranks over sockets, where small operations run in recursive doubling rounds (src/core/
     * plan.c). In MIS_COLL the ring allreduce and the rounds' allgather need connectors to
     * different peers. */
    static char tcp4_names[MIS_COUNT + 1][64];
    for (size_t i = 0; i <= MIS_COUNT; i++) {
        snprintf(tcp4_names[i], sizeof(tcp4_names[i]), "mismatch/%s/np4/tcp/proc", names[i]);
        cases[n++] = (struct tl_case){.name = tcp4_names[i],
                                      .mode = TL_PROCS,
                                      .nranks = 4,
                                      .env = "NCCL_SHM_DISABLE=1",
                                      .body = body,
                                      .arg = &args[i],
                                      .timeout_s = 60};
    }
    /* the tag rides in the LL protocols' slots too (every rank forcing the same protocol) */
    static const struct {
        const char *env, *name;
    } protos[] = {{"NCCL_PROTO=LL", "ll"}, {"NCCL_PROTO=LL128", "ll128"}};
    for (size_t p = 0; p < sizeof(protos) / sizeof(protos[0]); p++)
        for (size_t i = 0; i <= MIS_COUNT; i++) {
            snprintf(case_names[n], sizeof(case_names[n]), "mismatch/%s/np2/proto-%s/proc",
                     names[i], protos[p].name);
            cases[n] = (struct tl_case){.name = case_names[n], .mode = TL_PROCS, .nranks = 2,
                                        .env = protos[p].env, .body = body, .arg = &args[i],
                                        .timeout_s = 60};
            n++;
        }
    return tl_main(argc, argv, cases, n);
}
