/* The one table of device backends, indexed by memory kind. Each backend is initialized once, at
 * first use, and its verdict (usable, or why not) is kept: a process without a GPU runtime pays
 * for the failed dlopen once and runs everything on the host backend. */
#include "device/backend.h"

#include "common/config.h"
#include "common/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#define WHY_BYTES 256

static const struct ac_backend *const all_backends[AC_MEM_KIND_COUNT] = {
    [AC_MEM_HOST] = &ac_host_backend,
    [AC_MEM_CUDA] = &ac_cuda_backend,
    [AC_MEM_HIP] = &ac_hip_backend,
};

struct verdict {
    bool is_done;
    bool is_usable;
    char why[WHY_BYTES];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct verdict verdicts[AC_MEM_KIND_COUNT];
/* -1: not decided yet; 0: no GPU backend is usable; 1: one is. */
static _Atomic int has_gpu = -1;

static const struct verdict *verdict_of(enum ac_mem_kind kind)
{
    struct verdict *v = &verdicts[kind];

    /* Every call on GPU buffers asks: no lock once the verdict is in. */
    if (__atomic_load_n(&v->is_done, __ATOMIC_ACQUIRE))
        return v;
    pthread_mutex_lock(&lock);
    if (!v->is_done) {
        v->why[0] = '\0';
        all_backends[kind]->init(&v->is_usable, v->why, sizeof v->why);
        __atomic_store_n(&v->is_done, true, __ATOMIC_RELEASE);
        AC_INFO(AC_SUB_INIT, "device backend %s: %s%s%s", all_backends[kind]->name,
                v->is_usable ? "usable" : "not usable", v->why[0] ? ": " : "", v->why);
    }
    pthread_mutex_unlock(&lock);
    return v;
}

const struct ac_backend *ac_backend_get(enum ac_mem_kind kind, char *why, size_t why_len)
{
    const struct verdict *v;

    if ((int)kind < 0 || kind >= AC_MEM_KIND_COUNT) {
        if (why && why_len)
            snprintf(why, why_len, "no backend for memory kind %d", (int)kind);
        return NULL;
    }
    v = verdict_of(kind);
    if (!v->is_usable && why && why_len)
        snprintf(why, why_len, "%s", v->why);
    return v->is_usable ? all_backends[kind] : NULL;
}

const struct ac_backend *ac_backend_for_pointer(const void *p)
{
    for (int k = 0; k < AC_MEM_KIND_COUNT; k++) {
        const struct ac_backend *be = all_backends[k];
        struct ac_ptr_info info;
        bool is_mine = false;

        if (k == AC_MEM_HOST || !ac_backend_get(k, NULL, 0))
            continue;
        /* A failing query is not a verdict on the pointer: the next backend may know it. */
        if (be->classify(p, &is_mine, &info) == ncclSuccess && is_mine)
            return be;
    }
    return &ac_host_backend;
}

const struct ac_backend *ac_backend_first_gpu(char *why, size_t why_len)
{
    char whys[AC_MEM_KIND_COUNT][WHY_BYTES];
    const struct ac_backend *be;

    for (int k = 0; k < AC_MEM_KIND_COUNT; k++) {
        whys[k][0] = '\0';
        if (k != AC_MEM_HOST && (be = ac_backend_get(k, whys[k], sizeof whys[k])) != NULL)
            return be;
    }
    if (why && why_len)
        snprintf(why, why_len, "cuda: %s; hip: %s", whys[AC_MEM_CUDA], whys[AC_MEM_HIP]);
    return NULL;
}

/* Whether a GPU driver could be usable, without loading one: loading ROCm's runtime to learn that
 * it finds no device costs every host-only process much more than the call it makes. The NVIDIA
 * (and WSL's) and AMD kernel drivers' device nodes, or a driver library named by the user. */
static bool may_have_gpu(void)
{
    static const char *const nodes[] = {"/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"};

    if (ac_config_get()->cuda_library || ac_config_get()->hip_library)
        return true;
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        if (access(nodes[i], F_OK) == 0)
            return true;
    return false;
}

bool ac_backends_have_gpu(void)
{
    int v = atomic_load_explicit(&has_gpu, memory_order_acquire);

    if (v < 0) {
        v = may_have_gpu() && ac_backend_first_gpu(NULL, 0) != NULL;
        atomic_store_explicit(&has_gpu, v, memory_order_release);
    }
    return v != 0;
}

void ac_backends_describe(FILE *out)
{
    for (int k = 0; k < AC_MEM_KIND_COUNT; k++) {
        const struct verdict *v = verdict_of(k);
        const char *archs = k == AC_MEM_CUDA  ? ac_cuda_built_archs()
                            : k == AC_MEM_HIP ? ac_hip_built_archs()
                                              : NULL;

        fprintf(out, "  %s: %s%s%s\n", all_backends[k]->name,
                v->is_usable ? "usable" : "not usable", v->why[0] ? ": " : "", v->why);
        if (archs)
            fprintf(out, "    kernels in this library: %s\n",
                    archs[0] ? archs : "none (built without the vendor's compiler)");
    }
}

void ac_backends_reset_for_test(void)
{
    pthread_mutex_lock(&lock);
    for (int k = 0; k < AC_MEM_KIND_COUNT; k++) {
        if (verdicts[k].is_done)
            all_backends[k]->fini();
        verdicts[k].is_done = false;
    }
    atomic_store(&has_gpu, -1);
    pthread_mutex_unlock(&lock);
}
