/* Whether the library under test carries device kernels for a backend, as anyccl-info (next to
 * the test binaries: bin_dir/../../bin) says: tests of a backend's collectives on an emulated
 * driver skip where the library was built without that vendor's compiler. */
#ifndef TESTS_LIB_KERNELS_BUILT_H
#define TESTS_LIB_KERNELS_BUILT_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* name: "cuda" or "hip". */
static bool has_kernels(const char *bin_dir, const char *name)
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
