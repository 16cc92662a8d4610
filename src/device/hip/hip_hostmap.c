/* The HIP backend's host_map (src/device/hostmap.h): hipHostRegister with Mapped (and IoMemory for
 * a NIC's doorbell page), then hipHostGetDevicePointer, resolved in the runtime library the backend
 * opened (RTLD_NOLOAD: no second load). On AMD the doorbell page must be mapped this way (or
 * through HSA) for a GPU thread to ring a ConnectX doorbell (design note rule 7). Compiled only: no
 * AMD GPU on the development machine. */
#include "device/hostmap.h"

#include "common/check.h"
#include "device/driver_syms.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

/* As in hip_runtime_api.h. */
enum {
    HIP_HOST_REGISTER_PORTABLE = 0x1,
    HIP_HOST_REGISTER_MAPPED = 0x2,
    HIP_HOST_REGISTER_IO_MEMORY = 0x4,
};

static struct {
    int (*host_register)(void *p, size_t bytes, unsigned flags);
    int (*host_unregister)(void *p);
    int (*get_device_pointer)(void **d, void *p, unsigned flags);
} hm;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char missing[160]; /* empty once every symbol was found */

static void resolve(void)
{
    const struct ac_driver_sym syms[] = {
        {"hipHostRegister", (void **)&hm.host_register},
        {"hipHostUnregister", (void **)&hm.host_unregister},
        {"hipHostGetDevicePointer", (void **)&hm.get_device_pointer},
    };
    const char *const *names;
    size_t nnames = ac_hip_runtime_libs(&names);
    if (ac_driver_syms_resolve(names, nnames, syms, sizeof(syms) / sizeof(syms[0])) != NULL)
        snprintf(missing, sizeof(missing),
                 "no loaded HIP runtime with hipHostRegister and hipHostGetDevicePointer");
}

ncclResult_t ac_hip_host_map(void *ptr, size_t bytes, bool is_io, void **dev_ptr_out)
{
    void *d = NULL;
    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "hip backend: cannot map host memory: %s", missing);
    unsigned flags = HIP_HOST_REGISTER_PORTABLE | HIP_HOST_REGISTER_MAPPED |
                     (is_io ? HIP_HOST_REGISTER_IO_MEMORY : 0);
    int r = hm.host_register(ptr, bytes, flags);
    if (r != 0)
        return AC_FAIL(ncclInvalidUsage,
                       "hip backend: hipHostRegister(%p, %zu bytes%s) failed (HIP error %d)", ptr,
                       bytes, is_io ? ", IoMemory" : "", r);
    if ((r = hm.get_device_pointer(&d, ptr, 0)) != 0) {
        hm.host_unregister(ptr);
        return AC_FAIL(ncclInvalidUsage,
                       "hip backend: hipHostGetDevicePointer(%p) failed (HIP error %d)", ptr, r);
    }
    *dev_ptr_out = d;
    return ncclSuccess;
}

ncclResult_t ac_hip_host_unmap(void *ptr)
{
    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "hip backend: cannot unmap host memory: %s", missing);
    int r = hm.host_unregister(ptr);
    return r == 0 ? ncclSuccess
                  : AC_FAIL(ncclUnhandledCudaError,
                            "hip backend: hipHostUnregister(%p) failed (HIP error %d)", ptr, r);
}
