/* The host build of the kernels as the emulated driver sees them (emu_kernels.cc). */
#ifndef EMU_KERNELS_H
#define EMU_KERNELS_H

#include <stddef.h>

#define EMU_MAX_PARAMS 4

struct emu_kernel {
    const char *name;
    int nparams;
    size_t param_bytes[EMU_MAX_PARAMS];
    void (*thread)(void *const *params); /* one thread of the grid */
};

#ifdef __cplusplus
extern "C" {
#endif
/* NULL when no kernel has that name. */
const struct emu_kernel *emu_kernel_find(const char *name);
/* Runs every thread of a grid x block launch in turn on the calling thread. */
void emu_kernel_run(const struct emu_kernel *k, unsigned grid, unsigned block, void *const *params);
#ifdef __cplusplus
}
#endif

#endif
