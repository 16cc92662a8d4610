/* The CUDA backend's host_map (src/device/hostmap.h): cuMemHostRegister with DEVICEMAP (and
 * IOMEMORY for a NIC's doorbell page: the driver then maps the physical BAR, which is how a GPU
 * thread reaches a ConnectX UAR), then cuMemHostGetDevicePointer. The symbols are resolved in the
 * driver library the backend opened (RTLD_NOLOAD: nothing is loaded twice). Runs in the calling
 * thread's current context. Compiled only: no NVIDIA GPU on the development machine. */
#include "device/hostmap.h"

#include "common/check.h"
#include "device/driver_syms.h"
#include "common/config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

typedef int cu_result;
typedef uintptr_t cu_deviceptr;

/* As in cuda.h (their ABI is frozen). */
enum {
    CU_MEMHOSTREGISTER_PORTABLE = 0x01,
    CU_MEMHOSTREGISTER_DEVICEMAP = 0x02,
    CU_MEMHOSTREGISTER_IOMEMORY = 0x04,
};

static struct {
    cu_result (*host_register)(void *p, size_t bytes, unsigned flags);
    cu_result (*host_unregister)(void *p);
    cu_result (*get_device_pointer)(cu_deviceptr *d, void *p, unsigned flags);
    cu_result (*ctx_get_current)(void **ctx);
} hm;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char missing[160]; /* empty once every symbol was found */

static void resolve(void)
{
    const char *name = ac_config_get()->cuda_library;
    const struct ac_driver_sym syms[] = {
        {"cuMemHostRegister_v2", (void **)&hm.host_register},
        {"cuMemHostUnregister", (void **)&hm.host_unregister},
        {"cuMemHostGetDevicePointer_v2", (void **)&hm.get_device_pointer},
        {"cuCtxGetCurrent", (void **)&hm.ctx_get_current},
    };
    name = name ? name : "libcuda.so.1";
    const char *lacking = ac_driver_syms_resolve(&name, 1, syms, sizeof(syms) / sizeof(syms[0]));
    if (lacking && !*lacking)
        snprintf(missing, sizeof(missing), "%s is not loaded", name);
    else if (lacking)
        snprintf(missing, sizeof(missing), "%s has no %s", name, lacking);
}

ncclResult_t ac_cuda_host_map(void *ptr, size_t bytes, bool is_io, void **dev_ptr_out)
{
    void *ctx = NULL;
    cu_deviceptr d = 0;
    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "cuda backend: cannot map host memory: %s", missing);
    if (hm.ctx_get_current(&ctx) != 0 || ctx == NULL)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: no current CUDA context to map %p into "
                       "(make the GPU current first: cudaSetDevice)",
                       ptr);
    unsigned flags = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                     (is_io ? CU_MEMHOSTREGISTER_IOMEMORY : 0);
    cu_result r = hm.host_register(ptr, bytes, flags);
    if (r != 0)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: cuMemHostRegister(%p, %zu bytes%s) failed (CUDA error %d%s)",
                       ptr, bytes, is_io ? ", IOMEMORY" : "", r,
                       is_io ? ": mapping a NIC's doorbell page needs GPU peer access to its BAR"
                             : "");
    if ((r = hm.get_device_pointer(&d, ptr, 0)) != 0) {
        hm.host_unregister(ptr);
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: cuMemHostGetDevicePointer(%p) failed (CUDA error %d)", ptr,
                       r);
    }
    *dev_ptr_out = (void *)d;
    return ncclSuccess;
}

ncclResult_t ac_cuda_host_unmap(void *ptr)
{
    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "cuda backend: cannot unmap host memory: %s", missing);
    int r = hm.host_unregister(ptr);
    return r == 0 ? ncclSuccess
                  : AC_FAIL(ncclUnhandledCudaError,
                            "cuda backend: cuMemHostUnregister(%p) failed (CUDA error %d)", ptr, r);
}
