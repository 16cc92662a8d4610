/* The kernels of src/device/kernels/kernels.cuh, compiled for the host (device/kernels/host.h), as
 * the emulated driver (emu_cuda.c) runs them: what a launch would run on a GPU, thread by thread.
 * This is the third build of the one kernel source, next to nvcc's and hipcc's. */
#include "device/kernels/host.h"

#include "device/kernels/kernels.cuh"

#include "emu_kernels.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

__thread struct ac_host_dim3 blockIdx, threadIdx, gridDim, blockDim;

/* One thread of a kernel, its parameters as cuLaunchKernel's params array. */
static void t_copy(void *const *a)
{
    ac_k_copy(*(void **)a[0], *(const void **)a[1], *(uint64_t *)a[2]);
}

static void t_signal(void *const *a)
{
    ac_k_signal(*(volatile uint32_t **)a[0], *(uint32_t *)a[1]);
}

static void t_wait(void *const *a)
{
    ac_k_wait(*(volatile uint32_t **)a[0], *(uint32_t *)a[1]);
}

static void t_coll(void *const *a)
{
    ac_k_coll(*(struct ac_kcoll_args *)a[0]);
}

#define T_REDUCE(t)                                                                                \
    static void t_reduce_##t(void *const *a)                                                       \
    {                                                                                              \
        ac_k_reduce_##t(*(struct ac_kreduce_args *)a[0]);                                          \
    }
T_REDUCE(i8)
T_REDUCE(u8)
T_REDUCE(i32)
T_REDUCE(u32)
T_REDUCE(i64)
T_REDUCE(u64)
T_REDUCE(f16)
T_REDUCE(f32)
T_REDUCE(f64)
T_REDUCE(bf16)
T_REDUCE(e4m3)
T_REDUCE(e5m2)

#define PTR sizeof(void *)
#define R(t)                                                                                       \
    {                                                                                              \
        "ac_k_reduce_" #t, 1, {sizeof(struct ac_kreduce_args)}, t_reduce_##t, 0                    \
    }
static const struct emu_kernel kernels[] = {
    {AC_KERNEL_COPY_NAME, 3, {PTR, PTR, sizeof(uint64_t)}, t_copy, 0},
    {AC_KERNEL_SIGNAL_NAME, 2, {PTR, sizeof(uint32_t)}, t_signal, 0},
    {AC_KERNEL_WAIT_NAME, 2, {PTR, sizeof(uint32_t)}, t_wait, 0},
    R(i8),
    R(u8),
    R(i32),
    R(u32),
    R(i64),
    R(u64),
    R(f16),
    R(f32),
    R(f64),
    R(bf16),
    R(e4m3),
    R(e5m2),
    {AC_KERNEL_COLL_NAME, 1, {sizeof(struct ac_kcoll_args)}, t_coll, 1},
};

extern "C" const struct emu_kernel *emu_kernel_find(const char *name)
{
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (strcmp(kernels[i].name, name) == 0)
            return &kernels[i];
    return NULL;
}

struct block_job {
    const struct emu_kernel *k;
    unsigned block, grid;
    void *const *args;
};

static void *block_thread(void *arg)
{
    const struct block_job *j = (const struct block_job *)arg;
    gridDim = {j->grid, 1, 1};
    blockDim = {1, 1, 1};
    blockIdx = {j->block, 0, 0};
    threadIdx = {0, 0, 0};
    j->k->thread(j->args);
    return NULL;
}

/* A block that cannot get a thread runs in the caller after the others started: it may then
 * wait for a block that is not running only if thread creation failed twice, which aborts. */
static void run_block_threads(const struct emu_kernel *k, unsigned grid, void *const *args)
{
    struct block_job *jobs = (struct block_job *)calloc(grid, sizeof(*jobs));
    pthread_t *threads = (pthread_t *)calloc(grid, sizeof(*threads));
    if (!jobs || !threads)
        abort();
    for (unsigned b = 0; b < grid; b++) {
        jobs[b] = {k, b, grid, args};
        if (pthread_create(&threads[b], NULL, block_thread, &jobs[b]) != 0)
            abort();
    }
    for (unsigned b = 0; b < grid; b++)
        pthread_join(threads[b], NULL);
    free(jobs);
    free(threads);
}

extern "C" void emu_kernel_run(const struct emu_kernel *k, unsigned grid, unsigned block,
                               void *const *args)
{
    if (k->is_block_threads) {
        run_block_threads(k, grid, args);
        return;
    }
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; b++)
        for (unsigned t = 0; t < block; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            k->thread(args);
        }
}
