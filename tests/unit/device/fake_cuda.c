/* A fake libcuda.so.1 for tests/unit/device/test_backend.c: the driver API entry points the CUDA
 * backend loads, on host memory, so that its dlopen fallbacks, pointer classification and launch
 * marshalling are tested without a GPU. Built by mk/device.mk in variants:
 *   FAKE_NDEVICES=n        cuDeviceGetCount's answer
 *   FAKE_INIT_ERROR=e      cuInit's result (100: CUDA_ERROR_NO_DEVICE, as on a machine without GPU)
 *   FAKE_OMIT_LAUNCH       no cuLaunchKernel symbol (a driver too old)
 * "Device memory" is malloc'd memory that cuMemAlloc recorded; kernels are not run, their launch
 * is recorded and read back by the test through fake_cuda_last_launch. */
#include "device/kernels/launch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAKE_INIT_ERROR
#define FAKE_INIT_ERROR 0
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_ALLOCS 64

struct fake_launch {
    char name[64];
    unsigned grid, block;
    void *stream;
    void *copy_dst;
    const void *copy_src;
    uint64_t copy_bytes;
    struct ac_kreduce_args reduce;
    volatile uint32_t *flag; /* ac_k_signal, ac_k_wait */
    uint32_t flag_value;
};

static struct {
    uintptr_t base;
    size_t bytes;
} allocs[MAX_ALLOCS];
static int ctx_token;
static void *current_ctx;
static int event_polls;
static struct fake_launch last;

static int find_alloc(uintptr_t p)
{
    for (int i = 0; i < MAX_ALLOCS; i++)
        if (allocs[i].bytes && p >= allocs[i].base && p < allocs[i].base + allocs[i].bytes)
            return i;
    return -1;
}

EXPORT int cuInit(unsigned flags)
{
    return FAKE_INIT_ERROR;
}
EXPORT int cuDriverGetVersion(int *v)
{
    *v = 12040;
    return 0;
}
EXPORT int cuGetErrorString(int r, const char **s)
{
    *s = r == 100 ? "no CUDA-capable device is detected" : "fake error";
    return 0;
}
EXPORT int cuDeviceGetCount(int *n)
{
    *n = FAKE_NDEVICES;
    return 0;
}
EXPORT int cuDeviceGet(int *d, int ordinal)
{
    if (ordinal >= FAKE_NDEVICES)
        return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *d = ordinal;
    return 0;
}
EXPORT int cuDeviceGetName(char *name, int len, int dev)
{
    snprintf(name, len, "Fake GPU");
    return 0;
}
EXPORT int cuDeviceGetAttribute(int *v, int attr, int dev)
{
    *v = attr == 75 ? 9 : 0;
    return 0;
}
EXPORT int cuDevicePrimaryCtxRetain(void **ctx, int dev)
{
    *ctx = &ctx_token;
    return 0;
}
EXPORT int cuDevicePrimaryCtxRelease_v2(int dev)
{
    return 0;
}
EXPORT int cuCtxGetCurrent(void **ctx)
{
    *ctx = current_ctx;
    return 0;
}
EXPORT int cuCtxSetCurrent(void *ctx)
{
    current_ctx = ctx;
    return 0;
}

EXPORT int cuPointerGetAttributes(unsigned n, int *attrs, void **data, uintptr_t p)
{
    int i = find_alloc(p);

    for (unsigned a = 0; a < n; a++) {
        if (attrs[a] == 2) /* MEMORY_TYPE: DEVICE, or 0 for memory CUDA does not know */
            *(unsigned *)data[a] = i >= 0 ? 2 : 0;
        else if (attrs[a] == 8) /* IS_MANAGED */
            *(unsigned *)data[a] = 0;
        else if (attrs[a] == 9) /* DEVICE_ORDINAL */
            *(int *)data[a] = i >= 0 ? 0 : -2;
        else
            return 1;
    }
    return 0;
}

EXPORT int cuMemAlloc_v2(uintptr_t *p, size_t bytes)
{
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (allocs[i].bytes == 0) {
            allocs[i].base = (uintptr_t)malloc(bytes);
            allocs[i].bytes = bytes;
            *p = allocs[i].base;
            return 0;
        }
    }
    return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
}

EXPORT int cuMemFree_v2(uintptr_t p)
{
    int i = find_alloc(p);

    if (i < 0 || allocs[i].base != p)
        return 1;
    free((void *)p);
    allocs[i].bytes = 0;
    return 0;
}

EXPORT int cuMemHostAlloc(void **p, size_t bytes, unsigned flags)
{
    *p = calloc(1, bytes);
    return *p ? 0 : 2;
}

EXPORT int cuMemFreeHost(void *p)
{
    free(p);
    return 0;
}

EXPORT int cuMemcpyAsync(uintptr_t dst, uintptr_t src, size_t n, void *s)
{
    memcpy((void *)dst, (const void *)src, n);
    return 0;
}

EXPORT int cuMemsetD8Async(uintptr_t dst, unsigned char v, size_t n, void *s)
{
    memset((void *)dst, v, n);
    return 0;
}

EXPORT int cuStreamCreate(void **s, unsigned flags)
{
    *s = malloc(1);
    return 0;
}
EXPORT int cuStreamDestroy_v2(void *s)
{
    free(s);
    return 0;
}
EXPORT int cuStreamSynchronize(void *s)
{
    return 0;
}
EXPORT int cuStreamWaitEvent(void *s, void *e, unsigned flags)
{
    return 0;
}
EXPORT int cuEventCreate(void **e, unsigned flags)
{
    *e = malloc(1);
    return 0;
}
EXPORT int cuEventDestroy_v2(void *e)
{
    free(e);
    return 0;
}
EXPORT int cuEventRecord(void *e, void *s)
{
    event_polls = 0;
    return 0;
}
/* Not ready at the first query after a record, ready after. */
EXPORT int cuEventQuery(void *e)
{
    return event_polls++ == 0 ? 600 : 0;
}
EXPORT int cuEventSynchronize(void *e)
{
    return 0;
}

struct ipc_handle {
    char reserved[64];
};

EXPORT int cuIpcGetMemHandle(struct ipc_handle *h, uintptr_t p)
{
    memset(h, 0, sizeof *h);
    memcpy(h->reserved, &p, sizeof p);
    return find_alloc(p) >= 0 ? 0 : 1;
}

EXPORT int cuIpcOpenMemHandle_v2(uintptr_t *p, struct ipc_handle h, unsigned flags)
{
    memcpy(p, h.reserved, sizeof *p);
    return flags == 1 ? 0 : 1;
}

EXPORT int cuIpcCloseMemHandle(uintptr_t p)
{
    return 0;
}

/* A fatbin starts with 0xBA55ED50; anything else is CUDA_ERROR_INVALID_IMAGE. */
EXPORT int cuModuleLoadData(void **mod, const void *image)
{
    uint32_t magic;

    memcpy(&magic, image, sizeof magic);
    *mod = malloc(1);
    return magic == 0xBA55ED50u ? 0 : 200;
}

EXPORT int cuModuleGetFunction(void **fn, void *mod, const char *name)
{
    *fn = strdup(name);
    return 0;
}

EXPORT int cuModuleUnload(void *mod)
{
    free(mod);
    return 0;
}

#ifndef FAKE_OMIT_LAUNCH
EXPORT int cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned shmem, void *s, void **params, void **extra)
{
    memset(&last, 0, sizeof last);
    snprintf(last.name, sizeof last.name, "%s", (const char *)fn);
    last.grid = gx * gy * gz;
    last.block = bx * by * bz;
    last.stream = s;
    if (strcmp(last.name, AC_KERNEL_COPY_NAME) == 0) {
        memcpy(&last.copy_dst, params[0], sizeof last.copy_dst);
        memcpy(&last.copy_src, params[1], sizeof last.copy_src);
        memcpy(&last.copy_bytes, params[2], sizeof last.copy_bytes);
    } else if (strcmp(last.name, AC_KERNEL_SIGNAL_NAME) == 0 ||
               strcmp(last.name, AC_KERNEL_WAIT_NAME) == 0) {
        memcpy(&last.flag, params[0], sizeof last.flag);
        memcpy(&last.flag_value, params[1], sizeof last.flag_value);
    } else {
        memcpy(&last.reduce, params[0], sizeof last.reduce);
    }
    return 0;
}
#endif

EXPORT const struct fake_launch *fake_cuda_last_launch(void)
{
    return &last;
}
