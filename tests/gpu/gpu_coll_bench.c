/* Collectives on GPU buffers, several ranks sharing GPUs (threads of one process, one
 * communicator each from ncclCommInitAll): time per call, nccl-tests' algbw/busbw, results checked
 * once per size, and the device's own copy bandwidth (cuMemcpyAsync device to device) measured in
 * the same run as the reference a reduction kernel or an allreduce is compared with.
 *
 *   gpu_coll_bench [-c allreduce|allgather|reducescatter|broadcast|alltoall] [-t ranks] [-b min]
 *                  [-e max] [-f factor] [-n iters] [-w warmup] [-D devices] [-R]
 *
 * -R registers each rank's buffers (ncclCommRegister), so that calls of at least
 * ANYCCL_P2P_DIRECT_MIN_BYTES work on them in place (src/core/devpath_direct.c).
 *
 * The CUDA driver is opened with dlopen (TL_CUDA_DRIVER, default libcuda.so.1), as the library
 * does, so this builds without the CUDA toolkit; the emulated driver of the tests runs it too.
 * Prints '#' comment lines, one row per size, and 'copy_GBps <x>'; exits 1 on a wrong result. */
#include "nccl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int cu_result;
typedef uintptr_t cu_ptr;

static struct {
    cu_result (*init)(unsigned);
    cu_result (*device_get_count)(int *);
    cu_result (*device_get)(int *, int);
    cu_result (*primary_ctx_retain)(void **, int);
    cu_result (*ctx_set_current)(void *);
    cu_result (*mem_alloc)(cu_ptr *, size_t);
    cu_result (*mem_free)(cu_ptr);
    cu_result (*memcpy_async)(cu_ptr, cu_ptr, size_t, void *);
    cu_result (*stream_create)(void **, unsigned);
    cu_result (*stream_destroy)(void *);
    cu_result (*stream_sync)(void *);
} cu;

#define CU(call)                                                                                   \
    do {                                                                                           \
        cu_result r_ = (call);                                                                     \
        if (r_ != 0) {                                                                             \
            fprintf(stderr, "gpu_coll_bench: %s failed: CUDA error %d\n", #call, r_);              \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

#define NC(call)                                                                                   \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess) {                                                                   \
            fprintf(stderr, "gpu_coll_bench: %s failed: %s (%s)\n", #call,                         \
                    ncclGetErrorString(r_), ncclGetLastError(NULL));                               \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static void load_driver(void)
{
    const char *name = getenv("TL_CUDA_DRIVER") ? getenv("TL_CUDA_DRIVER") : "libcuda.so.1";
    void *h = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        fprintf(stderr, "gpu_coll_bench: cannot open %s: %s\n", name, dlerror());
        exit(2);
    }
    struct {
        const char *name;
        void **fn;
    } syms[] = {
        {"cuInit", (void **)&cu.init},
        {"cuDeviceGetCount", (void **)&cu.device_get_count},
        {"cuDeviceGet", (void **)&cu.device_get},
        {"cuDevicePrimaryCtxRetain", (void **)&cu.primary_ctx_retain},
        {"cuCtxSetCurrent", (void **)&cu.ctx_set_current},
        {"cuMemAlloc_v2", (void **)&cu.mem_alloc},
        {"cuMemFree_v2", (void **)&cu.mem_free},
        {"cuMemcpyAsync", (void **)&cu.memcpy_async},
        {"cuStreamCreate", (void **)&cu.stream_create},
        {"cuStreamDestroy_v2", (void **)&cu.stream_destroy},
        {"cuStreamSynchronize", (void **)&cu.stream_sync},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].fn = dlsym(h, syms[i].name))) {
            fprintf(stderr, "gpu_coll_bench: %s lacks %s\n", name, syms[i].name);
            exit(2);
        }
    CU(cu.init(0));
}

enum coll { ALLREDUCE, ALLGATHER, REDUCESCATTER, BROADCAST, ALLTOALL };
static const char *const coll_names[] = {"allreduce", "allgather", "reducescatter", "broadcast",
                                         "alltoall"};

static struct {
    enum coll coll;
    int nranks, ndev, iters, warmup, do_register;
    size_t min_bytes, max_bytes, factor;
    ncclComm_t *comms;
    void **ctxs;
    pthread_barrier_t barrier;
    int nwrong;
    pthread_mutex_t lock;
} g = {.coll = ALLREDUCE, .nranks = 2, .ndev = 1, .iters = 20, .warmup = 5, .min_bytes = 8,
       .max_bytes = 64 << 20, .factor = 4};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Bytes of send and receive buffer per rank for `bytes` (nccl-tests' size: the larger buffer). */
static void extents(size_t bytes, size_t *send, size_t *recv, size_t *count)
{
    size_t n = g.nranks;
    *count = bytes / sizeof(float);
    switch (g.coll) {
    case ALLGATHER:
        *count /= n;
        *send = *count * sizeof(float);
        *recv = *send * n;
        break;
    case REDUCESCATTER:
        *count /= n;
        *recv = *count * sizeof(float);
        *send = *recv * n;
        break;
    case ALLTOALL:
        *count /= n;
        *send = *recv = *count * n * sizeof(float);
        break;
    default:
        *send = *recv = *count * sizeof(float);
    }
}

/* Small integers: sums of up to a few hundred ranks are exact in float. */
static float value(int rank, size_t i)
{
    return (float)((rank * 7 + (int)(i % 97)) % 31);
}

static float expected(int rank, size_t i, size_t count)
{
    size_t n = g.nranks;
    float s = 0;
    switch (g.coll) {
    case ALLREDUCE:
        for (size_t r = 0; r < n; r++)
            s += value((int)r, i);
        return s;
    case ALLGATHER:
        return value((int)(i / count), i % count);
    case REDUCESCATTER:
        for (size_t r = 0; r < n; r++)
            s += value((int)r, rank * count + i);
        return s;
    case BROADCAST:
        return value(0, i);
    default: /* alltoall: block j of rank r's output is block r of rank j's input */
        return value((int)(i / count), rank * count + i % count);
    }
}

static void run(ncclComm_t comm, void *stream, cu_ptr s, cu_ptr r, size_t count)
{
    switch (g.coll) {
    case ALLREDUCE:
        NC(ncclAllReduce((void *)s, (void *)r, count, ncclFloat, ncclSum, comm, stream));
        break;
    case ALLGATHER:
        NC(ncclAllGather((void *)s, (void *)r, count, ncclFloat, comm, stream));
        break;
    case REDUCESCATTER:
        NC(ncclReduceScatter((void *)s, (void *)r, count, ncclFloat, ncclSum, comm, stream));
        break;
    case BROADCAST:
        NC(ncclBroadcast((void *)s, (void *)r, count, ncclFloat, 0, comm, stream));
        break;
    default:
        NC(ncclAlltoAll((void *)s, (void *)r, count, ncclFloat, comm, stream));
        break;
    }
}

static double bus_factor(void)
{
    double n = g.nranks;
    if (g.coll == ALLREDUCE)
        return 2 * (n - 1) / n;
    if (g.coll == BROADCAST)
        return 1;
    return (n - 1) / n;
}

static void *rank_main(void *arg)
{
    int rank = (int)(intptr_t)arg;
    void *stream;
    size_t max_send, max_recv, count;
    CU(cu.ctx_set_current(g.ctxs[rank % g.ndev]));
    CU(cu.stream_create(&stream, 0));
    extents(g.max_bytes, &max_send, &max_recv, &count);
    cu_ptr s, r;
    CU(cu.mem_alloc(&s, max_send ? max_send : 4));
    CU(cu.mem_alloc(&r, max_recv ? max_recv : 4));
    void *hs = NULL, *hr = NULL;
    if (g.do_register) {
        NC(ncclCommRegister(g.comms[rank], (void *)s, max_send ? max_send : 4, &hs));
        NC(ncclCommRegister(g.comms[rank], (void *)r, max_recv ? max_recv : 4, &hr));
    }
    float *host = malloc(max_send > max_recv ? max_send : max_recv);
    for (size_t bytes = g.min_bytes; bytes <= g.max_bytes; bytes *= g.factor) {
        size_t sb, rb;
        extents(bytes, &sb, &rb, &count);
        for (size_t i = 0; i < sb / sizeof(float); i++)
            host[i] = value(rank, i);
        CU(cu.memcpy_async(s, (cu_ptr)host, sb, stream));
        CU(cu.stream_sync(stream));
        /* checked once: the first call after the upload */
        run(g.comms[rank], stream, s, r, count);
        CU(cu.memcpy_async((cu_ptr)host, r, rb, stream));
        CU(cu.stream_sync(stream));
        int wrong = 0;
        for (size_t i = 0; i < rb / sizeof(float); i++)
            wrong += host[i] != expected(rank, i, count);
        for (int i = 0; i < g.warmup; i++)
            run(g.comms[rank], stream, s, r, count);
        CU(cu.stream_sync(stream));
        pthread_barrier_wait(&g.barrier);
        double t0 = now_s();
        for (int i = 0; i < g.iters; i++)
            run(g.comms[rank], stream, s, r, count);
        CU(cu.stream_sync(stream));
        double us = (now_s() - t0) * 1e6 / g.iters;
        pthread_mutex_lock(&g.lock);
        g.nwrong += wrong;
        pthread_mutex_unlock(&g.lock);
        pthread_barrier_wait(&g.barrier);
        if (rank == 0) {
            double algbw = bytes / us / 1e3;
            printf("%12zu %12zu %10.2f %8.3f %8.3f %7d\n", bytes, count, us, algbw,
                   algbw * bus_factor(), g.nwrong);
            fflush(stdout);
        }
        pthread_barrier_wait(&g.barrier);
    }
    free(host);
    if (g.do_register) {
        NC(ncclCommDeregister(g.comms[rank], hs));
        NC(ncclCommDeregister(g.comms[rank], hr));
    }
    CU(cu.mem_free(s));
    CU(cu.mem_free(r));
    CU(cu.stream_destroy(stream));
    return NULL;
}

/* Device-to-device copy bandwidth of device 0 (bytes copied per second), best of 5. */
static double copy_gbps(size_t bytes)
{
    void *stream;
    cu_ptr a, b;
    double best = 0;
    CU(cu.ctx_set_current(g.ctxs[0]));
    CU(cu.stream_create(&stream, 0));
    CU(cu.mem_alloc(&a, bytes));
    CU(cu.mem_alloc(&b, bytes));
    CU(cu.memcpy_async(b, a, bytes, stream));
    CU(cu.stream_sync(stream));
    for (int k = 0; k < 5; k++) {
        double t0 = now_s();
        for (int i = 0; i < 10; i++)
            CU(cu.memcpy_async(b, a, bytes, stream));
        CU(cu.stream_sync(stream));
        double gbps = 10.0 * bytes / (now_s() - t0) / 1e9;
        best = gbps > best ? gbps : best;
    }
    CU(cu.mem_free(a));
    CU(cu.mem_free(b));
    CU(cu.stream_destroy(stream));
    return best;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'G': v *= 1024;
    /* fall through */
    case 'M': v *= 1024;
    /* fall through */
    case 'K': v *= 1024;
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    int opt, ndev_want = 0;
    while ((opt = getopt(argc, argv, "c:t:b:e:f:n:w:D:R")) != -1) {
        switch (opt) {
        case 'c':
            for (int i = 0; i < 5; i++)
                if (strcmp(optarg, coll_names[i]) == 0)
                    g.coll = (enum coll)i;
            break;
        case 't': g.nranks = atoi(optarg); break;
        case 'b': g.min_bytes = parse_size(optarg); break;
        case 'e': g.max_bytes = parse_size(optarg); break;
        case 'f': g.factor = (size_t)atoi(optarg); break;
        case 'n': g.iters = atoi(optarg); break;
        case 'w': g.warmup = atoi(optarg); break;
        case 'D': ndev_want = atoi(optarg); break;
        case 'R': g.do_register = 1; break;
        default:
            fprintf(stderr, "usage: %s [-c coll] [-t ranks] [-b min] [-e max] [-f factor] "
                            "[-n iters] [-w warmup] [-D devices] [-R]\n", argv[0]);
            return 2;
        }
    }
    if (g.nranks < 1 || g.factor < 2 || g.min_bytes == 0 || g.iters < 1) {
        fprintf(stderr, "gpu_coll_bench: bad arguments\n");
        return 2;
    }
    load_driver();
    int ndev;
    CU(cu.device_get_count(&ndev));
    g.ndev = ndev_want > 0 && ndev_want < ndev ? ndev_want : ndev;
    g.ctxs = calloc((size_t)g.ndev, sizeof(void *));
    for (int d = 0; d < g.ndev; d++) {
        int dev;
        CU(cu.device_get(&dev, d));
        CU(cu.primary_ctx_retain(&g.ctxs[d], dev));
    }
    printf("# %s, %d ranks on %d device(s), NCCL_PROTO=%s, %d iterations%s\n",
           coll_names[g.coll], g.nranks, g.ndev,
           getenv("NCCL_PROTO") ? getenv("NCCL_PROTO") : "(default)", g.iters,
           g.do_register ? ", buffers registered" : "");
    printf("copy_GBps %.2f\n", copy_gbps(g.max_bytes > (64u << 20) ? g.max_bytes : 64u << 20));
    int *devs = calloc((size_t)g.nranks, sizeof(int));
    for (int i = 0; i < g.nranks; i++)
        devs[i] = i % g.ndev;
    g.comms = calloc((size_t)g.nranks, sizeof(ncclComm_t));
    CU(cu.ctx_set_current(g.ctxs[0]));
    NC(ncclCommInitAll(g.comms, g.nranks, devs));
    pthread_barrier_init(&g.barrier, NULL, (unsigned)g.nranks);
    pthread_mutex_init(&g.lock, NULL);
    printf("#%11s %12s %10s %8s %8s %7s\n", "size(B)", "count", "time(us)", "algbw", "busbw",
           "#wrong");
    pthread_t *th = calloc((size_t)g.nranks, sizeof(pthread_t));
    for (int i = 0; i < g.nranks; i++)
        pthread_create(&th[i], NULL, rank_main, (void *)(intptr_t)i);
    for (int i = 0; i < g.nranks; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < g.nranks; i++)
        ncclCommDestroy(g.comms[i]);
    printf("# wrong results: %d\n", g.nwrong);
    free(th);
    free(g.comms);
    free(devs);
    free(g.ctxs);
    return g.nwrong ? 1 : 0;
}
