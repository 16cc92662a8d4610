/* The HIP backend's dma-buf export (GPUDirect RDMA, docs/networking.md): device memory as a
 * dma-buf fd for ibv_reg_dmabuf_mr, through hipMemGetHandleForAddressRange with
 * hipMemRangeHandleTypeDmaBufFd where the runtime has it (ROCm 6), resolved in the runtime
 * library the backend opened (RTLD_NOLOAD: that handle, no second load). Older runtimes only mean
 * "stage through host memory". Compiled only: no AMD GPU on the development machine. */
#include "device/dmabuf.h"

#include "common/check.h"
#include "device/driver_syms.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

enum { HIP_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1 };

static int (*get_handle)(void *handle, void *p, size_t bytes, int type, unsigned long long flags);
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char missing[160]; /* empty once the call was found */

static void resolve(void)
{
    const struct ac_driver_sym syms[] = {
        {"hipMemGetHandleForAddressRange", (void **)&get_handle},
    };
    const char *const *names;
    size_t nnames = ac_hip_runtime_libs(&names);
    if (ac_driver_syms_resolve(names, nnames, syms, 1) != NULL)
        snprintf(missing, sizeof(missing),
                 "the HIP runtime loaded has no hipMemGetHandleForAddressRange (ROCm 6 or newer)");
}

ncclResult_t ac_hip_dmabuf_export(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)ptr & ~(page - 1);
    uintptr_t end = ((uintptr_t)ptr + bytes + page - 1) & ~(page - 1);
    int fd = -1;

    pthread_once(&once, resolve);
    if (missing[0])
        return AC_FAIL(ncclInvalidUsage, "hip backend: no dma-buf export: %s", missing);
    int r = get_handle(&fd, (void *)start, end - start, HIP_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
    if (r != 0 || fd < 0)
        return AC_FAIL(ncclInvalidUsage,
                       "hip backend: hipMemGetHandleForAddressRange(%p, %zu bytes, DmaBufFd) "
                       "failed (HIP error %d)",
                       (void *)start, (size_t)(end - start), r);
    *fd_out = fd;
    *offset_out = (uint64_t)((uintptr_t)ptr - start);
    return ncclSuccess;
}
