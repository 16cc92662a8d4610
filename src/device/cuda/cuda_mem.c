/* The CUDA backend's shareable memory (struct ac_backend's mem_alloc_shareable and friends), as
 * NCCL's ncclMemAlloc does it: cuMemCreate with POSIX file descriptor handles where the device has
 * virtual memory management, else cuMemAlloc. CUDA refuses its legacy IPC (cuIpcGetMemHandle) on
 * cuMem memory, so such memory is exported as the fd of cuMemExportToShareableHandle, named in
 * the handle by the exporter's pid and fd number: the importer copies that fd with pidfd_getfd(2)
 * (Linux 5.6; the importer needs ptrace access to the exporter: same user with
 * kernel.yama.ptrace_scope 0, or CAP_SYS_PTRACE), and maps it with cuMemImportFromShareableHandle,
 * cuMemAddressReserve, cuMemMap and cuMemSetAccess. NCCL passes that fd over a unix socket
 * instead; pidfd_getfd needs no helper thread in the exporter, and fits a handle that travels as
 * bytes (the bootstrap, a connector). The exporter keeps its fd open until the memory is freed.
 * The driver's symbols are looked up in the library the backend opened; a driver without the
 * cuMem calls gets cuMemAlloc memory. Tested against the emulated driver only. */
#include "device/cuda/cuda_mem.h"

#include "common/check.h"
#include "common/log.h"
#include "common/procfd.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int cu_result;
typedef uintptr_t cu_deviceptr;
typedef unsigned long long cu_mem_handle; /* CUmemGenericAllocationHandle */

/* As in cuda.h (their ABI is frozen). */
struct cu_mem_location {
    int type;
    int id;
};
struct cu_mem_prop { /* CUmemAllocationProp */
    int type;
    int requested_handle_types;
    struct cu_mem_location location;
    void *win32_metadata;
    struct {
        unsigned char compression_type;
        unsigned char gpu_direct_rdma_capable;
        unsigned short usage;
        unsigned char reserved[4];
    } alloc_flags;
};
struct cu_mem_access_desc {
    struct cu_mem_location location;
    int flags;
};

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
    CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103,
    CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED = 110,
    CU_MEM_ALLOCATION_TYPE_PINNED = 1,
    CU_MEM_LOCATION_TYPE_DEVICE = 1,
    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
    CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
    CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
    CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1,
};

#define MAX_DEVICES 64

static struct {
    cu_result (*get_error_string)(cu_result r, const char **s);
    cu_result (*ctx_get_current)(void **ctx);
    cu_result (*device_get_count)(int *n);
    cu_result (*device_get_attribute)(int *v, int attr, int dev);
    cu_result (*mem_alloc)(cu_deviceptr *p, size_t bytes);
    cu_result (*mem_free)(cu_deviceptr p);
    /* optional */
    cu_result (*ctx_get_device)(int *dev);
    cu_result (*device_can_access_peer)(int *can, int dev, int peer);
    cu_result (*get_address_range)(cu_deviceptr *base, size_t *bytes, cu_deviceptr p);
    /* the cuMem calls: all or none */
    cu_result (*granularity)(size_t *g, const struct cu_mem_prop *prop, int option);
    cu_result (*create)(cu_mem_handle *h, size_t bytes, const struct cu_mem_prop *prop,
                        unsigned long long flags);
    cu_result (*release)(cu_mem_handle h);
    cu_result (*reserve)(cu_deviceptr *p, size_t bytes, size_t align, cu_deviceptr addr,
                         unsigned long long flags);
    cu_result (*address_free)(cu_deviceptr p, size_t bytes);
    cu_result (*map)(cu_deviceptr p, size_t bytes, size_t offset, cu_mem_handle h,
                     unsigned long long flags);
    cu_result (*unmap)(cu_deviceptr p, size_t bytes);
    cu_result (*set_access)(cu_deviceptr p, size_t bytes, const struct cu_mem_access_desc *desc,
                            size_t count);
    cu_result (*export_fd)(void *shareable, cu_mem_handle h, int type, unsigned long long flags);
    cu_result (*import_fd)(cu_mem_handle *h, void *os_handle, int type);
} cm;

static const struct {
    const char *name;
    void **slot;
    int group; /* 0: required, 1: optional one by one, 2: the cuMem calls, all or none */
} syms[] = {
    {"cuGetErrorString", (void **)&cm.get_error_string, 0},
    {"cuCtxGetCurrent", (void **)&cm.ctx_get_current, 0},
    {"cuDeviceGetCount", (void **)&cm.device_get_count, 0},
    {"cuDeviceGetAttribute", (void **)&cm.device_get_attribute, 0},
    {"cuMemAlloc_v2", (void **)&cm.mem_alloc, 0},
    {"cuMemFree_v2", (void **)&cm.mem_free, 0},
    {"cuCtxGetDevice", (void **)&cm.ctx_get_device, 1},
    {"cuDeviceCanAccessPeer", (void **)&cm.device_can_access_peer, 1},
    {"cuMemGetAddressRange_v2", (void **)&cm.get_address_range, 1},
    {"cuMemGetAllocationGranularity", (void **)&cm.granularity, 2},
    {"cuMemCreate", (void **)&cm.create, 2},
    {"cuMemRelease", (void **)&cm.release, 2},
    {"cuMemAddressReserve", (void **)&cm.reserve, 2},
    {"cuMemAddressFree", (void **)&cm.address_free, 2},
    {"cuMemMap", (void **)&cm.map, 2},
    {"cuMemUnmap", (void **)&cm.unmap, 2},
    {"cuMemSetAccess", (void **)&cm.set_access, 2},
    {"cuMemExportToShareableHandle", (void **)&cm.export_fd, 2},
    {"cuMemImportFromShareableHandle", (void **)&cm.import_fd, 2},
};

/* One allocation of mem_alloc_shareable. */
struct shareable {
    uintptr_t base;
    size_t bytes; /* rounded up to the granularity for cuMem memory */
    bool is_vmm;
    cu_mem_handle handle;
    int device;
    int fd; /* its POSIX fd, exported at the first ipc_export; -1 before */
    uint64_t serial;
    struct shareable *next;
};

/* A peer's cuMem allocation mapped here by ac_cuda_vmm_import. */
struct vmm_import {
    uintptr_t base;
    size_t bytes;
    struct vmm_import *next;
};

/* What an AC_IPC_POSIX_FD handle carries. serial tells one allocation of the exporter from
 * another, so that caches keyed by the handle never mistake a new allocation for a freed one. */
#define FD_HANDLE_MAGIC 0x44464d4d55434341ull /* "ACCUMMFD" */
struct fd_handle {
    uint64_t magic;
    int32_t pid;
    int32_t fd;
    uint64_t serial;
    uint64_t bytes;
    int32_t device;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Read without the lock by the calls that only look for this file's memory: false means none. */
static _Atomic bool is_resolved;
static bool has_vmm;
static struct shareable *allocs;
static struct vmm_import *imports;
static uint64_t next_serial = 1;

static ncclResult_t __attribute__((format(printf, 2, 3))) check(cu_result r, const char *fmt, ...)
{
    const char *s = NULL;
    char what[160];
    va_list ap;

    if (r == CUDA_SUCCESS)
        return ncclSuccess;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!cm.get_error_string || cm.get_error_string(r, &s) != CUDA_SUCCESS || !s)
        s = "unknown error";
    return AC_FAIL(ncclUnhandledCudaError, "cuda backend: %s failed: %s (CUDA error %d)", what, s,
                   r);
}

static ncclResult_t resolve(void)
{
    void *lib;
    bool has_all = true;

    pthread_mutex_lock(&lock);
    if (is_resolved) {
        pthread_mutex_unlock(&lock);
        return ncclSuccess;
    }
    if (!(lib = ac_cuda_driver_lib())) {
        pthread_mutex_unlock(&lock);
        return AC_FAIL(ncclInvalidUsage, "cuda backend: the driver is not loaded");
    }
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot && syms[i].group == 0) {
            pthread_mutex_unlock(&lock);
            return AC_FAIL(ncclInvalidUsage, "cuda backend: the driver has no %s", syms[i].name);
        }
        if (!*syms[i].slot && syms[i].group == 2)
            has_all = false;
    }
    has_vmm = has_all;
    atomic_store(&is_resolved, true);
    pthread_mutex_unlock(&lock);
    return ncclSuccess;
}

void ac_cuda_mem_fini(void)
{
    pthread_mutex_lock(&lock);
    while (allocs) {
        struct shareable *s = allocs;
        allocs = s->next;
        if (s->fd >= 0)
            close(s->fd);
        free(s);
    }
    while (imports) {
        struct vmm_import *v = imports;
        imports = v->next;
        free(v);
    }
    memset(&cm, 0, sizeof cm);
    has_vmm = false;
    atomic_store(&is_resolved, false);
    pthread_mutex_unlock(&lock);
}

/* The calling thread's device; device 0 (made current) when it has no context, as cudart does. */
static ncclResult_t current_device(int *dev_out)
{
    void *ctx = NULL;

    AC_CHECK(check(cm.ctx_get_current(&ctx), "cuCtxGetCurrent"));
    if (!ctx) {
        AC_CHECK(ac_cuda_set_device(0));
        *dev_out = 0;
        return ncclSuccess;
    }
    *dev_out = 0;
    if (cm.ctx_get_device)
        AC_CHECK(check(cm.ctx_get_device(dev_out), "cuCtxGetDevice"));
    return ncclSuccess;
}

static int attribute(int dev, int attr)
{
    int v = 0;

    return cm.device_get_attribute(&v, attr, dev) == CUDA_SUCCESS ? v : 0;
}

/* Read and write access for dev and for every device that can reach dev's memory. */
static ncclResult_t set_access(cu_deviceptr p, size_t bytes, int dev, bool with_peers)
{
    struct cu_mem_access_desc desc[MAX_DEVICES];
    int ndev = 0;
    size_t n = 0;

    desc[n++] = (struct cu_mem_access_desc){{CU_MEM_LOCATION_TYPE_DEVICE, dev},
                                            CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    if (with_peers && cm.device_can_access_peer &&
        cm.device_get_count(&ndev) == CUDA_SUCCESS) {
        for (int d = 0; d < ndev && d < MAX_DEVICES; d++) {
            int can = 0;
            if (d != dev && cm.device_can_access_peer(&can, d, dev) == CUDA_SUCCESS && can)
                desc[n++] = (struct cu_mem_access_desc){{CU_MEM_LOCATION_TYPE_DEVICE, d},
                                                        CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        }
    }
    return check(cm.set_access(p, bytes, desc, n), "cuMemSetAccess(%p, %zu bytes, %zu devices)",
                 (void *)p, bytes, n);
}

/* cuMemCreate, reserve, map, access. *is_unsupported_out: the driver refused cuMemCreate with
 * CUDA_ERROR_NOT_SUPPORTED, nothing was allocated: the caller falls back to cuMemAlloc. */
static ncclResult_t vmm_alloc(int dev, size_t bytes, struct shareable *s,
                              bool *is_unsupported_out)
{
    struct cu_mem_prop prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                               .requested_handle_types = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                               .location = {CU_MEM_LOCATION_TYPE_DEVICE, dev}};
    size_t gran = 0;
    cu_mem_handle h = 0;
    cu_deviceptr va = 0;
    cu_result r;
    ncclResult_t res;

    *is_unsupported_out = false;
    if (attribute(dev, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED))
        prop.alloc_flags.gpu_direct_rdma_capable = 1;
    AC_CHECK(check(cm.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                   "cuMemGetAllocationGranularity(device %d)", dev));
    if (gran == 0)
        gran = 1;
    bytes = (bytes + gran - 1) / gran * gran;
    r = cm.create(&h, bytes, &prop, 0);
    if (r == CUDA_ERROR_NOT_SUPPORTED) {
        *is_unsupported_out = true;
        return ncclSuccess;
    }
    AC_CHECK(check(r, "cuMemCreate(%zu bytes, device %d, POSIX fd handles)", bytes, dev));
    AC_CHECK_GOTO(check(cm.reserve(&va, bytes, gran, 0, 0), "cuMemAddressReserve(%zu bytes)",
                        bytes),
                  res, release);
    AC_CHECK_GOTO(check(cm.map(va, bytes, 0, h, 0), "cuMemMap(%p, %zu bytes)", (void *)va, bytes),
                  res, free_va);
    AC_CHECK_GOTO(set_access(va, bytes, dev, true), res, unmap);
    s->base = va;
    s->bytes = bytes;
    s->is_vmm = true;
    s->handle = h;
    return ncclSuccess;
unmap:
    cm.unmap(va, bytes);
free_va:
    cm.address_free(va, bytes);
release:
    cm.release(h);
    return res;
}

ncclResult_t ac_cuda_mem_alloc_shareable(size_t bytes, void **ptr_out)
{
    struct shareable *s;
    bool is_unsupported = true;
    ncclResult_t res = ncclSuccess;
    int dev = 0;

    AC_CHECK(resolve());
    AC_CHECK(current_device(&dev));
    if (!(s = calloc(1, sizeof *s)))
        return AC_FAIL(ncclSystemError, "cuda backend: out of memory");
    s->fd = -1;
    s->device = dev;
    if (has_vmm && attribute(dev, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) &&
        attribute(dev, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED))
        AC_CHECK_GOTO(vmm_alloc(dev, bytes ? bytes : 1, s, &is_unsupported), res, fail);
    if (is_unsupported) {
        cu_deviceptr p = 0;
        AC_CHECK_GOTO(check(cm.mem_alloc(&p, bytes ? bytes : 1), "cuMemAlloc(%zu bytes, device %d)",
                            bytes, dev),
                      res, fail);
        s->base = p;
        s->bytes = bytes;
    }
    AC_INFO(AC_SUB_ALLOC, "ncclMemAlloc: %zu bytes of device %d memory at %p (%s)", s->bytes, dev,
            (void *)s->base, s->is_vmm ? "cuMem, POSIX fd shareable" : "cuMemAlloc");
    pthread_mutex_lock(&lock);
    s->serial = next_serial++;
    s->next = allocs;
    allocs = s;
    pthread_mutex_unlock(&lock);
    *ptr_out = (void *)s->base;
    return ncclSuccess;
fail:
    free(s);
    return res;
}

ncclResult_t ac_cuda_mem_free_shareable(void *ptr, bool *is_mine_out)
{
    struct shareable *s = NULL;
    ncclResult_t res = ncclSuccess;

    *is_mine_out = false;
    if (!atomic_load(&is_resolved))
        return ncclSuccess; /* nothing was allocated since the driver was loaded */
    pthread_mutex_lock(&lock);
    for (struct shareable **at = &allocs; *at; at = &(*at)->next)
        if ((*at)->base == (uintptr_t)ptr) {
            s = *at;
            *at = s->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    if (!s)
        return ncclSuccess;
    *is_mine_out = true;
    if (s->is_vmm) {
        /* Importers' mappings keep the physical memory until they unmap it, as with CUDA. */
        res = check(cm.unmap(s->base, s->bytes), "cuMemUnmap(%p, %zu bytes)", ptr, s->bytes);
        if (res == ncclSuccess)
            res = check(cm.release(s->handle), "cuMemRelease(%p)", ptr);
        if (res == ncclSuccess)
            res = check(cm.address_free(s->base, s->bytes), "cuMemAddressFree(%p)", ptr);
        if (s->fd >= 0)
            close(s->fd);
    } else {
        void *ctx = NULL;
        if (cm.ctx_get_current(&ctx) == CUDA_SUCCESS && !ctx)
            res = ac_cuda_set_device(s->device);
        if (res == ncclSuccess)
            res = check(cm.mem_free(s->base), "cuMemFree(%p)", ptr);
    }
    free(s);
    return res;
}

ncclResult_t ac_cuda_mem_range(const void *ptr, void **base_out, size_t *bytes_out)
{
    cu_deviceptr base = 0;
    size_t bytes = 0;

    AC_CHECK(resolve());
    if (!cm.get_address_range)
        return AC_FAIL(ncclInvalidUsage, "cuda backend: the driver has no cuMemGetAddressRange_v2");
    AC_CHECK(check(cm.get_address_range(&base, &bytes, (cu_deviceptr)ptr),
                   "cuMemGetAddressRange(%p)", ptr));
    *base_out = (void *)base;
    *bytes_out = bytes;
    return ncclSuccess;
}

ncclResult_t ac_cuda_vmm_export(void *ptr, struct ac_ipc_handle *handle_out, bool *is_done_out)
{
    struct fd_handle fh = {.magic = FD_HANDLE_MAGIC, .pid = (int32_t)getpid()};
    struct shareable *s;
    ncclResult_t res = ncclSuccess;
    uintptr_t p = (uintptr_t)ptr;

    *is_done_out = false;
    if (!atomic_load(&is_resolved))
        return ncclSuccess;
    pthread_mutex_lock(&lock);
    for (s = allocs; s && !(s->is_vmm && p >= s->base && p - s->base < s->bytes); s = s->next)
        ;
    if (s && s->fd < 0) {
        int fd = -1;
        res = check(cm.export_fd(&fd, s->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
                    "cuMemExportToShareableHandle(%p, POSIX fd)", (void *)s->base);
        if (res == ncclSuccess)
            s->fd = fd;
    }
    if (s && res == ncclSuccess) {
        fh.fd = s->fd;
        fh.serial = s->serial;
        fh.bytes = s->bytes;
        fh.device = s->device;
    }
    pthread_mutex_unlock(&lock);
    if (!s || res != ncclSuccess)
        return res;
    memset(handle_out, 0, sizeof *handle_out);
    memcpy(handle_out->bytes, &fh, sizeof fh);
    handle_out->kind = AC_IPC_POSIX_FD;
    *is_done_out = true;
    return ncclSuccess;
}

ncclResult_t ac_cuda_vmm_import(const struct ac_ipc_handle *handle, void **ptr_out)
{
    struct fd_handle fh;
    struct cu_mem_prop prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                               .requested_handle_types = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR};
    struct vmm_import *v;
    cu_mem_handle h = 0;
    cu_deviceptr va = 0;
    size_t gran = 0;
    ncclResult_t res;
    int fd, dev = 0;

    memcpy(&fh, handle->bytes, sizeof fh);
    if (handle->kind != AC_IPC_POSIX_FD || fh.magic != FD_HANDLE_MAGIC || fh.bytes == 0)
        return AC_FAIL(ncclInvalidArgument, "cuda backend: not a cuMem IPC handle");
    if (fh.pid == (int32_t)getpid())
        return AC_FAIL(ncclInvalidUsage, "cuda backend: the IPC handle is of this process (use "
                                         "the memory's own address)");
    AC_CHECK(resolve());
    if (!has_vmm)
        return AC_FAIL(ncclInvalidUsage, "cuda backend: the driver has no cuMem calls to import "
                                         "a POSIX fd handle");
    AC_CHECK(current_device(&dev));
    if ((fd = ac_fd_of_process(fh.pid, fh.fd)) < 0)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: cannot take fd %d of process %d (pidfd_getfd: %s; it needs "
                       "Linux 5.6 and ptrace access to that process: same user with "
                       "kernel.yama.ptrace_scope 0, or CAP_SYS_PTRACE)",
                       (int)fh.fd, (int)fh.pid, strerror(errno));
    res = check(cm.import_fd(&h, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                "cuMemImportFromShareableHandle(fd of process %d)", (int)fh.pid);
    close(fd);
    AC_CHECK(res);
    prop.location = (struct cu_mem_location){CU_MEM_LOCATION_TYPE_DEVICE, dev};
    AC_CHECK_GOTO(check(cm.granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
                        "cuMemGetAllocationGranularity(device %d)", dev),
                  res, release);
    AC_CHECK_GOTO(check(cm.reserve(&va, fh.bytes, gran, 0, 0), "cuMemAddressReserve(%zu bytes)",
                        (size_t)fh.bytes),
                  res, release);
    AC_CHECK_GOTO(check(cm.map(va, fh.bytes, 0, h, 0), "cuMemMap(%p, %zu bytes)", (void *)va,
                        (size_t)fh.bytes),
                  res, free_va);
    AC_CHECK_GOTO(set_access(va, fh.bytes, dev, false), res, unmap);
    if (!(v = calloc(1, sizeof *v))) {
        res = AC_FAIL(ncclSystemError, "cuda backend: out of memory");
        goto unmap;
    }
    cm.release(h); /* the mapping holds the memory from now on */
    v->base = va;
    v->bytes = fh.bytes;
    pthread_mutex_lock(&lock);
    v->next = imports;
    imports = v;
    pthread_mutex_unlock(&lock);
    *ptr_out = (void *)va;
    return ncclSuccess;
unmap:
    cm.unmap(va, fh.bytes);
free_va:
    cm.address_free(va, fh.bytes);
release:
    cm.release(h);
    return res;
}

ncclResult_t ac_cuda_vmm_close(void *ptr, bool *is_done_out)
{
    struct vmm_import *v = NULL;
    ncclResult_t res;

    *is_done_out = false;
    if (!atomic_load(&is_resolved))
        return ncclSuccess;
    pthread_mutex_lock(&lock);
    for (struct vmm_import **at = &imports; *at; at = &(*at)->next)
        if ((*at)->base == (uintptr_t)ptr) {
            v = *at;
            *at = v->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    if (!v)
        return ncclSuccess;
    *is_done_out = true;
    res = check(cm.unmap(v->base, v->bytes), "cuMemUnmap(%p, %zu bytes)", ptr, v->bytes);
    if (res == ncclSuccess)
        res = check(cm.address_free(v->base, v->bytes), "cuMemAddressFree(%p)", ptr);
    free(v);
    return res;
}
