/* Device memory that other processes map, against the emulated CUDA driver (emu_cuda.c, built by
 * mk/device.mk in fake/ beside this binary):
 *   - the emulator itself, called raw: cuIpcGetMemHandle / cuIpcOpenMemHandle between a process
 *     and a forked child (same bytes both ways, reference counts, the own process refused with
 *     CUDA_ERROR_INVALID_CONTEXT, a stale handle refused); the cuMem virtual memory calls and a
 *     POSIX fd export imported by a child;
 *   - the CUDA backend's shareable allocations and their export / import;
 *   - ncclMemAlloc / ncclMemFree on a GPU (cuMem with POSIX fds, cuMemAlloc on a device without
 *     virtual memory management);
 *   - the registration cache of ncclCommRegister (src/core/devreg.c). */
#include "core/devreg.h"
#include "device/backend.h"
#include "nccl.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char fake_path[PATH_MAX];

/* fake/<name> beside this test binary. */
static const char *fake(const char *name)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

    cr_assert(n > 0);
    exe[n] = '\0';
    snprintf(fake_path, sizeof fake_path, "%s/fake/%s", dirname(exe), name);
    cr_assert(access(fake_path, R_OK) == 0, "%s missing (make test-build builds it)", fake_path);
    return fake_path;
}

/* ---- the emulated driver, called raw ---- */

struct mem_location {
    int type, id;
};
struct mem_prop {
    int type, handle_types;
    struct mem_location location;
    void *win32;
    unsigned char flags[8];
};
struct mem_access {
    struct mem_location location;
    int flags;
};

static struct {
    int (*init)(unsigned);
    int (*mem_alloc)(uintptr_t *, size_t);
    int (*mem_free)(uintptr_t);
    int (*ipc_get)(void *, uintptr_t);
    int (*ipc_open)(uintptr_t *, struct ac_ipc_handle, unsigned);
    int (*ipc_close)(uintptr_t);
    int (*granularity)(size_t *, const struct mem_prop *, int);
    int (*create)(unsigned long long *, size_t, const struct mem_prop *, unsigned long long);
    int (*release)(unsigned long long);
    int (*reserve)(uintptr_t *, size_t, size_t, uintptr_t, unsigned long long);
    int (*address_free)(uintptr_t, size_t);
    int (*map)(uintptr_t, size_t, size_t, unsigned long long, unsigned long long);
    int (*unmap)(uintptr_t, size_t);
    int (*set_access)(uintptr_t, size_t, const struct mem_access *, size_t);
    int (*export_fd)(void *, unsigned long long, int, unsigned long long);
    int (*import_fd)(unsigned long long *, void *, int);
    int (*retain)(unsigned long long *, void *);
    int (*address_range)(uintptr_t *, size_t *, uintptr_t);
    int (*attribute)(void *, int, uintptr_t);
} emu;

static void load_emu(const char *name)
{
    static const char *const names[] = {
        "cuInit",
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuIpcGetMemHandle",
        "cuIpcOpenMemHandle_v2",
        "cuIpcCloseMemHandle",
        "cuMemGetAllocationGranularity",
        "cuMemCreate",
        "cuMemRelease",
        "cuMemAddressReserve",
        "cuMemAddressFree",
        "cuMemMap",
        "cuMemUnmap",
        "cuMemSetAccess",
        "cuMemExportToShareableHandle",
        "cuMemImportFromShareableHandle",
        "cuMemRetainAllocationHandle",
        "cuMemGetAddressRange_v2",
        "cuPointerGetAttribute",
    };
    void *h = dlopen(fake(name), RTLD_NOW | RTLD_LOCAL);
    void **slots = (void **)&emu;

    cr_assert_not_null(h, "%s", dlerror());
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        slots[i] = dlsym(h, names[i]);
        cr_assert_not_null(slots[i], "%s has no %s", name, names[i]);
    }
    cr_assert_eq(emu.init(0), 0);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31 + seed);
}

static bool is_filled(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed))
            return false;
    return true;
}

/* Runs fn in a forked child; its exit status (0: all its checks passed). */
static int in_child(int (*fn)(void *), void *arg)
{
    int status = -1;
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

#define CHILD_CHECK(cond, code)                                                                    \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (code);                                                                         \
    } while (0)

struct ipc_case {
    struct ac_ipc_handle h;
    size_t bytes;
};

/* The child: opens the handle twice (one mapping, two references), reads the parent's bytes,
 * writes its own, closes twice; a third close is an error. */
static int child_opens(void *arg)
{
    struct ipc_case *c = arg;
    uintptr_t p = 0, q = 0;

    CHILD_CHECK(emu.ipc_open(&p, c->h, 1) == 0, 1);
    CHILD_CHECK(emu.ipc_open(&q, c->h, 1) == 0 && q == p, 2);
    CHILD_CHECK(is_filled((unsigned char *)p, c->bytes, 7), 3);
    fill((unsigned char *)p, c->bytes, 99);
    CHILD_CHECK(emu.ipc_close(p) == 0, 4);
    CHILD_CHECK(is_filled((unsigned char *)p, c->bytes, 99), 5); /* one reference left */
    CHILD_CHECK(emu.ipc_close(p) == 0, 6);
    CHILD_CHECK(emu.ipc_close(p) == 1, 7); /* CUDA_ERROR_INVALID_VALUE */
    CHILD_CHECK(emu.ipc_open(&p, c->h, 0) == 1, 8); /* the lazy peer access flag is required */
    return 0;
}

Test(emu_ipc, another_process_maps_the_same_bytes, .timeout = 30)
{
    struct ipc_case c = {.bytes = 10000};
    uintptr_t p = 0;

    load_emu("libcuda_emu.so");
    cr_assert_eq(emu.mem_alloc(&p, c.bytes), 0);
    fill((unsigned char *)p, c.bytes, 7);
    cr_assert_eq(emu.ipc_get(&c.h, p + 100), 0, "an interior pointer names its allocation");
    cr_assert_eq(in_child(child_opens, &c), 0);
    cr_assert(is_filled((unsigned char *)p, c.bytes, 99), "the child's writes are seen");
    cr_assert_eq(emu.mem_free(p), 0);
}

/* As CUDA: cuIpcOpenMemHandle in the exporting process is CUDA_ERROR_INVALID_CONTEXT (201). */
Test(emu_ipc, own_process_is_refused, .timeout = 30)
{
    struct ac_ipc_handle h;
    uintptr_t p = 0, q = 0;

    load_emu("libcuda_emu.so");
    cr_assert_eq(emu.mem_alloc(&p, 64), 0);
    cr_assert_eq(emu.ipc_get(&h, p), 0);
    cr_assert_eq(emu.ipc_open(&q, h, 1), 201);
    cr_assert_eq(emu.ipc_get(&h, (uintptr_t)&q), 1, "host memory has no handle");
    cr_assert_eq(emu.mem_free(p), 0);
}

static int child_open_fails(void *arg)
{
    struct ipc_case *c = arg;
    uintptr_t p = 0;
    int r = emu.ipc_open(&p, c->h, 1);

    return r == 400 || r == 205 ? 0 : 1; /* INVALID_HANDLE, MAP_FAILED */
}

/* Freed memory's handle, its fd number now another allocation's: refused, not the wrong pages. */
Test(emu_ipc, stale_handle_is_refused, .timeout = 30)
{
    struct ipc_case c = {.bytes = 4096};
    uintptr_t p = 0, q = 0;

    load_emu("libcuda_emu.so");
    cr_assert_eq(emu.mem_alloc(&p, c.bytes), 0);
    cr_assert_eq(emu.ipc_get(&c.h, p), 0);
    cr_assert_eq(emu.mem_free(p), 0);
    cr_assert_eq(emu.mem_alloc(&q, c.bytes), 0);
    cr_assert_eq(in_child(child_open_fails, &c), 0);
    cr_assert_eq(emu.mem_free(q), 0);
}

#define GRAN ((size_t)2 << 20)

/* cuMem: granularity, create, reserve, map, access, attributes; legacy IPC refused on it. */
Test(emu_vmm, create_map_access_and_attributes, .timeout = 30)
{
    struct mem_prop prop = {.type = 1, .handle_types = 1, .location = {1, 0}};
    struct mem_access acc = {{1, 0}, 3};
    unsigned long long h = 0, h2 = 0;
    uintptr_t va = 0, base = 0, start = 0;
    size_t g = 0, bytes = 0, range = 0;
    unsigned mem_type = 0;
    unsigned char is_legacy = 1;
    void *ctx = (void *)1;
    struct ac_ipc_handle ih;

    load_emu("libcuda_emu.so");
    cr_assert_eq(emu.granularity(&g, &prop, 1), 0);
    cr_assert_eq(g, GRAN);
    cr_assert_eq(emu.create(&h, GRAN + 1, &prop, 0), 1, "not a multiple of the granularity");
    cr_assert_eq(emu.create(&h, 2 * GRAN, &prop, 0), 0);
    cr_assert_eq(emu.reserve(&va, 4 * GRAN, GRAN, 0, 0), 0);
    cr_assert_eq(va % GRAN, 0);
    cr_assert_eq(emu.map(va + GRAN, 2 * GRAN, 0, h, 0), 0);
    cr_assert_eq(emu.map(va + 2 * GRAN, GRAN, 0, h, 0), 208, "CUDA_ERROR_ALREADY_MAPPED");
    cr_assert_eq(emu.set_access(va + GRAN, 2 * GRAN, &acc, 1), 0);
    fill((unsigned char *)va + GRAN, 2 * GRAN, 3);
    cr_assert_eq(emu.address_range(&base, &bytes, va + GRAN + 12345), 0);
    cr_assert_eq(base, va + GRAN);
    cr_assert_eq(bytes, 2 * GRAN);
    cr_assert_eq(emu.attribute(&mem_type, 2, va + GRAN), 0);
    cr_assert_eq(mem_type, 2, "CU_MEMORYTYPE_DEVICE");
    cr_assert_eq(emu.attribute(&is_legacy, 10, va + GRAN), 0);
    cr_assert_eq(is_legacy, 0);
    cr_assert_eq(emu.attribute(&ctx, 1, va + GRAN), 0);
    cr_assert_null(ctx, "cuMem memory has no context");
    cr_assert_eq(emu.attribute(&start, 11, va + 2 * GRAN), 0);
    cr_assert_eq(start, va, "RANGE_START_ADDR is the reservation's");
    cr_assert_eq(emu.attribute(&range, 12, va + 2 * GRAN), 0);
    cr_assert_eq(range, 4 * GRAN);
    cr_assert_eq(emu.attribute(&mem_type, 2, (uintptr_t)&g), 1, "unknown memory: INVALID_VALUE");
    cr_assert_eq(emu.ipc_get(&ih, va + GRAN), 1, "legacy IPC is refused on cuMem memory");
    cr_assert_eq(emu.retain(&h2, (void *)(va + GRAN + 5)), 0);
    cr_assert_eq(h2, h);
    cr_assert_eq(emu.release(h2), 0);
    cr_assert_eq(emu.release(h), 0);
    cr_assert(is_filled((unsigned char *)va + GRAN, 2 * GRAN, 3), "the mapping holds it");
    cr_assert_eq(emu.address_free(va, 4 * GRAN), 1, "still mapped");
    cr_assert_eq(emu.unmap(va + GRAN, GRAN), 1, "part of a mapping");
    cr_assert_eq(emu.unmap(va + GRAN, 2 * GRAN), 0);
    cr_assert_eq(emu.address_range(&base, &bytes, va + GRAN), 500, "CUDA_ERROR_NOT_FOUND");
    cr_assert_eq(emu.release(h), 1, "released with its last mapping");
    cr_assert_eq(emu.address_free(va, 4 * GRAN), 0);
}

struct fd_case {
    int fd;
    size_t bytes;
};

/* The child imports the inherited fd, maps it and writes. */
static int child_imports_fd(void *arg)
{
    struct fd_case *c = arg;
    struct mem_access acc = {{1, 0}, 3};
    unsigned long long h = 0;
    uintptr_t va = 0;

    CHILD_CHECK(emu.import_fd(&h, (void *)(intptr_t)c->fd, 1) == 0, 1);
    close(c->fd);
    CHILD_CHECK(emu.reserve(&va, c->bytes, 0, 0, 0) == 0, 2);
    CHILD_CHECK(emu.map(va, c->bytes, 0, h, 0) == 0, 3);
    CHILD_CHECK(emu.release(h) == 0, 4);
    CHILD_CHECK(emu.set_access(va, c->bytes, &acc, 1) == 0, 5);
    CHILD_CHECK(is_filled((unsigned char *)va, c->bytes, 5), 6);
    fill((unsigned char *)va, c->bytes, 77);
    CHILD_CHECK(emu.unmap(va, c->bytes) == 0 && emu.address_free(va, c->bytes) == 0, 7);
    return 0;
}

Test(emu_vmm, posix_fd_export_is_imported_by_another_process, .timeout = 30)
{
    struct mem_prop prop = {.type = 1, .handle_types = 1, .location = {1, 0}};
    struct mem_prop no_fd = {.type = 1, .handle_types = 0, .location = {1, 0}};
    struct mem_access acc = {{1, 0}, 3};
    struct fd_case c = {.fd = -1, .bytes = GRAN};
    unsigned long long h = 0, h2 = 0;
    uintptr_t va = 0;
    int fd = -1;

    load_emu("libcuda_emu.so");
    cr_assert_eq(emu.create(&h2, GRAN, &no_fd, 0), 0);
    cr_assert_eq(emu.export_fd(&fd, h2, 1, 0), 1, "not created with POSIX fd handles");
    cr_assert_eq(emu.release(h2), 0);
    cr_assert_eq(emu.create(&h, GRAN, &prop, 0), 0);
    cr_assert_eq(emu.reserve(&va, GRAN, 0, 0, 0), 0);
    cr_assert_eq(emu.map(va, GRAN, 0, h, 0), 0);
    cr_assert_eq(emu.set_access(va, GRAN, &acc, 1), 0);
    fill((unsigned char *)va, GRAN, 5);
    cr_assert_eq(emu.export_fd(&c.fd, h, 1, 0), 0);
    cr_assert_eq(in_child(child_imports_fd, &c), 0);
    close(c.fd);
    cr_assert(is_filled((unsigned char *)va, GRAN, 77));
    cr_assert_eq(emu.import_fd(&h2, (void *)(intptr_t)0, 1), 400, "stdin is no allocation");
    cr_assert_eq(emu.unmap(va, GRAN), 0);
    cr_assert_eq(emu.release(h), 0);
    cr_assert_eq(emu.address_free(va, GRAN), 0);
}

Test(emu_vmm, novmm_variant_refuses_cumem, .timeout = 30)
{
    struct mem_prop prop = {.type = 1, .handle_types = 1, .location = {1, 0}};
    unsigned long long h = 0;

    load_emu("libcuda_emu_novmm.so");
    cr_assert_eq(emu.create(&h, GRAN, &prop, 0), 801, "CUDA_ERROR_NOT_SUPPORTED");
}

/* ---- the CUDA backend's shareable memory, on the emulated driver ---- */

static const struct ac_backend *cuda_emu(const char *name)
{
    ac_backends_reset_for_test();
    ac_cuda_set_library_for_test(fake(name));
    return ac_backend_get(AC_MEM_CUDA, NULL, 0);
}

struct be_case {
    const struct ac_backend *be;
    struct ac_ipc_handle h;
    size_t bytes;
};

/* The child maps the parent's memory through the backend, reads the parent's bytes and writes
 * its own. */
static int child_imports(void *arg)
{
    struct be_case *c = arg;
    void *p = NULL;

    CHILD_CHECK(c->be->ipc_import(&c->h, &p) == ncclSuccess, 1);
    CHILD_CHECK(is_filled(p, c->bytes, 11), 2);
    fill(p, c->bytes, 12);
    CHILD_CHECK(c->be->ipc_close(p) == ncclSuccess, 3);
    return 0;
}

Test(cuda_shareable, cumem_memory_exported_as_a_posix_fd, .timeout = 30)
{
    struct be_case c = {.be = cuda_emu("libcuda_emu.so"), .bytes = 3 * GRAN + 5};
    struct ac_ptr_info info;
    bool is_mine = false;
    void *p = NULL, *base = NULL, *q = NULL;
    size_t bytes = 0;

    cr_assert_not_null(c.be);
    cr_assert_eq(c.be->mem_alloc_shareable(c.bytes, &p), ncclSuccess);
    cr_assert_eq(c.be->classify((char *)p + c.bytes - 1, &is_mine, &info), ncclSuccess);
    cr_assert(is_mine);
    cr_assert_eq(info.kind, AC_MEM_CUDA);
    cr_assert_eq(c.be->mem_range((char *)p + 77, &base, &bytes), ncclSuccess);
    cr_assert_eq(base, p);
    cr_assert_eq(bytes, 4 * GRAN, "rounded up to the granularity");
    fill(p, c.bytes, 11);
    cr_assert_eq(c.be->ipc_export((char *)p + 10, &c.h), ncclSuccess);
    cr_assert_eq(c.h.kind, AC_IPC_POSIX_FD);
    cr_assert_eq(c.be->ipc_import(&c.h, &q), ncclInvalidUsage, "a handle of this process");
    cr_assert_eq(in_child(child_imports, &c), 0);
    cr_assert(is_filled(p, c.bytes, 12), "the child's writes are seen");
    cr_assert_eq(c.be->mem_free_shareable(p, &is_mine), ncclSuccess);
    cr_assert(is_mine);
    cr_assert_eq(c.be->mem_free_shareable(p, &is_mine), ncclSuccess);
    cr_assert_not(is_mine, "freed already");
}

/* cuMemAlloc memory (alloc, or mem_alloc_shareable without VMM) goes through legacy IPC. */
Test(cuda_shareable, without_vmm_cumemalloc_and_legacy_ipc, .timeout = 30)
{
    struct be_case c = {.be = cuda_emu("libcuda_emu_novmm.so"), .bytes = 5000};
    bool is_mine = false;
    void *p = NULL, *base = NULL;
    size_t bytes = 0;

    cr_assert_not_null(c.be);
    cr_assert_eq(c.be->mem_alloc_shareable(c.bytes, &p), ncclSuccess);
    cr_assert_eq(c.be->mem_range(p, &base, &bytes), ncclSuccess);
    cr_assert_eq(bytes, c.bytes, "cuMemAlloc: no rounding");
    fill(p, c.bytes, 11);
    cr_assert_eq(c.be->ipc_export(p, &c.h), ncclSuccess);
    cr_assert_eq(c.h.kind, AC_IPC_VENDOR);
    cr_assert_eq(in_child(child_imports, &c), 0);
    cr_assert(is_filled(p, c.bytes, 12));
    cr_assert_eq(c.be->mem_free_shareable(p, &is_mine), ncclSuccess);
    cr_assert(is_mine);
}

/* ---- ncclMemAlloc / ncclMemFree on a GPU ---- */

/* The library's GPU backend is the emulator: set before the library reads its configuration
 * (each test runs in a process of its own). */
static void use_emu(const char *name)
{
    cr_assert_eq(setenv("ANYCCL_CUDA_LIBRARY", fake(name), 1), 0);
    load_emu(name);
}

Test(memalloc, cumem_device_memory_rounded_and_freed, .timeout = 30)
{
    unsigned char is_legacy = 1;
    unsigned mem_type = 0;
    uintptr_t base = 0;
    size_t bytes = 0;
    void *p = NULL;

    use_emu("libcuda_emu.so");
    cr_assert_eq(ncclMemAlloc(&p, GRAN + 1), ncclSuccess);
    cr_assert_eq(ac_backend_for_pointer(p), &ac_cuda_backend);
    cr_assert_eq(emu.attribute(&mem_type, 2, (uintptr_t)p), 0);
    cr_assert_eq(mem_type, 2, "device memory");
    cr_assert_eq(emu.attribute(&is_legacy, 10, (uintptr_t)p), 0);
    cr_assert_eq(is_legacy, 0, "cuMem memory");
    cr_assert_eq(emu.address_range(&base, &bytes, (uintptr_t)p + GRAN), 0);
    cr_assert_eq(base, (uintptr_t)p);
    cr_assert_eq(bytes, 2 * GRAN);
    memset(p, 0x5a, 2 * GRAN); /* readable and writable: cuMemSetAccess was made */
    cr_assert_eq(ncclMemFree(p), ncclSuccess);
    cr_assert_eq(emu.attribute(&mem_type, 2, (uintptr_t)p), 1, "unmapped and released");
    cr_assert_eq(ncclMemFree(NULL), ncclSuccess);
}

Test(memalloc, device_without_vmm_gets_cumemalloc, .timeout = 30)
{
    unsigned char is_legacy = 0;
    unsigned mem_type = 0;
    size_t bytes = 0;
    void *p = NULL;

    use_emu("libcuda_emu_novmm.so");
    cr_assert_eq(ncclMemAlloc(&p, 1000), ncclSuccess);
    cr_assert_eq(ac_backend_for_pointer(p), &ac_cuda_backend);
    cr_assert_eq(emu.attribute(&is_legacy, 10, (uintptr_t)p), 0);
    cr_assert_eq(is_legacy, 1, "cuMemAlloc memory");
    cr_assert_eq(emu.address_range(NULL, &bytes, (uintptr_t)p), 0);
    cr_assert_eq(bytes, 1000);
    cr_assert_eq(ncclMemFree(p), ncclSuccess);
    cr_assert_eq(emu.attribute(&mem_type, 2, (uintptr_t)p), 1, "freed");
}

Test(memalloc, without_gpu_host_memory, .timeout = 30)
{
    void *p = NULL;

    if (access("/dev/nvidiactl", F_OK) == 0 || access("/dev/kfd", F_OK) == 0)
        cr_skip_test("a GPU driver is installed: ncclMemAlloc gives device memory");
    unsetenv("ANYCCL_CUDA_LIBRARY");
    cr_assert_eq(ncclMemAlloc(&p, 100), ncclSuccess);
    cr_assert_eq(ac_backend_for_pointer(p), &ac_host_backend);
    memset(p, 1, 100);
    cr_assert_eq(ncclMemFree(p), ncclSuccess);
}

/* ---- the registration cache (src/core/devreg.c) ---- */

static struct ac_devreg_stats stats_of(ncclComm_t comm)
{
    struct ac_devreg_stats s;

    ac_devreg_get_stats(comm, &s);
    return s;
}

Test(devreg, registrations_share_one_export_per_allocation, .timeout = 60)
{
    ncclComm_t comm;
    char *a = NULL, *b = NULL;
    void *h1, *h2, *h3, *h4, *hb, *hh;
    struct ac_ipc_handle ih, ih2;
    size_t off = 0;
    int host[16];

    use_emu("libcuda_emu.so");
    cr_assert_eq(ncclCommInitAll(&comm, 1, NULL), ncclSuccess);
    cr_assert_eq(ncclMemAlloc((void **)&a, 100000), ncclSuccess);
    cr_assert_eq(ncclMemAlloc((void **)&b, 100000), ncclSuccess);
    cr_assert_eq(ncclCommRegister(comm, a, 100000, &h1), ncclSuccess);
    cr_assert_eq(ncclCommRegister(comm, a, 100000, &h2), ncclSuccess, "the same buffer twice");
    cr_assert_eq(ncclCommRegister(comm, a + 5000, 20000, &h3), ncclSuccess, "overlapping");
    cr_assert_eq(stats_of(comm).nregs, 3);
    cr_assert_eq(stats_of(comm).nexports, 1, "one export for one allocation");
    cr_assert_eq(ncclCommRegister(comm, a + GRAN - 10, 20, &h4), ncclInvalidArgument,
                 "past the allocation's end");
    cr_assert_eq(ncclCommRegister(comm, b + 100, 10, &hb), ncclSuccess);
    cr_assert_eq(stats_of(comm).nexports, 2);
    cr_assert_eq(ncclCommRegister(comm, host, sizeof host, &hh), ncclSuccess, "host memory");
    cr_assert_eq(stats_of(comm).nregs, 4, "a host buffer is not in the GPU cache");
    cr_assert_eq(ac_devreg_lookup(comm, a + 6000, 1000, &ih, &off), ncclSuccess);
    cr_assert_eq(ih.kind, AC_IPC_POSIX_FD);
    cr_assert_eq(off, 6000);
    cr_assert_eq(ac_devreg_lookup(comm, b + 100, 10, &ih2, &off), ncclSuccess);
    cr_assert_eq(off, 100);
    cr_assert_neq(memcmp(&ih, &ih2, sizeof ih), 0, "two allocations, two handles");
    cr_assert_eq(ac_devreg_lookup(comm, b + 100, 11, &ih2, &off), ncclInvalidArgument,
                 "past the registered part");
    cr_assert_eq(ac_devreg_lookup(comm, b, 1, &ih2, &off), ncclInvalidArgument);
    cr_assert_eq(ac_devreg_lookup(comm, host, 4, &ih2, &off), ncclInvalidArgument);
    /* deregistered in another order than registered: the export goes with the last one */
    cr_assert_eq(ncclCommDeregister(comm, h2), ncclSuccess);
    cr_assert_eq(ncclCommDeregister(comm, h2), ncclInvalidArgument, "twice");
    cr_assert_eq(ac_devreg_lookup(comm, a + 99999, 1, &ih2, &off), ncclSuccess);
    cr_assert_eq(memcmp(&ih, &ih2, sizeof ih), 0);
    cr_assert_eq(ncclCommDeregister(comm, h1), ncclSuccess);
    cr_assert_eq(ac_devreg_lookup(comm, a + 99999, 1, &ih2, &off), ncclInvalidArgument,
                 "only the overlapping part is registered now");
    cr_assert_eq(ac_devreg_lookup(comm, a + 5000, 20000, &ih2, &off), ncclSuccess);
    cr_assert_eq(stats_of(comm).nexports, 2);
    cr_assert_eq(ncclCommDeregister(comm, h3), ncclSuccess);
    cr_assert_eq(stats_of(comm).nexports, 1);
    cr_assert_eq(ncclCommDeregister(comm, hb), ncclSuccess);
    cr_assert_eq(ncclCommDeregister(comm, hh), ncclSuccess);
    cr_assert_eq(stats_of(comm).nregs, 0);
    cr_assert_eq(stats_of(comm).nexports, 0);
    cr_assert_eq(ncclCommDestroy(comm), ncclSuccess);
    cr_assert_eq(ncclMemFree(a), ncclSuccess);
    cr_assert_eq(ncclMemFree(b), ncclSuccess);
}

/* A forked child (the "peer") allocates with ncclMemAlloc, registers it, sends its handle, and
 * holds the memory until told to go. */
struct peer_proc {
    pid_t pid;
    int to_parent[2], to_child[2];
    struct ac_ipc_handle h;
    size_t off;
};

static void peer_start(struct peer_proc *pp, size_t bytes, unsigned seed)
{
    cr_assert_eq(pipe(pp->to_parent), 0);
    cr_assert_eq(pipe(pp->to_child), 0);
    pp->pid = fork();
    cr_assert(pp->pid >= 0);
    if (pp->pid == 0) {
        ncclComm_t comm;
        char *p = NULL, c;
        void *reg;
        if (ncclCommInitAll(&comm, 1, NULL) != ncclSuccess ||
            ncclMemAlloc((void **)&p, bytes) != ncclSuccess)
            _exit(1);
        fill((unsigned char *)p, bytes, seed);
        if (ncclCommRegister(comm, p + 64, bytes - 64, &reg) != ncclSuccess ||
            ac_devreg_lookup(comm, p + 64, 8, &pp->h, &pp->off) != ncclSuccess)
            _exit(2);
        if (write(pp->to_parent[1], &pp->h, sizeof pp->h) != sizeof pp->h ||
            write(pp->to_parent[1], &pp->off, sizeof pp->off) != sizeof pp->off ||
            read(pp->to_child[0], &c, 1) != 1)
            _exit(3);
        _exit(ncclCommDeregister(comm, reg) == ncclSuccess && ncclMemFree(p) == ncclSuccess &&
                      ncclCommDestroy(comm) == ncclSuccess
                  ? 0
                  : 4);
    }
    cr_assert_eq(read(pp->to_parent[0], &pp->h, sizeof pp->h), sizeof pp->h);
    cr_assert_eq(read(pp->to_parent[0], &pp->off, sizeof pp->off), sizeof pp->off);
}

static void peer_stop(struct peer_proc *pp)
{
    int status = -1;

    cr_assert_eq(write(pp->to_child[1], "x", 1), 1);
    cr_assert_eq(waitpid(pp->pid, &status, 0), pp->pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "peer status %d", status);
    close(pp->to_parent[0]);
    close(pp->to_parent[1]);
    close(pp->to_child[0]);
    close(pp->to_child[1]);
}

static void import_cache_case(const char *driver, int expected_kind)
{
    ncclComm_t comms[2];
    struct peer_proc pp;
    void *p = NULL, *q = NULL, *own = NULL;
    struct ac_ipc_handle own_h;
    size_t own_off = 0;
    unsigned mem_type = 0;
    void *reg;
    struct ac_devreg_stats s;

    use_emu(driver);
    cr_assert_eq(ncclCommInitAll(comms, 2, NULL), ncclSuccess);
    peer_start(&pp, 50000, 21);
    cr_assert_eq((int)pp.h.kind, expected_kind);
    cr_assert_eq(pp.off, 64);
    cr_assert_eq(ac_devreg_import(comms[0], 1, &pp.h, &p), ncclSuccess);
    cr_assert(is_filled(p, 50000, 21), "the peer's bytes");
    cr_assert_eq(ac_devreg_import(comms[0], 1, &pp.h, &q), ncclSuccess);
    cr_assert_eq(q, p, "cached");
    s = stats_of(comms[0]);
    cr_assert_eq(s.nimports, 1);
    cr_assert_eq(s.nrefs, 2);
    cr_assert_eq(ac_devreg_import(comms[0], 2, &pp.h, &q), ncclInvalidArgument, "no rank 2");
    cr_assert_eq(ac_devreg_release(comms[0], 1, p), ncclSuccess);
    cr_assert_eq(ac_devreg_release(comms[0], 1, p), ncclSuccess);
    cr_assert_eq(ac_devreg_release(comms[0], 1, p), ncclInvalidArgument, "no reference left");
    s = stats_of(comms[0]);
    cr_assert_eq(s.nimports, 1);
    cr_assert_eq(s.nidle, 1, "kept mapped, unreferenced");
    cr_assert_eq(ac_devreg_import(comms[0], 1, &pp.h, &q), ncclSuccess);
    cr_assert_eq(q, p, "the idle mapping reused");
    cr_assert_eq(stats_of(comms[0]).nidle, 0);
    /* another communicator has a cache of its own */
    cr_assert_eq(ac_devreg_import(comms[1], 0, &pp.h, &q), ncclSuccess);
    cr_assert_eq(stats_of(comms[1]).nimports, 1);
    /* the peer's connection goes: closed at the last release */
    ac_devreg_close_peer(comms[0], 1);
    cr_assert_eq(stats_of(comms[0]).nimports, 1, "still referenced");
    cr_assert_eq(ac_devreg_release(comms[0], 1, p), ncclSuccess);
    cr_assert_eq(stats_of(comms[0]).nimports, 0);
    /* a handle of this very process is refused */
    cr_assert_eq(ncclMemAlloc(&own, 4096), ncclSuccess);
    cr_assert_eq(ncclCommRegister(comms[0], own, 4096, &reg), ncclSuccess);
    cr_assert_eq(ac_devreg_lookup(comms[0], own, 4096, &own_h, &own_off), ncclSuccess);
    cr_assert_eq(ac_devreg_import(comms[0], 1, &own_h, &q), expected_kind == AC_IPC_VENDOR
                                                                ? ncclUnhandledCudaError
                                                                : ncclInvalidUsage);
    /* destroyed with a registration left and an import referenced (comms[1]): all closed */
    cr_assert_eq(ncclCommDestroy(comms[0]), ncclSuccess);
    q = NULL;
    cr_assert_eq(ac_devreg_import(comms[1], 0, &pp.h, &q), ncclSuccess);
    cr_assert_eq(ncclCommDestroy(comms[1]), ncclSuccess);
    cr_assert_eq(emu.attribute(&mem_type, 2, (uintptr_t)q), 1, "the import was closed");
    peer_stop(&pp);
    cr_assert_eq(ncclMemFree(own), ncclSuccess);
}

Test(devreg, import_cache_cumem_posix_fd, .timeout = 60)
{
    import_cache_case("libcuda_emu.so", AC_IPC_POSIX_FD);
}

Test(devreg, import_cache_legacy_ipc, .timeout = 60)
{
    import_cache_case("libcuda_emu_novmm.so", AC_IPC_VENDOR);
}

/* Unreferenced imports beyond AC_DEVREG_MAX_IDLE: the one unused the longest is closed. A child
 * exports that many allocations and one more (cuMemAlloc: legacy handles). */
#define NEVICT (AC_DEVREG_MAX_IDLE + 2)
Test(devreg, idle_imports_are_bounded, .timeout = 60)
{
    static struct ac_ipc_handle hs[NEVICT];
    void *bases[NEVICT], *q = NULL;
    int to_parent[2], to_child[2], status = -1;
    ncclComm_t comms[2];
    pid_t pid;
    char c;

    use_emu("libcuda_emu_novmm.so");
    cr_assert_eq(pipe(to_parent), 0);
    cr_assert_eq(pipe(to_child), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < NEVICT; i++) {
            uintptr_t p = 0;
            if (emu.mem_alloc(&p, 4096) != 0 || emu.ipc_get(&hs[i], p) != 0)
                _exit(1);
        }
        _exit(write(to_parent[1], hs, sizeof hs) == (ssize_t)sizeof hs &&
                      read(to_child[0], &c, 1) == 1
                  ? 0
                  : 2);
    }
    cr_assert_eq(read(to_parent[0], hs, sizeof hs), (ssize_t)sizeof hs);
    cr_assert_eq(ncclCommInitAll(comms, 2, NULL), ncclSuccess);
    for (int i = 0; i < NEVICT; i++) {
        cr_assert_eq(ac_devreg_import(comms[0], 1, &hs[i], &bases[i]), ncclSuccess, "import %d", i);
        cr_assert_eq(ac_devreg_release(comms[0], 1, bases[i]), ncclSuccess);
    }
    cr_assert_eq(stats_of(comms[0]).nimports, AC_DEVREG_MAX_IDLE);
    cr_assert_eq(stats_of(comms[0]).nidle, AC_DEVREG_MAX_IDLE);
    cr_assert_eq(ac_devreg_import(comms[0], 1, &hs[NEVICT - 1], &q), ncclSuccess);
    cr_assert_eq(q, bases[NEVICT - 1], "the latest is still cached");
    cr_assert_eq(stats_of(comms[0]).nimports, AC_DEVREG_MAX_IDLE);
    cr_assert_eq(ac_devreg_import(comms[0], 1, &hs[0], &q), ncclSuccess);
    cr_assert_eq(stats_of(comms[0]).nimports, AC_DEVREG_MAX_IDLE + 1, "the first was closed");
    cr_assert_eq(stats_of(comms[0]).nrefs, 2);
    cr_assert_eq(ncclCommDestroy(comms[0]), ncclSuccess);
    cr_assert_eq(ncclCommDestroy(comms[1]), ncclSuccess);
    cr_assert_eq(write(to_child[1], "x", 1), 1);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
