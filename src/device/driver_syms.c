#include "device/driver_syms.h"

#include <dlfcn.h>

const char *ac_driver_syms_resolve(const char *const *libs, size_t nlibs,
                                   const struct ac_driver_sym *syms, size_t nsyms)
{
    const char *lacking = "";
    for (size_t l = 0; l < nlibs; l++) {
        void *lib = dlopen(libs[l], RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        size_t i = 0;
        if (lib == NULL)
            continue;
        for (; i < nsyms; i++) {
            *syms[i].slot = dlsym(lib, syms[i].name);
            if (*syms[i].slot == NULL)
                break;
        }
        if (i == nsyms)
            return NULL;
        lacking = syms[i].name;
    }
    return lacking;
}
