/* The integration-test launcher (see launcher.h). The harness process never calls the library: each
 * case forks a case process (its own process group) that sets the case's environment, makes the
 * unique id and runs the ranks; results and first failure messages come back through a shared
 * anonymous mapping, so a rank that crashes or hangs still leaves its story behind. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, strsignal */
#endif
#include "launcher.h"

#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN 384
#define MAX_STDERR_MSGS 5

/* Written by ranks, read by the harness after the case process is gone. */
struct shared {
    int is_done[TL_MAX_RANKS];
    int rc[TL_MAX_RANKS];
    int nmsgs[TL_MAX_RANKS];
    char msg[TL_MAX_RANKS][MSG_LEN];
    char case_msg[MSG_LEN];
    ncclUniqueId id; /* for TL_PROCS: written before the ranks are released */
};

static struct shared *shared;
static const char *current_case = "?";

void tl_failf(const struct tl_ctx *ctx, const char *fmt, ...)
{
    char buf[MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    int rank = ctx && ctx->rank >= 0 && ctx->rank < TL_MAX_RANKS ? ctx->rank : 0;
    if (shared && shared->msg[rank][0] == '\0')
        snprintf(shared->msg[rank], MSG_LEN, "%s", buf);
    if (!shared || shared->nmsgs[rank]++ < MAX_STDERR_MSGS)
        fprintf(stderr, "  [%s rank %d] %s\n", current_case, rank, buf);
}

bool tl_ok(const struct tl_ctx *ctx, ncclResult_t res, const char *what)
{
    if (res == ncclSuccess)
        return true;
    const char *last = ncclGetLastError(ctx ? ctx->comm : NULL);
    tl_failf(ctx, "%s: %s (%s)", what, ncclGetErrorString(res), last ? last : "no message");
    return false;
}

static double timeout_scale(void)
{
    const char *s = getenv("TL_TIMEOUT_SCALE");
    double v = s ? strtod(s, NULL) : 1.0;
    return v > 0 ? v : 1.0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_case_env(const char *env)
{
    if (!env)
        return;
    char *copy = strdup(env);
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        setenv(tok, eq + 1, 1);
    }
    free(copy);
}

/* One rank: either the raw body, or init + body + destroy (abort after a failure, so that a
 * broken communicator never blocks the exit). */
static int run_rank(const struct tl_case *c, struct tl_ctx *ctx)
{
    if (c->raw_body)
        return c->raw_body(ctx);
    ncclComm_t comm = NULL;
    if (ctx->comm == NULL) {
        ncclResult_t res = ncclCommInitRank(&comm, ctx->nranks, ctx->id, ctx->rank);
        if (!tl_ok(ctx, res, "ncclCommInitRank"))
            return 1;
        ctx->comm = comm;
    }
    int rc = c->body(ctx);
    if (rc != 0) {
        ncclCommAbort(ctx->comm);
        return rc;
    }
    return tl_ok(ctx, ncclCommDestroy(ctx->comm), "ncclCommDestroy") ? 0 : 1;
}

static void finish_rank(int rank, int rc)
{
    shared->rc[rank] = rc;
    __atomic_store_n(&shared->is_done[rank], 1, __ATOMIC_RELEASE);
}

static void describe_status(int rank, int status)
{
    if (shared->msg[rank][0] != '\0')
        return;
    if (WIFSIGNALED(status))
        snprintf(shared->msg[rank], MSG_LEN, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        snprintf(shared->msg[rank], MSG_LEN, "exited with status %d", WEXITSTATUS(status));
}

/* Reaps every rank process that has ended; is_finished/is_failed are per rank. */
static void reap_procs(int nranks, const pid_t *pids, bool *is_finished, bool *is_failed)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int r = 0; r < nranks; r++) {
            if (pids[r] != pid)
                continue;
            is_finished[r] = true;
            is_failed[r] = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
            describe_status(r, status);
        }
    }
}

/* Waits for every rank (processes when pids is not NULL, else threads through is_done). Once a
 * rank has failed, the others get FAIL_GRACE_S to finish: they may be waiting for it forever.
 * Returns 0 when every rank finished and succeeded. */
#define FAIL_GRACE_S 10.0
static int wait_ranks(const struct tl_case *c, const pid_t *pids)
{
    bool is_finished[TL_MAX_RANKS] = {false}, is_failed[TL_MAX_RANKS] = {false};
    double fail_deadline = 0;
    for (;;) {
        if (pids)
            reap_procs(c->nranks, pids, is_finished, is_failed);
        int nfinished = 0, first_failed = -1;
        for (int r = 0; r < c->nranks; r++) {
            if (!pids && __atomic_load_n(&shared->is_done[r], __ATOMIC_ACQUIRE)) {
                is_finished[r] = true;
                is_failed[r] = shared->rc[r] != 0;
            }
            nfinished += is_finished[r];
            if (is_failed[r] && first_failed < 0)
                first_failed = r;
        }
        if (nfinished == c->nranks)
            return first_failed >= 0 ? 1 : 0;
        if (first_failed >= 0 && fail_deadline == 0)
            fail_deadline = now_s() + FAIL_GRACE_S;
        if (fail_deadline != 0 && now_s() > fail_deadline) {
            for (int r = 0; r < c->nranks; r++) {
                if (is_finished[r])
                    continue;
                if (pids)
                    kill(pids[r], SIGKILL);
                if (shared->msg[r][0] == '\0')
                    snprintf(shared->msg[r], MSG_LEN, "still running %.0f s after rank %d failed",
                             FAIL_GRACE_S, first_failed);
            }
            return 1; /* the harness kills the process group: nothing is left behind */
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int make_unique_id(ncclUniqueId *id_out)
{
    ncclResult_t res = ncclGetUniqueId(id_out);
    if (res == ncclSuccess)
        return 0;
    snprintf(shared->case_msg, MSG_LEN, "ncclGetUniqueId: %s (%s)", ncclGetErrorString(res),
             ncclGetLastError(NULL));
    return 1;
}

/* A rank process: waits for the case process to release it (one byte on the pipe, the unique id
 * in the shared mapping), runs, and exits with its status. EOF instead: the id could not be made.
 */
static void rank_process(const struct tl_case *c, const struct tl_ctx *base, int rank, int go_fd)
{
    char go;
    ssize_t n;
    while ((n = read(go_fd, &go, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1)
        _exit(1);
    struct tl_ctx ctx = *base;
    ctx.rank = rank;
    ctx.id = shared->id;
    int rc = run_rank(c, &ctx);
    finish_rank(rank, rc);
    fflush(NULL);
    _exit(rc ? 1 : 0);
}

/* The ranks are forked before the unique id exists, while this process has no thread: forking
 * after ncclGetUniqueId (which starts the root thread) can copy a lock held by that thread (the
 * sanitizers' allocator lock, the library's own) into a child that then waits on it forever. */
static int run_procs(const struct tl_case *c, const struct tl_ctx *base)
{
    pid_t pids[TL_MAX_RANKS];
    pid_t parent = getpid();
    int go[2];
    if (pipe(go) != 0) {
        snprintf(shared->case_msg, MSG_LEN, "pipe: %s", strerror(errno));
        return 1;
    }
    for (int r = 0; r < c->nranks; r++) {
        fflush(NULL);
        pids[r] = fork();
        if (pids[r] < 0) {
            snprintf(shared->case_msg, MSG_LEN, "fork of rank %d: %s", r, strerror(errno));
            return 1; /* the harness kills the process group: started ranks go with it */
        }
        if (pids[r] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(1);
            close(go[1]);
            rank_process(c, base, r, go[0]);
        }
    }
    close(go[0]);
    int rc = make_unique_id(&shared->id);
    for (int r = 0; rc == 0 && r < c->nranks; r++)
        if (write(go[1], "g", 1) != 1)
            rc = 1;
    close(go[1]);
    int nfailed = wait_ranks(c, pids);
    return rc != 0 ? 1 : nfailed;
}

struct thread_arg {
    const struct tl_case *c;
    struct tl_ctx ctx;
};

static void *thread_main(void *p)
{
    struct thread_arg *t = p;
    int rc = run_rank(t->c, &t->ctx);
    finish_rank(t->ctx.rank, rc);
    return NULL;
}

/* comms: NULL for TL_THREADS (each thread inits), else one communicator per thread. Threads are
 * detached: a rank stuck after another failed cannot be joined, and the case process exits. */
static int run_threads(const struct tl_case *c, const struct tl_ctx *base, ncclComm_t *comms)
{
    static struct thread_arg args[TL_MAX_RANKS];
    for (int r = 0; r < c->nranks; r++) {
        pthread_t thread;
        args[r].c = c;
        args[r].ctx = *base;
        args[r].ctx.rank = r;
        args[r].ctx.comm = comms ? comms[r] : NULL;
        if (pthread_create(&thread, NULL, thread_main, &args[r]) != 0) {
            snprintf(shared->case_msg, MSG_LEN, "pthread_create of rank %d failed", r);
            return 1;
        }
        pthread_detach(thread);
    }
    return wait_ranks(c, NULL);
}

static int run_initall(const struct tl_case *c, struct tl_ctx *base)
{
    ncclComm_t comms[TL_MAX_RANKS];
    if (c->raw_body) {
        snprintf(shared->case_msg, MSG_LEN, "raw bodies need TL_PROCS or TL_THREADS");
        return 1;
    }
    ncclResult_t res = ncclCommInitAll(comms, c->nranks, NULL);
    if (res != ncclSuccess) {
        snprintf(shared->case_msg, MSG_LEN, "ncclCommInitAll(%d): %s (%s)", c->nranks,
                 ncclGetErrorString(res), ncclGetLastError(NULL));
        return 1;
    }
    return run_threads(c, base, comms);
}

/* The case process: its own process group, the case's environment, then the ranks. */
static int case_main(const struct tl_case *c, pid_t harness)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the harness killed: the case goes, and its ranks with it */
    if (getppid() != harness)
        return 1;
    set_case_env(c->env);
    struct tl_ctx base = {.rank = 0, .nranks = c->nranks, .arg = c->arg, .mode = c->mode};
    if (c->mode == TL_PROCS)
        return run_procs(c, &base);
    if (c->mode == TL_THREADS)
        return make_unique_id(&base.id) ? 1 : run_threads(c, &base, NULL);
    return run_initall(c, &base);
}

/* Waits for the case process until the deadline; on timeout kills its whole process group. */
static bool wait_case(pid_t pid, double deadline, int *status_out)
{
    for (;;) {
        pid_t got = waitpid(pid, status_out, WNOHANG);
        if (got == pid)
            return true;
        if (got < 0 && errno != EINTR)
            return true;
        if (now_s() > deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            while (waitpid(pid, status_out, 0) < 0 && errno == EINTR)
                ;
            return false;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* The FAIL reason: the case message, else the first rank with a message. */
static void failure_reason(const struct tl_case *c, bool is_timeout, int timeout_s, int status,
                           char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    if (is_timeout) {
        n += snprintf(out + n, len - n, "timeout after %d s, ranks not finished:", timeout_s);
        for (int r = 0; r < c->nranks && n < len; r++)
            if (!shared->is_done[r])
                n += snprintf(out + n, len - n, " %d", r);
        if (n < len)
            n += snprintf(out + n, len - n, "; ");
    }
    if (n >= len)
        return;
    if (shared->case_msg[0]) {
        snprintf(out + n, len - n, "%s", shared->case_msg);
        return;
    }
    for (int r = 0; r < c->nranks; r++) {
        if (shared->msg[r][0]) {
            snprintf(out + n, len - n, "rank %d: %s", r, shared->msg[r]);
            return;
        }
    }
    if (WIFSIGNALED(status))
        snprintf(out + n, len - n, "case process killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (!is_timeout)
        snprintf(out + n, len - n, "case process exited with status %d", WEXITSTATUS(status));
}

static bool ensure_shared(void)
{
    if (shared)
        return true;
    void *p =
        mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    shared = p;
    return true;
}

int tl_run_case(const struct tl_case *c)
{
    int timeout_s = (int)((c->timeout_s > 0 ? c->timeout_s : 120) * timeout_scale());
    if (c->nranks < 1 || c->nranks > TL_MAX_RANKS || !ensure_shared() ||
        (!c->body && !c->raw_body)) {
        printf("FAIL %s: bad case (nranks %d, no body, or mmap failed)\n", c->name, c->nranks);
        fflush(stdout);
        return 1;
    }
    memset(shared, 0, sizeof(*shared));
    current_case = c->name;
    fflush(NULL);
    double start = now_s();
    pid_t harness = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL %s: fork: %s\n", c->name, strerror(errno));
        fflush(stdout);
        return 1;
    }
    if (pid == 0) {
        int rc = case_main(c, harness);
        fflush(NULL);
        _exit(rc);
    }
    setpgid(pid, pid);
    int status = 0;
    bool is_done = wait_case(pid, start + timeout_s, &status);
    if (is_done && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("PASS %s (%.1f s)\n", c->name, now_s() - start);
        fflush(stdout);
        return 0;
    }
    kill(-pid, SIGKILL); /* ranks left behind by a case process that died first */
    char why[1024];
    failure_reason(c, !is_done, timeout_s, status, why, sizeof(why));
    printf("FAIL %s: %s\n", c->name, why);
    fflush(stdout);
    return 1;
}

static bool matches(const char *name, int npatterns, char **patterns)
{
    if (npatterns == 0)
        return true;
    for (int i = 0; i < npatterns; i++)
        if (fnmatch(patterns[i], name, 0) == 0)
            return true;
    return false;
}

int tl_main(int argc, char **argv, const struct tl_case *cases, size_t ncases)
{
    bool is_list = false;
    const char *q = getenv("TL_QUICK");
    bool is_quick = q && strcmp(q, "0") != 0 && q[0] != '\0';
    char *patterns[256];
    int npatterns = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0)
            is_list = true;
        else if (strcmp(argv[i], "--quick") == 0)
            is_quick = true;
        else if (argv[i][0] == '-' || npatterns == 256) {
            fprintf(stderr, "usage: %s [--list] [--quick] [PATTERN...]\n", argv[0]);
            return 2;
        } else
            patterns[npatterns++] = argv[i];
    }
    signal(SIGPIPE, SIG_IGN);
    int nfailed = 0;
    size_t nrun = 0;
    for (size_t i = 0; i < ncases; i++) {
        const struct tl_case *c = &cases[i];
        if (!matches(c->name, npatterns, patterns))
            continue;
        nrun++;
        if (is_list)
            printf("%s\n", c->name);
        else if (is_quick && c->is_slow)
            printf("SKIP %s: slow case, quick run (--quick / TL_QUICK)\n", c->name);
        else
            nfailed += tl_run_case(c);
        fflush(stdout);
    }
    if (nrun == 0 && npatterns > 0) {
        fprintf(stderr, "%s: no case matches\n", argv[0]);
        return 2;
    }
    return nfailed ? 1 : 0;
}

/* Names made by tl_standard_cases stay reachable here for the life of the program (LeakSanitizer
 * would otherwise report them once a caller's case table goes out of scope at exit). */
static char *owned_names[1024];
static size_t nowned_names;

static char *case_name(const char *prefix, const char *fmt, int nranks, const char *suffix)
{
    char *name = NULL;
    if (nowned_names == sizeof(owned_names) / sizeof(owned_names[0]))
        return NULL;
    if (asprintf(&name, fmt, prefix, nranks, suffix) < 0)
        return NULL;
    owned_names[nowned_names++] = name;
    return name;
}

static size_t add_case(struct tl_case *out, size_t n, size_t max, struct tl_case c)
{
    if (n < max)
        out[n] = c;
    return n + 1;
}

size_t tl_standard_cases(struct tl_case *out, size_t max, const char *prefix, tl_body_fn body,
                         const void *arg, int timeout_s)
{
    static const int proc_nranks[] = {1, 2, 3, 4, 8};
    static const int thread_nranks[] = {2, 4};
    size_t n = 0;
    char *name;
    for (size_t i = 0; i < sizeof(proc_nranks) / sizeof(proc_nranks[0]); i++) {
        for (int is_tcp = 0; is_tcp <= 1; is_tcp++) {
            int np = proc_nranks[i];
            if (!(name = case_name(prefix, "%s/np%d/%s/proc", np, is_tcp ? "tcp" : "shm")))
                return n < max ? n : max;
            struct tl_case c = {.name = name,
                                .mode = TL_PROCS,
                                .nranks = np,
                                .body = body,
                                .arg = arg,
                                .timeout_s = timeout_s};
            c.env = is_tcp ? "NCCL_SHM_DISABLE=1" : NULL;
            c.is_slow = np == 8 || (is_tcp && np != 2);
            n = add_case(out, n, max, c);
        }
    }
    for (size_t i = 0; i < sizeof(thread_nranks) / sizeof(thread_nranks[0]); i++) {
        if (!(name = case_name(prefix, "%s/np%d/%s", thread_nranks[i], "threads")))
            return n < max ? n : max;
        struct tl_case c = {.name = name,
                            .mode = TL_THREADS,
                            .nranks = thread_nranks[i],
                            .body = body,
                            .arg = arg,
                            .timeout_s = timeout_s};
        c.is_slow = thread_nranks[i] != 2;
        n = add_case(out, n, max, c);
    }
    if (!(name = case_name(prefix, "%s/np%d/%s", 3, "initall")))
        return n < max ? n : max;
    struct tl_case c = {.name = name,
                        .mode = TL_INITALL,
                        .nranks = 3,
                        .body = body,
                        .arg = arg,
                        .timeout_s = timeout_s};
    n = add_case(out, n, max, c);
    return n < max ? n : max;
}
