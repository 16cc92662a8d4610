/* Helpers shared by the tests of src/common: a clean environment and reading back a log file. */
#ifndef AC_TEST_COMMON_ENV_H
#define AC_TEST_COMMON_ENV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* Removes every NCCL_* and ANYCCL_* variable, so that the caller's environment cannot change the
 * expectations; call ac_config_reload (or ac_log_reset) afterwards. */
static inline void test_clean_env(void)
{
    char name[256];
    for (int i = 0; environ[i] != NULL;) {
        const char *e = environ[i];
        size_t len = strcspn(e, "=");
        if ((strncmp(e, "NCCL_", 5) == 0 || strncmp(e, "ANYCCL_", 7) == 0) && len < sizeof(name)) {
            memcpy(name, e, len);
            name[len] = '\0';
            unsetenv(name);
            i = 0; /* environ was rewritten */
            continue;
        }
        i++;
    }
}

/* The whole file as a string (caller frees); NULL if it cannot be read. */
static inline char *test_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

#endif
