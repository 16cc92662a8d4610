/* Device backends without a GPU: the host backend's calls, the registry's fallbacks when a GPU
 * runtime is missing, lacks a symbol or sees no device (fake libcuda.so.1 variants built by
 * mk/device.mk next to this binary, in fake/), and the CUDA backend's pointer classification and
 * launch marshalling against the fake with one device. */
#include "device/backend.h"
#include "device/kernels/launch.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* As in fake_cuda.c. */
struct fake_launch {
    char name[64];
    unsigned grid, block;
    void *stream;
    void *copy_dst;
    const void *copy_src;
    uint64_t copy_bytes;
    struct ac_kreduce_args reduce;
    volatile uint32_t *flag;
    uint32_t flag_value;
};

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

/* The CUDA backend's verdict with the driver library at path. */
static const struct ac_backend *cuda_with(const char *path, char *why, size_t why_len)
{
    ac_backends_reset_for_test();
    ac_cuda_set_library_for_test(path);
    return ac_backend_get(AC_MEM_CUDA, why, why_len);
}

static const struct fake_launch *last_launch(void)
{
    void *h = dlopen(fake_path, RTLD_NOW | RTLD_NOLOAD);
    const struct fake_launch *(*fn)(void);

    cr_assert_not_null(h, "the fake driver is not loaded");
    fn = (const struct fake_launch *(*)(void))dlsym(h, "fake_cuda_last_launch");
    cr_assert_not_null(fn);
    dlclose(h);
    return fn();
}

Test(host_backend, always_usable_and_owns_host_memory, .timeout = 10)
{
    const struct ac_backend *be = ac_backend_get(AC_MEM_HOST, NULL, 0);
    struct ac_ptr_info info;
    bool is_mine = false;
    int x = 0;

    cr_assert_eq(be, &ac_host_backend);
    cr_assert_eq(be->size, sizeof(struct ac_backend));
    cr_assert_eq(be->classify(&x, &is_mine, &info), ncclSuccess);
    cr_assert(is_mine);
    cr_assert_eq(info.kind, AC_MEM_HOST);
    cr_assert_eq(info.device, -1);
}

Test(host_backend, memory_calls_complete_before_return, .timeout = 10)
{
    const struct ac_backend *be = &ac_host_backend;
    unsigned char *p = NULL, src[100];
    void *stream = (void *)1, *event = NULL;
    bool is_done = false;

    for (int i = 0; i < 100; i++)
        src[i] = (unsigned char)(3 * i + 1);
    cr_assert_eq(be->alloc(0, 100, (void **)&p), ncclSuccess);
    cr_assert_eq((uintptr_t)p % 64, 0);
    cr_assert_eq(be->memset_async(p, 0xab, 100, NULL), ncclSuccess);
    cr_assert_eq(p[0], 0xab);
    cr_assert_eq(p[99], 0xab);
    cr_assert_eq(be->memcpy_async(p, src, 60, NULL), ncclSuccess);
    cr_assert_eq(memcmp(p, src, 60), 0);
    cr_assert_eq(p[60], 0xab);
    cr_assert_eq(be->stream_create(&stream), ncclSuccess);
    cr_assert_null(stream);
    cr_assert_eq(be->event_create(&event), ncclSuccess);
    cr_assert_not_null(event);
    cr_assert_eq(be->event_record(event, stream), ncclSuccess);
    cr_assert_eq(be->event_query(event, &is_done), ncclSuccess);
    cr_assert(is_done);
    cr_assert_eq(be->free(p), ncclSuccess);
}

Test(host_backend, ipc_is_refused_with_a_reason, .timeout = 10)
{
    struct ac_ipc_handle h;
    void *p = NULL;
    int x = 0;

    cr_assert_eq(ac_host_backend.ipc_export(&x, &h), ncclInvalidUsage);
    cr_assert_eq(ac_host_backend.ipc_import(&h, &p), ncclInvalidUsage);
}

/* avg over 4 ranks of float: the final step divides (1+3)/4 = 1, (2+6)/4 = 2, ... */
Test(host_backend, reduce_and_load_follow_reduce_h, .timeout = 10)
{
    struct ac_redop op = {.type = ncclFloat32, .kind = AC_OP_SUM, .postdiv = 4};
    float a[3] = {1, 2, 3}, b[3] = {3, 6, 9}, d[3];
    int32_t ib[3] = {5, -7, 9}, id[3];
    struct ac_redop premul = {
        .type = ncclInt32, .kind = AC_OP_SUM, .has_premul = true, .scalar = 3};

    cr_assert_eq(ac_host_backend.reduce(&op, d, a, b, 3, true, NULL), ncclSuccess);
    cr_assert_float_eq(d[0], 1.0f, 0);
    cr_assert_float_eq(d[1], 2.0f, 0);
    cr_assert_float_eq(d[2], 3.0f, 0);
    cr_assert_eq(ac_host_backend.reduce(&op, d, a, b, 3, false, NULL), ncclSuccess);
    cr_assert_float_eq(d[2], 12.0f, 0);
    cr_assert_eq(ac_host_backend.reduce(&premul, id, NULL, ib, 3, false, NULL), ncclSuccess);
    cr_assert_eq(id[0], 15);
    cr_assert_eq(id[1], -21);
    cr_assert_eq(id[2], 27);
    cr_assert_eq(ac_host_backend.copy(d, a, sizeof a, NULL), ncclSuccess);
    cr_assert_eq(memcmp(d, a, sizeof a), 0);
}

Test(registry, host_pointers_belong_to_the_host_backend, .timeout = 10)
{
    int on_stack = 0;
    void *on_heap = malloc(16);

    cr_assert_eq(ac_backend_for_pointer(&on_stack), &ac_host_backend);
    cr_assert_eq(ac_backend_for_pointer(on_heap), &ac_host_backend);
    cr_assert_eq(ac_backend_for_pointer(NULL), &ac_host_backend);
    free(on_heap);
}

Test(registry, invalid_kind_is_refused, .timeout = 10)
{
    char why[128] = "";

    cr_assert_null(ac_backend_get(AC_MEM_KIND_COUNT, why, sizeof why));
    cr_assert_str_eq(why, "no backend for memory kind 3");
}

Test(cuda_fallback, missing_runtime_says_which_library, .timeout = 10)
{
    char why[256] = "";
    int x = 0;

    cr_assert_null(cuda_with("/nonexistent/libcuda.so.1", why, sizeof why));
    cr_assert(strstr(why, "cannot load /nonexistent/libcuda.so.1") != NULL, "why: %s", why);
    cr_assert(strstr(why, "no NVIDIA driver") != NULL, "why: %s", why);
    cr_assert_eq(ac_backend_for_pointer(&x), &ac_host_backend);
}

Test(cuda_fallback, missing_symbol_is_named, .timeout = 10)
{
    char why[256] = "";

    cr_assert_null(cuda_with(fake("libcuda_nosym.so"), why, sizeof why));
    cr_assert(strstr(why, "has no cuLaunchKernel") != NULL, "why: %s", why);
}

Test(cuda_fallback, zero_devices, .timeout = 10)
{
    char why[256] = "";

    cr_assert_null(cuda_with(fake("libcuda_nodev.so"), why, sizeof why));
    cr_assert(strstr(why, "no CUDA device") != NULL, "why: %s", why);
    cr_assert(strstr(why, "0 devices") != NULL, "why: %s", why);
}

Test(cuda_fallback, init_failure_gives_the_driver_text, .timeout = 10)
{
    char why[256] = "";

    cr_assert_null(cuda_with(fake("libcuda_initfail.so"), why, sizeof why));
    cr_assert(strstr(why, "cuInit failed: no CUDA-capable device is detected (CUDA error 100)"),
              "why: %s", why);
}

/* The toolkit's stub libcuda.so fails cuInit with CUDA_ERROR_STUB_LIBRARY (34). */
Test(cuda_fallback, toolkit_stub_library, .timeout = 10)
{
    const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
    char why[256] = "";

    if (access(stub, R_OK) != 0)
        cr_skip_test("%s not installed", stub);
    cr_assert_null(cuda_with(stub, why, sizeof why));
    cr_assert(strstr(why, "cuInit failed") != NULL, "why: %s", why);
    cr_assert(strstr(why, "CUDA error 34") != NULL, "why: %s", why);
}

Test(cuda_fallback, describe_says_why, .timeout = 10)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    ac_backends_reset_for_test();
    ac_cuda_set_library_for_test("/nonexistent/libcuda.so.1");
    ac_hip_set_library_for_test("/nonexistent/libamdhip64.so");
    ac_backends_describe(out);
    fclose(out);
    cr_assert(strstr(text, "  host: usable\n") != NULL, "%s", text);
    cr_assert(strstr(text, "  cuda: not usable: cannot load /nonexistent/libcuda.so.1") != NULL,
              "%s", text);
    cr_assert(strstr(text, "  hip: not usable: cannot load /nonexistent/libamdhip64.so") != NULL,
              "%s", text);
    cr_assert(strstr(text, "kernels in this library: ") != NULL, "%s", text);
    free(text);
}

Test(cuda_fake, usable_and_described, .timeout = 10)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out;

    cr_assert_eq(cuda_with(fake("libcuda_onedev.so"), NULL, 0), &ac_cuda_backend);
    out = open_memstream(&text, &len);
    ac_backends_describe(out);
    fclose(out);
    cr_assert(strstr(text, "  cuda: usable: driver 12.4, 1 device, device 0: Fake GPU (sm_90)\n"),
              "%s", text);
    free(text);
}

Test(cuda_fake, classifies_device_and_host_pointers, .timeout = 10)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_onedev.so"), NULL, 0);
    struct ac_ptr_info info = {.kind = AC_MEM_HOST};
    bool is_mine = true;
    char *dev = NULL;
    int x = 0;

    cr_assert_not_null(be);
    cr_assert_eq(be->alloc(0, 256, (void **)&dev), ncclSuccess);
    cr_assert_eq(ac_backend_for_pointer(dev), &ac_cuda_backend);
    cr_assert_eq(ac_backend_for_pointer(dev + 255), &ac_cuda_backend);
    cr_assert_eq(ac_backend_for_pointer(&x), &ac_host_backend);
    cr_assert_eq(be->classify(dev + 10, &is_mine, &info), ncclSuccess);
    cr_assert(is_mine);
    cr_assert_eq(info.kind, AC_MEM_CUDA);
    cr_assert_eq(info.device, 0);
    cr_assert_eq(be->classify(&x, &is_mine, &info), ncclSuccess);
    cr_assert_not(is_mine);
    cr_assert_eq(be->free(dev), ncclSuccess);
    cr_assert_eq(be->alloc(1, 16, (void **)&dev), ncclInvalidArgument);
}

Test(cuda_fake, memory_events_and_ipc, .timeout = 10)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_onedev.so"), NULL, 0);
    char *dev = NULL, back[32], src[32];
    void *stream = NULL, *event = NULL, *imported = NULL;
    struct ac_ipc_handle h;
    bool is_done = true;

    cr_assert_not_null(be);
    for (int i = 0; i < 32; i++)
        src[i] = (char)(i * 7);
    cr_assert_eq(be->alloc(0, 32, (void **)&dev), ncclSuccess);
    cr_assert_eq(be->stream_create(&stream), ncclSuccess);
    cr_assert_eq(be->memset_async(dev, 0x5a, 32, stream), ncclSuccess);
    cr_assert_eq(be->memcpy_async(dev, src, 16, stream), ncclSuccess);
    cr_assert_eq(be->memcpy_async(back, dev, 32, stream), ncclSuccess);
    cr_assert_eq(memcmp(back, src, 16), 0);
    cr_assert_eq(back[16], 0x5a);
    cr_assert_eq(be->event_create(&event), ncclSuccess);
    cr_assert_eq(be->event_record(event, stream), ncclSuccess);
    cr_assert_eq(be->event_query(event, &is_done), ncclSuccess);
    cr_assert_not(is_done, "the fake's first query after a record is CUDA_ERROR_NOT_READY");
    cr_assert_eq(be->event_query(event, &is_done), ncclSuccess);
    cr_assert(is_done);
    cr_assert_eq(be->ipc_export(dev, &h), ncclSuccess);
    cr_assert_eq(be->ipc_import(&h, &imported), ncclSuccess);
    cr_assert_eq(imported, dev);
    cr_assert_eq(be->ipc_close(imported), ncclSuccess);
    cr_assert_eq(be->event_destroy(event), ncclSuccess);
    cr_assert_eq(be->stream_destroy(stream), ncclSuccess);
    cr_assert_eq(be->free(dev), ncclSuccess);
    cr_assert_eq(be->free(dev), ncclUnhandledCudaError, "a second free is the driver's error");
}

/* The host backend runs calls as they are made: a signal is a store, a wait on a flag already
 * reached passes, one not reached is refused rather than spinning forever. */
Test(host_backend, flags_are_synchronous, .timeout = 10)
{
    const struct ac_backend *be = ac_backend_get(AC_MEM_HOST, NULL, 0);
    uint32_t *flags = NULL;

    cr_assert_eq(be->host_alloc(16, (void **)&flags), ncclSuccess);
    cr_assert_eq(flags[0], 0);
    cr_assert_eq(be->stream_signal(NULL, flags, 3), ncclSuccess);
    cr_assert_eq(flags[0], 3);
    cr_assert_eq(be->stream_wait(NULL, flags, 3), ncclSuccess);
    cr_assert_eq(be->stream_wait(NULL, flags, 2), ncclSuccess);
    cr_assert_eq(be->stream_wait(NULL, flags, 4), ncclInvalidUsage);
    flags[0] = 0xfffffffeu; /* sequence numbers wrap: 1 comes after 0xfffffffe */
    cr_assert_eq(be->stream_wait(NULL, flags, 1), ncclInvalidUsage);
    flags[0] = 2;
    cr_assert_eq(be->stream_wait(NULL, flags, 0xfffffffeu), ncclSuccess);
    cr_assert_eq(be->host_free(flags), ncclSuccess);
}

/* Pinned staging memory, and the stream's signal and wait launched as one-thread kernels by a
 * driver without stream memory operations (the fake has none). */
Test(cuda_fake, pinned_memory_and_flag_kernels, .timeout = 10)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_onedev.so"), NULL, 0);
    void *stream = (void *)0x1234;
    uint32_t *flags = NULL;
    const struct fake_launch *l;

    cr_assert_not_null(be);
    cr_assert_eq(be->host_alloc(64, (void **)&flags), ncclSuccess);
    cr_assert_eq(flags[0] | flags[15], 0, "pinned memory comes zeroed");
    if (ac_cuda_built_archs()[0] == '\0') {
        cr_assert_eq(be->stream_signal(stream, flags, 7), ncclInvalidUsage);
    } else {
        cr_assert_eq(be->stream_signal(stream, &flags[1], 7), ncclSuccess);
        l = last_launch();
        cr_assert_str_eq(l->name, AC_KERNEL_SIGNAL_NAME);
        cr_assert_eq(l->grid, 1);
        cr_assert_eq(l->block, 1);
        cr_assert_eq(l->stream, stream);
        cr_assert_eq(l->flag, &flags[1]);
        cr_assert_eq(l->flag_value, 7);
        cr_assert_eq(be->stream_wait(stream, &flags[2], 0xffffffffu), ncclSuccess);
        cr_assert_str_eq(l->name, AC_KERNEL_WAIT_NAME);
        cr_assert_eq(l->flag, &flags[2]);
        cr_assert_eq(l->flag_value, 0xffffffffu);
    }
    cr_assert_eq(be->host_free(flags), ncclSuccess);
}

/* Without nvcc at build time there is nothing to launch, and the backend says so. */
Test(cuda_fake, launches_marshal_their_arguments, .timeout = 10)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_onedev.so"), NULL, 0);
    struct ac_redop op = {.type = ncclBfloat16,
                          .kind = AC_OP_MAX,
                          .has_premul = true,
                          .scalar = 0x4040,
                          .postdiv = 8};
    void *stream = (void *)0x1234, *d = (void *)0x100, *a = (void *)0x200, *b = (void *)0x300;
    uint64_t count = 3 * AC_KERNEL_THREADS * 4 + 1;
    const struct fake_launch *l;

    cr_assert_not_null(be);
    if (ac_cuda_built_archs()[0] == '\0') {
        cr_assert_eq(be->reduce(&op, d, a, b, count, true, stream), ncclInvalidUsage);
        return;
    }
    cr_assert_eq(be->reduce(&op, d, a, b, count, true, stream), ncclSuccess);
    l = last_launch();
    cr_assert_str_eq(l->name, "ac_k_reduce_bf16");
    cr_assert_eq(l->grid, 4);
    cr_assert_eq(l->block, AC_KERNEL_THREADS);
    cr_assert_eq(l->stream, stream);
    cr_assert_eq(l->reduce.dst, d);
    cr_assert_null(l->reduce.dst2);
    cr_assert_eq(l->reduce.a, a);
    cr_assert_eq(l->reduce.b, b);
    cr_assert_eq(l->reduce.count, count);
    cr_assert_eq(l->reduce.scalar, 0x4040);
    cr_assert_eq(l->reduce.kind, AC_OP_MAX);
    cr_assert_eq(l->reduce.has_premul, 1);
    cr_assert_eq(l->reduce.postdiv, 8);
    cr_assert_eq(be->reduce(&op, d, NULL, b, 1, false, stream), ncclSuccess);
    cr_assert_null(l->reduce.a);
    cr_assert_eq(l->reduce.postdiv, 0, "postdiv only on the final step");
    cr_assert_eq(l->grid, 1);
    cr_assert_eq(be->copy(d, a, 1000, stream), ncclSuccess);
    cr_assert_str_eq(l->name, AC_KERNEL_COPY_NAME);
    cr_assert_eq(l->copy_dst, d);
    cr_assert_eq(l->copy_src, a);
    cr_assert_eq(l->copy_bytes, 1000);
}

Test(cuda_fake, invalid_type_is_refused, .timeout = 10)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_onedev.so"), NULL, 0);
    struct ac_redop op = {.type = ncclNumTypes, .kind = AC_OP_SUM};
    char x[4] = {0};

    cr_assert_not_null(be);
    cr_assert_eq(be->reduce(&op, x, x, x, 1, false, NULL), ncclInvalidArgument);
}

Test(hip_fallback, missing_runtime_says_which_library, .timeout = 10)
{
    char why[256] = "";

    ac_backends_reset_for_test();
    ac_hip_set_library_for_test("/nonexistent/libamdhip64.so");
    cr_assert_null(ac_backend_get(AC_MEM_HIP, why, sizeof why));
    cr_assert(strstr(why, "cannot load /nonexistent/libamdhip64.so") != NULL, "why: %s", why);
    cr_assert(strstr(why, "no ROCm runtime") != NULL, "why: %s", why);
}

Test(hip_fallback, missing_symbol_is_named, .timeout = 10)
{
    char why[256] = "";

    /* A CUDA driver is a library without any hip* symbol. */
    ac_backends_reset_for_test();
    ac_hip_set_library_for_test(fake("libcuda_onedev.so"));
    cr_assert_null(ac_backend_get(AC_MEM_HIP, why, sizeof why));
    cr_assert(strstr(why, "has no hipInit") != NULL, "why: %s", why);
}

/* The emulated driver (emu_cuda.c) runs the host build of the kernels that nvcc and hipcc compile:
 * through the CUDA backend's launches, the copy kernel and every type's reduce kernel must give
 * the host backend's results byte for byte (sum, prod, max, min; premul; postdiv; a NULL). */
Test(cuda_emu, kernels_match_the_host_backend, .timeout = 60)
{
    const struct ac_backend *be = cuda_with(fake("libcuda_emu.so"), NULL, 0);
    enum { N = 3001 };
    static unsigned char a[N * 8], b[N * 8], want[N * 8], got[N * 8];
    char *da, *db, *dd;
    void *stream;

    cr_assert_not_null(be);
    if (ac_cuda_built_archs()[0] == '\0')
        cr_skip_test("the library was built without nvcc: no CUDA kernels to launch");
    for (size_t i = 0; i < sizeof a; i++) {
        a[i] = (unsigned char)(i * 37 + 11);
        b[i] = (unsigned char)(i * 101 + 3);
    }
    cr_assert_eq(be->alloc(0, sizeof a, (void **)&da), ncclSuccess);
    cr_assert_eq(be->alloc(0, sizeof b, (void **)&db), ncclSuccess);
    cr_assert_eq(be->alloc(0, sizeof got, (void **)&dd), ncclSuccess);
    cr_assert_eq(be->stream_create(&stream), ncclSuccess);
    cr_assert_eq(be->memcpy_async(da, a, sizeof a, stream), ncclSuccess);
    cr_assert_eq(be->memcpy_async(db, b, sizeof b, stream), ncclSuccess);
    cr_assert_eq(be->copy(dd + 1, da + 3, 1000, stream), ncclSuccess);
    cr_assert_eq(be->memcpy_async(got, dd + 1, 1000, stream), ncclSuccess);
    cr_assert_eq(be->stream_sync(stream), ncclSuccess);
    cr_assert_eq(memcmp(got, a + 3, 1000), 0, "copy kernel");
    for (int t = 0; t < ncclNumTypes; t++) {
        /* Integer types take any bytes; float and double get small numbers (no NaN, whose payload
         * the two compilers need not agree on). 16- and 8-bit floats: test_reduce covers them. */
        if (t == ncclFloat16 || t == ncclBfloat16 || t >= ncclFloat8e4m3)
            continue;
        for (size_t i = 0; i < N && (t == ncclFloat32 || t == ncclFloat64); i++) {
            double x = (double)((int)(i % 17) - 8) * 0.75, y = (double)((int)(i % 5) - 2) * 1.5;
            if (t == ncclFloat32) {
                ((float *)a)[i] = (float)x;
                ((float *)b)[i] = (float)y;
            } else {
                ((double *)a)[i] = x;
                ((double *)b)[i] = y;
            }
        }
        cr_assert_eq(be->memcpy_async(da, a, sizeof a, stream), ncclSuccess);
        cr_assert_eq(be->memcpy_async(db, b, sizeof b, stream), ncclSuccess);
        for (int k = 0; k < AC_OP_KIND_COUNT; k++)
            for (int v = 0; v < 3; v++) {
                struct ac_redop op = {.type = (ncclDataType_t)t,
                                      .kind = (enum ac_op_kind)k,
                                      .has_premul = v == 1,
                                      .scalar = 3,
                                      .postdiv = v == 2 ? 3 : 0};
                ac_kern_reduce(&op, want, a, b, N, true);
                cr_assert_eq(be->reduce(&op, dd, da, db, N, true, stream), ncclSuccess);
                cr_assert_eq(be->memcpy_async(got, dd, N * ac_type_size(t), stream), ncclSuccess);
                cr_assert_eq(be->stream_sync(stream), ncclSuccess);
                cr_assert_eq(memcmp(got, want, N * ac_type_size(t)), 0,
                             "reduce type %d op %d variant %d", t, k, v);
            }
    }
    cr_assert_eq(be->stream_destroy(stream), ncclSuccess);
    cr_assert_eq(be->free(da), ncclSuccess);
    cr_assert_eq(be->free(db), ncclSuccess);
    cr_assert_eq(be->free(dd), ncclSuccess);
}
