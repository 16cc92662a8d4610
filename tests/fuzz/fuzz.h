/* What every fuzz target shares. A target is one LLVMFuzzerTestOneInput that feeds bytes to a
 * real parser of the library; it is built twice: with libFuzzer (`make fuzz`, clang) and with
 * replay.c's main() (`make test`, any compiler), which runs it on the seed and crash files.
 * FUZZ_CHECK is an oracle: a property of the parser's output that must hold for every input;
 * a violation aborts, which both builds report as a crash. */
#ifndef AC_TESTS_FUZZ_FUZZ_H
#define AC_TESTS_FUZZ_FUZZ_H

#include "common/log.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: fuzz oracle failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The library's messages for rejected input are expected by the thousand: silence them. */
#define FUZZ_QUIET_INIT                                                                       \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                                         \
    {                                                                                         \
        (void)argc;                                                                           \
        (void)argv;                                                                           \
        ac_log_level_now = AC_LOG_NONE;                                                       \
        return 0;                                                                             \
    }

#endif
