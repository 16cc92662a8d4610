/* Collectives on GPU buffers over the peer-to-peer device path (src/core/devpath.c: kernel
 * ac_k_coll over P2P connectors), against the emulated CUDA driver
 * ($BUILD/tests/unit/device/fake/libcuda_emu.so, whose device memory other processes map through
 * its IPC handles, and whose kernels are the host build of src/device/kernels/, one thread per
 * block). Cases: every collective (send/recv stays staged) on 2 and 4 ranks as threads and as
 * processes, protocols Simple, LL and LL128, in place and out of place, counts 0, 1, 7, 1027 and
 * 4099 (with 2 slots of 4 KiB the last ones wrap the slots many times), each twice, checked
 * exactly after cuStreamSynchronize; that the log says the P2P path was taken, and that
 * NCCL_P2P_DISABLE=1 takes the staged path with the same results; a group over two streams and a
 * group of 4 communicators driven by one thread; registered buffers (src/core/devpath_direct.c):
 * the same calls and calls of several blocks worked on in place, on 2, 3 and 4 ranks as threads
 * and processes and in a group of communicators driven by one thread, and through the slots when
 * one rank did not register; errors: ranks that disagree, an abort with a call in flight, a peer
 * process that dies with a call in flight, a direct candidate a peer never makes. Never run on a
 * GPU yet. */
#include "launcher.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>

#define MAX_COUNT 4099
#define ELEM_MAX 8

#include "dev_calls.h"

static char emu_path[PATH_MAX], hip_path[PATH_MAX];
static bool log_says(struct tl_ctx *ctx, const char *want);

static bool all_calls(struct tl_ctx *ctx, struct dev *v);

static int body_all(struct tl_ctx *ctx)
{
    struct dev v;

    if (!dev_open(ctx, &v) || !all_calls(ctx, &v))
        return 1;
    return dev_close(ctx, &v) ? 0 : 1;
}

static bool all_calls(struct tl_ctx *ctx, struct dev *v)
{
    static const struct {
        ncclDataType_t type;
        ncclRedOp_t op;
    } reds[] = {{ncclInt32, ncclSum},  {ncclFloat32, ncclSum}, {ncclFloat64, ncclMax},
                {ncclInt64, ncclProd}, {ncclUint8, ncclMin},   {ncclFloat32, ncclAvg}};
    static const ncclDataType_t moves[] = {ncclInt32, ncclUint8, ncclFloat64};
    static const size_t counts[] = {0, 1, 7, 1027, MAX_COUNT};

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
                        if (!run_one(ctx, v, &c))
                            return false;
                    }
    }
    return true;
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
        void *h;
        /* arg "register": the calls go direct, each communicator's exchange in a thread */
        if (ctx->arg && (!tl_ok(ctx, ncclCommRegister(comms[r], (void *)v[r].send, v[r].bytes, &h),
                                "ncclCommRegister") ||
                         !tl_ok(ctx, ncclCommRegister(comms[r], (void *)v[r].recv, v[r].bytes, &h),
                                "ncclCommRegister")))
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
    return !ctx->arg || log_says(ctx, "works on the registered buffers in place") ? 0 : 1;
}

/* ---- send/recv ---- */

/* One ring step of send/recv in a group, the receive on a second stream (the launch joins both),
 * then one whose transfers are split in two sends and two receives per peer (staged: one launch
 * cannot hold two transfers on one connector), each checked exactly; the log says send/recv ran
 * on the device. body_all's sendrecv calls run on the device path too, after its first
 * collective turned it on. */
static int body_p2p(struct tl_ctx *ctx)
{
    int me = ctx->rank, n = ctx->nranks, next = (me + 1) % n, prev = (me + n - 1) % n;
    struct call on = {ALLREDUCE, ncclInt32, ncclSum, 7, false, 0};
    struct call ring = {SENDRECV, ncclInt32, ncclSum, MAX_COUNT, false, 3};
    size_t half = MAX_COUNT / 2;
    void *stream2 = NULL;
    struct dev v;

    if (!dev_open(ctx, &v) || !run_one(ctx, &v, &on) ||
        !cu_ok(ctx, v.d.stream_create(&stream2, 1), "cuStreamCreate"))
        return 1;
    for (int split = 0; split < 2; split++) {
        ring.round = 3 + split;
        for (size_t i = 0; i < MAX_COUNT; i++)
            put(ncclInt32, host_in, i, value(me, i, ring.round));
        if (!cu_ok(ctx, v.d.memset_async(v.recv, 0xEE, MAX_COUNT * 4, stream2), "cuMemsetD8Async") ||
            !cu_ok(ctx, v.d.memcpy_async(v.send, (uintptr_t)host_in, MAX_COUNT * 4, v.stream),
                   "cuMemcpyAsync") ||
            !tl_ok(ctx, ncclGroupStart(), "ncclGroupStart"))
            return 1;
        if (split) {
            ncclSend((void *)v.send, half, ncclInt32, next, ctx->comm, v.stream);
            ncclSend((void *)(v.send + half * 4), MAX_COUNT - half, ncclInt32, next, ctx->comm,
                     v.stream);
            ncclRecv((void *)v.recv, half, ncclInt32, prev, ctx->comm, stream2);
            ncclRecv((void *)(v.recv + half * 4), MAX_COUNT - half, ncclInt32, prev, ctx->comm,
                     stream2);
        } else {
            ncclSend((void *)v.send, MAX_COUNT, ncclInt32, next, ctx->comm, v.stream);
            ncclRecv((void *)v.recv, MAX_COUNT, ncclInt32, prev, ctx->comm, stream2);
        }
        if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd send/recv") ||
            !cu_ok(ctx, v.d.memcpy_async((uintptr_t)host_recv, v.recv, MAX_COUNT * 4, stream2),
                   "cuMemcpyAsync") ||
            !cu_ok(ctx, v.d.stream_sync(stream2), "cuStreamSynchronize") ||
            !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize") ||
            !check(ctx, &ring, host_recv))
            return 1;
    }
    return cu_ok(ctx, v.d.stream_destroy(stream2), "cuStreamDestroy") && dev_close(ctx, &v) &&
                   log_says(ctx, "P2P: send/recv on GPU buffers run on the device")
               ? 0
               : 1;
}

/* ---- registered buffers (src/core/devpath_direct.c) ---- */

/* A call on buffers of its own, large enough for a direct launch of several blocks. */
static bool big_call(struct tl_ctx *ctx, struct dev *v, const struct call *c, bool do_register)
{
    size_t nsend, nrecv, send_at, es = type_bytes(c->type);
    uintptr_t send = 0, recv = 0;
    void *hs = NULL, *hr = NULL, *out;
    unsigned char *in, *back;
    bool ok;

    shape(c, ctx->rank, ctx->nranks, &nsend, &nrecv, &send_at);
    in = malloc(nsend * es);
    back = malloc(nrecv * es);
    ok = in && back && cu_ok(ctx, v->d.mem_alloc(&send, nsend * es), "cuMemAlloc") &&
         cu_ok(ctx, v->d.mem_alloc(&recv, nrecv * es), "cuMemAlloc");
    if (ok && do_register)
        ok = tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)send, nsend * es, &hs),
                   "ncclCommRegister") &&
             tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)recv, nrecv * es, &hr),
                   "ncclCommRegister");
    ok = ok && start(ctx, v, c, v->stream, send, recv, in, &out) &&
         cu_ok(ctx, v->d.memcpy_async((uintptr_t)back, (uintptr_t)out, nrecv * es, v->stream),
               "cuMemcpyAsync") &&
         cu_ok(ctx, v->d.stream_sync(v->stream), "cuStreamSynchronize") && check(ctx, c, back);
    if (hs)
        ok = tl_ok(ctx, ncclCommDeregister(ctx->comm, hs), "ncclCommDeregister") && ok;
    if (hr)
        ok = tl_ok(ctx, ncclCommDeregister(ctx->comm, hr), "ncclCommDeregister") && ok;
    if (send)
        ok = cu_ok(ctx, v->d.mem_free(send), "cuMemFree") && ok;
    if (recv)
        ok = cu_ok(ctx, v->d.mem_free(recv), "cuMemFree") && ok;
    free(in);
    free(back);
    return ok;
}

/* ctx->arg "all": every rank registers its buffers, so that the calls work on them in place
 * (the log says so); "rank0": only rank 0 does, and the calls go through the slots (the log names
 * rank 1). Every collective of body_all, then calls of several blocks (one of them with
 * unregistered buffers between registered ones: the connectors' counts stay in step), then the
 * first set again after deregistering. */
static int body_registered(struct tl_ctx *ctx)
{
    bool is_window = strcmp(ctx->arg, "window") == 0; /* ncclCommWindowRegister instead */
    bool is_all = is_window || strcmp(ctx->arg, "all") == 0;
    ncclWindow_t ws = NULL, wr = NULL;
    bool do_register = is_all || ctx->rank == 0;
    struct call bigs[] = {
        {ALLREDUCE, ncclFloat32, ncclSum, 3u << 18, false, 1},
        {ALLREDUCE, ncclInt32, ncclMax, (3u << 18) + 5, true, 2},
        {REDUCESCATTER, ncclInt64, ncclSum, (1u << 18) + 3, true, 3},
        {ALLGATHER, ncclUint8, ncclSum, (5u << 20) / 2 + 1, false, 4},
        {ALLTOALL, ncclFloat64, ncclSum, (1u << 18) + 1, false, 5},
        {BROADCAST, ncclInt32, ncclSum, (1u << 20) + 7, true, 6},
        {REDUCE, ncclFloat64, ncclMin, (1u << 18) + 1, false, 7},
    };
    void *hs = NULL, *hr = NULL;
    struct dev v;

    if (!dev_open(ctx, &v))
        return 1;
    if (is_window && (!tl_ok(ctx,
                             ncclCommWindowRegister(ctx->comm, (void *)v.send, v.bytes, &ws,
                                                    NCCL_WIN_COLL_SYMMETRIC),
                             "ncclCommWindowRegister") ||
                      !tl_ok(ctx,
                             ncclCommWindowRegister(ctx->comm, (void *)v.recv, v.bytes, &wr,
                                                    NCCL_WIN_COLL_SYMMETRIC),
                             "ncclCommWindowRegister")))
        return 1;
    if (do_register && !is_window &&
        (!tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)v.send, v.bytes, &hs),
                "ncclCommRegister") ||
         !tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)v.recv, v.bytes, &hr),
                "ncclCommRegister")))
        return 1;
    if (!all_calls(ctx, &v))
        return 1;
    for (size_t i = 0; i < sizeof bigs / sizeof bigs[0]; i++)
        if (!big_call(ctx, &v, &bigs[i], do_register && i != 2))
            return 1;
    if (hs && (!tl_ok(ctx, ncclCommDeregister(ctx->comm, hs), "ncclCommDeregister") ||
               !tl_ok(ctx, ncclCommDeregister(ctx->comm, hr), "ncclCommDeregister")))
        return 1;
    if (ws && (!tl_ok(ctx, ncclCommWindowDeregister(ctx->comm, ws), "ncclCommWindowDeregister") ||
               !tl_ok(ctx, ncclCommWindowDeregister(ctx->comm, wr), "ncclCommWindowDeregister")))
        return 1;
    struct call after = {ALLREDUCE, ncclInt32, ncclSum, MAX_COUNT, false, 9};
    if (!run_one(ctx, &v, &after) || !dev_close(ctx, &v))
        return 1;
    return log_says(ctx, is_all ? "P2P direct: AllReduce of 1 elements works on the registered"
                                : "goes through the slots: rank 1's buffers are not registered")
               ? 0
               : 1;
}

/* ---- errors ---- */

/* Whether this process's log (NCCL_DEBUG_FILE of the case: log_dir/<pid>.log) has a line with
 * `want`: which path the communicator took. main makes log_dir before the cases fork and removes
 * it after them. */
static char log_dir[64];

static bool log_says(struct tl_ctx *ctx, const char *want)
{
    char path[128], line[1024];
    bool found = false;
    FILE *f;

    snprintf(path, sizeof path, "%s/%d.log", log_dir, (int)getpid());
    if (!(f = fopen(path, "r"))) {
        tl_failf(ctx, "no log at %s", path);
        return false;
    }
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, want) != NULL;
    if (!found) {
        tl_failf(ctx, "the log (%s) has no line with \"%s\"; its P2P lines:", path, want);
        rewind(f);
        while (fgets(line, sizeof line, f))
            if (strstr(line, "P2P"))
                fprintf(stderr, "    %s", line);
    }
    fclose(f);
    return found;
}

/* Every collective, then the log line of the path taken (arg: the text expected). */
static int body_all_logged(struct tl_ctx *ctx)
{
    return body_all(ctx) == 0 && log_says(ctx, ctx->arg) ? 0 : 1;
}

/* The ranks disagree on the count: the kernels find a slot whose size or tag differs, return, and
 * the communicator's asynchronous error says so; the stream is released. arg "finalize":
 * ncclCommFinalize instead of synchronizing the stream, which waits for the launch, so that the
 * error is there right after it; "direct": registered buffers, both calls going direct (their
 * barriers' tags differ). */
static int body_mismatch(struct tl_ctx *ctx)
{
    struct dev v;
    ncclResult_t async = ncclSuccess;
    struct call c = {ALLREDUCE, ncclInt32, ncclSum, 64, false, 0};
    size_t count = ctx->rank == 0 ? 500 : 600;
    bool is_direct = ctx->arg && strcmp(ctx->arg, "direct") == 0;
    void *hs, *hr;

    if (!dev_open(ctx, &v))
        return 1;
    if (is_direct && (!tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)v.send, v.bytes, &hs),
                             "ncclCommRegister") ||
                      !tl_ok(ctx, ncclCommRegister(ctx->comm, (void *)v.recv, v.bytes, &hr),
                             "ncclCommRegister")))
        return 1;
    if (!run_one(ctx, &v, &c) ||
        !tl_ok(ctx,
               ncclAllReduce((void *)v.send, (void *)v.recv, count, ncclInt32, ncclSum, ctx->comm,
                             v.stream),
               "ncclAllReduce") ||
        (ctx->arg && !is_direct ? !tl_ok(ctx, ncclCommFinalize(ctx->comm), "ncclCommFinalize")
                                : !cu_ok(ctx, v.d.stream_sync(v.stream),
                                         "cuStreamSynchronize after a failed "
                                         "call")) ||
        !tl_ok(ctx, ncclCommGetAsyncError(ctx->comm, &async), "ncclCommGetAsyncError"))
        return 1;
    if (async != ncclInvalidUsage) {
        tl_failf(ctx, "ranks with different counts: asynchronous error %d, expected %d", (int)async,
                 (int)ncclInvalidUsage);
        return 1;
    }
    return dev_close(ctx, &v) &&
                   log_says(ctx, is_direct ? "works on the registered buffers in place" : "P2P: on")
               ? 0
               : 1;
}

/* The start of the cases where rank 0 makes a call its peers never make: a communicator, one
 * call all make together, then the peers wait until rank 0 sets *done and leave (abort or
 * destroy, as is_abort says). Returns -1 on rank 0, which goes on, else the case's result. */
static int others_wait(struct tl_ctx *ctx, ncclComm_t *comm, struct dev *v, ncclDataType_t type,
                       atomic_int *done, bool is_abort)
{
    struct call c = {ALLREDUCE, type, ncclSum, 64, false, 0};

    if (!tl_ok(ctx, ncclCommInitRank(comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    ctx->comm = *comm;
    if (!dev_open(ctx, v) || !run_one(ctx, v, &c))
        return 1;
    if (ctx->rank == 0)
        return -1;
    for (int i = 0; i < 120000 && !atomic_load(done); i++)
        usleep(1000);
    if (is_abort)
        return tl_ok(ctx, ncclCommAbort(*comm), "ncclCommAbort") && dev_close(ctx, v) ? 0 : 1;
    return dev_close(ctx, v) && tl_ok(ctx, ncclCommDestroy(*comm), "ncclCommDestroy") ? 0 : 1;
}

/* Rank 0 makes a call rank 1 never makes, a candidate for going direct: the call itself waits
 * for rank 1 to say where its buffers are, and fails after ANYCCL_TIMEOUT, saying why. */
static atomic_int xchg_done;

static int raw_direct_timeout(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;
    int rc = others_wait(ctx, &comm, &v, ncclInt32, &xchg_done, false);

    if (rc >= 0)
        return rc;
    ncclResult_t res =
        ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclInt32, ncclSum, comm, v.stream);
    atomic_store(&xchg_done, 1);
    if (res != ncclRemoteError) {
        tl_failf(ctx, "a call rank 1 never makes: %d, expected ncclRemoteError", (int)res);
        return 1;
    }
    return dev_close(ctx, &v) && log_says(ctx, "rank 1 did not reach this collective in 2 s") &&
                   tl_ok(ctx, ncclCommDestroy(comm), "ncclCommDestroy")
               ? 0
               : 1;
}

/* Rank 0 queues a call rank 1 never makes, then aborts: its kernel stops waiting and the stream
 * is released. Rank 1 keeps its communicator (whose memory rank 0's kernel writes) until then. */
static atomic_int abort_done;

static int raw_abort_inflight(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;
    int rc = others_wait(ctx, &comm, &v, ncclFloat32, &abort_done, true);

    if (rc >= 0)
        return rc;
    bool ok = tl_ok(ctx,
                    ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclFloat32, ncclSum, comm,
                                  v.stream),
                    "ncclAllReduce") &&
              tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort with a kernel waiting") &&
              cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after the abort");
    atomic_store(&abort_done, 1);
    return ok && dev_close(ctx, &v) && log_says(ctx, "P2P: on") ? 0 : 1;
}

/* Rank 0 queues a call rank 1 never makes, and rank 1 stays: with ANYCCL_TIMEOUT=2 the watcher
 * stops rank 0's kernel, the stream is released and the communicator's error is
 * ncclRemoteError. */
static atomic_int timeout_done;

static int raw_timeout(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;
    ncclResult_t async = ncclSuccess;
    int rc = others_wait(ctx, &comm, &v, ncclInt32, &timeout_done, false);

    if (rc >= 0)
        return rc;
    bool ok =
        tl_ok(ctx,
              ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclInt32, ncclSum, comm, v.stream),
              "ncclAllReduce") &&
        cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after the timeout") &&
        tl_ok(ctx, ncclCommGetAsyncError(comm, &async), "ncclCommGetAsyncError");
    atomic_store(&timeout_done, 1);
    if (ok && async != ncclRemoteError) {
        tl_failf(ctx, "a call left waiting: asynchronous error %d, expected ncclRemoteError",
                 (int)async);
        ok = false;
    }
    /* the failed communicator's destroy leaves the memory rank 1's kernel may still write */
    return ok && dev_close(ctx, &v) && log_says(ctx, "ANYCCL_TIMEOUT") &&
                   tl_ok(ctx, ncclCommDestroy(comm), "ncclCommDestroy") &&
                   log_says(ctx, "its connector memory is left allocated")
               ? 0
               : 1;
}

/* Rank 1's process exits after one call; rank 0's next call waits for it on the device until the
 * watcher sees the process gone and tells the kernel to stop: an asynchronous error, the stream
 * released. */
static int raw_peer_dies(struct tl_ctx *ctx)
{
    ncclComm_t comm;
    struct dev v;
    ncclResult_t async = ncclSuccess;
    struct call c = {ALLREDUCE, ncclFloat32, ncclSum, 64, false, 0};

    if (!tl_ok(ctx, ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank), "ncclCommInitRank"))
        return 1;
    ctx->comm = comm;
    if (!dev_open(ctx, &v) || !run_one(ctx, &v, &c))
        return 1;
    if (ctx->rank != 0)
        _exit(0); /* without a word to anyone */
    if (!tl_ok(
            ctx,
            ncclAllReduce((void *)v.send, (void *)v.recv, 64, ncclFloat32, ncclSum, comm, v.stream),
            "ncclAllReduce") ||
        !cu_ok(ctx, v.d.stream_sync(v.stream), "cuStreamSynchronize after the peer died") ||
        !tl_ok(ctx, ncclCommGetAsyncError(comm, &async), "ncclCommGetAsyncError"))
        return 1;
    if (async != ncclRemoteError) {
        tl_failf(ctx, "the peer died: asynchronous error %d, expected ncclRemoteError", (int)async);
        return 1;
    }
    return dev_close(ctx, &v) && log_says(ctx, "P2P: on") &&
                   tl_ok(ctx, ncclCommAbort(comm), "ncclCommAbort")
               ? 0
               : 1;
}

/* ---- cases ---- */

/* A mixed communicator: odd ranks have no GPU (the driver sees no device, as with an empty
 * CUDA_VISIBLE_DEVICES) and call with host buffers and no stream, even ranks with GPU buffers on
 * a stream. The peer information of init already says so, so the GPU ranks take the staged path
 * without an exchange the CPU ranks would never join; every rank's results are exact. */
static int raw_mixed_cpu_rank(struct tl_ctx *ctx)
{
    static const enum coll colls[] = {ALLREDUCE, ALLGATHER, REDUCESCATTER, BROADCAST};
    bool is_cpu = ctx->rank % 2 == 1;
    int me = ctx->rank, n = ctx->nranks;
    ncclComm_t comm;
    struct dev v;

    if (is_cpu)
        setenv("CUDA_VISIBLE_DEVICES", "", 1);
    if (!tl_ok(ctx, ncclCommInitRank(&comm, n, ctx->id, me), "ncclCommInitRank"))
        return 1;
    ctx->comm = comm;
    if (!is_cpu && !dev_open(ctx, &v))
        return 1;
    for (int round = 0; round < 2; round++)
        for (size_t k = 0; k < sizeof colls / sizeof colls[0]; k++) {
            struct call c = {colls[k], ncclFloat32, ncclSum, 1027, false, round};
            size_t nsend, nrecv, send_at;
            if (!is_cpu) {
                if (!run_one(ctx, &v, &c))
                    return 1;
                continue;
            }
            shape(&c, me, n, &nsend, &nrecv, &send_at);
            for (size_t i = 0; i < nsend; i++)
                put(c.type, host_in, i, value(me, i, c.round));
            memset(host_recv, 0xEE, nrecv * type_bytes(c.type));
            if (!tl_ok(ctx, issue(&c, comm, me, n, host_in, host_recv, NULL), "host-buffer call") ||
                !check(ctx, &c, host_recv))
                return 1;
        }
    if (!is_cpu &&
        (!dev_close(ctx, &v) || !log_says(ctx, "P2P: off: rank 1: it has no usable GPU backend")))
        return 1;
    return tl_ok(ctx, ncclCommDestroy(comm), "ncclCommDestroy") ? 0 : 1;
}

static void remove_dir(const char *dir)
{
    char path[PATH_MAX];
    DIR *d = opendir(dir);
    struct dirent *e;

    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Whether the path can be taken at all: the library carries CUDA kernels (built with nvcc:
 * anyccl-info says which), and the emulated driver knows ac_k_coll (its cuModuleGetFunction
 * looks the name up in the host build of the kernels, whatever the module). */
static const char *why_not(const char *bin_dir)
{
    void *h, *fn = NULL;
    int (*get_function)(void **, void *, const char *);

    if (!has_kernels(bin_dir, "cuda"))
        return "the library was built without nvcc: no CUDA kernels";
    if (!(h = dlopen(emu_path, RTLD_NOW | RTLD_LOCAL)))
        return "the emulated driver does not load";
    get_function = (int (*)(void **, void *, const char *))dlsym(h, "cuModuleGetFunction");
    if (!get_function || get_function(&fn, NULL, "ac_k_coll") != 0)
        return "the emulated driver has no ac_k_coll (the device engine is not in its kernels)";
    return NULL;
}

#define ON "P2P: on"
#define ON_HIP "ranks of this host on hip devices"
#define OFF_DISABLED "P2P: off: rank 0: NCCL_P2P_DISABLE=1 is set"
#define LOGGED "NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=P2P NCCL_DEBUG_FILE="
/* 2 slots of 4 KiB: counts 1027 and 4099 go round the slots many times */
#define SMALL "ANYCCL_BUFFSIZE=8192 ANYCCL_NSLOTS=2"
#define DIRECT "ANYCCL_P2P_DIRECT_MIN_BYTES=0"

int main(int argc, char **argv)
{
    static struct tl_case cases[48];
    static char names[48][64], envs[48][3 * PATH_MAX + 256];
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t n = 0;
    static const struct {
        const char *name;
        enum tl_mode mode;
        int np;
        tl_body_fn body, raw;
        const char *arg;
        const char *env;
        bool is_slow;
        bool is_hip; /* the library on the emulated HIP runtime (the test allocates through the
                      * emulated CUDA driver under it: the same memory) */
    } cfgs[] = {
        {"simple/np2/threads", TL_THREADS, 2, body_all_logged, NULL, ON, "NCCL_PROTO=Simple", false,
         false},
        {"ll/np2/threads", TL_THREADS, 2, body_all_logged, NULL, ON, "NCCL_PROTO=LL", false, false},
        {"ll128/np2/threads", TL_THREADS, 2, body_all_logged, NULL, ON, "NCCL_PROTO=LL128", false,
         false},
        {"simple/np4/threads", TL_THREADS, 4, body_all_logged, NULL, ON, "NCCL_PROTO=Simple", false,
         false},
        {"ll/np4/threads/wrap", TL_THREADS, 4, body_all_logged, NULL, ON, "NCCL_PROTO=LL " SMALL,
         false, false},
        {"ll128/np4/threads", TL_THREADS, 4, body_all_logged, NULL, ON, "NCCL_PROTO=LL128", false,
         false},
        {"simple/np2/threads/wrap", TL_THREADS, 2, body_all_logged, NULL, ON,
         "NCCL_PROTO=Simple " SMALL, false, false},
        {"simple/np2/proc", TL_PROCS, 2, body_all_logged, NULL, ON, "NCCL_PROTO=Simple", false,
         false},
        {"ll/np4/proc", TL_PROCS, 4, body_all_logged, NULL, ON, "NCCL_PROTO=LL", true, false},
        {"staged/np2/threads", TL_THREADS, 2, body_all_logged, NULL, OFF_DISABLED,
         "NCCL_P2P_DISABLE=1", false, false},
        {"group/np2/threads", TL_THREADS, 2, body_group, NULL, NULL, NULL, false, false},
        {"sendrecv/np2/threads", TL_THREADS, 2, body_p2p, NULL, "-", SMALL, false, false},
        {"sendrecv/np4/proc", TL_PROCS, 4, body_p2p, NULL, "-", NULL, false, false},
        {"group/np4/proc", TL_PROCS, 4, body_group, NULL, NULL, SMALL, false, false},
        {"initall-group/np4", TL_PROCS, 1, NULL, body_initall, NULL, NULL, false, false},
        {"initall-group/registered/np4", TL_PROCS, 1, NULL, body_initall, "register", DIRECT, false,
         false},
        {"registered/np2/threads", TL_THREADS, 2, body_registered, NULL, "all", DIRECT, false,
         false},
        {"registered/np3/threads", TL_THREADS, 3, body_registered, NULL, "all",
         DIRECT " NCCL_PROTO=LL", false, false},
        {"registered/np4/threads", TL_THREADS, 4, body_registered, NULL, "all", DIRECT, false,
         false},
        {"registered/np2/proc", TL_PROCS, 2, body_registered, NULL, "all", DIRECT, false, false},
        {"registered/np4/proc", TL_PROCS, 4, body_registered, NULL, "all", DIRECT " " SMALL, true,
         false},
        {"registered/window/np2/proc", TL_PROCS, 2, body_registered, NULL, "window", DIRECT, false,
         false},
        {"registered/rank0-only/np2/threads", TL_THREADS, 2, body_registered, NULL, "rank0", DIRECT,
         false, false},
        {"error/mismatch/np2/threads", TL_THREADS, 2, body_mismatch, NULL, NULL, NULL, false,
         false},
        {"error/mismatch-finalize/np2/threads", TL_THREADS, 2, body_mismatch, NULL, "finalize",
         NULL, false, false},
        {"error/mismatch-direct/np2/proc", TL_PROCS, 2, body_mismatch, NULL, "direct", DIRECT,
         false, false},
        {"error/abort-inflight/np2/threads", TL_THREADS, 2, NULL, raw_abort_inflight, NULL, NULL,
         false, false},
        {"error/timeout/np2/threads", TL_THREADS, 2, NULL, raw_timeout, NULL,
         "ANYCCL_TIMEOUT=2 ANYCCL_PEER_CHECK_MS=100", false, false},
        {"error/direct-exchange-timeout/np2/threads", TL_THREADS, 2, NULL, raw_direct_timeout, NULL,
         "ANYCCL_TIMEOUT=2 " DIRECT, false, false},
        {"error/peer-dies/np2/proc", TL_PROCS, 2, NULL, raw_peer_dies, NULL,
         "ANYCCL_PEER_CHECK_MS=100", false, false},
        {"mixed/cpu-ranks/np2/proc", TL_PROCS, 2, NULL, raw_mixed_cpu_rank, NULL, NULL, false,
         false},
        {"mixed/cpu-ranks/np4/proc", TL_PROCS, 4, NULL, raw_mixed_cpu_rank, NULL, NULL, false,
         false},
        {"hip/simple/np2/threads", TL_THREADS, 2, body_all_logged, NULL, ON_HIP,
         "NCCL_PROTO=Simple", false, true},
        {"hip/ll128/np4/proc", TL_PROCS, 4, body_all_logged, NULL, ON_HIP, "NCCL_PROTO=LL128",
         false, true},
        {"hip/ll/np2/proc/wrap", TL_PROCS, 2, body_all_logged, NULL, ON_HIP, "NCCL_PROTO=LL " SMALL,
         false, true},
        {"hip/staged/np2/threads", TL_THREADS, 2, body_all_logged, NULL, OFF_DISABLED,
         "NCCL_P2P_DISABLE=1", false, true},
        {"hip/sendrecv/np2/proc", TL_PROCS, 2, body_p2p, NULL, "-", SMALL, false, true},
        {"hip/registered/np2/proc", TL_PROCS, 2, body_registered, NULL, "all", DIRECT, false, true},
    };

    const char *dir = ".";
    if (len > 0) {
        exe[len] = '\0';
        dir = dirname(exe);
        snprintf(emu_path, sizeof emu_path, "%s/../unit/device/fake/libcuda_emu.so", dir);
    }
    if (getenv("TL_CUDA_DRIVER") == NULL && access(emu_path, R_OK) != 0) {
        printf("SKIP device_p2p: %s is not built (make test-build builds it)\n", emu_path);
        return 0;
    }
    const char *why = getenv("TL_CUDA_DRIVER") || len <= 0 ? NULL : why_not(dir);
    if (why) {
        printf("SKIP device_p2p: %s\n", why);
        return 0;
    }
    snprintf(log_dir, sizeof log_dir, "/tmp/anyccl-devp2p-XXXXXX");
    if (!mkdtemp(log_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(hip_path, sizeof hip_path, "%s/../unit/device/fake/libhip_emu.so", dir);
    const char *no_hip = getenv("TL_CUDA_DRIVER")      ? "a real GPU driver is under test"
                         : access(hip_path, R_OK) != 0 ? "the emulated HIP runtime is not built"
                         : !has_kernels(dir, "hip")    ? "the library was built without hipcc"
                                                       : NULL;
    if (no_hip)
        printf("SKIP device_p2p/hip/*: %s\n", no_hip);
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (cfgs[i].is_hip && no_hip)
            continue;
        snprintf(names[n], sizeof names[n], "device_p2p/%s", cfgs[i].name);
        /* only the cases that read their log write one (and remove it) */
        bool has_log = cfgs[i].arg || cfgs[i].raw || cfgs[i].body == body_mismatch;
        char lib_env[3 * PATH_MAX];
        if (cfgs[i].is_hip)
            snprintf(lib_env, sizeof lib_env,
                     "TL_CUDA_DRIVER=%s ANYCCL_CUDA_LIBRARY=/nonexistent/libcuda.so.1 "
                     "ANYCCL_HIP_LIBRARY=%s",
                     emu_path, hip_path);
        else
            snprintf(lib_env, sizeof lib_env, "ANYCCL_CUDA_LIBRARY=%s",
                     getenv("TL_CUDA_DRIVER") ? getenv("TL_CUDA_DRIVER") : emu_path);
        snprintf(envs[n], sizeof envs[n], "%s%s%s%s%s%s", lib_env, has_log ? " " LOGGED : "",
                 has_log ? log_dir : "", has_log ? "/%p.log" : "", cfgs[i].env ? " " : "",
                 cfgs[i].env ? cfgs[i].env : "");
        cases[n] = (struct tl_case){.name = names[n],
                                    .mode = cfgs[i].mode,
                                    .nranks = cfgs[i].np,
                                    .env = envs[n],
                                    .body = cfgs[i].body,
                                    .raw_body = cfgs[i].raw,
                                    .arg = cfgs[i].arg,
                                    .timeout_s = 180,
                                    .is_slow = cfgs[i].is_slow};
        n++;
    }
    fflush(stdout); /* before the launcher forks: no copy of these lines in the children */
    int status = tl_main(argc, argv, cases, n);
    remove_dir(log_dir);
    return status;
}
