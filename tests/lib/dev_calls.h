/* Collectives on GPU buffers through the CUDA driver API, shared by the integration tests of the
 * staged path (device.c) and of the peer-to-peer path (device_p2p.c): the driver opened with
 * dlopen (ANYCCL_CUDA_LIBRARY, else libcuda.so.1, as the backend does), device buffers and a
 * stream per rank, the calls (every collective and send/recv) with inputs whose exact results are
 * known, staging in and out, and the check. Static functions, compiled into each test; the
 * includer defines MAX_COUNT (the largest count it calls with) and ELEM_MAX (the largest type
 * size) first. */
#ifndef TESTS_LIB_DEV_CALLS_H
#define TESTS_LIB_DEV_CALLS_H

#include "dev_driver.h"
#include "launcher.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(MAX_COUNT) || !defined(ELEM_MAX)
#error "define MAX_COUNT and ELEM_MAX before including dev_calls.h"
#endif

/* The driver API entry points used (cuda.h's types spelled out, as the backend does). */
struct drv {
    int (*init)(unsigned);
    int (*device_get_count)(int *);
    int (*primary_ctx_retain)(void **, int);
    int (*ctx_set_current)(void *);
    int (*mem_alloc)(uintptr_t *, size_t);
    int (*mem_free)(uintptr_t);
    int (*memcpy_async)(uintptr_t, uintptr_t, size_t, void *);
    int (*memset_async)(uintptr_t, unsigned char, size_t, void *);
    int (*stream_create)(void **, unsigned);
    int (*stream_destroy)(void *);
    int (*stream_sync)(void *);
};

static bool load_driver(struct tl_ctx *ctx, struct drv *d)
{
    static const char *const names[] = {
        "cuInit",
        "cuDeviceGetCount",
        "cuDevicePrimaryCtxRetain",
        "cuCtxSetCurrent",
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuMemcpyAsync",
        "cuMemsetD8Async",
        "cuStreamCreate",
        "cuStreamDestroy_v2",
        "cuStreamSynchronize",
    };

    return load_driver_syms(ctx, names, sizeof names / sizeof names[0], (void **)d);
}

static bool cu_ok(struct tl_ctx *ctx, int r, const char *what)
{
    if (r != 0)
        tl_failf(ctx, "%s: CUDA error %d", what, r);
    return r == 0;
}

/* One rank's device: its context current on this thread, a stream, two device buffers. */
struct dev {
    struct drv d;
    void *stream;
    uintptr_t send, recv;
    size_t bytes;
};

static bool dev_open(struct tl_ctx *ctx, struct dev *v)
{
    void *cuctx = NULL;
    int ndev = 0;

    memset(v, 0, sizeof *v);
    v->bytes = (size_t)ctx->nranks * MAX_COUNT * ELEM_MAX + 64;
    return load_driver(ctx, &v->d) && cu_ok(ctx, v->d.init(0), "cuInit") &&
           cu_ok(ctx, v->d.device_get_count(&ndev), "cuDeviceGetCount") && ndev > 0 &&
           cu_ok(ctx, v->d.primary_ctx_retain(&cuctx, ctx->rank % ndev),
                 "cuDevicePrimaryCtxRetain") &&
           cu_ok(ctx, v->d.ctx_set_current(cuctx), "cuCtxSetCurrent") &&
           cu_ok(ctx, v->d.stream_create(&v->stream, 1), "cuStreamCreate") &&
           cu_ok(ctx, v->d.mem_alloc(&v->send, v->bytes), "cuMemAlloc") &&
           cu_ok(ctx, v->d.mem_alloc(&v->recv, v->bytes), "cuMemAlloc");
}

static bool dev_close(struct tl_ctx *ctx, struct dev *v)
{
    return cu_ok(ctx, v->d.stream_sync(v->stream), "cuStreamSynchronize") &&
           cu_ok(ctx, v->d.mem_free(v->send), "cuMemFree") &&
           cu_ok(ctx, v->d.mem_free(v->recv), "cuMemFree") &&
           cu_ok(ctx, v->d.stream_destroy(v->stream), "cuStreamDestroy");
}

/* ---- values ---- */

static size_t type_bytes(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8:
    case ncclUint8:
        return 1;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    default:
        return 8;
    }
}

static void put(ncclDataType_t t, void *p, size_t i, double v)
{
    switch (t) {
    case ncclUint8:
        ((uint8_t *)p)[i] = (uint8_t)v;
        break;
    case ncclInt32:
        ((int32_t *)p)[i] = (int32_t)v;
        break;
    case ncclInt64:
        ((int64_t *)p)[i] = (int64_t)v;
        break;
    case ncclFloat32:
        ((float *)p)[i] = (float)v;
        break;
    default:
        ((double *)p)[i] = v;
        break;
    }
}

static double get(ncclDataType_t t, const void *p, size_t i)
{
    switch (t) {
    case ncclUint8:
        return ((const uint8_t *)p)[i];
    case ncclInt32:
        return ((const int32_t *)p)[i];
    case ncclInt64:
        return (double)((const int64_t *)p)[i];
    case ncclFloat32:
        return ((const float *)p)[i];
    default:
        return ((const double *)p)[i];
    }
}

/* Small integers, so that every reduction below is exact in every type used. */
static double value(int rank, size_t i, int round)
{
    return (double)((rank * 7 + (int)(i % 1000) * 3 + round * 5) % 11 + 1);
}

static double reduce_all(ncclRedOp_t op, int nranks, size_t i, int round)
{
    double acc = value(0, i, round);
    for (int r = 1; r < nranks; r++) {
        double x = value(r, i, round);
        acc = op == ncclProd  ? acc * x
              : op == ncclMax ? (x > acc ? x : acc)
              : op == ncclMin ? (x < acc ? x : acc)
                              : acc + x;
    }
    return op == ncclAvg ? acc / nranks : acc;
}

/* ---- one collective ---- */

enum coll {
    ALLREDUCE,
    REDUCESCATTER,
    ALLGATHER,
    BROADCAST,
    REDUCE,
    ALLTOALL,
    GATHER,
    SCATTER,
    SENDRECV,
    NCOLLS
};
static const char *const coll_names[NCOLLS] = {"allreduce", "reducescatter", "allgather",
                                               "broadcast", "reduce",        "alltoall",
                                               "gather",    "scatter",       "sendrecv"};

struct call {
    enum coll coll;
    ncclDataType_t type;
    ncclRedOp_t op;
    size_t count;
    bool is_inplace;
    int round;
};

/* Elements of the send and recv buffers on this rank, and where the send buffer lies in the
 * receive buffer of an in-place call (NCCL's in-place layouts), in elements. */
static void shape(const struct call *c, int me, int n, size_t *nsend, size_t *nrecv,
                  size_t *send_at)
{
    size_t k = c->count;

    *nsend = *nrecv = k;
    *send_at = 0;
    switch (c->coll) {
    case REDUCESCATTER:
    case SCATTER:
        *nsend = k * n;
        break;
    case ALLGATHER:
    case GATHER:
        *nrecv = k * n;
        *send_at = k * me;
        break;
    case ALLTOALL:
        *nsend = *nrecv = k * n;
        break;
    default:
        break;
    }
}

static int root_of(const struct call *c, int n)
{
    return c->round % n;
}

/* The expected element i of this rank's receive buffer; false when the rank's output is not
 * defined (non-root of reduce and gather). */
static bool expect(const struct call *c, int me, int n, size_t i, double *out)
{
    size_t k = c->count;
    int root = root_of(c, n);

    switch (c->coll) {
    case ALLREDUCE:
        *out = reduce_all(c->op, n, i, c->round);
        return true;
    case REDUCE:
        *out = reduce_all(c->op, n, i, c->round);
        return me == root;
    case REDUCESCATTER:
        *out = reduce_all(c->op, n, me * k + i, c->round);
        return true;
    case ALLGATHER:
        *out = value((int)(i / k), i % k, c->round);
        return true;
    case GATHER:
        *out = value((int)(i / k), i % k, c->round);
        return me == root;
    case BROADCAST:
        *out = value(root, i, c->round);
        return true;
    case ALLTOALL:
        *out = value((int)(i / k), me * k + i % k, c->round);
        return true;
    case SCATTER:
        *out = value(root, me * k + i, c->round);
        return true;
    case SENDRECV:
        *out = value((me + n - 1) % n, i, c->round);
        return true;
    default:
        return false;
    }
}

static ncclResult_t issue(const struct call *c, ncclComm_t comm, int me, int n, void *sendbuff,
                          void *recvbuff, void *stream)
{
    int root = root_of(c, n);
    ncclResult_t r;

    switch (c->coll) {
    case ALLREDUCE:
        return ncclAllReduce(sendbuff, recvbuff, c->count, c->type, c->op, comm, stream);
    case REDUCESCATTER:
        return ncclReduceScatter(sendbuff, recvbuff, c->count, c->type, c->op, comm, stream);
    case ALLGATHER:
        return ncclAllGather(sendbuff, recvbuff, c->count, c->type, comm, stream);
    case BROADCAST:
        return ncclBroadcast(sendbuff, recvbuff, c->count, c->type, root, comm, stream);
    case REDUCE:
        return ncclReduce(sendbuff, recvbuff, c->count, c->type, c->op, root, comm, stream);
    case ALLTOALL:
        return ncclAlltoAll(sendbuff, recvbuff, c->count, c->type, comm, stream);
    case GATHER:
        return ncclGather(sendbuff, recvbuff, c->count, c->type, root, comm, stream);
    case SCATTER:
        return ncclScatter(sendbuff, recvbuff, c->count, c->type, root, comm, stream);
    case SENDRECV:
        if ((r = ncclGroupStart()) != ncclSuccess)
            return r;
        ncclSend(sendbuff, c->count, c->type, (me + 1) % n, comm, stream);
        ncclRecv(recvbuff, c->count, c->type, (me + n - 1) % n, comm, stream);
        return ncclGroupEnd();
    default:
        return ncclInvalidArgument;
    }
}

/* Host images of the buffers, for filling and checking. */
#define HOST_BYTES (8 * MAX_COUNT * ELEM_MAX)
static __thread unsigned char host_recv[HOST_BYTES];
static __thread unsigned char host_in[HOST_BYTES];

/* Stages the input on the stream (H2D), issues the call, and queues the copy back (D2H) of the
 * result; the caller synchronizes and checks. The receive buffer starts as 0xEE bytes, so that
 * an element never written is seen. */
static bool start(struct tl_ctx *ctx, struct dev *v, const struct call *c, void *stream,
                  uintptr_t sendbuf, uintptr_t recvbuf, unsigned char *in, void **recv_out)
{
    int me = ctx->rank, n = ctx->nranks;
    size_t nsend, nrecv, send_at, es = type_bytes(c->type);
    uintptr_t send = sendbuf, recv = recvbuf;

    shape(c, me, n, &nsend, &nrecv, &send_at);
    for (size_t i = 0; i < nsend; i++)
        put(c->type, in, i, value(me, i, c->round));
    if (c->is_inplace) {
        /* reduce-scatter and scatter: the receive buffer inside the send buffer */
        if (c->coll == REDUCESCATTER || c->coll == SCATTER)
            recv = send + (size_t)me * c->count * es;
        else
            send = recv + send_at * es;
    }
    if (!cu_ok(ctx, v->d.memset_async(recv, 0xEE, nrecv * es, stream), "cuMemsetD8Async") ||
        !cu_ok(ctx, v->d.memcpy_async(send, (uintptr_t)in, nsend * es, stream), "cuMemcpyAsync"))
        return false;
    char what[96];
    snprintf(what, sizeof what, "%s type %d op %d count %zu%s round %d", coll_names[c->coll],
             (int)c->type, (int)c->op, c->count, c->is_inplace ? " in place" : "", c->round);
    if (!tl_ok(ctx, issue(c, ctx->comm, me, n, (void *)send, (void *)recv, stream), what))
        return false;
    *recv_out = (void *)recv;
    return true;
}

static bool check(struct tl_ctx *ctx, const struct call *c, const unsigned char *out)
{
    size_t nsend, nrecv, send_at;
    double want;

    shape(c, ctx->rank, ctx->nranks, &nsend, &nrecv, &send_at);
    for (size_t i = 0; i < nrecv; i++) {
        unsigned char as_type[8];
        if (!expect(c, ctx->rank, ctx->nranks, i, &want))
            return true;
        /* rounded to the element type: an average over 3 ranks is not a float exactly */
        put(c->type, as_type, 0, want);
        want = get(c->type, as_type, 0);
        double got = get(c->type, out, i);
        if (got != want) {
            tl_failf(ctx, "%s type %d op %d count %zu%s round %d: element %zu is %g, expected %g",
                     coll_names[c->coll], (int)c->type, (int)c->op, c->count,
                     c->is_inplace ? " in place" : "", c->round, i, got, want);
            return false;
        }
    }
    return true;
}

static bool run_one(struct tl_ctx *ctx, struct dev *v, const struct call *c)
{
    size_t nsend, nrecv, send_at;
    void *recv;

    shape(c, ctx->rank, ctx->nranks, &nsend, &nrecv, &send_at);
    if (!start(ctx, v, c, v->stream, v->send, v->recv, host_in, &recv) ||
        !cu_ok(ctx,
               v->d.memcpy_async((uintptr_t)host_recv, (uintptr_t)recv, nrecv * type_bytes(c->type),
                                 v->stream),
               "cuMemcpyAsync") ||
        !cu_ok(ctx, v->d.stream_sync(v->stream), "cuStreamSynchronize"))
        return false;
    return check(ctx, c, host_recv);
}

static bool is_reducing(enum coll c)
{
    return c == ALLREDUCE || c == REDUCESCATTER || c == REDUCE;
}

/* alltoall has no in-place form in NCCL; send/recv neither. */
static bool has_inplace(enum coll c)
{
    return c != ALLTOALL && c != SENDRECV;
}

#endif
