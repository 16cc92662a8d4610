/* The HIP backend: AMD's runtime (libamdhip64.so) opened with dlopen at first use, so that the
 * library builds and runs without ROCm. The kernels come from the code object bundle that
 * mk/device.mk embeds (gfx90a, gfx940), loaded per device on its first launch. HIP has no
 * contexts to manage: calls run on the calling thread's current device (hipSetDevice). */
#include "device/backend.h"
#include "device/dmabuf.h"
#include "device/hostmap.h"
#include "device/driver_syms.h"
#include "device/kernels/devcoll.h"
#include "device/kernels/launch.h"

#include "common/check.h"
#include "common/config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HIP's types and the values used, as in hip_runtime_api.h. Where ROCm 6 changed a value, both
 * are here and the runtime's version picks. */
typedef int hip_error;
typedef void *hip_handle; /* hipStream_t, hipEvent_t, hipModule_t, hipFunction_t */
struct hip_ipc_mem_handle {
    char reserved[AC_IPC_HANDLE_BYTES];
};
/* hipPointerAttribute_t: type, device, then pointers; room to spare for later versions. */
struct hip_ptr_attr {
    int type;
    int device;
    void *device_pointer;
    void *host_pointer;
    int is_managed;
    unsigned allocation_flags;
    char spare[64];
};

enum {
    HIP_SUCCESS = 0,
    HIP_ERROR_NOT_READY = 600,
    HIP_MEMCPY_DEFAULT = 4,
    HIP_STREAM_NON_BLOCKING = 1,
    HIP_EVENT_DISABLE_TIMING = 2,
    HIP_MEMORY_TYPE_DEVICE_V5 = 1,
    HIP_MEMORY_TYPE_DEVICE_V6 = 2,
    HIP_MEMORY_TYPE_MANAGED_V6 = 3,
    HIP_IPC_LAZY_PEER_V5 = 0,
    HIP_IPC_LAZY_PEER_V6 = 1,
    HIP_HOST_MALLOC_PORTABLE = 1,
    HIP_HOST_MALLOC_MAPPED = 2,
    HIP_HOST_MALLOC_COHERENT = 0x40000000,
};

#define MAX_DEVICES 64

static struct {
    hip_error (*init)(unsigned flags);
    hip_error (*runtime_get_version)(int *version);
    const char *(*get_error_string)(hip_error e);
    hip_error (*get_last_error)(void);
    hip_error (*get_device_count)(int *count);
    hip_error (*device_get_name)(char *name, int len, int device);
    hip_error (*get_device)(int *device);
    hip_error (*set_device)(int device);
    hip_error (*pointer_get_attributes)(struct hip_ptr_attr *attr, const void *p);
    hip_error (*malloc)(void **p, size_t bytes);
    hip_error (*free)(void *p);
    hip_error (*memcpy_async)(void *dst, const void *src, size_t bytes, int kind, hip_handle s);
    hip_error (*memset_async)(void *dst, int value, size_t bytes, hip_handle s);
    hip_error (*stream_create)(hip_handle *s, unsigned flags);
    hip_error (*stream_destroy)(hip_handle s);
    hip_error (*stream_synchronize)(hip_handle s);
    hip_error (*stream_wait_event)(hip_handle s, hip_handle e, unsigned flags);
    hip_error (*event_create)(hip_handle *e, unsigned flags);
    hip_error (*event_destroy)(hip_handle e);
    hip_error (*event_record)(hip_handle e, hip_handle s);
    hip_error (*event_query)(hip_handle e);
    hip_error (*event_synchronize)(hip_handle e);
    hip_error (*ipc_get_mem_handle)(struct hip_ipc_mem_handle *h, void *p);
    hip_error (*ipc_open_mem_handle)(void **p, struct hip_ipc_mem_handle h, unsigned flags);
    hip_error (*ipc_close_mem_handle)(void *p);
    hip_error (*module_load_data)(hip_handle *mod, const void *image);
    hip_error (*module_get_function)(hip_handle *fn, hip_handle mod, const char *name);
    hip_error (*module_unload)(hip_handle mod);
    hip_error (*launch_kernel)(hip_handle fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned shmem, hip_handle s,
                               void **params, void **extra);
    hip_error (*host_malloc)(void **p, size_t bytes, unsigned flags);
    hip_error (*host_free)(void *p);
} hip;

static const struct {
    const char *name;
    void **slot;
} symbols[] = {
    {"hipInit", (void **)&hip.init},
    {"hipRuntimeGetVersion", (void **)&hip.runtime_get_version},
    {"hipGetErrorString", (void **)&hip.get_error_string},
    {"hipGetLastError", (void **)&hip.get_last_error},
    {"hipGetDeviceCount", (void **)&hip.get_device_count},
    {"hipDeviceGetName", (void **)&hip.device_get_name},
    {"hipGetDevice", (void **)&hip.get_device},
    {"hipSetDevice", (void **)&hip.set_device},
    {"hipPointerGetAttributes", (void **)&hip.pointer_get_attributes},
    {"hipMalloc", (void **)&hip.malloc},
    {"hipFree", (void **)&hip.free},
    {"hipMemcpyAsync", (void **)&hip.memcpy_async},
    {"hipMemsetAsync", (void **)&hip.memset_async},
    {"hipStreamCreateWithFlags", (void **)&hip.stream_create},
    {"hipStreamDestroy", (void **)&hip.stream_destroy},
    {"hipStreamSynchronize", (void **)&hip.stream_synchronize},
    {"hipStreamWaitEvent", (void **)&hip.stream_wait_event},
    {"hipEventCreateWithFlags", (void **)&hip.event_create},
    {"hipEventDestroy", (void **)&hip.event_destroy},
    {"hipEventRecord", (void **)&hip.event_record},
    {"hipEventQuery", (void **)&hip.event_query},
    {"hipEventSynchronize", (void **)&hip.event_synchronize},
    {"hipIpcGetMemHandle", (void **)&hip.ipc_get_mem_handle},
    {"hipIpcOpenMemHandle", (void **)&hip.ipc_open_mem_handle},
    {"hipIpcCloseMemHandle", (void **)&hip.ipc_close_mem_handle},
    {"hipModuleLoadData", (void **)&hip.module_load_data},
    {"hipModuleGetFunction", (void **)&hip.module_get_function},
    {"hipModuleUnload", (void **)&hip.module_unload},
    {"hipModuleLaunchKernel", (void **)&hip.launch_kernel},
    {"hipHostMalloc", (void **)&hip.host_malloc},
    {"hipHostFree", (void **)&hip.host_free},
};

/* The embedded code object bundle (build/device/hip_code.S). */
__attribute__((visibility("hidden"))) extern const char ac_hip_code[];
__attribute__((visibility("hidden"))) extern const uint64_t ac_hip_code_bytes;
__attribute__((visibility("hidden"))) extern const char ac_hip_code_archs[];

/* The kernels loaded on one device. */
struct module {
    bool is_loaded;
    hip_handle mod;
    hip_handle copy;
    hip_handle signal;
    hip_handle wait;
    hip_handle reduce[AC_KERNEL_REDUCE_COUNT];
};

/* The runtime library's names: the unversioned link of a ROCm install, then ROCm 6 and 5. */
const char *const ac_hip_runtime_names[AC_HIP_RUNTIME_NAMES] = {
    "libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"};

size_t ac_hip_runtime_libs(const char *const **names_out)
{
    const struct ac_config *cfg = ac_config_get(); /* the table lives as long as the process */
    *names_out = cfg->hip_library ? &cfg->hip_library : ac_hip_runtime_names;
    return cfg->hip_library ? 1 : AC_HIP_RUNTIME_NAMES;
}

static void *lib;
static const char *lib_override;
static int ndevices;
static int major_version;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct module modules[MAX_DEVICES];
/* ac_k_coll per device, looked up at its first launch (under lock): a library whose kernels lack
 * it still runs everything else. */
static hip_handle coll_fns[MAX_DEVICES];

const char *ac_hip_built_archs(void)
{
    return ac_hip_code_archs;
}

void ac_hip_set_library_for_test(const char *path)
{
    lib_override = path;
}

static const char *error_string(hip_error e)
{
    const char *s = hip.get_error_string ? hip.get_error_string(e) : NULL;

    return s ? s : "unknown error";
}

static ncclResult_t __attribute__((format(printf, 2, 3))) check(hip_error e, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    if (e == HIP_SUCCESS)
        return ncclSuccess;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return AC_FAIL(ncclUnhandledCudaError, "hip backend: %s failed: %s (HIP error %d)", what,
                   error_string(e), e);
}

static const char *open_library(char *why, size_t why_len)
{
    const char *named = lib_override ? lib_override : ac_config_get()->hip_library;

    if (named) {
        lib = dlopen(named, RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL)
            snprintf(why, why_len, "cannot load %s (%s): no ROCm runtime on this machine", named,
                     dlerror());
        return named;
    }
    for (size_t i = 0; i < AC_HIP_RUNTIME_NAMES; i++) {
        lib = dlopen(ac_hip_runtime_names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib)
            return ac_hip_runtime_names[i];
    }
    snprintf(why, why_len, "cannot load libamdhip64.so (.6, .5): no ROCm runtime on this machine");
    return NULL;
}

static bool load_symbols(const char *name, char *why, size_t why_len)
{
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(lib, symbols[i].name);
        if (*symbols[i].slot == NULL) {
            snprintf(why, why_len, "%s has no %s (ROCm too old? update it)", name, symbols[i].name);
            return false;
        }
    }
    return true;
}

static void hip_init(bool *usable_out, char *why, size_t why_len)
{
    const char *name = open_library(why, why_len);
    char dev_name[96] = "?";
    int version = 0;
    hip_error e;

    *usable_out = false;
    if (lib == NULL || !load_symbols(name, why, why_len))
        return;
    e = hip.init(0);
    if (e != HIP_SUCCESS) {
        snprintf(why, why_len, "hipInit failed: %s (HIP error %d)", error_string(e), e);
        return;
    }
    e = hip.get_device_count(&ndevices);
    if (e != HIP_SUCCESS || ndevices <= 0) {
        snprintf(why, why_len, "no HIP device (hipGetDeviceCount: %d devices, HIP error %d)",
                 e == HIP_SUCCESS ? ndevices : 0, e);
        ndevices = 0;
        return;
    }
    if (ndevices > MAX_DEVICES)
        ndevices = MAX_DEVICES;
    hip.runtime_get_version(&version);
    major_version = version / 10000000;
    hip.device_get_name(dev_name, (int)sizeof dev_name, 0);
    snprintf(why, why_len, "HIP %d.%d, %d device%s, device 0: %s", major_version,
             version / 100000 % 100, ndevices, ndevices == 1 ? "" : "s", dev_name);
    *usable_out = true;
}

static void hip_fini(void)
{
    pthread_mutex_lock(&lock);
    for (int d = 0; d < MAX_DEVICES; d++) {
        if (modules[d].is_loaded)
            hip.module_unload(modules[d].mod);
        modules[d].is_loaded = false;
        coll_fns[d] = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (lib)
        dlclose(lib);
    lib = NULL;
    ndevices = 0;
    memset(&hip, 0, sizeof hip);
}

static ncclResult_t hip_classify(const void *ptr, bool *is_mine_out, struct ac_ptr_info *info_out)
{
    struct hip_ptr_attr attr;
    hip_error e;

    memset(&attr, 0, sizeof attr);
    e = hip.pointer_get_attributes(&attr, ptr);
    if (e != HIP_SUCCESS) {
        /* ROCm 5 fails on memory it does not know (ROCm 6 says "unregistered"): host memory. */
        hip.get_last_error();
        *is_mine_out = false;
        return ncclSuccess;
    }
    if (major_version >= 6)
        *is_mine_out =
            attr.type == HIP_MEMORY_TYPE_DEVICE_V6 || attr.type == HIP_MEMORY_TYPE_MANAGED_V6;
    else
        *is_mine_out = attr.type == HIP_MEMORY_TYPE_DEVICE_V5;
    if (*is_mine_out) {
        info_out->kind = AC_MEM_HIP;
        info_out->device = attr.device;
        info_out->is_managed = attr.is_managed != 0;
    }
    return ncclSuccess;
}

static ncclResult_t hip_alloc(int device, size_t bytes, void **ptr_out)
{
    void *p = NULL;

    if (device < 0 || device >= ndevices)
        return AC_FAIL(ncclInvalidArgument,
                       "hip backend: device %d does not exist (%d devices "
                       "visible; check HIP_VISIBLE_DEVICES)",
                       device, ndevices);
    AC_CHECK(check(hip.set_device(device), "hipSetDevice(%d)", device));
    AC_CHECK(
        check(hip.malloc(&p, bytes ? bytes : 1), "hipMalloc(%zu bytes, device %d)", bytes, device));
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t hip_free(void *ptr)
{
    return check(hip.free(ptr), "hipFree(%p)", ptr);
}

static ncclResult_t hip_memcpy(void *dst, const void *src, size_t bytes, void *stream)
{
    return check(hip.memcpy_async(dst, src, bytes, HIP_MEMCPY_DEFAULT, stream),
                 "hipMemcpyAsync(%p <- %p, %zu bytes)", dst, src, bytes);
}

static ncclResult_t hip_memset(void *dst, int value, size_t bytes, void *stream)
{
    return check(hip.memset_async(dst, value, bytes, stream), "hipMemsetAsync(%p, %zu bytes)", dst,
                 bytes);
}

static ncclResult_t hip_stream_create(void **stream_out)
{
    hip_handle s = NULL;

    AC_CHECK(check(hip.stream_create(&s, HIP_STREAM_NON_BLOCKING), "hipStreamCreateWithFlags"));
    *stream_out = s;
    return ncclSuccess;
}

static ncclResult_t hip_stream_destroy(void *stream)
{
    return check(hip.stream_destroy(stream), "hipStreamDestroy(%p)", stream);
}

static ncclResult_t hip_stream_sync(void *stream)
{
    return check(hip.stream_synchronize(stream), "hipStreamSynchronize(%p)", stream);
}

static ncclResult_t hip_event_create(void **event_out)
{
    hip_handle e = NULL;

    AC_CHECK(check(hip.event_create(&e, HIP_EVENT_DISABLE_TIMING), "hipEventCreateWithFlags"));
    *event_out = e;
    return ncclSuccess;
}

static ncclResult_t hip_event_destroy(void *event)
{
    return check(hip.event_destroy(event), "hipEventDestroy(%p)", event);
}

static ncclResult_t hip_event_record(void *event, void *stream)
{
    return check(hip.event_record(event, stream), "hipEventRecord(%p, stream %p)", event, stream);
}

static ncclResult_t hip_event_query(void *event, bool *done_out)
{
    hip_error e = hip.event_query(event);

    if (e == HIP_ERROR_NOT_READY) {
        *done_out = false;
        return ncclSuccess;
    }
    AC_CHECK(check(e, "hipEventQuery(%p)", event));
    *done_out = true;
    return ncclSuccess;
}

static ncclResult_t hip_event_sync(void *event)
{
    return check(hip.event_synchronize(event), "hipEventSynchronize(%p)", event);
}

static ncclResult_t hip_stream_wait_event(void *stream, void *event)
{
    return check(hip.stream_wait_event(stream, event, 0), "hipStreamWaitEvent(%p, %p)", stream,
                 event);
}

static ncclResult_t hip_ipc_export(void *ptr, struct ac_ipc_handle *handle_out)
{
    struct hip_ipc_mem_handle h;

    AC_CHECK(check(hip.ipc_get_mem_handle(&h, ptr), "hipIpcGetMemHandle(%p)", ptr));
    memcpy(handle_out->bytes, h.reserved, sizeof h.reserved);
    return ncclSuccess;
}

static ncclResult_t hip_ipc_import(const struct ac_ipc_handle *handle, void **ptr_out)
{
    struct hip_ipc_mem_handle h;
    unsigned flags = major_version >= 6 ? HIP_IPC_LAZY_PEER_V6 : HIP_IPC_LAZY_PEER_V5;
    void *p = NULL;

    memcpy(h.reserved, handle->bytes, sizeof h.reserved);
    AC_CHECK(check(hip.ipc_open_mem_handle(&p, h, flags),
                   "hipIpcOpenMemHandle (the exporting process must still hold the memory)"));
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t hip_ipc_close(void *ptr)
{
    return check(hip.ipc_close_mem_handle(ptr), "hipIpcCloseMemHandle(%p)", ptr);
}

static ncclResult_t load_module(struct module *m)
{
    ncclResult_t res;

    if (ac_hip_code_bytes == 0)
        return AC_FAIL(ncclInvalidUsage, "hip backend: this library was built without hipcc, so "
                                         "it has no HIP kernels (rebuild with hipcc on the PATH)");
    AC_CHECK(check(hip.module_load_data(&m->mod, ac_hip_code),
                   "hipModuleLoadData (kernels built for %s)", ac_hip_code_archs));
    AC_CHECK_GOTO(check(hip.module_get_function(&m->copy, m->mod, AC_KERNEL_COPY_NAME),
                        "hipModuleGetFunction(%s)", AC_KERNEL_COPY_NAME),
                  res, unload);
    AC_CHECK_GOTO(check(hip.module_get_function(&m->signal, m->mod, AC_KERNEL_SIGNAL_NAME),
                        "hipModuleGetFunction(%s)", AC_KERNEL_SIGNAL_NAME),
                  res, unload);
    AC_CHECK_GOTO(check(hip.module_get_function(&m->wait, m->mod, AC_KERNEL_WAIT_NAME),
                        "hipModuleGetFunction(%s)", AC_KERNEL_WAIT_NAME),
                  res, unload);
    for (int t = 0; t < AC_KERNEL_REDUCE_COUNT; t++)
        AC_CHECK_GOTO(
            check(hip.module_get_function(&m->reduce[t], m->mod, ac_kernel_reduce_name(t)),
                  "hipModuleGetFunction(%s)", ac_kernel_reduce_name(t)),
            res, unload);
    m->is_loaded = true;
    return ncclSuccess;
unload:
    hip.module_unload(m->mod);
    return res;
}

/* The kernels of the calling thread's device, loaded at its first launch. */
static ncclResult_t module_of_current(const struct module **m_out)
{
    ncclResult_t res = ncclSuccess;
    int device = 0;

    AC_CHECK(check(hip.get_device(&device), "hipGetDevice"));
    if (device < 0 || device >= MAX_DEVICES)
        return AC_FAIL(ncclInternalError, "hip backend: current device %d out of range", device);
    pthread_mutex_lock(&lock);
    if (!modules[device].is_loaded)
        res = load_module(&modules[device]);
    pthread_mutex_unlock(&lock);
    if (res == ncclSuccess)
        *m_out = &modules[device];
    return res;
}

static unsigned grid_for(uint64_t items)
{
    uint64_t blocks = (items + AC_KERNEL_THREADS * 4 - 1) / (AC_KERNEL_THREADS * 4);

    return blocks < 1 ? 1 : blocks > AC_KERNEL_MAX_BLOCKS ? AC_KERNEL_MAX_BLOCKS : (unsigned)blocks;
}

static ncclResult_t hip_copy(void *dst, const void *src, size_t bytes, void *stream)
{
    const struct module *m;
    uint64_t n = bytes;
    void *params[] = {&dst, &src, &n};

    if (bytes == 0 || dst == src)
        return ncclSuccess;
    AC_CHECK(module_of_current(&m));
    return check(hip.launch_kernel(m->copy, grid_for(n / 16), 1, 1, AC_KERNEL_THREADS, 1, 1, 0,
                                   stream, params, NULL),
                 "hipModuleLaunchKernel(%s, %zu bytes)", AC_KERNEL_COPY_NAME, bytes);
}

static ncclResult_t hip_reduce(const struct ac_redop *op, void *dst, const void *a, const void *b,
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
        return AC_FAIL(ncclInvalidArgument, "hip backend: reduce of invalid type %d",
                       (int)op->type);
    if (count == 0)
        return ncclSuccess;
    AC_CHECK(module_of_current(&m));
    return check(hip.launch_kernel(m->reduce[op->type], grid_for(count), 1, 1, AC_KERNEL_THREADS, 1,
                                   1, 0, stream, params, NULL),
                 "hipModuleLaunchKernel(%s, %zu elements)", ac_kernel_reduce_name(op->type), count);
}

/* Portable and mapped: every device uses it at the host address (unified addressing). Coherent
 * (fine-grained) whatever HIP_HOST_COHERENT says: the wait kernel must see the CPU's writes while
 * it runs. */
static ncclResult_t hip_host_alloc(size_t bytes, void **ptr_out)
{
    void *p = NULL;

    AC_CHECK(check(hip.host_malloc(&p, bytes ? bytes : 1,
                                   HIP_HOST_MALLOC_PORTABLE | HIP_HOST_MALLOC_MAPPED |
                                       HIP_HOST_MALLOC_COHERENT),
                   "hipHostMalloc(%zu bytes)", bytes));
    memset(p, 0, bytes ? bytes : 1);
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t hip_host_free(void *ptr)
{
    return check(hip.host_free(ptr), "hipHostFree(%p)", ptr);
}

/* The kernels of sync.cuh rather than hipStreamWaitValue32, whose support varies by ROCm version
 * and GPU: the same code on every AMD GPU. */
static ncclResult_t launch_flag_kernel(bool is_wait, void *stream, volatile uint32_t *flag,
                                       uint32_t value)
{
    const struct module *m;
    void *params[] = {&flag, &value};
    const char *name = is_wait ? AC_KERNEL_WAIT_NAME : AC_KERNEL_SIGNAL_NAME;

    AC_CHECK(module_of_current(&m));
    return check(hip.launch_kernel(is_wait ? m->wait : m->signal, 1, 1, 1, 1, 1, 1, 0, stream,
                                   params, NULL),
                 "hipModuleLaunchKernel(%s, %u)", name, value);
}

static ncclResult_t hip_stream_signal(void *stream, volatile uint32_t *flag, uint32_t value)
{
    return launch_flag_kernel(false, stream, flag, value);
}

static ncclResult_t hip_stream_wait(void *stream, volatile uint32_t *flag, uint32_t value)
{
    return launch_flag_kernel(true, stream, flag, value);
}

static ncclResult_t hip_launch_coll(const struct ac_kcoll_args *args, unsigned nblocks,
                                    void *stream)
{
    const struct module *m;
    hip_handle fn;
    hip_error r = 0;

    AC_CHECK(module_of_current(&m));
    size_t d = (size_t)(m - modules);
    pthread_mutex_lock(&lock);
    if (coll_fns[d] == NULL)
        r = hip.module_get_function(&coll_fns[d], m->mod, AC_KERNEL_COLL_NAME);
    fn = coll_fns[d];
    pthread_mutex_unlock(&lock);
    if (r != 0)
        return AC_FAIL(ncclInvalidUsage,
                       "hip backend: the library's kernels have no %s (hipModuleGetFunction: "
                       "HIP error %d): rebuild it with the device collective engine",
                       AC_KERNEL_COLL_NAME, r);
    if (args == NULL || nblocks == 0)
        return ncclSuccess;
    struct ac_kcoll_args a = *args;
    void *params[] = {&a};
    return check(hip.launch_kernel(fn, nblocks, 1, 1, AC_KERNEL_THREADS, 1, 1, 0, stream, params,
                                   NULL),
                 "hipModuleLaunchKernel(%s, %u blocks)", AC_KERNEL_COLL_NAME, nblocks);
}

/* xGMI (or PCIe) peers: pointers shared between threads of one process are used as they are, so
 * the calling thread's device is also given access to each reachable one
 * (hipDeviceEnablePeerAccess; 704 = already enabled). Both calls are looked up here: the
 * backend needs neither for anything else. */
static ncclResult_t hip_peer_mask(int device, uint64_t *mask_out)
{
    hip_error (*can_access)(int *can, int dev, int peer) =
        (hip_error(*)(int *, int, int))dlsym(lib, "hipDeviceCanAccessPeer");
    hip_error (*enable)(int peer, unsigned flags) =
        (hip_error(*)(int, unsigned))dlsym(lib, "hipDeviceEnablePeerAccess");
    uint64_t mask;

    if (device < 0 || device >= ndevices || device >= 64)
        return AC_FAIL(ncclInvalidArgument, "hip backend: device %d does not exist (%d devices)",
                       device, ndevices);
    mask = 1ull << device;
    for (int d = 0; d < ndevices && d < 64 && can_access; d++) {
        int can = 0;
        if (d == device || can_access(&can, device, d) != 0 || !can)
            continue;
        if (enable) {
            hip_error r = enable(d, 0);
            if (r != 0 && r != 704)
                continue;
        }
        mask |= 1ull << d;
    }
    *mask_out = mask;
    return ncclSuccess;
}

/* ncclMemAlloc's memory: hipMalloc on the calling thread's device, which hipIpcGetMemHandle
 * shares; listed, so that ncclMemFree knows what it allocated. Compiled only (no ROCm here). */
struct shareable {
    void *ptr;
    struct shareable *next;
};
static struct shareable *shareables; /* under lock */

static ncclResult_t hip_mem_alloc_shareable(size_t bytes, void **ptr_out)
{
    struct shareable *s = calloc(1, sizeof *s);
    int dev = 0;
    ncclResult_t res;

    if (!s)
        return AC_FAIL(ncclSystemError, "hip backend: out of memory");
    AC_CHECK_GOTO(check(hip.get_device(&dev), "hipGetDevice"), res, fail);
    AC_CHECK_GOTO(check(hip.malloc(&s->ptr, bytes ? bytes : 1), "hipMalloc(%zu bytes, device %d)",
                        bytes, dev),
                  res, fail);
    pthread_mutex_lock(&lock);
    s->next = shareables;
    shareables = s;
    pthread_mutex_unlock(&lock);
    *ptr_out = s->ptr;
    return ncclSuccess;
fail:
    free(s);
    return res;
}

static ncclResult_t hip_mem_free_shareable(void *ptr, bool *is_mine_out)
{
    struct shareable *s = NULL;
    ncclResult_t res;

    pthread_mutex_lock(&lock);
    for (struct shareable **at = &shareables; *at; at = &(*at)->next)
        if ((*at)->ptr == ptr) {
            s = *at;
            *at = s->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    *is_mine_out = s != NULL;
    if (!s)
        return ncclSuccess;
    res = check(hip.free(ptr), "hipFree(%p)", ptr);
    free(s);
    return res;
}

/* Looked up here: nothing else in the backend needs it. */
static ncclResult_t hip_mem_range(const void *ptr, void **base_out, size_t *bytes_out)
{
    hip_error (*get_range)(void **base, size_t *bytes, void *p) =
        (hip_error(*)(void **, size_t *, void *))dlsym(lib, "hipMemGetAddressRange");

    if (!get_range)
        return AC_FAIL(ncclInvalidUsage, "hip backend: the runtime has no hipMemGetAddressRange");
    return check(get_range(base_out, bytes_out, (void *)ptr), "hipMemGetAddressRange(%p)", ptr);
}

const struct ac_backend ac_hip_backend = {
    .size = sizeof(struct ac_backend),
    .name = "hip",
    .kind = AC_MEM_HIP,
    .init = hip_init,
    .fini = hip_fini,
    .classify = hip_classify,
    .alloc = hip_alloc,
    .free = hip_free,
    .memcpy_async = hip_memcpy,
    .memset_async = hip_memset,
    .stream_create = hip_stream_create,
    .stream_destroy = hip_stream_destroy,
    .stream_sync = hip_stream_sync,
    .event_create = hip_event_create,
    .event_destroy = hip_event_destroy,
    .event_record = hip_event_record,
    .event_query = hip_event_query,
    .event_sync = hip_event_sync,
    .stream_wait_event = hip_stream_wait_event,
    .ipc_export = hip_ipc_export,
    .ipc_import = hip_ipc_import,
    .ipc_close = hip_ipc_close,
    .copy = hip_copy,
    .reduce = hip_reduce,
    .host_alloc = hip_host_alloc,
    .host_free = hip_host_free,
    .stream_signal = hip_stream_signal,
    .stream_wait = hip_stream_wait,
    .dmabuf_export = ac_hip_dmabuf_export, /* hip_dmabuf.c */
    .host_map = ac_hip_host_map,           /* hip_hostmap.c */
    .host_unmap = ac_hip_host_unmap,
    .launch_coll = hip_launch_coll,
    .peer_mask = hip_peer_mask,
    .mem_alloc_shareable = hip_mem_alloc_shareable,
    .mem_free_shareable = hip_mem_free_shareable,
    .mem_range = hip_mem_range,
};
