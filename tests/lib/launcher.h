/* The integration-test launcher: runs a test body as N ranks, either as N forked processes (the
 * parent makes the unique id and keeps the bootstrap root alive while it reaps the children), as N
 * threads of one process, or as N threads sharing the communicators of one ncclCommInitAll.
 *
 * Every case runs in its own forked "case process" with a deadline, so a hang or crash in one case
 * is reported as that case's FAIL and kills nothing else; no process outlives its case. A test
 * program lists its cases in a table and calls tl_main, which prints one line per case in the
 * suite protocol: "PASS <name>", "FAIL <name>: <why>" or "SKIP <name>: <reason>".
 *
 *   program [--list] [--quick] [PATTERN...]   PATTERN: fnmatch(3) on case names
 *
 * Environment: TL_TIMEOUT_SCALE (multiplies every deadline), TL_QUICK=1 (same as --quick: cases
 * marked is_slow are reported as SKIP). */
#ifndef TL_LAUNCHER_H
#define TL_LAUNCHER_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>

#define TL_MAX_RANKS 64

enum tl_mode {
    TL_PROCS,   /* one forked process per rank, ncclCommInitRank */
    TL_THREADS, /* one thread per rank in one process, ncclCommInitRank */
    TL_INITALL, /* one process, ncclCommInitAll, one thread per comm */
};

/* What a body sees. comm is NULL for raw bodies (they make their own from id). */
struct tl_ctx {
    int rank;
    int nranks;
    ncclComm_t comm;
    ncclUniqueId id;
    const void *arg;
    enum tl_mode mode;
};

/* Returns 0 on success; on failure call tl_failf (first message per rank is kept) and return
 * non-zero. A body that returns early must not leave other ranks waiting forever: the case's
 * deadline will kill them and report the first failure message. */
typedef int (*tl_body_fn)(struct tl_ctx *ctx);

struct tl_case {
    const char *name; /* unique in the program, e.g. "np4/shm/proc" */
    enum tl_mode mode;
    int nranks;
    const char *env;     /* "VAR=value VAR2=value", set before the case's first library call */
    tl_body_fn body;     /* called with a ready communicator (destroyed after) */
    tl_body_fn raw_body; /* or: called with only the unique id (TL_PROCS / TL_THREADS) */
    const void *arg;
    int timeout_s; /* 0: 120 */
    bool is_slow;  /* skipped under --quick */
};

/* Records the first failure message of this rank; later messages go to stderr only. */
void tl_failf(const struct tl_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checks a result: on failure records "<what>: <error string> (<ncclGetLastError>)" and returns
 * false. */
bool tl_ok(const struct tl_ctx *ctx, ncclResult_t res, const char *what);

/* Runs one case in a child process with its deadline; prints its PASS/FAIL line. Returns 0 on
 * PASS, 1 on FAIL. */
int tl_run_case(const struct tl_case *c);

/* The main of a test program (see the usage above). Returns the process exit status. */
int tl_main(int argc, char **argv, const struct tl_case *cases, size_t ncases);

/* Fills out[] with the standard matrix for body: prefix/np{1,2,3,4,8}/{shm,tcp}/proc,
 * prefix/np{2,4}/threads, prefix/np3/initall. Returns the number written (at most max).
 * Names are allocated for the life of the program. */
size_t tl_standard_cases(struct tl_case *out, size_t max, const char *prefix, tl_body_fn body,
                         const void *arg, int timeout_s);

#endif
