/* GPU check of one device backend (tests/gpu/run.sh builds it against libanyccl_internal.a): the
 * embedded kernels load and give, bit for bit, what the host backend gives for every type and
 * operator (premul, avg's final division, a NULL a, a second destination), memory calls and
 * events work, and the copy/reduce kernels' bandwidth is printed. Never run by this project's CI
 * (no GPU): written for a machine with one.
 *   gpu_backend cuda|hip [bytes for the bandwidth runs, default 256M]
 * Prints "PASS gpu/<backend>-<check>", "FAIL ...: why" or "SKIP ...: reason"; exits 1 on a FAIL. */
#include "device/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNT 100003 /* odd, more than one grid's worth of elements */

static const char *be_name;
static int nfail;

static void report(bool ok, const char *check, const char *why)
{
    if (ok)
        printf("PASS gpu/%s-%s\n", be_name, check);
    else
        printf("FAIL gpu/%s-%s: %s\n", be_name, check, why);
    nfail += !ok;
}

/* Random bytes; every 16th element position of a float type ends up NaN or inf for some seeds. */
static void fill(unsigned char *p, size_t bytes, unsigned seed)
{
    for (size_t i = 0; i < bytes; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
}

/* Whether element bytes p of a float type are a NaN (false for integer types). */
static bool is_nan(ncclDataType_t type, const unsigned char *p)
{
    uint64_t v = 0;
    memcpy(&v, p, ac_type_size(type)); /* little-endian */
    switch (type) {
    case ncclFloat16:
        return (v & 0x7fff) > 0x7c00;
    case ncclBfloat16:
        return (v & 0x7fff) > 0x7f80;
    case ncclFloat32:
        return (v & 0x7fffffffu) > 0x7f800000u;
    case ncclFloat64:
        return (v & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
    case ncclFloat8e4m3:
        return (v & 0x7f) == 0x7f;
    case ncclFloat8e5m2:
        return (v & 0x7f) > 0x7c;
    default:
        return false;
    }
}

/* One (type, op, has_premul, is_final) case on the device against the host backend: every
 * element bit for bit, except that any NaN equals any NaN (which NaN an operation on NaNs
 * returns is not specified: GPUs give a canonical one, x86 the first operand's, quieted). */
static bool reduce_case(const struct ac_backend *be, ncclDataType_t type, enum ac_op_kind kind,
                        int variant, char *why, size_t why_len)
{
    bool with_a = variant & 1, is_final = variant & 4;
    size_t bytes = COUNT * ac_type_size(type);
    struct ac_redop op = {.type = type, .kind = kind, .has_premul = variant & 2, .postdiv = 3};
    unsigned char *a = malloc(bytes), *b = malloc(bytes), *want = malloc(bytes),
                  *got = malloc(bytes);
    void *da = NULL, *db = NULL, *dd = NULL;
    bool ok = false;

    fill(a, bytes, 1 + type * 8 + kind);
    fill(b, bytes, 100 + type * 8 + kind);
    memcpy(&op.scalar, b, ac_type_size(type)); /* any value of the type */
    ac_host_backend.reduce(&op, want, with_a ? a : NULL, b, COUNT, is_final, NULL);
    if (be->alloc(0, bytes, &da) || be->alloc(0, bytes, &db) || be->alloc(0, bytes, &dd) ||
        be->memcpy_async(da, a, bytes, NULL) || be->memcpy_async(db, b, bytes, NULL) ||
        be->reduce(&op, dd, with_a ? da : NULL, db, COUNT, is_final, NULL) ||
        be->memcpy_async(got, dd, bytes, NULL) || be->stream_sync(NULL)) {
        snprintf(why, why_len, "%s", "a backend call failed (NCCL_DEBUG=WARN says which)");
    } else {
        size_t es = ac_type_size(type), i = 0;
        while (i < bytes && (memcmp(got + i, want + i, es) == 0 ||
                             (is_nan(type, got + i) && is_nan(type, want + i))))
            i += es;
        ok = i == bytes;
        if (!ok)
            snprintf(why, why_len,
                     "%s op %d variant %d (1: a, 2: premul, 4: final): byte %zu is %#x, "
                     "host says %#x",
                     ac_type_name(type), kind, variant, i, got[i], want[i]);
    }
    be->free(da), be->free(db), be->free(dd);
    free(a), free(b), free(want), free(got);
    return ok;
}

static void check_reduce(const struct ac_backend *be)
{
    char why[256] = "", check[64];

    for (int t = 0; t < ncclNumTypes; t++) {
        bool ok = true;
        for (int k = 0; k < AC_OP_KIND_COUNT && ok; k++)
            for (int v = 0; v < 8 && ok; v++)
                ok = reduce_case(be, t, k, v, why, sizeof why);
        snprintf(check, sizeof check, "reduce-%s", ac_type_name(t));
        report(ok, check, why);
    }
}

static void check_memory(const struct ac_backend *be)
{
    size_t bytes = 1000003;
    unsigned char *h = malloc(bytes), *back = malloc(bytes);
    void *d = NULL, *d2 = NULL, *stream = NULL, *event = NULL;
    bool is_done = false, ok;

    fill(h, bytes, 7);
    ok = !be->alloc(0, bytes, &d) && !be->alloc(0, bytes, &d2) && !be->stream_create(&stream) &&
         !be->event_create(&event) && ac_backend_for_pointer(d) == be &&
         ac_backend_for_pointer(h) == &ac_host_backend && !be->memset_async(d2, 0, bytes, stream) &&
         !be->memcpy_async(d, h, bytes, stream) &&
         !be->copy(d2, (char *)d + 1, bytes - 1, stream) &&
         !be->memcpy_async(back, d2, bytes, stream) && !be->event_record(event, stream) &&
         !be->event_sync(event) && !be->event_query(event, &is_done) && is_done &&
         memcmp(back, h + 1, bytes - 1) == 0 && back[bytes - 1] == 0;
    report(ok, "memory-copy-events", "alloc/classify/memset/memcpy/copy kernel/event failed");
    be->event_destroy(event), be->stream_destroy(stream), be->free(d), be->free(d2);
    free(h), free(back);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Bandwidth of the copy kernel and of a float sum (2 reads, 1 write), 10 runs after a warm-up. */
static void bench(const struct ac_backend *be, size_t bytes)
{
    struct ac_redop op = {.type = ncclFloat32, .kind = AC_OP_SUM};
    void *a = NULL, *b = NULL, *d = NULL;
    double t0, copy_s, reduce_s, vendor_s;

    if (be->alloc(0, bytes, &a) || be->alloc(0, bytes, &b) || be->alloc(0, bytes, &d)) {
        printf("SKIP gpu/%s-bench: cannot allocate 3 x %zu bytes\n", be_name, bytes);
        return;
    }
    be->memset_async(a, 0, bytes, NULL), be->memset_async(b, 0, bytes, NULL);
    be->copy(d, a, bytes, NULL), be->stream_sync(NULL);
    t0 = now_s();
    for (int i = 0; i < 10; i++)
        be->copy(d, a, bytes, NULL);
    be->stream_sync(NULL);
    copy_s = (now_s() - t0) / 10;
    t0 = now_s();
    for (int i = 0; i < 10; i++)
        be->reduce(&op, d, a, b, bytes / 4, false, NULL);
    be->stream_sync(NULL);
    reduce_s = (now_s() - t0) / 10;
    /* the device's own copy (cuMemcpyAsync / hipMemcpyAsync device to device): the reference */
    be->memcpy_async(d, a, bytes, NULL), be->stream_sync(NULL);
    t0 = now_s();
    for (int i = 0; i < 10; i++)
        be->memcpy_async(d, a, bytes, NULL);
    be->stream_sync(NULL);
    vendor_s = (now_s() - t0) / 10;
    double vendor = 2.0 * bytes / vendor_s / 1e9, reduce = 3.0 * bytes / reduce_s / 1e9;
    printf("# %s bench, %zu bytes: device memcpy %.1f GB/s, copy kernel %.1f GB/s (read+write), "
           "reduce f32 sum %.1f GB/s (2 reads + 1 write)\n",
           be_name, bytes, vendor, 2.0 * bytes / copy_s / 1e9, reduce);
    printf("# %s reduce kernel at %.0f %% of the device's copy bandwidth (aim: 85 %%)\n", be_name,
           100.0 * reduce / vendor);
    printf("RESULT %s-reduce-vs-copy %.1f\n", be_name, 100.0 * reduce / vendor);
    be->free(a), be->free(b), be->free(d);
}

int main(int argc, char **argv)
{
    enum ac_mem_kind kind = argc > 1 && strcmp(argv[1], "hip") == 0 ? AC_MEM_HIP : AC_MEM_CUDA;
    size_t bench_bytes = argc > 2 ? strtoull(argv[2], NULL, 0) : (size_t)256 << 20;
    char why[256] = "";
    const struct ac_backend *be = ac_backend_get(kind, why, sizeof why);

    be_name = kind == AC_MEM_HIP ? "hip" : "cuda";
    if (be == NULL) {
        printf("SKIP gpu/%s: %s\n", be_name, why);
        return 0;
    }
    printf("# %s: %s\n", be_name,
           kind == AC_MEM_HIP ? ac_hip_built_archs() : ac_cuda_built_archs());
    check_memory(be);
    check_reduce(be);
    bench(be, bench_bytes);
    return nfail ? 1 : 0;
}
