/* The device tests' access to the (emulated or real) CUDA driver they allocate through, and to
 * what the library under test was built with. */
#ifndef TESTS_LIB_DEV_DRIVER_H
#define TESTS_LIB_DEV_DRIVER_H

#include "launcher.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The driver's names[i] into slots[i]. TL_CUDA_DRIVER first: a case may point the library
 * elsewhere (at the emulated HIP runtime) while the test allocates through the CUDA driver;
 * then ANYCCL_CUDA_LIBRARY, then libcuda.so.1. */
static inline bool load_driver_syms(struct tl_ctx *ctx, const char *const *names, size_t n,
                                    void **slots)
{
    const char *path =
        getenv("TL_CUDA_DRIVER") ? getenv("TL_CUDA_DRIVER") : getenv("ANYCCL_CUDA_LIBRARY");
    void *h = dlopen(path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);

    if (!h) {
        tl_failf(ctx, "dlopen %s: %s", path ? path : "libcuda.so.1", dlerror());
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (!(slots[i] = dlsym(h, names[i]))) {
            tl_failf(ctx, "driver has no %s", names[i]);
            return false;
        }
    return true;
}

/* Whether the library under test carries device kernels for backend `name` ("cuda", "hip"), as
 * anyccl-info (next to the test binaries: bin_dir/../../bin) says: tests of a backend's
 * collectives on an emulated driver skip where the library was built without that vendor's
 * compiler. */
static inline bool has_kernels(const char *bin_dir, const char *name)
{
    char cmd[PATH_MAX + 64], line[512], want[16];
    bool is_it = false, has = true;
    FILE *f;

    snprintf(cmd, sizeof cmd, "%s/../../bin/anyccl-info 2>/dev/null", bin_dir);
    snprintf(want, sizeof want, "  %s:", name);
    if ((f = popen(cmd, "r"))) {
        while (fgets(line, sizeof line, f)) {
            if (is_it && strstr(line, "kernels in this library: none"))
                has = false;
            is_it = strncmp(line, want, strlen(want)) == 0;
        }
        pclose(f);
    }
    return has;
}

#endif
