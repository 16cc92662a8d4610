/* The CUDA backend: the driver API (libcuda.so.1, which every NVIDIA driver installs) opened with
 * dlopen at first use, so that the library builds and runs without the CUDA toolkit. The kernels
 * come from the fatbin that mk/device.mk embeds (sm_80, sm_90 and PTX for later GPUs), loaded into
 * each context on its first launch. The runtime library (libcudart) is not needed: a user's
 * cudaStream_t is a CUstream, and the driver API covers every call made here. Calls use the
 * calling thread's current context; with none, device 0's primary context (as cudart would). */
#include "device/backend.h"
#include "device/cuda/cuda_mem.h"
#include "device/dmabuf.h"
#include "device/hostmap.h"
#include "device/kernels/devcoll.h"
#include "device/kernels/launch.h"

#include "common/check.h"
#include "common/config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The driver API's types and the enum values used, as in cuda.h (their ABI is frozen). */
typedef int cu_result;
typedef int cu_device;
typedef uintptr_t cu_deviceptr;
typedef void *cu_handle; /* CUcontext, CUstream, CUevent, CUmodule, CUfunction */
struct cu_ipc_mem_handle {
    char reserved[AC_IPC_HANDLE_BYTES];
};

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
    CU_POINTER_ATTRIBUTE_IS_MANAGED = 8,
    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
    CU_MEMORYTYPE_DEVICE = 2,
    CU_STREAM_NON_BLOCKING = 1,
    CU_EVENT_DISABLE_TIMING = 2,
    CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1,
    CU_MEMHOSTALLOC_PORTABLE = 1,
    CU_MEMHOSTALLOC_DEVICEMAP = 2,
    CU_STREAM_WAIT_VALUE_GEQ = 0,
    CU_STREAM_WRITE_VALUE_DEFAULT = 0,
    CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704,
};

#define MAX_DEVICES 64
#define MAX_MODULES 16

static struct {
    cu_result (*init)(unsigned flags);
    cu_result (*driver_get_version)(int *version);
    cu_result (*get_error_string)(cu_result r, const char **str);
    cu_result (*device_get_count)(int *count);
    cu_result (*device_get)(cu_device *dev, int ordinal);
    cu_result (*device_get_name)(char *name, int len, cu_device dev);
    cu_result (*device_get_attribute)(int *value, int attr, cu_device dev);
    cu_result (*primary_ctx_retain)(cu_handle *ctx, cu_device dev);
    cu_result (*primary_ctx_release)(cu_device dev);
    cu_result (*ctx_get_current)(cu_handle *ctx);
    cu_result (*ctx_set_current)(cu_handle ctx);
    cu_result (*pointer_get_attributes)(unsigned n, int *attrs, void **data, cu_deviceptr p);
    cu_result (*mem_alloc)(cu_deviceptr *p, size_t bytes);
    cu_result (*mem_free)(cu_deviceptr p);
    cu_result (*memcpy_async)(cu_deviceptr dst, cu_deviceptr src, size_t bytes, cu_handle s);
    cu_result (*memset_d8_async)(cu_deviceptr dst, unsigned char v, size_t n, cu_handle s);
    cu_result (*stream_create)(cu_handle *s, unsigned flags);
    cu_result (*stream_destroy)(cu_handle s);
    cu_result (*stream_synchronize)(cu_handle s);
    cu_result (*stream_wait_event)(cu_handle s, cu_handle e, unsigned flags);
    cu_result (*event_create)(cu_handle *e, unsigned flags);
    cu_result (*event_destroy)(cu_handle e);
    cu_result (*event_record)(cu_handle e, cu_handle s);
    cu_result (*event_query)(cu_handle e);
    cu_result (*event_synchronize)(cu_handle e);
    cu_result (*ipc_get_mem_handle)(struct cu_ipc_mem_handle *h, cu_deviceptr p);
    cu_result (*ipc_open_mem_handle)(cu_deviceptr *p, struct cu_ipc_mem_handle h, unsigned flags);
    cu_result (*ipc_close_mem_handle)(cu_deviceptr p);
    cu_result (*module_load_data)(cu_handle *mod, const void *image);
    cu_result (*module_get_function)(cu_handle *fn, cu_handle mod, const char *name);
    cu_result (*module_unload)(cu_handle mod);
    cu_result (*launch_kernel)(cu_handle fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned shmem, cu_handle s, void **params,
                               void **extra);
    cu_result (*mem_host_alloc)(void **p, size_t bytes, unsigned flags);
    cu_result (*mem_free_host)(void *p);
    /* Optional (NULL when the driver lacks them): then the kernels of sync.cuh do their work. */
    cu_result (*stream_write_value32)(cu_handle s, cu_deviceptr addr, uint32_t v, unsigned flags);
    cu_result (*stream_wait_value32)(cu_handle s, cu_deviceptr addr, uint32_t v, unsigned flags);
    /* Optional: without them, a rank reaches only its own device's memory (peer_mask). */
    cu_result (*device_can_access_peer)(int *can, cu_device dev, cu_device peer);
    cu_result (*ctx_enable_peer_access)(cu_handle peer_ctx, unsigned flags);
} cu;

/* Versioned names (_v2) are the ones cuda.h maps the plain names to. */
static const struct {
    const char *name;
    void **slot;
} symbols[] = {
    {"cuInit", (void **)&cu.init},
    {"cuDriverGetVersion", (void **)&cu.driver_get_version},
    {"cuGetErrorString", (void **)&cu.get_error_string},
    {"cuDeviceGetCount", (void **)&cu.device_get_count},
    {"cuDeviceGet", (void **)&cu.device_get},
    {"cuDeviceGetName", (void **)&cu.device_get_name},
    {"cuDeviceGetAttribute", (void **)&cu.device_get_attribute},
    {"cuDevicePrimaryCtxRetain", (void **)&cu.primary_ctx_retain},
    {"cuDevicePrimaryCtxRelease_v2", (void **)&cu.primary_ctx_release},
    {"cuCtxGetCurrent", (void **)&cu.ctx_get_current},
    {"cuCtxSetCurrent", (void **)&cu.ctx_set_current},
    {"cuPointerGetAttributes", (void **)&cu.pointer_get_attributes},
    {"cuMemAlloc_v2", (void **)&cu.mem_alloc},
    {"cuMemFree_v2", (void **)&cu.mem_free},
    {"cuMemcpyAsync", (void **)&cu.memcpy_async},
    {"cuMemsetD8Async", (void **)&cu.memset_d8_async},
    {"cuStreamCreate", (void **)&cu.stream_create},
    {"cuStreamDestroy_v2", (void **)&cu.stream_destroy},
    {"cuStreamSynchronize", (void **)&cu.stream_synchronize},
    {"cuStreamWaitEvent", (void **)&cu.stream_wait_event},
    {"cuEventCreate", (void **)&cu.event_create},
    {"cuEventDestroy_v2", (void **)&cu.event_destroy},
    {"cuEventRecord", (void **)&cu.event_record},
    {"cuEventQuery", (void **)&cu.event_query},
    {"cuEventSynchronize", (void **)&cu.event_synchronize},
    {"cuIpcGetMemHandle", (void **)&cu.ipc_get_mem_handle},
    {"cuIpcOpenMemHandle_v2", (void **)&cu.ipc_open_mem_handle},
    {"cuIpcCloseMemHandle", (void **)&cu.ipc_close_mem_handle},
    {"cuModuleLoadData", (void **)&cu.module_load_data},
    {"cuModuleGetFunction", (void **)&cu.module_get_function},
    {"cuModuleUnload", (void **)&cu.module_unload},
    {"cuLaunchKernel", (void **)&cu.launch_kernel},
    {"cuMemHostAlloc", (void **)&cu.mem_host_alloc},
    {"cuMemFreeHost", (void **)&cu.mem_free_host},
};

static const struct {
    const char *name;
    void **slot;
} optional_symbols[] = {
    {"cuStreamWriteValue32_v2", (void **)&cu.stream_write_value32},
    {"cuStreamWaitValue32_v2", (void **)&cu.stream_wait_value32},
    {"cuDeviceCanAccessPeer", (void **)&cu.device_can_access_peer},
    {"cuCtxEnablePeerAccess", (void **)&cu.ctx_enable_peer_access},
};

/* The embedded fatbin and the architectures it was built for (build/device/cuda_fatbin.S). */
__attribute__((visibility("hidden"))) extern const char ac_cuda_fatbin[];
__attribute__((visibility("hidden"))) extern const uint64_t ac_cuda_fatbin_bytes;
__attribute__((visibility("hidden"))) extern const char ac_cuda_fatbin_archs[];

/* The kernels loaded into one context. */
struct module {
    cu_handle ctx;
    cu_handle mod;
    cu_handle copy;
    cu_handle signal;
    cu_handle wait;
    cu_handle reduce[AC_KERNEL_REDUCE_COUNT];
};

/* Cleared when the driver has the memory operations but the device refuses them (older drivers
 * enable them only with NVreg_EnableStreamMemOPs=1): the kernels do the work from then on. */
static _Atomic bool is_memops_ok = true;

static void *lib;
static const char *lib_override;
static int ndevices;
static bool is_retained[MAX_DEVICES];
static cu_handle primary[MAX_DEVICES];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct module modules[MAX_MODULES];
static int nmodules;
/* ac_k_coll of modules[i], looked up at its first launch (under lock): a library whose kernels
 * lack it still runs everything else. */
static cu_handle coll_fns[MAX_MODULES];

const char *ac_cuda_built_archs(void)
{
    return ac_cuda_fatbin_archs;
}

void ac_cuda_set_library_for_test(const char *path)
{
    lib_override = path;
}

static const char *error_string(cu_result r)
{
    const char *s = NULL;

    if (cu.get_error_string == NULL || cu.get_error_string(r, &s) != CUDA_SUCCESS || s == NULL)
        return "unknown error";
    return s;
}

/* The one place a driver error becomes ours: what was called, with what, and the driver's text. */
static ncclResult_t __attribute__((format(printf, 2, 3))) check(cu_result r, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    if (r == CUDA_SUCCESS)
        return ncclSuccess;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return AC_FAIL(ncclUnhandledCudaError, "cuda backend: %s failed: %s (CUDA error %d)", what,
                   error_string(r), r);
}

static bool load_symbols(const char *name, char *why, size_t why_len)
{
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(lib, symbols[i].name);
        if (*symbols[i].slot == NULL) {
            snprintf(why, why_len, "%s has no %s (NVIDIA driver too old? update it)", name,
                     symbols[i].name);
            return false;
        }
    }
    for (size_t i = 0; i < sizeof optional_symbols / sizeof optional_symbols[0]; i++)
        *optional_symbols[i].slot = dlsym(lib, optional_symbols[i].name);
    return true;
}

/* "driver 12.4, 2 devices, device 0: NVIDIA H100 80GB HBM3 (sm_90)" */
static void describe_devices(char *why, size_t why_len)
{
    char name[96] = "?";
    int version = 0, major = 0, minor = 0;
    cu_device dev;

    cu.driver_get_version(&version);
    if (cu.device_get(&dev, 0) == CUDA_SUCCESS) {
        cu.device_get_name(name, (int)sizeof name, dev);
        cu.device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
        cu.device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    }
    snprintf(why, why_len, "driver %d.%d, %d device%s, device 0: %s (sm_%d%d)", version / 1000,
             version % 1000 / 10, ndevices, ndevices == 1 ? "" : "s", name, major, minor);
}

static void cuda_init(bool *usable_out, char *why, size_t why_len)
{
    const char *configured = ac_config_get()->cuda_library;
    const char *name = lib_override ? lib_override : configured ? configured : "libcuda.so.1";
    cu_result r;

    *usable_out = false;
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(why, why_len, "cannot load %s (%s): no NVIDIA driver on this machine", name,
                 dlerror());
        return;
    }
    if (!load_symbols(name, why, why_len))
        return;
    r = cu.init(0);
    if (r != CUDA_SUCCESS) {
        snprintf(why, why_len, "cuInit failed: %s (CUDA error %d)", error_string(r), r);
        return;
    }
    r = cu.device_get_count(&ndevices);
    if (r != CUDA_SUCCESS || ndevices <= 0) {
        snprintf(why, why_len, "no CUDA device (cuDeviceGetCount: %d devices, CUDA error %d)",
                 ndevices, r);
        return;
    }
    if (ndevices > MAX_DEVICES)
        ndevices = MAX_DEVICES;
    describe_devices(why, why_len);
    *usable_out = true;
}

static void cuda_fini(void)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nmodules; i++)
        cu.module_unload(modules[i].mod);
    nmodules = 0;
    memset(coll_fns, 0, sizeof coll_fns);
    for (int d = 0; d < MAX_DEVICES; d++) {
        if (is_retained[d])
            cu.primary_ctx_release(d);
        is_retained[d] = false;
    }
    pthread_mutex_unlock(&lock);
    ac_cuda_mem_fini();
    if (lib)
        dlclose(lib);
    lib = NULL;
    ndevices = 0;
    memset(&cu, 0, sizeof cu);
    atomic_store(&is_memops_ok, true);
}

/* Makes device's primary context current on this thread (cudaSetDevice's effect). */
static ncclResult_t set_device(int device)
{
    if (device < 0 || device >= ndevices)
        return AC_FAIL(ncclInvalidArgument,
                       "cuda backend: device %d does not exist (%d devices "
                       "visible; check CUDA_VISIBLE_DEVICES)",
                       device, ndevices);
    pthread_mutex_lock(&lock);
    if (!is_retained[device]) {
        cu_result r = cu.primary_ctx_retain(&primary[device], device);
        if (r != CUDA_SUCCESS) {
            pthread_mutex_unlock(&lock);
            return check(r, "cuDevicePrimaryCtxRetain(device %d)", device);
        }
        is_retained[device] = true;
    }
    pthread_mutex_unlock(&lock);
    return check(cu.ctx_set_current(primary[device]), "cuCtxSetCurrent(device %d)", device);
}

void *ac_cuda_driver_lib(void)
{
    return lib;
}

ncclResult_t ac_cuda_set_device(int device)
{
    return set_device(device);
}

/* The calling thread's context, device 0's primary context when it has none. */
static ncclResult_t current_ctx(cu_handle *ctx_out)
{
    cu_handle ctx = NULL;

    AC_CHECK(check(cu.ctx_get_current(&ctx), "cuCtxGetCurrent"));
    if (ctx == NULL) {
        AC_CHECK(set_device(0));
        ctx = primary[0];
    }
    *ctx_out = ctx;
    return ncclSuccess;
}

static ncclResult_t cuda_classify(const void *ptr, bool *is_mine_out, struct ac_ptr_info *info_out)
{
    unsigned mem_type = 0, is_managed = 0;
    int ordinal = -1;
    int attrs[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_IS_MANAGED,
                   CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL};
    void *data[] = {&mem_type, &is_managed, &ordinal};

    /* Unlike cuPointerGetAttribute, this reports memory CUDA does not know as type 0. */
    AC_CHECK(check(cu.pointer_get_attributes(3, attrs, data, (cu_deviceptr)ptr),
                   "cuPointerGetAttributes(%p)", ptr));
    *is_mine_out = mem_type == CU_MEMORYTYPE_DEVICE;
    if (*is_mine_out) {
        info_out->kind = AC_MEM_CUDA;
        info_out->device = ordinal;
        info_out->is_managed = is_managed != 0;
    }
    return ncclSuccess;
}

static ncclResult_t cuda_alloc(int device, size_t bytes, void **ptr_out)
{
    cu_deviceptr p = 0;

    AC_CHECK(set_device(device));
    AC_CHECK(check(cu.mem_alloc(&p, bytes ? bytes : 1), "cuMemAlloc(%zu bytes, device %d)", bytes,
                   device));
    *ptr_out = (void *)p;
    return ncclSuccess;
}

static ncclResult_t cuda_free(void *ptr)
{
    return check(cu.mem_free((cu_deviceptr)ptr), "cuMemFree(%p)", ptr);
}

static ncclResult_t cuda_memcpy(void *dst, const void *src, size_t bytes, void *stream)
{
    cu_handle ctx;

    AC_CHECK(current_ctx(&ctx));
    return check(cu.memcpy_async((cu_deviceptr)dst, (cu_deviceptr)src, bytes, stream),
                 "cuMemcpyAsync(%p <- %p, %zu bytes)", dst, src, bytes);
}

static ncclResult_t cuda_memset(void *dst, int value, size_t bytes, void *stream)
{
    cu_handle ctx;

    AC_CHECK(current_ctx(&ctx));
    return check(cu.memset_d8_async((cu_deviceptr)dst, (unsigned char)value, bytes, stream),
                 "cuMemsetD8Async(%p, %zu bytes)", dst, bytes);
}

static ncclResult_t cuda_stream_create(void **stream_out)
{
    cu_handle ctx, s = NULL;

    AC_CHECK(current_ctx(&ctx));
    AC_CHECK(check(cu.stream_create(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate"));
    *stream_out = s;
    return ncclSuccess;
}

static ncclResult_t cuda_stream_destroy(void *stream)
{
    return check(cu.stream_destroy(stream), "cuStreamDestroy(%p)", stream);
}

static ncclResult_t cuda_stream_sync(void *stream)
{
    cu_handle ctx;

    AC_CHECK(current_ctx(&ctx));
    return check(cu.stream_synchronize(stream), "cuStreamSynchronize(%p)", stream);
}

static ncclResult_t cuda_event_create(void **event_out)
{
    cu_handle ctx, e = NULL;

    AC_CHECK(current_ctx(&ctx));
    AC_CHECK(check(cu.event_create(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate"));
    *event_out = e;
    return ncclSuccess;
}

static ncclResult_t cuda_event_destroy(void *event)
{
    return check(cu.event_destroy(event), "cuEventDestroy(%p)", event);
}

static ncclResult_t cuda_event_record(void *event, void *stream)
{
    return check(cu.event_record(event, stream), "cuEventRecord(%p, stream %p)", event, stream);
}

static ncclResult_t cuda_event_query(void *event, bool *done_out)
{
    cu_result r = cu.event_query(event);

    if (r == CUDA_ERROR_NOT_READY) {
        *done_out = false;
        return ncclSuccess;
    }
    AC_CHECK(check(r, "cuEventQuery(%p)", event));
    *done_out = true;
    return ncclSuccess;
}

static ncclResult_t cuda_event_sync(void *event)
{
    return check(cu.event_synchronize(event), "cuEventSynchronize(%p)", event);
}

static ncclResult_t cuda_stream_wait_event(void *stream, void *event)
{
    return check(cu.stream_wait_event(stream, event, 0), "cuStreamWaitEvent(%p, %p)", stream,
                 event);
}

static ncclResult_t cuda_ipc_export(void *ptr, struct ac_ipc_handle *handle_out)
{
    struct cu_ipc_mem_handle h;
    bool is_done = false;

    AC_CHECK(ac_cuda_vmm_export(ptr, handle_out, &is_done)); /* cuMem memory: cuda_mem.c */
    if (is_done)
        return ncclSuccess;
    AC_CHECK(check(cu.ipc_get_mem_handle(&h, (cu_deviceptr)ptr), "cuIpcGetMemHandle(%p)", ptr));
    memset(handle_out, 0, sizeof *handle_out);
    memcpy(handle_out->bytes, h.reserved, sizeof h.reserved);
    return ncclSuccess;
}

static ncclResult_t cuda_ipc_import(const struct ac_ipc_handle *handle, void **ptr_out)
{
    struct cu_ipc_mem_handle h;
    cu_deviceptr p = 0;
    cu_handle ctx;

    if (handle->kind == AC_IPC_POSIX_FD)
        return ac_cuda_vmm_import(handle, ptr_out);
    AC_CHECK(current_ctx(&ctx));
    memcpy(h.reserved, handle->bytes, sizeof h.reserved);
    AC_CHECK(check(cu.ipc_open_mem_handle(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                   "cuIpcOpenMemHandle (the exporting process must still hold the memory)"));
    *ptr_out = (void *)p;
    return ncclSuccess;
}

static ncclResult_t cuda_ipc_close(void *ptr)
{
    bool is_done = false;

    AC_CHECK(ac_cuda_vmm_close(ptr, &is_done));
    if (is_done)
        return ncclSuccess;
    return check(cu.ipc_close_mem_handle((cu_deviceptr)ptr), "cuIpcCloseMemHandle(%p)", ptr);
}

static ncclResult_t load_module(cu_handle ctx, struct module *m)
{
    ncclResult_t res;

    if (ac_cuda_fatbin_bytes == 0)
        return AC_FAIL(ncclInvalidUsage, "cuda backend: this library was built without nvcc, so "
                                         "it has no CUDA kernels (rebuild with CUDA_HOME set)");
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    AC_CHECK(check(cu.module_load_data(&m->mod, ac_cuda_fatbin),
                   "cuModuleLoadData (kernels built for %s)", ac_cuda_fatbin_archs));
    AC_CHECK_GOTO(check(cu.module_get_function(&m->copy, m->mod, AC_KERNEL_COPY_NAME),
                        "cuModuleGetFunction(%s)", AC_KERNEL_COPY_NAME),
                  res, unload);
    AC_CHECK_GOTO(check(cu.module_get_function(&m->signal, m->mod, AC_KERNEL_SIGNAL_NAME),
                        "cuModuleGetFunction(%s)", AC_KERNEL_SIGNAL_NAME),
                  res, unload);
    AC_CHECK_GOTO(check(cu.module_get_function(&m->wait, m->mod, AC_KERNEL_WAIT_NAME),
                        "cuModuleGetFunction(%s)", AC_KERNEL_WAIT_NAME),
                  res, unload);
    for (int t = 0; t < AC_KERNEL_REDUCE_COUNT; t++)
        AC_CHECK_GOTO(check(cu.module_get_function(&m->reduce[t], m->mod, ac_kernel_reduce_name(t)),
                            "cuModuleGetFunction(%s)", ac_kernel_reduce_name(t)),
                      res, unload);
    return ncclSuccess;
unload:
    cu.module_unload(m->mod);
    return res;
}

/* The kernels of the calling thread's context, loaded at its first launch. */
static ncclResult_t module_of_current(const struct module **m_out)
{
    ncclResult_t res = ncclSuccess;
    cu_handle ctx;
    int i;

    AC_CHECK(current_ctx(&ctx));
    pthread_mutex_lock(&lock);
    for (i = 0; i < nmodules && modules[i].ctx != ctx; i++)
        ;
    if (i == nmodules) {
        if (nmodules == MAX_MODULES)
            res = AC_FAIL(ncclInternalError, "cuda backend: more than %d contexts", MAX_MODULES);
        else if ((res = load_module(ctx, &modules[i])) == ncclSuccess)
            nmodules++;
    }
    pthread_mutex_unlock(&lock);
    if (res == ncclSuccess)
        *m_out = &modules[i];
    return res;
}

static unsigned grid_for(uint64_t items)
{
    uint64_t blocks = (items + AC_KERNEL_THREADS * 4 - 1) / (AC_KERNEL_THREADS * 4);

    return blocks < 1 ? 1 : blocks > AC_KERNEL_MAX_BLOCKS ? AC_KERNEL_MAX_BLOCKS : (unsigned)blocks;
}

static ncclResult_t cuda_copy(void *dst, const void *src, size_t bytes, void *stream)
{
    const struct module *m;
    uint64_t n = bytes;
    void *params[] = {&dst, &src, &n};

    if (bytes == 0 || dst == src)
        return ncclSuccess;
    AC_CHECK(module_of_current(&m));
    return check(cu.launch_kernel(m->copy, grid_for(n / 16), 1, 1, AC_KERNEL_THREADS, 1, 1, 0,
                                  stream, params, NULL),
                 "cuLaunchKernel(%s, %zu bytes)", AC_KERNEL_COPY_NAME, bytes);
}

static ncclResult_t cuda_reduce(const struct ac_redop *op, void *dst, const void *a, const void *b,
                                size_t count, bool is_final, void *stream)
{
    struct ac_kreduce_args args = {
        .dst = dst,
        .a = a,
        .b = b,
        .count = count,
        .scalar = op->scalar,
        .kind = op->kind,
        .has_premul = op->has_premul,
        .postdiv = is_final ? op->postdiv : 0,
    };
    void *params[] = {&args};
    const struct module *m;

    if ((int)op->type < 0 || (int)op->type >= AC_KERNEL_REDUCE_COUNT)
        return AC_FAIL(ncclInvalidArgument, "cuda backend: reduce of invalid type %d",
                       (int)op->type);
    if (count == 0)
        return ncclSuccess;
    AC_CHECK(module_of_current(&m));
    return check(cu.launch_kernel(m->reduce[op->type], grid_for(count), 1, 1, AC_KERNEL_THREADS, 1,
                                  1, 0, stream, params, NULL),
                 "cuLaunchKernel(%s, %zu elements)", ac_kernel_reduce_name(op->type), count);
}

/* Portable and mapped: any context may use it, at the host address (unified addressing). */
static ncclResult_t cuda_host_alloc(size_t bytes, void **ptr_out)
{
    void *p = NULL;
    cu_handle ctx;

    AC_CHECK(current_ctx(&ctx));
    AC_CHECK(check(cu.mem_host_alloc(&p, bytes ? bytes : 1,
                                     CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP),
                   "cuMemHostAlloc(%zu bytes)", bytes));
    memset(p, 0, bytes ? bytes : 1);
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t cuda_host_free(void *ptr)
{
    return check(cu.mem_free_host(ptr), "cuMemFreeHost(%p)", ptr);
}

static ncclResult_t launch_flag_kernel(bool is_wait, void *stream, volatile uint32_t *flag,
                                       uint32_t value)
{
    const struct module *m;
    void *params[] = {&flag, &value};
    const char *name = is_wait ? AC_KERNEL_WAIT_NAME : AC_KERNEL_SIGNAL_NAME;

    AC_CHECK(module_of_current(&m));
    return check(cu.launch_kernel(is_wait ? m->wait : m->signal, 1, 1, 1, 1, 1, 1, 0, stream,
                                  params, NULL),
                 "cuLaunchKernel(%s, %u)", name, value);
}

/* The default write flag keeps the barrier: the stream's earlier writes are visible first. */
static ncclResult_t cuda_stream_signal(void *stream, volatile uint32_t *flag, uint32_t value)
{
    cu_handle ctx;
    cu_result r;

    AC_CHECK(current_ctx(&ctx));
    if (cu.stream_write_value32 && atomic_load(&is_memops_ok)) {
        r = cu.stream_write_value32(stream, (cu_deviceptr)flag, value,
                                    CU_STREAM_WRITE_VALUE_DEFAULT);
        if (r != CUDA_ERROR_NOT_SUPPORTED)
            return check(r, "cuStreamWriteValue32(%p, %u)", (void *)flag, value);
        atomic_store(&is_memops_ok, false);
    }
    return launch_flag_kernel(false, stream, flag, value);
}

static ncclResult_t cuda_stream_wait(void *stream, volatile uint32_t *flag, uint32_t value)
{
    cu_handle ctx;
    cu_result r;

    AC_CHECK(current_ctx(&ctx));
    if (cu.stream_wait_value32 && atomic_load(&is_memops_ok)) {
        r = cu.stream_wait_value32(stream, (cu_deviceptr)flag, value, CU_STREAM_WAIT_VALUE_GEQ);
        if (r != CUDA_ERROR_NOT_SUPPORTED)
            return check(r, "cuStreamWaitValue32(%p, %u)", (void *)flag, value);
        atomic_store(&is_memops_ok, false);
    }
    return launch_flag_kernel(true, stream, flag, value);
}

static ncclResult_t coll_function(const struct module *m, cu_handle *fn_out)
{
    size_t i = (size_t)(m - modules);
    cu_result r = CUDA_SUCCESS;

    pthread_mutex_lock(&lock);
    if (coll_fns[i] == NULL)
        r = cu.module_get_function(&coll_fns[i], m->mod, AC_KERNEL_COLL_NAME);
    *fn_out = coll_fns[i];
    pthread_mutex_unlock(&lock);
    if (r != CUDA_SUCCESS)
        return AC_FAIL(ncclInvalidUsage,
                       "cuda backend: the library's kernels have no %s (cuModuleGetFunction: %s, "
                       "CUDA error %d): rebuild it with the device collective engine",
                       AC_KERNEL_COLL_NAME, error_string(r), r);
    return ncclSuccess;
}

static ncclResult_t cuda_launch_coll(const struct ac_kcoll_args *args, unsigned nblocks,
                                     void *stream)
{
    const struct module *m;
    cu_handle fn;

    AC_CHECK(module_of_current(&m));
    AC_CHECK(coll_function(m, &fn));
    if (args == NULL || nblocks == 0)
        return ncclSuccess;
    struct ac_kcoll_args a = *args;
    void *params[] = {&a};
    return check(cu.launch_kernel(fn, nblocks, 1, 1, AC_KERNEL_THREADS, 1, 1, 0, stream, params,
                                  NULL),
                 "cuLaunchKernel(%s, %u blocks)", AC_KERNEL_COLL_NAME, nblocks);
}

/* Pointers shared between threads of one process are used as they are, so the calling thread's
 * context is also given access to each reachable device (cuCtxEnablePeerAccess); IPC imports get
 * it from CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS. */
static ncclResult_t cuda_peer_mask(int device, uint64_t *mask_out)
{
    uint64_t mask;
    cu_handle ctx;

    if (device < 0 || device >= ndevices || device >= 64)
        return AC_FAIL(ncclInvalidArgument, "cuda backend: device %d does not exist (%d devices)",
                       device, ndevices);
    AC_CHECK(current_ctx(&ctx));
    mask = 1ull << device;
    for (int d = 0; d < ndevices && d < 64 && cu.device_can_access_peer; d++) {
        int can = 0;
        cu_handle peer = NULL;
        if (d == device || cu.device_can_access_peer(&can, device, d) != CUDA_SUCCESS || !can)
            continue;
        pthread_mutex_lock(&lock);
        if (!is_retained[d] && cu.primary_ctx_retain(&primary[d], d) == CUDA_SUCCESS)
            is_retained[d] = true;
        peer = is_retained[d] ? primary[d] : NULL;
        pthread_mutex_unlock(&lock);
        if (peer && cu.ctx_enable_peer_access) {
            cu_result r = cu.ctx_enable_peer_access(peer, 0);
            if (r != CUDA_SUCCESS && r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
                continue;
        }
        mask |= 1ull << d;
    }
    *mask_out = mask;
    return ncclSuccess;
}

const struct ac_backend ac_cuda_backend = {
    .size = sizeof(struct ac_backend),
    .name = "cuda",
    .kind = AC_MEM_CUDA,
    .init = cuda_init,
    .fini = cuda_fini,
    .classify = cuda_classify,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .memcpy_async = cuda_memcpy,
    .memset_async = cuda_memset,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_sync = cuda_stream_sync,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_sync = cuda_event_sync,
    .stream_wait_event = cuda_stream_wait_event,
    .ipc_export = cuda_ipc_export,
    .ipc_import = cuda_ipc_import,
    .ipc_close = cuda_ipc_close,
    .copy = cuda_copy,
    .reduce = cuda_reduce,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .stream_signal = cuda_stream_signal,
    .stream_wait = cuda_stream_wait,
    .dmabuf_export = ac_cuda_dmabuf_export, /* cuda_dmabuf.c */
    .host_map = ac_cuda_host_map,           /* cuda_hostmap.c */
    .host_unmap = ac_cuda_host_unmap,
    .launch_coll = cuda_launch_coll,
    .peer_mask = cuda_peer_mask,
    .mem_alloc_shareable = ac_cuda_mem_alloc_shareable, /* cuda_mem.c */
    .mem_free_shareable = ac_cuda_mem_free_shareable,
    .mem_range = ac_cuda_mem_range,
};
