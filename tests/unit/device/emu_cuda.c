/* An emulated CUDA driver (libcuda.so.1's entry points that AnyCCL and its tests call) for running
 * collectives on "GPU buffers" on a machine without a GPU. Built by mk/device.mk as
 * $(BUILD)/tests/unit/device/fake/libcuda_emu.so, and as libcuda_emu_nomemops.so with
 * -DEMU_NO_MEMOPS (no cuStreamWriteValue32 / cuStreamWaitValue32: the backend then launches the
 * signal/wait kernels instead).
 *   - Device memory is host memory recorded in a range table: cuPointerGetAttributes says DEVICE
 *     for it, HOST for cuMemHostAlloc memory, and 0 (unknown) for anything else, as CUDA does.
 *   - Streams are asynchronous FIFOs: each has a worker thread running its copies, sets, kernel
 *     launches, value writes and waits, and event records and waits, in order. The NULL stream is
 *     one more such stream (without the legacy default stream's implicit synchronization).
 *   - Kernels are the host build of src/device/kernels/ (emu_kernels.cc), found by name in
 *     cuModuleGetFunction; launch parameters are copied at the launch, as CUDA does.
 * One device (EMU_NDEVICES), compute capability 9.0. */
#include "emu_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef EMU_NDEVICES
#define EMU_NDEVICES 1
#endif

#define EXPORT __attribute__((visibility("default")))

enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_INVALID_IMAGE = 200,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_FOUND = 500,
    ERR_NOT_READY = 600,
    MEM_HOST = 1,
    MEM_DEVICE = 2,
};

/* ---- memory ---- */

struct range {
    uintptr_t base;
    size_t bytes;
    int type;
};

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct range *ranges;
static size_t nranges, cap_ranges;

static int add_range(void *p, size_t bytes, int type)
{
    pthread_mutex_lock(&mem_lock);
    if (nranges == cap_ranges) {
        size_t cap = cap_ranges ? 2 * cap_ranges : 64;
        struct range *r = realloc(ranges, cap * sizeof *r);
        if (!r) {
            pthread_mutex_unlock(&mem_lock);
            return ERR_OUT_OF_MEMORY;
        }
        ranges = r;
        cap_ranges = cap;
    }
    ranges[nranges++] = (struct range){(uintptr_t)p, bytes, type};
    pthread_mutex_unlock(&mem_lock);
    return OK;
}

/* The type of the range holding p (0: none); removes it when is_remove and p is its base. */
static int find_range(uintptr_t p, bool is_remove)
{
    int type = 0;

    pthread_mutex_lock(&mem_lock);
    for (size_t i = 0; i < nranges; i++) {
        if (p >= ranges[i].base && p < ranges[i].base + ranges[i].bytes) {
            type = ranges[i].type;
            if (is_remove) {
                if (p != ranges[i].base)
                    type = 0;
                else
                    ranges[i] = ranges[--nranges];
            }
            break;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return type;
}

static void *alloc_range(size_t bytes, int type)
{
    void *p = NULL;

    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0)
        return NULL;
    memset(p, 0, bytes ? bytes : 1);
    if (add_range(p, bytes ? bytes : 1, type) != OK) {
        free(p);
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

EXPORT int cuInit(unsigned flags)
{
    return OK;
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
EXPORT int cuDeviceGetAttribute(int *v, int attr, int dev)
{
    *v = attr == 75 ? 9 : 0;
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

EXPORT int cuPointerGetAttributes(unsigned n, int *attrs, void **data, uintptr_t p)
{
    int type = find_range(p, false);

    for (unsigned a = 0; a < n; a++) {
        if (attrs[a] == 2) /* MEMORY_TYPE */
            *(unsigned *)data[a] = (unsigned)type;
        else if (attrs[a] == 8) /* IS_MANAGED */
            *(unsigned *)data[a] = 0;
        else if (attrs[a] == 9) /* DEVICE_ORDINAL */
            *(int *)data[a] = type ? 0 : -2;
        else
            return ERR_INVALID_VALUE;
    }
    return OK;
}

EXPORT int cuMemAlloc_v2(uintptr_t *p, size_t bytes)
{
    void *m = alloc_range(bytes, MEM_DEVICE);

    if (!m)
        return ERR_OUT_OF_MEMORY;
    *p = (uintptr_t)m;
    return OK;
}

EXPORT int cuMemFree_v2(uintptr_t p)
{
    if (find_range(p, true) != MEM_DEVICE)
        return ERR_INVALID_VALUE;
    free((void *)p);
    return OK;
}

EXPORT int cuMemHostAlloc(void **p, size_t bytes, unsigned flags)
{
    *p = alloc_range(bytes, MEM_HOST);
    return *p ? OK : ERR_OUT_OF_MEMORY;
}

EXPORT int cuMemFreeHost(void *p)
{
    if (find_range((uintptr_t)p, true) != MEM_HOST)
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

/* One process: a handle is the pointer itself. */
struct ipc_handle {
    char reserved[64];
};

EXPORT int cuIpcGetMemHandle(struct ipc_handle *h, uintptr_t p)
{
    memset(h, 0, sizeof *h);
    memcpy(h->reserved, &p, sizeof p);
    return find_range(p, false) == MEM_DEVICE ? OK : ERR_INVALID_VALUE;
}

EXPORT int cuIpcOpenMemHandle_v2(uintptr_t *p, struct ipc_handle h, unsigned flags)
{
    memcpy(p, h.reserved, sizeof *p);
    return OK;
}

EXPORT int cuIpcCloseMemHandle(uintptr_t p)
{
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
