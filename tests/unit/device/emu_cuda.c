/* An emulated CUDA driver (libcuda.so.1's entry points that AnyCCL and its tests call) for running
 * collectives on "GPU buffers" on a machine without a GPU. Built by mk/device.mk as
 * $(BUILD)/tests/unit/device/fake/libcuda_emu.so, as libcuda_emu_nomemops.so with
 * -DEMU_NO_MEMOPS (no cuStreamWriteValue32 / cuStreamWaitValue32: the backend then launches the
 * signal/wait kernels instead), and as libcuda_emu_novmm.so with -DEMU_NO_VMM (a device without
 * virtual memory management: cuMemCreate is refused).
 *   - Device memory is host memory recorded in a range table: cuPointerGetAttributes says DEVICE
 *     for it, HOST for cuMemHostAlloc memory, and 0 (unknown) for anything else, as CUDA does.
 *     cuMemAlloc memory is a memfd, so that another process can open its cuIpcGetMemHandle
 *     handle (pidfd_getfd); the cuMem virtual memory calls (cuMemCreate, cuMemAddressReserve,
 *     cuMemMap, cuMemSetAccess, POSIX fd export and import) work on memfds and mmap.
 *   - Streams are asynchronous FIFOs: each has a worker thread running its copies, sets, kernel
 *     launches, value writes and waits, and event records and waits, in order. The NULL stream is
 *     one more such stream (without the legacy default stream's implicit synchronization).
 *   - Kernels are the host build of src/device/kernels/ (emu_kernels.cc), found by name in
 *     cuModuleGetFunction; launch parameters are copied at the launch, as CUDA does.
 * One device (EMU_NDEVICES), compute capability 9.0; none when CUDA_VISIBLE_DEVICES is empty. */
#define _GNU_SOURCE /* memfd_create */
#include "emu_kernels.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef EMU_NDEVICES
#define EMU_NDEVICES 1
#endif

#define EXPORT __attribute__((visibility("default")))

enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_INVALID_DEVICE = 101,
    ERR_INVALID_IMAGE = 200,
    ERR_INVALID_CONTEXT = 201, /* cuIpcOpenMemHandle of a handle of the calling process */
    ERR_MAP_FAILED = 205,
    ERR_ALREADY_MAPPED = 208,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_FOUND = 500,
    ERR_NOT_READY = 600,
    ERR_NOT_SUPPORTED = 801,
    MEM_HOST = 1,
    MEM_DEVICE = 2,
};

/* ---- memory ----
 * Every device allocation is a memfd mapped shared, so that another process can map the same pages
 * (cuIpcOpenMemHandle, cuMemImportFromShareableHandle): its name carries the allocation's serial
 * number, which an importer checks, so that a handle of freed memory whose fd number was reused is
 * refused rather than mapping the wrong pages. */

enum range_kind {
    R_HOST,   /* cuMemHostAlloc: malloc'd */
    R_ALLOC,  /* cuMemAlloc: a memfd of its own */
    R_IMPORT, /* cuIpcOpenMemHandle: another process's R_ALLOC */
    R_VMM,    /* cuMemMap of a cuMemCreate allocation into a reserved range */
};

/* A cuMemCreate (or cuMemImportFromShareableHandle) allocation: CUmemGenericAllocationHandle is a
 * pointer to one. refs: the handle itself, and each mapping of it. */
struct phys {
    int fd;
    size_t bytes;
    int device;
    int handle_types;
    uint64_t serial;
    int refs;
    struct phys *next;
};

struct range {
    uintptr_t base;
    size_t bytes;
    int type; /* MEM_HOST, MEM_DEVICE */
    enum range_kind kind;
    int fd;          /* R_ALLOC */
    uint64_t serial; /* R_ALLOC, R_IMPORT (the exporter's), R_VMM (the allocation's) */
    int pid;         /* R_IMPORT: the exporter */
    int refs;        /* R_IMPORT: opens not closed yet */
    struct phys *phys;
    uintptr_t resv_base; /* R_VMM: the reservation mapped into */
    size_t resv_bytes;
};

/* cuMemAddressReserve's ranges. */
struct resv {
    uintptr_t base;
    size_t bytes;
    struct resv *next;
};

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct range *ranges;
static size_t nranges, cap_ranges;
static struct phys *physs;
static struct resv *resvs;
static _Atomic uint64_t next_serial = 1;

/* Under mem_lock. */
static int add_range_locked(const struct range *r)
{
    if (nranges == cap_ranges) {
        size_t cap = cap_ranges ? 2 * cap_ranges : 64;
        struct range *n = realloc(ranges, cap * sizeof *n);
        if (!n)
            return ERR_OUT_OF_MEMORY;
        ranges = n;
        cap_ranges = cap;
    }
    ranges[nranges++] = *r;
    return OK;
}

static int add_range(void *p, size_t bytes, int type)
{
    struct range r = {.base = (uintptr_t)p, .bytes = bytes, .type = type, .kind = R_HOST, .fd = -1};
    int res;

    pthread_mutex_lock(&mem_lock);
    res = add_range_locked(&r);
    pthread_mutex_unlock(&mem_lock);
    return res;
}

/* Under mem_lock: the range holding p, NULL when none. */
static struct range *range_at(uintptr_t p)
{
    for (size_t i = 0; i < nranges; i++)
        if (p >= ranges[i].base && p < ranges[i].base + ranges[i].bytes)
            return &ranges[i];
    return NULL;
}

static void remove_range_locked(struct range *r)
{
    *r = ranges[--nranges];
}

static size_t page_round(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    return ((bytes ? bytes : 1) + page - 1) / page * page;
}

static int new_memfd(const char *what, uint64_t serial, size_t bytes)
{
    char name[64];
    int fd;

    snprintf(name, sizeof name, "anyccl-emu-%s-%llu", what, (unsigned long long)serial);
    fd = memfd_create(name, MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)bytes) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The serial number in fd's memfd name ("/memfd:anyccl-emu-<what>-<n> (deleted)"), 0 when fd is
 * not such a memfd. */
static uint64_t memfd_serial(int fd, const char *what)
{
    char link[64], target[128], prefix[48];
    unsigned long long serial = 0;
    ssize_t n;

    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    snprintf(prefix, sizeof prefix, "/memfd:anyccl-emu-%s-", what);
    if (strncmp(target, prefix, strlen(prefix)) != 0 ||
        sscanf(target + strlen(prefix), "%llu", &serial) != 1)
        return 0;
    return serial;
}

static void *alloc_host(size_t bytes)
{
    void *p = NULL;

    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0)
        return NULL;
    memset(p, 0, bytes ? bytes : 1);
    if (add_range(p, bytes ? bytes : 1, MEM_HOST) != OK) {
        free(p);
        return NULL;
    }
    return p;
}

/* cuMemAlloc: a memfd of its own, mapped shared (zeroed, as ftruncate leaves it). */
static void *alloc_device(size_t bytes)
{
    uint64_t serial = atomic_fetch_add(&next_serial, 1);
    size_t len = page_round(bytes);
    int fd = new_memfd("dev", serial, len);
    void *p;

    if (fd < 0)
        return NULL;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    struct range r = {.base = (uintptr_t)p,
                      .bytes = bytes ? bytes : 1,
                      .type = MEM_DEVICE,
                      .kind = R_ALLOC,
                      .fd = fd,
                      .serial = serial};
    pthread_mutex_lock(&mem_lock);
    int res = add_range_locked(&r);
    pthread_mutex_unlock(&mem_lock);
    if (res != OK) {
        munmap(p, len);
        close(fd);
        return NULL;
    }
    return p;
}

/* ---- streams ---- */

enum op_kind { OP_COPY, OP_SET, OP_KERNEL, OP_WRITE, OP_WAIT, OP_RECORD, OP_WAIT_EVENT };

struct event {
    _Atomic uint64_t recorded;  /* records made */
    _Atomic uint64_t completed; /* records their stream reached */
};

struct op {
    enum op_kind kind;
    void *dst;
    const void *src;
    size_t bytes;
    uint32_t value;
    struct event *event;
    uint64_t event_seq;
    const struct emu_kernel *kernel;
    unsigned grid, block;
    void *params[EMU_MAX_PARAMS];
    unsigned char param_bytes[EMU_MAX_PARAMS][64];
    struct op *next;
};

struct stream {
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* work queued, work done, stop */
    struct op *head, *tail;
    bool is_running; /* the worker holds an op */
    bool is_stopping;
};

static void pause_a_little(unsigned *npolls)
{
    if ((*npolls)++ < 64) {
        sched_yield();
    } else {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

static void run_op(struct op *o)
{
    unsigned npolls = 0;

    switch (o->kind) {
    case OP_COPY:
        memmove(o->dst, o->src, o->bytes);
        break;
    case OP_SET:
        memset(o->dst, (int)o->value, o->bytes);
        break;
    case OP_KERNEL:
        emu_kernel_run(o->kernel, o->grid, o->block, o->params);
        break;
    case OP_WRITE:
        __atomic_store_n((uint32_t *)o->dst, o->value, __ATOMIC_SEQ_CST);
        break;
    case OP_WAIT: /* CU_STREAM_WAIT_VALUE_GEQ */
        while ((int32_t)(__atomic_load_n((uint32_t *)o->dst, __ATOMIC_ACQUIRE) - o->value) < 0)
            pause_a_little(&npolls);
        break;
    case OP_RECORD: {
        uint64_t seen = atomic_load(&o->event->completed);
        while (seen < o->event_seq &&
               !atomic_compare_exchange_weak(&o->event->completed, &seen, o->event_seq))
            ;
        break;
    }
    case OP_WAIT_EVENT:
        while (atomic_load(&o->event->completed) < o->event_seq)
            pause_a_little(&npolls);
        break;
    }
}

static void *worker_main(void *arg)
{
    struct stream *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct op *o = s->head;
        if (!o) {
            if (s->is_stopping)
                break;
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        s->is_running = true;
        pthread_mutex_unlock(&s->lock);
        run_op(o);
        pthread_mutex_lock(&s->lock);
        s->head = o->next;
        if (!s->head)
            s->tail = NULL;
        s->is_running = false;
        free(o);
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int stream_new(struct stream **out)
{
    struct stream *s = calloc(1, sizeof *s);

    if (!s)
        return ERR_OUT_OF_MEMORY;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        free(s);
        return ERR_OUT_OF_MEMORY;
    }
    *out = s;
    return OK;
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct stream *default_stream;

static void make_default_stream(void)
{
    stream_new(&default_stream);
}

static struct stream *stream_of(void *handle)
{
    if (handle)
        return handle;
    pthread_once(&default_once, make_default_stream);
    return default_stream;
}

static int push(void *handle, struct op *o)
{
    struct stream *s = stream_of(handle);

    if (!s) {
        free(o);
        return ERR_INVALID_HANDLE;
    }
    o->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return OK;
}

static struct op *new_op(enum op_kind kind)
{
    struct op *o = calloc(1, sizeof *o);

    if (o)
        o->kind = kind;
    return o;
}

static int sync_stream(void *handle)
{
    struct stream *s = stream_of(handle);

    if (!s)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&s->lock);
    while (s->head)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return OK;
}

/* ---- the driver API ---- */

static int ctx_tokens[EMU_NDEVICES > 0 ? EMU_NDEVICES : 1];
static __thread void *current_ctx;

/* As the real driver: CUDA_VISIBLE_DEVICES set to nothing hides every device, and cuInit then
 * fails with CUDA_ERROR_NO_DEVICE (a process of a test plays a rank without a GPU that way). */
EXPORT int cuInit(unsigned flags)
{
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    return visible && *visible == '\0' ? 100 : OK;
}
EXPORT int cuDriverGetVersion(int *v)
{
    *v = 12040;
    return OK;
}
EXPORT int cuGetErrorString(int r, const char **s)
{
    *s = r == ERR_NOT_FOUND ? "named symbol not found (emulated driver)" : "emulated driver error";
    return OK;
}
EXPORT int cuDeviceGetCount(int *n)
{
    *n = EMU_NDEVICES;
    return OK;
}
EXPORT int cuDeviceGet(int *d, int ordinal)
{
    if (ordinal < 0 || ordinal >= EMU_NDEVICES)
        return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *d = ordinal;
    return OK;
}
EXPORT int cuDeviceGetName(char *name, int len, int dev)
{
    snprintf(name, (size_t)len, "AnyCCL emulated GPU");
    return OK;
}
/* Compute capability 9.0; virtual memory management (102) and POSIX fd handles (103) unless
 * built with EMU_NO_VMM. */
EXPORT int cuDeviceGetAttribute(int *v, int attr, int dev)
{
    if (dev < 0 || dev >= EMU_NDEVICES)
        return ERR_INVALID_DEVICE;
    switch (attr) {
    case 75: *v = 9; break;
#ifndef EMU_NO_VMM
    case 102: *v = 1; break;
    case 103: *v = 1; break;
#endif
    default: *v = 0; break;
    }
    return OK;
}
EXPORT int cuDeviceCanAccessPeer(int *can, int dev, int peer)
{
    if (dev < 0 || dev >= EMU_NDEVICES || peer < 0 || peer >= EMU_NDEVICES)
        return ERR_INVALID_DEVICE;
    *can = dev != peer;
    return OK;
}
EXPORT int cuDevicePrimaryCtxRetain(void **ctx, int dev)
{
    if (dev < 0 || dev >= EMU_NDEVICES)
        return 101;
    *ctx = &ctx_tokens[dev];
    return OK;
}
EXPORT int cuDevicePrimaryCtxRelease_v2(int dev)
{
    return OK;
}
EXPORT int cuCtxGetCurrent(void **ctx)
{
    *ctx = current_ctx;
    return OK;
}
EXPORT int cuCtxSetCurrent(void *ctx)
{
    current_ctx = ctx;
    return OK;
}
EXPORT int cuCtxGetDevice(int *dev)
{
    if (!current_ctx)
        return ERR_INVALID_CONTEXT;
    *dev = (int)((int *)current_ctx - ctx_tokens);
    return OK;
}

/* Pointer attributes (cuda.h's CU_POINTER_ATTRIBUTE_*) of memory this driver knows; booleans are
 * written as one byte, so that callers reading a bool or a zeroed int both see them. */
static int pointer_attribute(const struct range *r, uintptr_t p, int attr, void *data)
{
    switch (attr) {
    case 1: /* CONTEXT: none for cuMem allocations, as on a real driver */
        *(void **)data = r->type == MEM_DEVICE && r->kind != R_VMM ? &ctx_tokens[0] : NULL;
        return OK;
    case 2: /* MEMORY_TYPE */
        *(unsigned *)data = (unsigned)r->type;
        return OK;
    case 3: /* DEVICE_POINTER */
        *(uintptr_t *)data = p;
        return OK;
    case 4: /* HOST_POINTER: host memory only */
        if (r->type != MEM_HOST)
            return ERR_INVALID_VALUE;
        *(void **)data = (void *)p;
        return OK;
    case 7: /* BUFFER_ID */
        *(unsigned long long *)data = r->serial ? r->serial : (unsigned long long)r->base;
        return OK;
    case 8: /* IS_MANAGED */
        *(unsigned *)data = 0;
        return OK;
    case 9: /* DEVICE_ORDINAL */
        *(int *)data = r->type == MEM_DEVICE && r->phys ? r->phys->device : 0;
        return OK;
    case 10: /* IS_LEGACY_CUDA_IPC_CAPABLE: cuMemAlloc memory only */
        *(unsigned char *)data = r->kind == R_ALLOC;
        return OK;
    case 11: /* RANGE_START_ADDR: the reservation for cuMem memory */
        *(uintptr_t *)data = r->kind == R_VMM ? r->resv_base : r->base;
        return OK;
    case 12: /* RANGE_SIZE */
        *(size_t *)data = r->kind == R_VMM ? r->resv_bytes : r->bytes;
        return OK;
    case 13: /* MAPPED */
        *(unsigned char *)data = 1;
        return OK;
    case 14: /* ALLOWED_HANDLE_TYPES */
        *(int *)data = r->kind == R_VMM ? r->phys->handle_types : 0;
        return OK;
    case 18: /* MAPPING_SIZE */
        *(size_t *)data = r->bytes;
        return OK;
    case 19: /* MAPPING_BASE_ADDR */
        *(uintptr_t *)data = r->base;
        return OK;
    default:
        return ERR_INVALID_VALUE;
    }
}

/* Unlike cuPointerGetAttribute, memory the driver does not know is not an error: type 0. */
EXPORT int cuPointerGetAttributes(unsigned n, int *attrs, void **data, uintptr_t p)
{
    int res = OK;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    for (unsigned a = 0; a < n && res == OK; a++) {
        if (r)
            res = pointer_attribute(r, p, attrs[a], data[a]);
        else if (attrs[a] == 2 || attrs[a] == 8) /* MEMORY_TYPE, IS_MANAGED */
            *(unsigned *)data[a] = 0;
        else if (attrs[a] == 9) /* DEVICE_ORDINAL */
            *(int *)data[a] = -2;
        else
            res = ERR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuPointerGetAttribute(void *data, int attr, uintptr_t p)
{
    int res;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    res = r ? pointer_attribute(r, p, attr, data) : ERR_INVALID_VALUE;
    pthread_mutex_unlock(&mem_lock);
    return res;
}

/* The mapped range holding p (cuMemGetAddressRange: the allocation, or the cuMemMap mapping). */
EXPORT int cuMemGetAddressRange_v2(uintptr_t *base, size_t *bytes, uintptr_t p)
{
    int res = ERR_NOT_FOUND;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    if (r && r->type == MEM_DEVICE) {
        if (base)
            *base = r->base;
        if (bytes)
            *bytes = r->bytes;
        res = OK;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemAlloc_v2(uintptr_t *p, size_t bytes)
{
    void *m = alloc_device(bytes);

    if (!m)
        return ERR_OUT_OF_MEMORY;
    *p = (uintptr_t)m;
    return OK;
}

EXPORT int cuMemFree_v2(uintptr_t p)
{
    int fd = -1;
    size_t bytes = 0;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    if (r && r->kind == R_ALLOC && r->base == p) {
        fd = r->fd;
        bytes = r->bytes;
        remove_range_locked(r);
    }
    pthread_mutex_unlock(&mem_lock);
    if (fd < 0)
        return ERR_INVALID_VALUE;
    munmap((void *)p, page_round(bytes));
    close(fd);
    return OK;
}

EXPORT int cuMemHostAlloc(void **p, size_t bytes, unsigned flags)
{
    *p = alloc_host(bytes);
    return *p ? OK : ERR_OUT_OF_MEMORY;
}

EXPORT int cuMemFreeHost(void *p)
{
    bool is_found = false;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at((uintptr_t)p);
    if (r && r->kind == R_HOST && r->type == MEM_HOST && r->base == (uintptr_t)p) {
        remove_range_locked(r);
        is_found = true;
    }
    pthread_mutex_unlock(&mem_lock);
    if (!is_found)
        return ERR_INVALID_VALUE;
    free(p);
    return OK;
}

EXPORT int cuMemcpyAsync(uintptr_t dst, uintptr_t src, size_t n, void *s)
{
    struct op *o = new_op(OP_COPY);

    if (!o)
        return ERR_OUT_OF_MEMORY;
    o->dst = (void *)dst;
    o->src = (const void *)src;
    o->bytes = n;
    return push(s, o);
}

EXPORT int cuMemsetD8Async(uintptr_t dst, unsigned char v, size_t n, void *s)
{
    struct op *o = new_op(OP_SET);

    if (!o)
        return ERR_OUT_OF_MEMORY;
    o->dst = (void *)dst;
    o->value = v;
    o->bytes = n;
    return push(s, o);
}

EXPORT int cuStreamCreate(void **s, unsigned flags)
{
    return stream_new((struct stream **)s);
}

EXPORT int cuStreamDestroy_v2(void *handle)
{
    struct stream *s = handle;

    if (!s)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&s->lock);
    s->is_stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->worker, NULL);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
    return OK;
}

EXPORT int cuStreamSynchronize(void *s)
{
    return sync_stream(s);
}

EXPORT int cuStreamQuery(void *handle)
{
    struct stream *s = stream_of(handle);
    bool is_idle;

    if (!s)
        return ERR_INVALID_HANDLE;
    pthread_mutex_lock(&s->lock);
    is_idle = s->head == NULL;
    pthread_mutex_unlock(&s->lock);
    return is_idle ? OK : ERR_NOT_READY;
}

EXPORT int cuEventCreate(void **e, unsigned flags)
{
    *e = calloc(1, sizeof(struct event));
    return *e ? OK : ERR_OUT_OF_MEMORY;
}

EXPORT int cuEventDestroy_v2(void *e)
{
    free(e);
    return OK;
}

EXPORT int cuEventRecord(void *e, void *s)
{
    struct event *ev = e;
    struct op *o = new_op(OP_RECORD);

    if (!o)
        return ERR_OUT_OF_MEMORY;
    o->event = ev;
    o->event_seq = atomic_fetch_add(&ev->recorded, 1) + 1;
    return push(s, o);
}

EXPORT int cuEventQuery(void *e)
{
    struct event *ev = e;

    return atomic_load(&ev->completed) >= atomic_load(&ev->recorded) ? OK : ERR_NOT_READY;
}

EXPORT int cuEventSynchronize(void *e)
{
    struct event *ev = e;
    uint64_t target = atomic_load(&ev->recorded);
    unsigned npolls = 0;

    while (atomic_load(&ev->completed) < target)
        pause_a_little(&npolls);
    return OK;
}

EXPORT int cuStreamWaitEvent(void *s, void *e, unsigned flags)
{
    struct event *ev = e;
    struct op *o = new_op(OP_WAIT_EVENT);

    if (!o)
        return ERR_OUT_OF_MEMORY;
    o->event = ev;
    o->event_seq = atomic_load(&ev->recorded);
    return push(s, o);
}

#ifndef EMU_NO_MEMOPS
EXPORT int cuStreamWriteValue32_v2(void *s, uintptr_t addr, uint32_t value, unsigned flags)
{
    struct op *o = new_op(OP_WRITE);

    if (!o)
        return ERR_OUT_OF_MEMORY;
    o->dst = (void *)addr;
    o->value = value;
    return push(s, o);
}

EXPORT int cuStreamWaitValue32_v2(void *s, uintptr_t addr, uint32_t value, unsigned flags)
{
    struct op *o;

    if (flags != 0) /* only CU_STREAM_WAIT_VALUE_GEQ is emulated */
        return ERR_INVALID_VALUE;
    if (!(o = new_op(OP_WAIT)))
        return ERR_OUT_OF_MEMORY;
    o->dst = (void *)addr;
    o->value = value;
    return push(s, o);
}
#endif

/* ---- IPC between processes ----
 * A legacy handle names the exporter's memfd: its pid, fd number, serial and size. The importer
 * takes a copy of that fd with pidfd_getfd(2) (or, without it, by opening /proc/<pid>/fd/<n>), checks
 * the serial in the memfd's name, and maps it. As on a real driver: only cuMemAlloc memory can be
 * exported this way (cuMem allocations go through cuMemExportToShareableHandle), a process cannot
 * open its own handle (CUDA_ERROR_INVALID_CONTEXT), a second open of a handle returns the same
 * address with one more reference, and cuIpcCloseMemHandle drops one. */
#define EMU_IPC_MAGIC 0x4350494d55454341ull /* "ACEMUIPC" */

struct ipc_handle {
    char reserved[64];
};

struct emu_ipc {
    uint64_t magic;
    int32_t pid;
    int32_t fd;
    uint64_t serial;
    uint64_t bytes;
};

EXPORT int cuIpcGetMemHandle(struct ipc_handle *h, uintptr_t p)
{
    struct emu_ipc e = {.magic = EMU_IPC_MAGIC, .pid = (int32_t)getpid()};
    int res = ERR_INVALID_VALUE;

    memset(h, 0, sizeof *h);
    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    if (r && r->kind == R_ALLOC) {
        e.fd = r->fd;
        e.serial = r->serial;
        e.bytes = r->bytes;
        res = OK;
    }
    pthread_mutex_unlock(&mem_lock);
    if (res == OK)
        memcpy(h->reserved, &e, sizeof e);
    return res;
}

/* A copy of process pid's file descriptor fd in this process, -1 when it cannot be had. */
static int fd_of_process(int pid, int fd)
{
    char path[64];
    int copy = -1;
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

    if (pidfd >= 0) {
        copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
        close(pidfd);
    }
#endif
    if (copy < 0) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
        copy = open(path, O_RDWR | O_CLOEXEC);
    }
    return copy;
}

EXPORT int cuIpcOpenMemHandle_v2(uintptr_t *p, struct ipc_handle h, unsigned flags)
{
    struct emu_ipc e;
    int fd;
    void *m;

    memcpy(&e, h.reserved, sizeof e);
    if (flags != 1) /* CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS is required */
        return ERR_INVALID_VALUE;
    if (e.magic != EMU_IPC_MAGIC || e.bytes == 0)
        return ERR_INVALID_HANDLE;
    if (e.pid == (int32_t)getpid())
        return ERR_INVALID_CONTEXT;
    pthread_mutex_lock(&mem_lock);
    for (size_t i = 0; i < nranges; i++)
        if (ranges[i].kind == R_IMPORT && ranges[i].pid == e.pid &&
            ranges[i].serial == e.serial) {
            ranges[i].refs++;
            *p = ranges[i].base;
            pthread_mutex_unlock(&mem_lock);
            return OK;
        }
    pthread_mutex_unlock(&mem_lock);
    fd = fd_of_process(e.pid, e.fd);
    if (fd < 0)
        return ERR_MAP_FAILED;
    if (memfd_serial(fd, "dev") != e.serial) { /* freed, its fd number reused */
        close(fd);
        return ERR_INVALID_HANDLE;
    }
    m = mmap(NULL, page_round(e.bytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return ERR_MAP_FAILED;
    struct range r = {.base = (uintptr_t)m,
                      .bytes = e.bytes,
                      .type = MEM_DEVICE,
                      .kind = R_IMPORT,
                      .fd = -1,
                      .serial = e.serial,
                      .pid = e.pid,
                      .refs = 1};
    pthread_mutex_lock(&mem_lock);
    int res = add_range_locked(&r);
    pthread_mutex_unlock(&mem_lock);
    if (res != OK) {
        munmap(m, page_round(e.bytes));
        return res;
    }
    *p = (uintptr_t)m;
    return OK;
}

EXPORT int cuIpcCloseMemHandle(uintptr_t p)
{
    size_t bytes = 0;
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at(p);
    if (r && r->kind == R_IMPORT && r->base == p) {
        res = OK;
        if (--r->refs == 0) {
            bytes = r->bytes;
            remove_range_locked(r);
        }
    }
    pthread_mutex_unlock(&mem_lock);
    if (bytes)
        munmap((void *)p, page_round(bytes));
    return res;
}

/* ---- virtual memory management (cuMemCreate and friends), as NCCL's ncclMemAlloc uses it ----
 * Physical allocations are memfds; a reservation is PROT_NONE anonymous memory; cuMemMap maps the
 * memfd over part of it, still inaccessible (touching it faults, as on a GPU) until cuMemSetAccess.
 * Only POSIX file descriptors are offered as shareable handles. Built with EMU_NO_VMM, the device
 * says it has no virtual memory management and cuMemCreate is CUDA_ERROR_NOT_SUPPORTED. */
#define EMU_GRANULARITY ((size_t)2 << 20)

struct mem_location {
    int type; /* CU_MEM_LOCATION_TYPE_DEVICE = 1 */
    int id;
};

struct mem_prop {
    int type;                 /* CU_MEM_ALLOCATION_TYPE_PINNED = 1 */
    int requested_handle_types;
    struct mem_location location;
    void *win32_metadata;
    struct {
        unsigned char compression_type;
        unsigned char gpu_direct_rdma_capable;
        unsigned short usage;
        unsigned char reserved[4];
    } alloc_flags;
};

struct mem_access_desc {
    struct mem_location location;
    int flags; /* CU_MEM_ACCESS_FLAGS_PROT_NONE 0, _READ 1, _READWRITE 3 */
};

enum {
    HANDLE_TYPE_POSIX_FD = 1,
    LOCATION_DEVICE = 1,
    ALLOCATION_PINNED = 1,
};

static bool is_device_location(const struct mem_location *l)
{
    return l->type == LOCATION_DEVICE && l->id >= 0 && l->id < EMU_NDEVICES;
}

/* Under mem_lock: phys when it is a live handle, else NULL. */
static struct phys *phys_of(unsigned long long handle)
{
    for (struct phys *p = physs; p; p = p->next)
        if ((unsigned long long)(uintptr_t)p == handle)
            return p;
    return NULL;
}

/* Under mem_lock. */
static void phys_unref(struct phys *ph)
{
    if (--ph->refs > 0)
        return;
    for (struct phys **at = &physs; *at; at = &(*at)->next)
        if (*at == ph) {
            *at = ph->next;
            break;
        }
    close(ph->fd);
    free(ph);
}

EXPORT int cuMemGetAllocationGranularity(size_t *granularity, const struct mem_prop *prop,
                                         int option)
{
    if (!granularity || !prop || !is_device_location(&prop->location) || (option != 0 && option != 1))
        return ERR_INVALID_VALUE;
    *granularity = EMU_GRANULARITY;
    return OK;
}

static struct phys *phys_new(int fd, size_t bytes, int device, int handle_types, uint64_t serial)
{
    struct phys *ph = calloc(1, sizeof *ph);

    if (!ph)
        return NULL;
    *ph = (struct phys){.fd = fd,
                        .bytes = bytes,
                        .device = device,
                        .handle_types = handle_types,
                        .serial = serial,
                        .refs = 1};
    pthread_mutex_lock(&mem_lock);
    ph->next = physs;
    physs = ph;
    pthread_mutex_unlock(&mem_lock);
    return ph;
}

EXPORT int cuMemCreate(unsigned long long *handle, size_t bytes, const struct mem_prop *prop,
                       unsigned long long flags)
{
    uint64_t serial;
    struct phys *ph;
    int fd;

#ifdef EMU_NO_VMM
    return ERR_NOT_SUPPORTED;
#endif
    if (!handle || !prop || flags != 0 || prop->type != ALLOCATION_PINNED ||
        !is_device_location(&prop->location) || bytes == 0 || bytes % EMU_GRANULARITY != 0)
        return ERR_INVALID_VALUE;
    if (prop->requested_handle_types & ~HANDLE_TYPE_POSIX_FD)
        return ERR_NOT_SUPPORTED;
    serial = atomic_fetch_add(&next_serial, 1);
    if ((fd = new_memfd("vmm", serial, bytes)) < 0)
        return ERR_OUT_OF_MEMORY;
    if (!(ph = phys_new(fd, bytes, prop->location.id, prop->requested_handle_types, serial))) {
        close(fd);
        return ERR_OUT_OF_MEMORY;
    }
    *handle = (unsigned long long)(uintptr_t)ph;
    return OK;
}

EXPORT int cuMemRelease(unsigned long long handle)
{
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    struct phys *ph = phys_of(handle);
    if (ph) {
        phys_unref(ph);
        res = OK;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemAddressReserve(uintptr_t *ptr, size_t bytes, size_t alignment, uintptr_t addr,
                               unsigned long long flags)
{
    size_t align = alignment ? alignment : EMU_GRANULARITY;
    struct resv *rv;
    uintptr_t p, start;
    void *m;

    if (!ptr || bytes == 0 || bytes % EMU_GRANULARITY != 0 || (align & (align - 1)) != 0 ||
        flags != 0)
        return ERR_INVALID_VALUE;
    (void)addr; /* a hint */
    m = mmap(NULL, bytes + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return ERR_OUT_OF_MEMORY;
    p = (uintptr_t)m;
    start = (p + align - 1) & ~(uintptr_t)(align - 1);
    if (start > p)
        munmap(m, start - p);
    if (start + bytes < p + bytes + align)
        munmap((void *)(start + bytes), p + bytes + align - (start + bytes));
    if (!(rv = calloc(1, sizeof *rv))) {
        munmap((void *)start, bytes);
        return ERR_OUT_OF_MEMORY;
    }
    rv->base = start;
    rv->bytes = bytes;
    pthread_mutex_lock(&mem_lock);
    rv->next = resvs;
    resvs = rv;
    pthread_mutex_unlock(&mem_lock);
    *ptr = start;
    return OK;
}

/* Under mem_lock: the reservation holding [p, p + bytes). */
static struct resv *resv_of(uintptr_t p, size_t bytes)
{
    for (struct resv *rv = resvs; rv; rv = rv->next)
        if (p >= rv->base && bytes <= rv->bytes && p - rv->base <= rv->bytes - bytes)
            return rv;
    return NULL;
}

EXPORT int cuMemAddressFree(uintptr_t ptr, size_t bytes)
{
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    for (struct resv **at = &resvs; *at; at = &(*at)->next) {
        struct resv *rv = *at;
        if (rv->base != ptr || rv->bytes != bytes)
            continue;
        for (size_t i = 0; i < nranges; i++)
            if (ranges[i].kind == R_VMM && ranges[i].resv_base == ptr) {
                pthread_mutex_unlock(&mem_lock);
                return ERR_INVALID_VALUE; /* still mapped */
            }
        *at = rv->next;
        munmap((void *)rv->base, rv->bytes);
        free(rv);
        res = OK;
        break;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemMap(uintptr_t ptr, size_t bytes, size_t offset, unsigned long long handle,
                    unsigned long long flags)
{
    int res = OK;

    pthread_mutex_lock(&mem_lock);
    struct phys *ph = phys_of(handle);
    struct resv *rv = resv_of(ptr, bytes);
    if (!ph || !rv || flags != 0 || bytes == 0 || bytes % EMU_GRANULARITY != 0 ||
        offset % EMU_GRANULARITY != 0 || offset > ph->bytes || bytes > ph->bytes - offset) {
        res = ERR_INVALID_VALUE;
    } else {
        for (size_t i = 0; i < nranges && res == OK; i++)
            if (ranges[i].base < ptr + bytes && ptr < ranges[i].base + ranges[i].bytes)
                res = ERR_ALREADY_MAPPED;
    }
    if (res == OK &&
        mmap((void *)ptr, bytes, PROT_NONE, MAP_SHARED | MAP_FIXED, ph->fd, (off_t)offset) ==
            MAP_FAILED)
        res = ERR_OUT_OF_MEMORY;
    if (res == OK) {
        struct range r = {.base = ptr,
                          .bytes = bytes,
                          .type = MEM_DEVICE,
                          .kind = R_VMM,
                          .fd = -1,
                          .serial = ph->serial,
                          .phys = ph,
                          .resv_base = rv->base,
                          .resv_bytes = rv->bytes};
        res = add_range_locked(&r);
        if (res == OK)
            ph->refs++;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

/* Under mem_lock: whether the mappings cover [ptr, ptr + bytes) exactly, whole ones only. */
static bool is_covered_by_mappings(uintptr_t ptr, size_t bytes)
{
    size_t covered = 0;

    for (size_t i = 0; i < nranges; i++) {
        const struct range *r = &ranges[i];
        if (r->kind != R_VMM || r->base >= ptr + bytes || r->base + r->bytes <= ptr)
            continue;
        if (r->base < ptr || r->base + r->bytes > ptr + bytes)
            return false;
        covered += r->bytes;
    }
    return covered == bytes;
}

EXPORT int cuMemSetAccess(uintptr_t ptr, size_t bytes, const struct mem_access_desc *desc,
                          size_t count)
{
    int prot = -1, res = OK;

    if (!desc || count == 0)
        return ERR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (!is_device_location(&desc[i].location))
            return ERR_INVALID_VALUE;
        switch (desc[i].flags) {
        case 0: prot = prot < 0 ? PROT_NONE : prot; break;
        case 1: prot = prot == (PROT_READ | PROT_WRITE) ? prot : PROT_READ; break;
        case 3: prot = PROT_READ | PROT_WRITE; break;
        default: return ERR_INVALID_VALUE;
        }
    }
    pthread_mutex_lock(&mem_lock);
    if (!is_covered_by_mappings(ptr, bytes) || mprotect((void *)ptr, bytes, prot) != 0)
        res = ERR_INVALID_VALUE;
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemUnmap(uintptr_t ptr, size_t bytes)
{
    int res = OK;

    pthread_mutex_lock(&mem_lock);
    if (!is_covered_by_mappings(ptr, bytes)) {
        res = ERR_INVALID_VALUE;
    } else {
        /* back to reserved: inaccessible anonymous memory, the address range kept */
        mmap((void *)ptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
             -1, 0);
        for (size_t i = 0; i < nranges;) {
            struct range *r = &ranges[i];
            if (r->kind == R_VMM && r->base >= ptr && r->base < ptr + bytes) {
                phys_unref(r->phys);
                remove_range_locked(r);
            } else {
                i++;
            }
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemRetainAllocationHandle(unsigned long long *handle, void *addr)
{
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    struct range *r = range_at((uintptr_t)addr);
    if (r && r->kind == R_VMM) {
        r->phys->refs++;
        *handle = (unsigned long long)(uintptr_t)r->phys;
        res = OK;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

EXPORT int cuMemGetAllocationPropertiesFromHandle(struct mem_prop *prop, unsigned long long handle)
{
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    struct phys *ph = phys_of(handle);
    if (ph && prop) {
        memset(prop, 0, sizeof *prop);
        prop->type = ALLOCATION_PINNED;
        prop->requested_handle_types = ph->handle_types;
        prop->location = (struct mem_location){LOCATION_DEVICE, ph->device};
        res = OK;
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

/* A POSIX fd the caller owns (closes), for an allocation created with that handle type. */
EXPORT int cuMemExportToShareableHandle(void *shareable, unsigned long long handle, int type,
                                        unsigned long long flags)
{
    int res = ERR_INVALID_VALUE;

    pthread_mutex_lock(&mem_lock);
    struct phys *ph = phys_of(handle);
    if (ph && shareable && flags == 0 && type == HANDLE_TYPE_POSIX_FD &&
        (ph->handle_types & HANDLE_TYPE_POSIX_FD)) {
        int fd = fcntl(ph->fd, F_DUPFD_CLOEXEC, 0);
        if (fd >= 0) {
            *(int *)shareable = fd;
            res = OK;
        } else {
            res = ERR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return res;
}

/* The fd stays the caller's (NCCL closes it after the import). */
EXPORT int cuMemImportFromShareableHandle(unsigned long long *handle, void *os_handle, int type)
{
    int fd = (int)(intptr_t)os_handle, copy;
    uint64_t serial;
    struct stat st;
    struct phys *ph;

    if (!handle || type != HANDLE_TYPE_POSIX_FD)
        return ERR_INVALID_VALUE;
    if ((serial = memfd_serial(fd, "vmm")) == 0 || fstat(fd, &st) != 0)
        return ERR_INVALID_HANDLE;
    if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return ERR_OUT_OF_MEMORY;
    if (!(ph = phys_new(copy, (size_t)st.st_size, 0, HANDLE_TYPE_POSIX_FD, serial))) {
        close(copy);
        return ERR_OUT_OF_MEMORY;
    }
    *handle = (unsigned long long)(uintptr_t)ph;
    return OK;
}

/* The image is the library's embedded fatbin (magic 0xBA55ED50); its code is not used: the
 * functions are the host build of the same source. */
static int module_token;

EXPORT int cuModuleLoadData(void **mod, const void *image)
{
    uint32_t magic;

    memcpy(&magic, image, sizeof magic);
    if (magic != 0xBA55ED50u)
        return ERR_INVALID_IMAGE;
    *mod = &module_token;
    return OK;
}

EXPORT int cuModuleGetFunction(void **fn, void *mod, const char *name)
{
    const struct emu_kernel *k = emu_kernel_find(name);

    if (!k)
        return ERR_NOT_FOUND;
    *fn = (void *)k;
    return OK;
}

EXPORT int cuModuleUnload(void *mod)
{
    return OK;
}

EXPORT int cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned shmem, void *s, void **params, void **extra)
{
    const struct emu_kernel *k = fn;
    struct op *o;

    if (!k || gy != 1 || gz != 1 || by != 1 || bz != 1 || extra != NULL)
        return ERR_INVALID_VALUE;
    if (!(o = new_op(OP_KERNEL)))
        return ERR_OUT_OF_MEMORY;
    o->kernel = k;
    o->grid = gx;
    o->block = bx;
    for (int i = 0; i < k->nparams; i++) {
        if (k->param_bytes[i] > sizeof o->param_bytes[i]) {
            free(o);
            return ERR_INVALID_VALUE;
        }
        memcpy(o->param_bytes[i], params[i], k->param_bytes[i]);
        o->params[i] = o->param_bytes[i];
    }
    return push(s, o);
}
