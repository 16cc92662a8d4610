/* Collectives on GPU buffers and user streams, NCCL style: every call returns at once, the result
 * is checked exactly after cuStreamSynchronize. Run against the emulated CUDA driver
 * ($BUILD/tests/unit/device/fake/libcuda_emu.so: device memory in a range table, streams with
 * worker threads, the host build of the kernels), and on a GPU machine against the real driver
 * (TL_CUDA_DRIVER=libcuda.so.1, tests/gpu/run.sh): the test calls the driver API through dlopen,
 * the same library the CUDA backend opens (ANYCCL_CUDA_LIBRARY).
 * Cases: every collective and send/recv, 2 and 4 ranks as threads (one stream per rank) and as
 * processes, in place and out of place, several types and operators, counts 0, 1, odd and larger,
 * repeated; groups of calls over two streams; one thread driving 4 communicators in a group; the
 * kernel path (a driver without stream memory operations); errors: a bad argument, a stream with
 * no usable GPU backend, ranks that disagree, a peer that leaves: an error, never a hung stream.
 * Every case sets NCCL_P2P_DISABLE=1: this is the suite of the staged path; device_p2p.c runs
 * the same calls on the peer-to-peer device path. */
#include "launcher.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COUNT 1027
#define ELEM_MAX 8

#include "dev_calls.h"

static char emu_path[PATH_MAX], emu_nomemops_path[PATH_MAX];

static int body_all(struct tl_ctx *ctx)
{
    static const struct {
        ncclDataType_t type;
        ncclRedOp_t op;
    } reds[] = {{ncclInt32, ncclSum},  {ncclFloat32, ncclSum}, {ncclFloat64, ncclMax},
                {ncclInt64, ncclProd}, {ncclUint8, ncclMin},   {ncclFloat32, ncclAvg}};
    static const ncclDataType_t moves[] = {ncclInt32, ncclUint8, ncclFloat64};
    static const size_t counts[] = {0, 1, 7, MAX_COUNT};
    struct dev v;

    if (!dev_open(ctx, &v))
        return 1;
    for (int coll = 0; coll < NCOLLS; coll++) {
        size_t ntypes = is_reducing(coll) ? sizeof reds / sizeof reds[0] : 3;
        for (size_t t = 0; t < ntypes; t++)
            for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
                for (int inplace = 0; inplace < (has_inplace(coll) ? 2 : 1); inplace++)
                    for (int round = 0; round < 2; round++) {
                        struct call c = {coll,
                                         is_reducing(coll) ? reds[t].type : moves[t],
                                         is_reducing(coll) ? reds[t].op : ncclSum,
                                         counts[k],
                                         inplace != 0,
                                         round + (int)k};
                        if (!run_one(ctx, &v, &c))
                            return 1;
                    }
    }
    return dev_close(ctx, &v) ? 0 : 1;
}

/* Calls queued back to back on two streams, some in one group, and only then synchronized: the
 * proxy runs them in order while the streams stage. */
static int body_group(struct tl_ctx *ctx)
{
    struct dev v;
    void *stream2 = NULL;
    uintptr_t send2 = 0, recv2 = 0;
    struct call calls[4] = {
        {ALLREDUCE, ncclInt32, ncclSum, MAX_COUNT, false, 1},
        {ALLGATHER, ncclFloat64, ncclSum, 33, false, 2},
        {BROADCAST, ncclUint8, ncclSum, 100, true, 3},
        {REDUCESCATTER, ncclFloat32, ncclMax, 5, false, 4},
    };
    static __thread unsigned char in[4][HOST_BYTES], out[4][HOST_BYTES];
    void *recv[4];

    if (!dev_open(ctx, &v) || !cu_ok(ctx, v.d.stream_create(&stream2, 1), "cuStreamCreate") ||
        !cu_ok(ctx, v.d.mem_alloc(&send2, v.bytes), "cuMemAlloc") ||
        !cu_ok(ctx, v.d.mem_alloc(&recv2, v.bytes), "cuMemAlloc"))
        return 1;
    for (int rep = 0; rep < 3; rep++) {
        /* a group of three over two streams, then one more call alone on the second stream */
        if (!tl_ok(ctx, ncclGroupStart(), "ncclGroupStart"))
            return 1;
        bool ok = start(ctx, &v, &calls[0], v.stream, v.send, v.recv, in[0], &recv[0]) &&
                  start(ctx, &v, &calls[1], stream2, send2, recv2, in[1], &recv[1]) &&
                  start(ctx, &v, &calls[2], v.stream, v.send + v.bytes / 2, v.recv + v.bytes / 2,
                        in[2], &recv[2]);
        if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd") || !ok)
            return 1;
        if (!start(ctx, &v, &calls[3], stream2, send2 + v.bytes / 2, recv2 + v.bytes / 2, in[3],
                   &recv[3]))
            return 1;
        for (int i = 0; i < 4; i++) {
            size_t nsend, nrecv, at;
            void *s = i == 1 || i == 3 ? stream2 : v.stream;
            shape(&calls[i], ctx->rank, ctx->nranks, &nsend, &nrecv, &at);
            if (!cu_ok(ctx,
                       v.d.memcpy_async((uintptr_t)out[i], (uintptr_t)recv[i],
                                        nrecv * type_bytes(calls[i].type), s),
                       "cuMemcpyAsync"))
                return 1;
        }
        if (!cu_ok(ctx, v.d.stream_sync(stream2), "cuStreamSynchronize") ||
            !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize"))
            return 1;
        for (int i = 0; i < 4; i++)
            if (!check(ctx, &calls[i], out[i]))
                return 1;
        for (int i = 0; i < 4; i++)
            calls[i].round += 4;
    }
    return cu_ok(ctx, v.d.mem_free(send2), "cuMemFree") &&
                   cu_ok(ctx, v.d.mem_free(recv2), "cuMemFree") &&
                   cu_ok(ctx, v.d.stream_destroy(stream2), "cuStreamDestroy") && dev_close(ctx, &v)
               ? 0
               : 1;
}

/* Ten in-place sums queued back to back on one buffer, and one synchronization: each call must
 * see the previous one's result (stream order, queue order, staging slots reused or added while
 * others are in flight): value * nranks^10. */
#define BURST 10
static int body_burst(struct tl_ctx *ctx)
{
    struct dev v;
    int64_t scale = 1;
    static __thread int32_t in[MAX_COUNT], out[MAX_COUNT];

    if (!dev_open(ctx, &v))
        return 1;
    for (size_t i = 0; i < MAX_COUNT; i++)
        in[i] = (int32_t)value(ctx->rank, i, 0);
    if (!cu_ok(ctx, v.d.memcpy_async(v.recv, (uintptr_t)in, sizeof in, v.stream), "cuMemcpyAsync"))
        return 1;
    for (int k = 0; k < BURST; k++) {
        if (!tl_ok(ctx,
                   ncclAllReduce((void *)v.recv, (void *)v.recv, MAX_COUNT, ncclInt32, ncclSum,
                                 ctx->comm, v.stream),
                   "ncclAllReduce (burst)"))
            return 1;
        scale *= k == 0 ? 1 : ctx->nranks;
    }
    if (!cu_ok(ctx, v.d.memcpy_async((uintptr_t)out, v.recv, sizeof out, v.stream),
               "cuMemcpyAsync") ||
        !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize"))
        return 1;
    for (size_t i = 0; i < MAX_COUNT; i++) {
        int64_t want = (int64_t)reduce_all(ncclSum, ctx->nranks, i, 0) * scale;
        if (out[i] != want) {
            tl_failf(ctx, "burst of %d in-place sums: element %zu is %d, expected %lld", BURST, i,
                     out[i], (long long)want);
            return 1;
        }
    }
    return dev_close(ctx, &v) ? 0 : 1;
}

/* One thread, four communicators of ncclCommInitAll, one stream each, in one group: the job spans
 * every communicator. */
#define INITALL_N 4
static int body_initall(struct tl_ctx *ctx)
{
    ncclComm_t comms[INITALL_N];
    struct dev v[INITALL_N];
    struct tl_ctx rank_ctx[INITALL_N];
    static unsigned char in[INITALL_N][MAX_COUNT * 4], out[INITALL_N][MAX_COUNT * 4];

    if (!tl_ok(ctx, ncclCommInitAll(comms, INITALL_N, NULL), "ncclCommInitAll"))
        return 1;
    for (int r = 0; r < INITALL_N; r++) {
        rank_ctx[r] = *ctx;
        rank_ctx[r].rank = r;
        rank_ctx[r].nranks = INITALL_N;
        rank_ctx[r].comm = comms[r];
        if (!dev_open(&rank_ctx[r], &v[r]))
            return 1;
    }
    for (int round = 0; round < 3; round++) {
        struct call c = {ALLREDUCE, ncclInt32, ncclSum, MAX_COUNT, round == 1, round};
        void *recv[INITALL_N];
        if (!tl_ok(ctx, ncclGroupStart(), "ncclGroupStart"))
            return 1;
        for (int r = 0; r < INITALL_N; r++)
            if (!start(&rank_ctx[r], &v[r], &c, v[r].stream, v[r].send, v[r].recv, in[r], &recv[r]))
                return 1;
        if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd"))
            return 1;
        for (int r = 0; r < INITALL_N; r++)
            if (!cu_ok(ctx,
                       v[r].d.memcpy_async((uintptr_t)out[r], (uintptr_t)recv[r], MAX_COUNT * 4,
                                           v[r].stream),
                       "cuMemcpyAsync") ||
                !cu_ok(ctx, v[r].d.stream_sync(v[r].stream), "cuStreamSynchronize") ||
                !check(&rank_ctx[r], &c, out[r]))
                return 1;
    }
    for (int r = 0; r < INITALL_N; r++)
        if (!dev_close(ctx, &v[r]) || !tl_ok(ctx, ncclCommDestroy(comms[r]), "ncclCommDestroy"))
            return 1;
    return 0;
}

/* ---- errors ---- */

/* A bad argument is refused at the call, before anything is put on the stream; the stream and the
 * communicator stay usable. */
static int body_bad_arg(struct tl_ctx *ctx)
{
    struct dev v;
    struct call c = {ALLREDUCE, ncclInt32, ncclSum, 9, false, 0};

    if (!dev_open(ctx, &v))
        return 1;
    if (ncclAllReduce((void *)v.send, (void *)v.recv, 9, (ncclDataType_t)99, ncclSum, ctx->comm,
                      v.stream) != ncclInvalidArgument) {
        tl_failf(ctx, "an invalid datatype on a stream was not refused with ncclInvalidArgument");
        return 1;
    }
    return run_one(ctx, &v, &c) && dev_close(ctx, &v) ? 0 : 1;
}

/* Without a usable GPU backend (ANYCCL_CUDA_LIBRARY names nothing), a stream is refused with a
 * message that names it; host buffers with a NULL stream still work. */
static int body_no_backend(struct tl_ctx *ctx)
{
    int32_t x[4] = {1, 2, 3, 4}, y[4];
    ncclResult_t r = ncclAllReduce(x, y, 4, ncclInt32, ncclSum, ctx->comm, (void *)0x1000);
    const char *msg = ncclGetLastError(ctx->comm);

    if (r != ncclInvalidUsage || !strstr(msg, "stream") || !strstr(msg, "no GPU backend")) {
        tl_failf(ctx, "a stream without a GPU backend gave %d (%s)", (int)r, msg);
        return 1;
    }
    if (!tl_ok(ctx, ncclAllReduce(x, y, 4, ncclInt32, ncclSum, ctx->comm, NULL), "ncclAllReduce"))
        return 1;
    for (int i = 0; i < 4; i++)
        if (y[i] != x[i] * ctx->nranks) {
            tl_failf(ctx, "host allreduce after the refusal: y[%d] = %d", i, y[i]);
            return 1;
        }
    return 0;
}

/* The ranks disagree on the count: the proxy's run fails on every rank, which must release the
 * stream (cuStreamSynchronize returns) and report the communicator's asynchronous error. */
static int body_mismatch(struct tl_ctx *ctx)
{
    struct dev v;
    ncclResult_t async = ncclSuccess;
    size_t count = ctx->rank == 0 ? 5 : 6;

    if (!dev_open(ctx, &v) ||
        !tl_ok(ctx,
               ncclAllReduce((void *)v.send, (void *)v.recv, count, ncclInt32, ncclSum, ctx->comm,
                             v.stream),
               "ncclAllReduce") ||
        !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after a failed call") ||
        !tl_ok(ctx, ncclCommGetAsyncError(ctx->comm, &async), "ncclCommGetAsyncError"))
        return 1;
    if (async == ncclSuccess) {
        tl_failf(ctx, "ranks with different counts: no asynchronous error");
        return 1;
    }
    if (ncclAllReduce((void *)v.send, (void *)v.recv, 5, ncclInt32, ncclSum, ctx->comm, v.stream) ==
        ncclSuccess) {
        tl_failf(ctx, "a call on a failed communicator was accepted");
        return 1;
    }
    return dev_close(ctx, &v) ? 0 : 1;
}

/* Rank 1 leaves (aborts its communicator) without calling; rank 0's call on a stream must end in
 * an error within ANYCCL_TIMEOUT, with its stream released. */
static int raw_peer_leaves(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;
    ncclResult_t async = ncclSuccess;

    if (!tl_ok(ctx, ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    ctx->comm = comm;
    if (ctx->rank != 0)
        return tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort") ? 0 : 1;
    if (!dev_open(ctx, &v) ||
        !tl_ok(
            ctx,
            ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclFloat32, ncclSum, comm, v.stream),
            "ncclAllReduce") ||
        !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after the peer left") ||
        !tl_ok(ctx, ncclCommGetAsyncError(comm, &async), "ncclCommGetAsyncError"))
        return 1;
    if (async == ncclSuccess) {
        tl_failf(ctx, "the peer left: no asynchronous error");
        return 1;
    }
    return dev_close(ctx, &v) && tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort") ? 0 : 1;
}

/* Rank 0 queues a call that rank 1 never makes, then aborts its communicator: the abort ends the
 * proxy's wait, and the stream is released (cuStreamSynchronize returns). Rank 1 aborts at once. */
static int raw_abort_inflight(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;

    if (!tl_ok(ctx, ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    ctx->comm = comm;
    if (ctx->rank != 0)
        return tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort") ? 0 : 1;
    if (!dev_open(ctx, &v) || !tl_ok(ctx,
                                     ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclFloat32,
                                                   ncclSum, comm, v.stream),
                                     "ncclAllReduce"))
        return 1;
    ctx->comm = NULL;
    return tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort with a call in flight") &&
                   cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after the abort") &&
                   dev_close(ctx, &v)
               ? 0
               : 1;
}

/* ---- cases ---- */

static char env_emu[PATH_MAX + 32], env_nomemops[PATH_MAX + 32];

/* Whether the library was built with nvcc (anyccl-info says which kernels it carries): the cases
 * on a driver without stream memory operations launch its signal/wait kernels. */
static bool has_cuda_kernels(const char *bin_dir)
{
    char cmd[PATH_MAX + 64], line[512];
    bool is_cuda = false, has = true;
    FILE *f;

    snprintf(cmd, sizeof cmd, "%s/../../bin/anyccl-info 2>/dev/null", bin_dir);
    if (!(f = popen(cmd, "r")))
        return true;
    while (fgets(line, sizeof line, f)) {
        if (is_cuda && strstr(line, "kernels in this library: none"))
            has = false;
        is_cuda = strncmp(line, "  cuda:", 7) == 0;
    }
    pclose(f);
    return has;
}

int main(int argc, char **argv)
{
    static struct tl_case cases[32];
    static char names[32][64];
    const char *driver = getenv("TL_CUDA_DRIVER");
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t n = 0;
    bool is_real = driver != NULL, has_kernels = true;

    if (len > 0) {
        exe[len] = '\0';
        const char *dir = dirname(exe);
        snprintf(emu_path, sizeof emu_path, "%s/../unit/device/fake/libcuda_emu.so", dir);
        snprintf(emu_nomemops_path, sizeof emu_nomemops_path,
                 "%s/../unit/device/fake/libcuda_emu_nomemops.so", dir);
        has_kernels = has_cuda_kernels(dir);
    }
    if (!is_real && access(emu_path, R_OK) != 0) {
        printf("SKIP device: %s is not built (make test-build builds it)\n", emu_path);
        return 0;
    }
    snprintf(env_emu, sizeof env_emu, "ANYCCL_CUDA_LIBRARY=%s", is_real ? driver : emu_path);
    snprintf(env_nomemops, sizeof env_nomemops, "ANYCCL_CUDA_LIBRARY=%s", emu_nomemops_path);
    /* TL_PROCS ranks are forked: every one opens the driver for itself. */
    static const struct {
        const char *name;
        enum tl_mode mode;
        int np;
        tl_body_fn body, raw;
        bool is_emu_only, is_nomemops, is_slow;
        const char *env;
    } cfgs[] = {
        {"np2/threads", TL_THREADS, 2, body_all, NULL, false, false, false, NULL},
        {"np4/threads", TL_THREADS, 4, body_all, NULL, false, false, false, NULL},
        {"np2/proc", TL_PROCS, 2, body_all, NULL, false, false, false, NULL},
        {"np4/proc", TL_PROCS, 4, body_all, NULL, false, false, true, NULL},
        {"np2/threads/kernels", TL_THREADS, 2, body_all, NULL, true, true, false, NULL},
        {"group/np2/threads", TL_THREADS, 2, body_group, NULL, false, false, false, NULL},
        {"group/np4/proc", TL_PROCS, 4, body_group, NULL, false, false, false, NULL},
        {"group/np4/threads/kernels", TL_THREADS, 4, body_group, NULL, true, true, false, NULL},
        {"burst/np2/threads", TL_THREADS, 2, body_burst, NULL, false, false, false, NULL},
        {"burst/np4/proc", TL_PROCS, 4, body_burst, NULL, false, false, false, NULL},
        {"burst/np4/threads/kernels", TL_THREADS, 4, body_burst, NULL, true, true, false, NULL},
        {"initall-group/np4", TL_PROCS, 1, NULL, body_initall, false, false, false, NULL},
        {"error/bad-arg/np2/threads", TL_THREADS, 2, body_bad_arg, NULL, false, false, false, NULL},
        {"error/mismatch/np2/threads", TL_THREADS, 2, body_mismatch, NULL, false, false, false,
         NULL},
        {"error/peer-leaves/np2/proc", TL_PROCS, 2, NULL, raw_peer_leaves, false, false, false,
         "ANYCCL_TIMEOUT=5"},
        {"error/abort-inflight/np2/threads", TL_THREADS, 2, NULL, raw_abort_inflight, false, false,
         false, NULL},
        {"error/no-backend/np2/threads", TL_THREADS, 2, body_no_backend, NULL, true, false, false,
         "ANYCCL_CUDA_LIBRARY=/nonexistent/libcuda.so.1"},
    };
    static char envs[32][2 * PATH_MAX];

    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (is_real && cfgs[i].is_emu_only)
            continue;
        if (cfgs[i].is_nomemops && !has_kernels) {
            printf("SKIP device/%s: the library was built without nvcc: no signal/wait kernels\n",
                   cfgs[i].name);
            continue;
        }
        snprintf(names[n], sizeof names[n], "device/%s", cfgs[i].name);
        if (cfgs[i].env && strncmp(cfgs[i].env, "ANYCCL_CUDA_LIBRARY=", 20) == 0)
            snprintf(envs[n], sizeof envs[n], "%s", cfgs[i].env);
        else
            snprintf(envs[n], sizeof envs[n], "%s NCCL_P2P_DISABLE=1%s%s",
                     cfgs[i].is_nomemops ? env_nomemops : env_emu, cfgs[i].env ? " " : "",
                     cfgs[i].env ? cfgs[i].env : "");
        cases[n] = (struct tl_case){.name = names[n],
                                    .mode = cfgs[i].mode,
                                    .nranks = cfgs[i].np,
                                    .env = envs[n],
                                    .body = cfgs[i].body,
                                    .raw_body = cfgs[i].raw,
                                    .timeout_s = 180,
                                    .is_slow = cfgs[i].is_slow};
        n++;
    }
    fflush(stdout); /* before the launcher forks: no copy of these lines in the children */
    return tl_main(argc, argv, cases, n);
}
