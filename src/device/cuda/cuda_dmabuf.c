/* The CUDA backend's dma-buf export (GPUDirect RDMA, docs/networking.md): device memory as a
 * dma-buf fd for ibv_reg_dmabuf_mr, through cuMemGetHandleForAddressRange with
 * CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD (CUDA 11.7 and newer drivers). The symbols are resolved in
 * the driver library the backend opened (dlopen with RTLD_NOLOAD under the same name returns that
 * handle: nothing is loaded twice), and a driver without them only means "stage through host
 * memory". Compiled only: no NVIDIA GPU on the development machine. */
#include "device/dmabuf.h"

#include "common/check.h"
#include "device/driver_syms.h"
#include "common/config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

typedef int cu_result;
typedef uintptr_t cu_deviceptr;
typedef void *cu_handle;

/* As in cuda.h (their ABI is frozen). */
enum {
    CU_POINTER_ATTRIBUTE_CONTEXT = 1,
    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
    CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124,
    CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1,
};

static struct {
    cu_result (*get_handle)(void *handle, cu_deviceptr p, size_t bytes, int type,
                            unsigned long long flags);
    cu_result (*pointer_get_attribute)(void *data, int attr, cu_deviceptr p);
    cu_result (*device_get)(int *dev, int ordinal);
    cu_result (*device_get_attribute)(int *value, int attr, int dev);
    cu_result (*ctx_push)(cu_handle ctx);
    cu_result (*ctx_pop)(cu_handle *ctx);
} dm;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char missing[160]; /* empty once every symbol was found */

static void resolve(void)
{
    const char *name = ac_config_get()->cuda_library;
    const struct ac_driver_sym syms[] = {
        {"cuMemGetHandleForAddressRange", (void **)&dm.get_handle},
        {"cuPointerGetAttribute", (void **)&dm.pointer_get_attribute},
        {"cuDeviceGet", (void **)&dm.device_get},
        {"cuDeviceGetAttribute", (void **)&dm.device_get_attribute},
        {"cuCtxPushCurrent_v2", (void **)&dm.ctx_push},
        {"cuCtxPopCurrent_v2", (void **)&dm.ctx_pop},
    };
    name = name ? name : "libcuda.so.1";
    const char *lacking = ac_driver_syms_resolve(&name, 1, syms, sizeof(syms) / sizeof(syms[0]));
    if (lacking && !*lacking)
        snprintf(missing, sizeof(missing), "%s is not loaded", name);
    else if (lacking)
        snprintf(missing, sizeof(missing), "%s has no %s (driver older than CUDA 11.7)", name,
                 lacking);
}

ncclResult_t ac_cuda_dmabuf_export(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)ptr & ~(page - 1);
    uintptr_t end = ((uintptr_t)ptr + bytes + page - 1) & ~(page - 1);
    int ordinal = -1, dev = 0, is_supported = 0, fd = -1;
    cu_handle ctx = NULL, popped;

    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "cuda backend: no dma-buf export: %s", missing);
    if (dm.pointer_get_attribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                 (cu_deviceptr)ptr) != 0 ||
        dm.device_get(&dev, ordinal) != 0 ||
        dm.device_get_attribute(&is_supported, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, dev) != 0)
        return AC_FAIL(ncclInvalidUsage, "cuda backend: %p is not device memory CUDA knows", ptr);
    if (!is_supported)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: device %d cannot export dma-bufs "
                       "(CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0: NVIDIA's open kernel modules "
                       "are needed)",
                       ordinal);
    /* The memory's own context (NULL for cuMemCreate allocations: then the current one). */
    if (dm.pointer_get_attribute(&ctx, CU_POINTER_ATTRIBUTE_CONTEXT, (cu_deviceptr)ptr) != 0)
        ctx = NULL;
    if (ctx != NULL && dm.ctx_push(ctx) != 0)
        ctx = NULL;
    cu_result r = dm.get_handle(&fd, (cu_deviceptr)start, end - start,
                                CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
    if (ctx != NULL)
        dm.ctx_pop(&popped);
    if (r != 0 || fd < 0)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: cuMemGetHandleForAddressRange(%p, %zu bytes, DMA_BUF_FD) "
                       "failed (CUDA error %d)",
                       (void *)start, (size_t)(end - start), r);
    *fd_out = fd;
    *offset_out = (uint64_t)((uintptr_t)ptr - start);
    return ncclSuccess;
}
