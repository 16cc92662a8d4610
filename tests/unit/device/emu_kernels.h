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
    /* Blocks wait for each other (ac_k_coll: blocks of one rank wait for another rank's): each
     * block runs in a host thread of its own, with one thread per block. */
    int is_block_threads;
};

#ifdef __cplusplus
extern "C" {
#endif
/* NULL when no kernel has that name. */
const struct emu_kernel *emu_kernel_find(const char *name);
/* Runs every thread of a grid x block launch in turn on the calling thread; a kernel with
 * is_block_threads: every block at once, each in a thread of its own (blockDim 1), and returns
 * when all have. */
void emu_kernel_run(const struct emu_kernel *k, unsigned grid, unsigned block, void *const *params);
#ifdef __cplusplus
}
#endif

#endif
