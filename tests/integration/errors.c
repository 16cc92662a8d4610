/* Error paths through the public API: bad arguments return ncclInvalidArgument with a message
 * naming the argument, and the communicator stays usable; a garbage unique id is an error, not a
 * crash; a rank that never arrives makes the others fail within the init timeout instead of
 * hanging; every result code has a string; the version is NCCL 2.28.9's. */
#include "expect.h"
#include "launcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool contains_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; p && *p; p++)
        if (strncasecmp(p, word, n) == 0)
            return true;
    return false;
}

/* A call that must fail with ncclInvalidArgument and a last-error message naming `arg`. */
static bool expect_invalid(struct tl_ctx *ctx, ncclResult_t res, ncclComm_t comm, const char *call,
                           const char *arg)
{
    if (res != ncclInvalidArgument) {
        tl_failf(ctx, "%s returned %d (%s), want ncclInvalidArgument", call, (int)res,
                 ncclGetErrorString(res));
        return false;
    }
    const char *msg = ncclGetLastError(comm);
    if (!msg || !contains_word(msg, arg)) {
        tl_failf(ctx, "%s: ncclGetLastError is \"%s\", which does not name '%s'", call,
                 msg ? msg : "(null)", arg);
        return false;
    }
    return true;
}

static int good_allreduce(struct tl_ctx *ctx, ncclComm_t comm, unsigned seed, const char *after)
{
    int buf[5];
    char why[200], what[200];
    tl_fill(buf, 5, ncclInt32, TL_SUM, ctx->rank, ctx->nranks, seed);
    snprintf(what, sizeof(what), "good allreduce after %s", after);
    if (!tl_ok(ctx, ncclAllReduce(buf, buf, 5, ncclInt32, ncclSum, comm, NULL), what))
        return 1;
    if (tl_check(buf, 5, ncclInt32, TL_SUM, ctx->nranks, seed, why, sizeof(why))) {
        tl_failf(ctx, "%s: %s", what, why);
        return 1;
    }
    return 0;
}

/* Refused init calls first (they must not disturb the rendezvous), then a real communicator. */
static int bad_init_args(struct tl_ctx *ctx, ncclComm_t *comm_out)
{
    ncclComm_t comm = NULL;
    int n = ctx->nranks, nbad = 0;
    nbad += !expect_invalid(ctx, ncclCommInitRank(NULL, n, ctx->id, ctx->rank), NULL,
                            "ncclCommInitRank(comm=NULL)", "comm");
    nbad += !expect_invalid(ctx, ncclCommInitRank(&comm, n, ctx->id, n), NULL,
                            "ncclCommInitRank(rank=nranks)", "rank");
    nbad += !expect_invalid(ctx, ncclCommInitRank(&comm, n, ctx->id, -1), NULL,
                            "ncclCommInitRank(rank=-1)", "rank");
    nbad += !expect_invalid(ctx, ncclCommInitRank(&comm, 0, ctx->id, 0), NULL,
                            "ncclCommInitRank(nranks=0)", "nranks");
    nbad += !expect_invalid(ctx, ncclCommInitRank(&comm, -2, ctx->id, 0), NULL,
                            "ncclCommInitRank(nranks=-2)", "nranks");
    if (!tl_ok(ctx, ncclCommInitRank(&comm, n, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    *comm_out = comm;
    return nbad;
}

static int bad_call_args(struct tl_ctx *ctx, ncclComm_t comm)
{
    int buf[4] = {0}, count = 0, nbad = 0;
    unsigned seed = 1;
    nbad += !expect_invalid(ctx, ncclAllReduce(buf, buf, 4, ncclInt32, ncclSum, NULL, NULL), NULL,
                            "ncclAllReduce(comm=NULL)", "comm");
    nbad += good_allreduce(ctx, comm, seed++, "comm=NULL");
    nbad +=
        !expect_invalid(ctx, ncclAllReduce(buf, buf, 4, (ncclDataType_t)99, ncclSum, comm, NULL),
                        comm, "ncclAllReduce(datatype=99)", "type");
    nbad += good_allreduce(ctx, comm, seed++, "datatype=99");
    nbad += !expect_invalid(ctx, ncclAllReduce(buf, buf, 4, ncclInt32, (ncclRedOp_t)77, comm, NULL),
                            comm, "ncclAllReduce(op=77)", "op");
    nbad += good_allreduce(ctx, comm, seed++, "op=77");
    nbad += !expect_invalid(ctx, ncclAllReduce(NULL, buf, 4, ncclInt32, ncclSum, comm, NULL), comm,
                            "ncclAllReduce(sendbuff=NULL, count=4)", "sendbuff");
    nbad += good_allreduce(ctx, comm, seed++, "sendbuff=NULL");
    nbad += !expect_invalid(ctx, ncclAllReduce(buf, NULL, 4, ncclInt32, ncclSum, comm, NULL), comm,
                            "ncclAllReduce(recvbuff=NULL, count=4)", "recvbuff");
    nbad += good_allreduce(ctx, comm, seed++, "recvbuff=NULL");
    nbad +=
        !expect_invalid(ctx, ncclCommCount(comm, NULL), comm, "ncclCommCount(count=NULL)", "count");
    nbad += !expect_invalid(ctx, ncclRedOpDestroy(ncclSum, comm), comm, "ncclRedOpDestroy(ncclSum)",
                            "op");
    if (!tl_ok(ctx, ncclCommCount(comm, &count), "ncclCommCount") || count != ctx->nranks) {
        tl_failf(ctx, "ncclCommCount gave %d, want %d", count, ctx->nranks);
        nbad++;
    }
    nbad += good_allreduce(ctx, comm, seed++, "every refused call");
    return nbad;
}

static int bad_args_body(struct tl_ctx *ctx)
{
    ncclComm_t comm = NULL;
    int nbad = bad_init_args(ctx, &comm);
    if (!comm)
        return 1;
    ctx->comm = comm;
    nbad += bad_call_args(ctx, comm);
    if (!tl_ok(ctx, ncclCommDestroy(comm), "ncclCommDestroy"))
        nbad++;
    return nbad ? 1 : 0;
}

/* Calls that need no communicator. */
static int no_comm_body(struct tl_ctx *ctx)
{
    int version = 0, nbad = 0;
    ncclComm_t comms[2];
    if (!tl_ok(ctx, ncclGetVersion(&version), "ncclGetVersion") || version != 22809) {
        tl_failf(ctx, "ncclGetVersion gave %d, want 22809", version);
        nbad++;
    }
    nbad += !expect_invalid(ctx, ncclGetVersion(NULL), NULL, "ncclGetVersion(NULL)", "version");
    nbad += !expect_invalid(ctx, ncclGetUniqueId(NULL), NULL, "ncclGetUniqueId(NULL)", "id");
    nbad += !expect_invalid(ctx, ncclCommInitAll(comms, 0, NULL), NULL, "ncclCommInitAll(ndev=0)",
                            "ndev");
    nbad +=
        !expect_invalid(ctx, ncclCommInitAll(NULL, 2, NULL), NULL, "ncclCommInitAll(NULL)", "comm");
    return nbad ? 1 : 0;
}

static int error_strings_body(struct tl_ctx *ctx)
{
    const char *seen[ncclNumResults];
    int nbad = 0;
    for (int r = 0; r < ncclNumResults; r++) {
        seen[r] = ncclGetErrorString((ncclResult_t)r);
        if (!seen[r] || !seen[r][0]) {
            tl_failf(ctx, "ncclGetErrorString(%d) is empty", r);
            nbad++;
            continue;
        }
        for (int k = 0; k < r; k++) {
            if (seen[k] && strcmp(seen[k], seen[r]) == 0) {
                tl_failf(ctx, "results %d and %d share the string \"%s\"", k, r, seen[r]);
                nbad++;
            }
        }
    }
    static const int out_of_range[] = {ncclNumResults, 99, -1};
    for (size_t i = 0; i < sizeof(out_of_range) / sizeof(out_of_range[0]); i++) {
        const char *s = ncclGetErrorString((ncclResult_t)out_of_range[i]);
        if (!s || !s[0]) {
            tl_failf(ctx, "ncclGetErrorString(%d) is empty", out_of_range[i]);
            nbad++;
        }
    }
    return nbad ? 1 : 0;
}

/* A unique id that is not one: refused quickly (the case sets a short init timeout). */
static int try_bad_id(struct tl_ctx *ctx, int fill_byte, int nranks)
{
    ncclUniqueId id;
    ncclComm_t comm = NULL;
    memset(&id, fill_byte, sizeof(id));
    double start = now_s();
    ncclResult_t res = ncclCommInitRank(&comm, nranks, id, 0);
    double elapsed = now_s() - start;
    if (res == ncclSuccess) {
        tl_failf(ctx, "ncclCommInitRank with an id of 0x%02x bytes (nranks %d) succeeded",
                 fill_byte, nranks);
        ncclCommDestroy(comm);
        return 1;
    }
    if (elapsed > 8.0) {
        tl_failf(ctx, "ncclCommInitRank with a garbage id took %.1f s to fail", elapsed);
        return 1;
    }
    return 0;
}

static int garbage_id_body(struct tl_ctx *ctx)
{
    return try_bad_id(ctx, 0xA5, 1) + try_bad_id(ctx, 0xA5, 2) + try_bad_id(ctx, 0x00, 2) +
                   try_bad_id(ctx, 0xFF, 1)
               ? 1
               : 0;
}

/* Two ranks of a three-rank communicator start; with ANYCCL_INIT_TIMEOUT=2 both must get an
 * error (not a hang) within about 5 s. */
static int missing_rank_body(struct tl_ctx *ctx)
{
    ncclComm_t comm = NULL;
    double start = now_s();
    ncclResult_t res = ncclCommInitRank(&comm, ctx->nranks + 1, ctx->id, ctx->rank);
    double elapsed = now_s() - start;
    if (res == ncclSuccess) {
        tl_failf(ctx, "ncclCommInitRank succeeded with rank %d of %d missing", ctx->nranks,
                 ctx->nranks + 1);
        ncclCommAbort(comm);
        return 1;
    }
    if (elapsed > 5.5) {
        tl_failf(ctx, "the missing rank was reported after %.1f s (ANYCCL_INIT_TIMEOUT=2)",
                 elapsed);
        return 1;
    }
    const char *msg = ncclGetLastError(NULL);
    if (!msg || !msg[0]) {
        tl_failf(ctx, "ncclCommInitRank failed (%s) without a message", ncclGetErrorString(res));
        return 1;
    }
    return 0;
}

/* Rank 0 sends more than the kernel's socket buffers take but no more than its slots hold, to
 * rank 1, which stops calling: every step of the send is done at once (the data is in the slots)
 * while the rest waits in them for room the receiver never makes. With ANYCCL_TIMEOUT=2 the send
 * must still fail within seconds; a task that had done its steps was not checked and waited
 * forever. */
#define STAGED_BYTES (48u << 20) /* NCCL_BUFFSIZE below: 8 point-to-point slots of 8 MiB */

static int left_in_staging_body(struct tl_ctx *ctx)
{
    char *buf = calloc(1, STAGED_BYTES);
    int bad = 0;
    if (!buf)
        return 1;
    /* connect first: connectors are made at their first use, which needs both ranks */
    if (!tl_ok(ctx,
               ctx->rank == 0 ? ncclSend(buf, 1024, ncclChar, 1, ctx->comm, NULL)
                              : ncclRecv(buf, 1024, ncclChar, 0, ctx->comm, NULL),
               "the first transfer")) {
        free(buf);
        return 1;
    }
    if (ctx->rank == 1) {
        sleep(8); /* stopped: never receives the second transfer */
        free(buf);
        return 0;
    }
    double start = now_s();
    ncclResult_t res = ncclSend(buf, STAGED_BYTES, ncclChar, 1, ctx->comm, NULL);
    double elapsed = now_s() - start;
    if (res != ncclRemoteError || !strstr(ncclGetLastError(ctx->comm), "timed out")) {
        tl_failf(ctx, "the send returned %s (%s), want ncclRemoteError: timed out",
                 ncclGetErrorString(res), ncclGetLastError(ctx->comm));
        bad = 1;
    } else if (elapsed > 6.0) {
        tl_failf(ctx, "the send failed after %.1f s (ANYCCL_TIMEOUT=2)", elapsed);
        bad = 1;
    }
    free(buf);
    return bad;
}

#define RAW_CASE(name_, mode_, nranks_, env_, body_, timeout_)                                     \
    {                                                                                              \
        .name = (name_), .mode = (mode_), .nranks = (nranks_), .env = (env_), .raw_body = (body_), \
        .timeout_s = (timeout_)                                                                    \
    }

static const struct tl_case cases[] = {
    RAW_CASE("errors/version-and-no-comm-args", TL_THREADS, 1, NULL, no_comm_body, 30),
    RAW_CASE("errors/error-strings", TL_THREADS, 1, NULL, error_strings_body, 30),
    RAW_CASE("errors/bad-args/np2/proc", TL_PROCS, 2, NULL, bad_args_body, 60),
    RAW_CASE("errors/bad-args/np3/tcp/proc", TL_PROCS, 3, "NCCL_SHM_DISABLE=1", bad_args_body, 60),
    RAW_CASE("errors/bad-args/np2/threads", TL_THREADS, 2, NULL, bad_args_body, 60),
    RAW_CASE("errors/garbage-id", TL_THREADS, 1, "ANYCCL_INIT_TIMEOUT=3", garbage_id_body, 60),
    RAW_CASE("errors/missing-rank/2of3/proc", TL_PROCS, 2, "ANYCCL_INIT_TIMEOUT=2",
             missing_rank_body, 30),
    RAW_CASE("errors/missing-rank/2of3/threads", TL_THREADS, 2, "ANYCCL_INIT_TIMEOUT=2",
             missing_rank_body, 30),
    {.name = "errors/send-left-in-staging/np2/tcp/proc",
     .mode = TL_PROCS,
     .nranks = 2,
     .env = "NCCL_SHM_DISABLE=1 ANYCCL_CMA_ENABLE=0 ANYCCL_RAS_ENABLE=0 ANYCCL_TIMEOUT=2 "
            "NCCL_BUFFSIZE=268435456",
     .body = left_in_staging_body,
     .timeout_s = 40},
};

int main(int argc, char **argv)
{
    return tl_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
