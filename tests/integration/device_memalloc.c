/* ncclMemAlloc buffers in collectives on streams, against the emulated CUDA driver
 * ($BUILD/tests/unit/device/fake/libcuda_emu.so: ncclMemAlloc gives cuMem memory with POSIX fd
 * handles; libcuda_emu_novmm.so: a device without virtual memory management, cuMemAlloc memory),
 * registered with ncclCommRegister or not: allreduce, allgather and a send/recv ring, counts 1,
 * odd and large, three rounds, checked exactly after cuStreamSynchronize; the buffers are then
 * deregistered and freed with ncclMemFree. Ranks as threads and as processes. */
#include "dev_driver.h"
#include "launcher.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COUNT 300001

struct opts {
    bool is_vmm;        /* the driver has cuMem: ncclMemAlloc memory is not legacy-IPC capable */
    bool is_registered; /* ncclCommRegister the buffers */
};

struct drv {
    int (*init)(unsigned);
    int (*primary_ctx_retain)(void **, int);
    int (*ctx_set_current)(void *);
    int (*memcpy_async)(uintptr_t, uintptr_t, size_t, void *);
    int (*stream_create)(void **, unsigned);
    int (*stream_destroy)(void *);
    int (*stream_sync)(void *);
    int (*pointer_get_attribute)(void *, int, uintptr_t);
};

static bool load_driver(struct tl_ctx *ctx, struct drv *d)
{
    static const char *const names[] = {"cuInit",
                                        "cuDevicePrimaryCtxRetain",
                                        "cuCtxSetCurrent",
                                        "cuMemcpyAsync",
                                        "cuStreamCreate",
                                        "cuStreamDestroy_v2",
                                        "cuStreamSynchronize",
                                        "cuPointerGetAttribute"};

    return load_driver_syms(ctx, names, sizeof names / sizeof names[0], (void **)d);
}

static bool cu_ok(struct tl_ctx *ctx, int r, const char *what)
{
    if (r != 0)
        tl_failf(ctx, "%s: CUDA error %d", what, r);
    return r == 0;
}

static int32_t value(int rank, size_t i, int round)
{
    return (int32_t)((uint32_t)rank * 1000003u + (uint32_t)i * 7u + (uint32_t)round * 65599u);
}

enum { ALLREDUCE, ALLGATHER, SENDRECV, NCOLLS };
static const char *const names[NCOLLS] = {"allreduce", "allgather", "sendrecv"};

struct host_bufs {
    int32_t *in, *out;
};

static bool run(struct tl_ctx *ctx, struct drv *d, void *stream, int32_t *send, int32_t *recv,
                int coll, size_t count, int round, const struct host_bufs *h)
{
    int32_t *host_in = h->in, *host_out = h->out;
    int me = ctx->rank, n = ctx->nranks;
    size_t nrecv = coll == ALLGATHER ? count * n : count;
    ncclResult_t r;

    for (size_t i = 0; i < count; i++)
        host_in[i] = value(me, i, round);
    if (!cu_ok(ctx, d->memcpy_async((uintptr_t)send, (uintptr_t)host_in, count * 4, stream),
               "cuMemcpyAsync"))
        return false;
    switch (coll) {
    case ALLREDUCE:
        r = ncclAllReduce(send, recv, count, ncclInt32, ncclSum, ctx->comm, stream);
        break;
    case ALLGATHER:
        r = ncclAllGather(send, recv, count, ncclInt32, ctx->comm, stream);
        break;
    default:
        ncclGroupStart();
        ncclSend(send, count, ncclInt32, (me + 1) % n, ctx->comm, stream);
        ncclRecv(recv, count, ncclInt32, (me + n - 1) % n, ctx->comm, stream);
        r = ncclGroupEnd();
        break;
    }
    if (!tl_ok(ctx, r, names[coll]) ||
        !cu_ok(ctx, d->memcpy_async((uintptr_t)host_out, (uintptr_t)recv, nrecv * 4, stream),
               "cuMemcpyAsync") ||
        !cu_ok(ctx, d->stream_sync(stream), "cuStreamSynchronize"))
        return false;
    for (size_t i = 0; i < nrecv; i++) {
        int32_t want = 0;
        if (coll == ALLREDUCE)
            for (int k = 0; k < n; k++)
                want = (int32_t)((uint32_t)want + (uint32_t)value(k, i, round));
        else if (coll == ALLGATHER)
            want = value((int)(i / count), i % count, round);
        else
            want = value((me + n - 1) % n, i, round);
        if (host_out[i] != want) {
            tl_failf(ctx, "%s count %zu round %d: element %zu is %d, expected %d", names[coll],
                     count, round, i, host_out[i], want);
            return false;
        }
    }
    return true;
}

static int body(struct tl_ctx *ctx)
{
    const struct opts *o = ctx->arg;
    static const size_t counts[] = {1, 1027, MAX_COUNT};
    size_t bytes = (size_t)ctx->nranks * MAX_COUNT * 4;
    int32_t *send = NULL, *recv = NULL;
    void *cuctx = NULL, *stream = NULL, *hs = NULL, *hr = NULL;
    unsigned mem_type = 0;
    unsigned char is_legacy = 0;
    struct drv d;
    struct host_bufs h = {malloc(MAX_COUNT * 4), malloc(bytes)};

    if (!h.in || !h.out) {
        tl_failf(ctx, "out of memory");
        return 1;
    }
    if (!load_driver(ctx, &d) || !cu_ok(ctx, d.init(0), "cuInit") ||
        !cu_ok(ctx, d.primary_ctx_retain(&cuctx, 0), "cuDevicePrimaryCtxRetain") ||
        !cu_ok(ctx, d.ctx_set_current(cuctx), "cuCtxSetCurrent") ||
        !cu_ok(ctx, d.stream_create(&stream, 1), "cuStreamCreate") ||
        !tl_ok(ctx, ncclMemAlloc((void **)&send, MAX_COUNT * 4), "ncclMemAlloc") ||
        !tl_ok(ctx, ncclMemAlloc((void **)&recv, bytes), "ncclMemAlloc") ||
        !cu_ok(ctx, d.pointer_get_attribute(&mem_type, 2, (uintptr_t)recv), "MEMORY_TYPE") ||
        !cu_ok(ctx, d.pointer_get_attribute(&is_legacy, 10, (uintptr_t)recv), "LEGACY_IPC"))
        return 1;
    if (mem_type != 2 || is_legacy != !o->is_vmm) {
        tl_failf(ctx, "ncclMemAlloc gave memory of type %u, legacy IPC capable %d", mem_type,
                 is_legacy);
        return 1;
    }
    if (o->is_registered &&
        (!tl_ok(ctx, ncclCommRegister(ctx->comm, send, MAX_COUNT * 4, &hs), "ncclCommRegister") ||
         !tl_ok(ctx, ncclCommRegister(ctx->comm, recv, bytes, &hr), "ncclCommRegister")))
        return 1;
    for (int round = 0; round < 3; round++)
        for (int coll = 0; coll < NCOLLS; coll++)
            for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
                if (!run(ctx, &d, stream, send, recv, coll, counts[k], round, &h))
                    return 1;
    if (o->is_registered &&
        (!tl_ok(ctx, ncclCommDeregister(ctx->comm, hs), "ncclCommDeregister") ||
         !tl_ok(ctx, ncclCommDeregister(ctx->comm, hr), "ncclCommDeregister")))
        return 1;
    free(h.in);
    free(h.out);
    return tl_ok(ctx, ncclMemFree(send), "ncclMemFree") &&
                   tl_ok(ctx, ncclMemFree(recv), "ncclMemFree") &&
                   cu_ok(ctx, d.stream_destroy(stream), "cuStreamDestroy")
               ? 0
               : 1;
}

int main(int argc, char **argv)
{
    static const struct opts vmm = {true, false}, vmm_reg = {true, true},
                             novmm_reg = {false, true};
    static char emu[PATH_MAX + 32], novmm[PATH_MAX + 32], hip[3 * PATH_MAX + 96];
    char exe[PATH_MAX], path[PATH_MAX], *dir;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);

    if (len <= 0)
        return 1;
    exe[len] = '\0';
    dir = dirname(exe);
    snprintf(path, sizeof path, "%s/../unit/device/fake/libcuda_emu.so", dir);
    if (access(path, R_OK) != 0) {
        printf("SKIP device_memalloc: %s is not built (make test-build builds it)\n", path);
        return 0;
    }
    snprintf(emu, sizeof emu, "ANYCCL_CUDA_LIBRARY=%s", path);
    snprintf(path, sizeof path, "%s/../unit/device/fake/libcuda_emu_novmm.so", dir);
    snprintf(novmm, sizeof novmm, "ANYCCL_CUDA_LIBRARY=%s", path);
    /* HIP: hipMalloc memory (legacy IPC handles), the test allocating nothing itself */
    char hip_path[PATH_MAX];
    snprintf(hip_path, sizeof hip_path, "%s/../unit/device/fake/libhip_emu.so", dir);
    snprintf(hip, sizeof hip,
             "TL_CUDA_DRIVER=%s/../unit/device/fake/libcuda_emu.so "
             "ANYCCL_CUDA_LIBRARY=/nonexistent/libcuda.so.1 ANYCCL_HIP_LIBRARY=%s",
             dir, hip_path);
    bool has_hip = access(hip_path, R_OK) == 0 && has_kernels(dir, "hip");
    if (!has_hip)
        printf("SKIP device_memalloc/hip/*: no emulated HIP runtime, or no HIP kernels\n");
    const struct tl_case cases[] = {
        {"device_memalloc/cumem/np2/threads", TL_THREADS, 2, emu, body, NULL, &vmm, 180, false},
        {"device_memalloc/cumem/registered/np2/threads", TL_THREADS, 2, emu, body, NULL, &vmm_reg,
         180, false},
        {"device_memalloc/cumem/registered/np4/proc", TL_PROCS, 4, emu, body, NULL, &vmm_reg, 180,
         false},
        {"device_memalloc/cumemalloc/registered/np2/proc", TL_PROCS, 2, novmm, body, NULL,
         &novmm_reg, 180, false},
        {"device_memalloc/hip/registered/np2/proc", TL_PROCS, 2, hip, body, NULL, &novmm_reg, 180,
         false},
    };
    size_t n = sizeof cases / sizeof cases[0] - (has_hip ? 0 : 1);
    fflush(stdout);
    return tl_main(argc, argv, cases, n);
}
