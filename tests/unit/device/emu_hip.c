/* An emulated HIP runtime (libamdhip64.so's entry points that AnyCCL's HIP backend calls), as a
 * thin layer over the emulated CUDA driver (emu_cuda.c, libcuda_emu.so, linked), so that the HIP
 * backend runs collectives on "GPU buffers" on a machine without a GPU: the same memory, streams
 * and host-built kernels, reached through HIP's calls and conventions (a current device per
 * thread instead of contexts, ROCm 6's memory type and IPC flag values, a code object bundle
 * instead of a fatbin). Memory a test allocates through libcuda_emu.so is HIP device memory here
 * (one range table). Built by mk/device.mk as $(BUILD)/tests/unit/device/fake/libhip_emu.so;
 * the library opens it when ANYCCL_HIP_LIBRARY names it. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- the emulated CUDA driver (emu_cuda.c) ---- */
int cuInit(unsigned flags);
int cuGetErrorString(int r, const char **s);
int cuDeviceGetCount(int *n);
int cuDeviceGetName(char *name, int len, int dev);
int cuDeviceCanAccessPeer(int *can, int dev, int peer);
int cuDevicePrimaryCtxRetain(void **ctx, int dev);
int cuCtxSetCurrent(void *ctx);
int cuPointerGetAttributes(unsigned n, int *attrs, void **data, uintptr_t p);
int cuMemGetAddressRange_v2(uintptr_t *base, size_t *bytes, uintptr_t p);
int cuMemAlloc_v2(uintptr_t *p, size_t bytes);
int cuMemFree_v2(uintptr_t p);
int cuMemHostAlloc(void **p, size_t bytes, unsigned flags);
int cuMemFreeHost(void *p);
int cuMemcpyAsync(uintptr_t dst, uintptr_t src, size_t n, void *s);
int cuMemsetD8Async(uintptr_t dst, unsigned char v, size_t n, void *s);
int cuStreamCreate(void **s, unsigned flags);
int cuStreamDestroy_v2(void *s);
int cuStreamSynchronize(void *s);
int cuStreamWaitEvent(void *s, void *e, unsigned flags);
int cuEventCreate(void **e, unsigned flags);
int cuEventDestroy_v2(void *e);
int cuEventRecord(void *e, void *s);
int cuEventQuery(void *e);
int cuEventSynchronize(void *e);
struct ipc_handle {
    char reserved[64];
};
int cuIpcGetMemHandle(struct ipc_handle *h, uintptr_t p);
int cuIpcOpenMemHandle_v2(uintptr_t *p, struct ipc_handle h, unsigned flags);
int cuIpcCloseMemHandle(uintptr_t p);
int cuModuleGetFunction(void **fn, void *mod, const char *name);
int cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shmem, void *s, void **params, void **extra);

enum {
    HIP_OK = 0,
    HIP_ERR_INVALID_VALUE = 1,
    HIP_ERR_INVALID_DEVICE = 101,
    HIP_ERR_INVALID_IMAGE = 200,
    HIP_ERR_NOT_FOUND = 500,
    HIP_PEER_ALREADY_ENABLED = 704,
    HIP_MEMORY_TYPE_HOST = 1, /* ROCm 6 values (hipRuntimeGetVersion says 6.2) */
    HIP_MEMORY_TYPE_DEVICE = 2,
};

/* What the driver's calls return, as HIP's codes (the same numbers for those that occur). */
static __thread int last_error;
static __thread int current_device;
static __thread int has_context;

static int ret(int r)
{
    if (r != 0)
        last_error = r;
    return r;
}

/* HIP needs no context: the calling thread's device is used (hipSetDevice, default 0). */
static void need_context(void)
{
    void *ctx;

    if (has_context)
        return;
    if (cuDevicePrimaryCtxRetain(&ctx, current_device) == 0 && cuCtxSetCurrent(ctx) == 0)
        has_context = 1;
}

EXPORT int hipInit(unsigned flags)
{
    return ret(cuInit(flags));
}

EXPORT int hipRuntimeGetVersion(int *v)
{
    *v = 60200000; /* 6.2: major * 10000000 + minor * 100000 */
    return HIP_OK;
}

EXPORT const char *hipGetErrorString(int e)
{
    const char *s = NULL;

    cuGetErrorString(e, &s);
    return s ? s : "emulated HIP error";
}

EXPORT int hipGetLastError(void)
{
    int e = last_error;

    last_error = 0;
    return e;
}

EXPORT int hipGetDeviceCount(int *n)
{
    return ret(cuDeviceGetCount(n));
}

EXPORT int hipDeviceGetName(char *name, int len, int dev)
{
    int r = cuDeviceGetName(name, len, dev);

    if (r == 0)
        snprintf(name, (size_t)len, "emulated HIP device %d", dev);
    return ret(r);
}

EXPORT int hipGetDevice(int *dev)
{
    *dev = current_device;
    return HIP_OK;
}

EXPORT int hipSetDevice(int dev)
{
    int n = 0;

    if (cuDeviceGetCount(&n) != 0 || dev < 0 || dev >= n)
        return ret(HIP_ERR_INVALID_DEVICE);
    if (dev != current_device)
        has_context = 0;
    current_device = dev;
    need_context();
    return HIP_OK;
}

EXPORT int hipDeviceCanAccessPeer(int *can, int dev, int peer)
{
    return ret(cuDeviceCanAccessPeer(can, dev, peer));
}

EXPORT int hipDeviceEnablePeerAccess(int peer, unsigned flags)
{
    (void)flags;
    return peer == current_device ? ret(HIP_ERR_INVALID_DEVICE) : HIP_OK;
}

/* hipPointerAttribute_t of ROCm 6: type, device, device and host pointers, managed, flags.
 * Written out from HIP's header, not taken from the library's copy (hip_backend.c): the test
 * states the layout independently, so a wrong one in the library shows. */
struct hip_ptr_attr {
    int type;
    int device;
    void *device_pointer;
    void *host_pointer;
    int is_managed;
    unsigned allocation_flags;
};

/* ROCm 6: memory the runtime does not know is "unregistered" (type 0), not an error. */
EXPORT int hipPointerGetAttributes(struct hip_ptr_attr *attr, const void *p)
{
    unsigned type = 0;
    int ordinal = 0;
    int attrs[] = {2 /* MEMORY_TYPE */, 9 /* DEVICE_ORDINAL */};
    void *data[] = {&type, &ordinal};
    int r = cuPointerGetAttributes(2, attrs, data, (uintptr_t)p);

    if (r != 0)
        return ret(r);
    memset(attr, 0, sizeof *attr);
    attr->type = type == 2 ? HIP_MEMORY_TYPE_DEVICE : type == 1 ? HIP_MEMORY_TYPE_HOST : 0;
    attr->device = type == 2 ? ordinal : 0;
    attr->device_pointer = type ? (void *)p : NULL;
    attr->host_pointer = type == 1 ? (void *)p : NULL;
    return HIP_OK;
}

EXPORT int hipMemGetAddressRange(void **base, size_t *bytes, void *p)
{
    return ret(cuMemGetAddressRange_v2((uintptr_t *)base, bytes, (uintptr_t)p));
}

EXPORT int hipMalloc(void **p, size_t bytes)
{
    need_context();
    return ret(cuMemAlloc_v2((uintptr_t *)p, bytes));
}

EXPORT int hipFree(void *p)
{
    return ret(cuMemFree_v2((uintptr_t)p));
}

EXPORT int hipHostMalloc(void **p, size_t bytes, unsigned flags)
{
    (void)flags;
    need_context();
    return ret(cuMemHostAlloc(p, bytes, 0));
}

EXPORT int hipHostFree(void *p)
{
    return ret(cuMemFreeHost(p));
}

EXPORT int hipMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *s)
{
    (void)kind; /* hipMemcpyDefault: one address space here */
    return ret(cuMemcpyAsync((uintptr_t)dst, (uintptr_t)src, n, s));
}

EXPORT int hipMemsetAsync(void *dst, int value, size_t n, void *s)
{
    return ret(cuMemsetD8Async((uintptr_t)dst, (unsigned char)value, n, s));
}

EXPORT int hipStreamCreateWithFlags(void **s, unsigned flags)
{
    need_context();
    return ret(cuStreamCreate(s, flags));
}

EXPORT int hipStreamDestroy(void *s)
{
    return ret(cuStreamDestroy_v2(s));
}

EXPORT int hipStreamSynchronize(void *s)
{
    return ret(cuStreamSynchronize(s));
}

EXPORT int hipStreamWaitEvent(void *s, void *e, unsigned flags)
{
    return ret(cuStreamWaitEvent(s, e, flags));
}

EXPORT int hipEventCreateWithFlags(void **e, unsigned flags)
{
    return ret(cuEventCreate(e, flags));
}

EXPORT int hipEventDestroy(void *e)
{
    return ret(cuEventDestroy_v2(e));
}

EXPORT int hipEventRecord(void *e, void *s)
{
    return ret(cuEventRecord(e, s));
}

EXPORT int hipEventQuery(void *e)
{
    return cuEventQuery(e); /* not ready is no error to remember */
}

EXPORT int hipEventSynchronize(void *e)
{
    return ret(cuEventSynchronize(e));
}

EXPORT int hipIpcGetMemHandle(struct ipc_handle *h, void *p)
{
    return ret(cuIpcGetMemHandle(h, (uintptr_t)p));
}

/* ROCm 6's hipIpcMemLazyEnablePeerAccess is 1, as the CUDA flag the driver requires. */
EXPORT int hipIpcOpenMemHandle(void **p, struct ipc_handle h, unsigned flags)
{
    need_context();
    return ret(cuIpcOpenMemHandle_v2((uintptr_t *)p, h, flags));
}

EXPORT int hipIpcCloseMemHandle(void *p)
{
    return ret(cuIpcCloseMemHandle((uintptr_t)p));
}

/* The image is the library's embedded code object bundle (clang's offload bundle); its code is
 * not used: the functions are the host build of the same source, found by name. */
static int module_token;

EXPORT int hipModuleLoadData(void **mod, const void *image)
{
    static const char magic[] = "__CLANG_OFFLOAD_BUNDLE__";

    if (!image || memcmp(image, magic, sizeof magic - 1) != 0)
        return ret(HIP_ERR_INVALID_IMAGE);
    *mod = &module_token;
    return HIP_OK;
}

EXPORT int hipModuleGetFunction(void **fn, void *mod, const char *name)
{
    return ret(mod == &module_token ? cuModuleGetFunction(fn, mod, name) : HIP_ERR_NOT_FOUND);
}

EXPORT int hipModuleUnload(void *mod)
{
    return mod == &module_token ? HIP_OK : ret(HIP_ERR_INVALID_VALUE);
}

EXPORT int hipModuleLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                 unsigned by, unsigned bz, unsigned shmem, void *s, void **params,
                                 void **extra)
{
    return ret(cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}
