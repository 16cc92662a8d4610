/* Symbols that a backend's satellite files (dma-buf export, host mapping) need from the vendor
 * library the backend itself opened: looked up in that library's existing handle, never loaded a
 * second time, so that they stay optional (an old driver only loses that feature). */
#ifndef AC_DEVICE_DRIVER_SYMS_H
#define AC_DEVICE_DRIVER_SYMS_H

#include <stddef.h>

struct ac_driver_sym {
    const char *name;
    void **slot;
};

/* Fills every slot from the first of libs that is already loaded (dlopen RTLD_NOLOAD) and has
 * all of them. Returns NULL when one did; otherwise the name of a symbol the loaded libraries
 * lack, or "" when none of libs is loaded. */
const char *ac_driver_syms_resolve(const char *const *libs, size_t nlibs,
                                   const struct ac_driver_sym *syms, size_t nsyms);

/* The HIP runtime's names, in the order the HIP backend tries them (hip_backend.c). */
#define AC_HIP_RUNTIME_NAMES 3
extern const char *const ac_hip_runtime_names[AC_HIP_RUNTIME_NAMES];
/* Where the HIP backend's satellites look for the runtime: the library ANYCCL_HIP_LIBRARY names,
 * or else every name above. Returns how many names *names_out holds. */
size_t ac_hip_runtime_libs(const char *const **names_out);

#endif
