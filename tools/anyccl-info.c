/* anyccl-info: what this build of AnyCCL contains (version, device backends, transports) and every
 * environment variable with its current value. `--env-markdown` writes docs/env.md. */
#include "anyccl.h"
#include "common/config.h"
#include "device/backend.h"
#include "transport/transport.h"

#include <stdio.h>
#include <string.h>

static const char *const env_intro =
    "# Environment variables\n"
    "\n"
    "Every setting AnyCCL reads from the environment, from the one table in\n"
    "`src/common/config.c`. A variable with an NCCL name is also read under that name, so\n"
    "`NCCL_*` settings written for NCCL keep working; when both are set, the `ANYCCL_*` name\n"
    "wins. An empty value counts as unset. Booleans accept 0, 1, true, false, yes, no; integers\n"
    "accept a K, M or G suffix (powers of 1024). A malformed or out-of-range value is reported\n"
    "at WARN (`NCCL_DEBUG=WARN` or higher) and the default is kept. `anyccl-info` prints the\n"
    "values in effect.\n"
    "\n"
    "This file is generated: `build/bin/anyccl-info --env-markdown > docs/env.md`.\n"
    "\n";

static void print_backends(void)
{
    printf("Device backends:\n");
    ac_backends_describe(stdout);
}

static void print_transports(void)
{
    printf("Transports, in order of preference:\n");
    for (int i = 0; i < ac_transports_count; i++)
        printf("  %d. %s\n", i + 1, ac_transports_all[i]->name);
}

static void print_all(void)
{
    printf("AnyCCL %d.%d.%d, NCCL API %d.%d.%d (NCCL_VERSION_CODE %d)\n", ANYCCL_MAJOR,
           ANYCCL_MINOR, ANYCCL_PATCH, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, NCCL_VERSION_CODE);
    printf("\n");
    print_backends();
    printf("\n");
    print_transports();
    printf("\n");
    printf("Environment (ANYCCL_X wins over NCCL_X):\n");
    ac_config_print(stdout);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: anyccl-info [--env-markdown]\n"
                 "  (no option)     version, backends, transports, environment variables in use\n"
                 "  --env-markdown  the environment variables as Markdown (docs/env.md)\n");
}

int main(int argc, char **argv)
{
    if (argc == 1) {
        print_all();
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--env-markdown") == 0) {
        fputs(env_intro, stdout);
        ac_config_print_markdown(stdout);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
