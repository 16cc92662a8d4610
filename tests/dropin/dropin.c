/* The drop-in proof: a program written for NVIDIA NCCL, compiled against NVIDIA's own nccl.h and
 * linked against NVIDIA's libnccl.so.2, that runs every collective and send/recv on host buffers
 * with a NULL stream and checks exact results. Without a GPU it can only pass when the calls are
 * served by AnyCCL (LD_PRELOAD=libanyccl.so, or AnyCCL's libnccl.so.2 first on the library path).
 *
 *   dropin NRANKS [PREFIX]    forks NRANKS ranks; prints "PASS|FAIL PREFIX/<check>" lines
 *
 * Deliberately self-contained (no AnyCCL header or test library): it is what a user's program is. */
#define _GNU_SOURCE
#include <nccl.h>

#include <dlfcn.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COUNT 1001
#define MAX_RANKS 64
#define DEADLINE_S 120
#define MSG_LEN 256

enum check {
    C_ALLREDUCE, C_ALLGATHER, C_REDUCESCATTER, C_BROADCAST, C_REDUCE,
    C_ALLTOALL,  C_GATHER,    C_SCATTER,       C_SENDRECV, C_COUNT,
};
static const char *const check_names[C_COUNT] = {
    "allreduce", "allgather", "reducescatter", "broadcast", "reduce",
    "alltoall",  "gather",    "scatter",       "sendrecv",
};

/* Results, written by the rank processes and read by the parent. */
struct shared {
    int nfinished[C_COUNT];
    int is_failed[C_COUNT];
    int has_msg[C_COUNT];
    char msg[C_COUNT][MSG_LEN];
    int has_rank_msg;
    char rank_msg[MSG_LEN];
    int is_id_ready; /* rank 0 publishes the unique id here */
    ncclUniqueId id;
};
static struct shared *sh;

static void failf(int check, int rank, const char *fmt, ...)
{
    char buf[MSG_LEN - 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    __atomic_store_n(&sh->is_failed[check], 1, __ATOMIC_RELEASE);
    if (__atomic_exchange_n(&sh->has_msg[check], 1, __ATOMIC_ACQ_REL) == 0)
        snprintf(sh->msg[check], MSG_LEN, "rank %d: %s", rank, buf);
}

/* Every value the program sends: exact in int32 and in float. */
static int32_t val(int rank, size_t i)
{
    return (rank + 1) * 1000 + (int32_t)(i % 997);
}

static int64_t sum_over_ranks(int n, size_t i)
{
    return 1000LL * n * (n + 1) / 2 + (int64_t)n * (int64_t)(i % 997);
}

static int expect_i32(int check, int rank, const int32_t *got, size_t count, int64_t (*want)(
                          const void *arg, size_t i), const void *arg)
{
    for (size_t i = 0; i < count; i++) {
        if (got[i] != want(arg, i)) {
            failf(check, rank, "element %zu is %d, expected %lld", i, got[i],
                  (long long)want(arg, i));
            return 1;
        }
    }
    return 0;
}

struct ctx {
    ncclComm_t comm;
    int rank, n;
};

static int api(int check, const struct ctx *c, ncclResult_t res, const char *what)
{
    if (res == ncclSuccess)
        return 0;
    failf(check, c->rank, "%s: %s (%s)", what, ncclGetErrorString(res),
          ncclGetLastError(c->comm));
    return -1;
}

static int64_t want_sum(const void *arg, size_t i)
{
    return sum_over_ranks(*(const int *)arg, i);
}

static int64_t want_gathered(const void *arg, size_t i) /* block r holds rank r's values */
{
    (void)arg;
    return val((int)(i / COUNT), i % COUNT);
}

static int64_t want_of_rank(const void *arg, size_t i) /* what rank *arg sent, element i */
{
    return val(*(const int *)arg, i);
}

/* ---- the collectives, each on fresh buffers; -1 on an API error (the ranks are out of step) */

static int do_allreduce(const struct ctx *c, int32_t *a, int32_t *b)
{
    float f[7], fmax[7];
    for (size_t i = 0; i < COUNT; i++)
        a[i] = val(c->rank, i);
    for (int i = 0; i < 7; i++)
        f[i] = (float)val(c->rank, (size_t)i);
    if (api(C_ALLREDUCE, c, ncclAllReduce(a, b, COUNT, ncclInt32, ncclSum, c->comm, NULL),
            "ncclAllReduce int32 sum") ||
        api(C_ALLREDUCE, c, ncclAllReduce(f, fmax, 7, ncclFloat32, ncclMax, c->comm, NULL),
            "ncclAllReduce float max"))
        return -1;
    for (int i = 0; i < 7; i++)
        if (fmax[i] != (float)val(c->n - 1, (size_t)i))
            return failf(C_ALLREDUCE, c->rank, "float max [%d] is %g", i, fmax[i]), 1;
    return expect_i32(C_ALLREDUCE, c->rank, b, COUNT, want_sum, &c->n);
}

static int do_allgather(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < COUNT; i++)
        a[i] = val(c->rank, i);
    if (api(C_ALLGATHER, c, ncclAllGather(a, b, COUNT, ncclInt32, c->comm, NULL),
            "ncclAllGather"))
        return -1;
    return expect_i32(C_ALLGATHER, c->rank, b, (size_t)COUNT * c->n, want_gathered, NULL);
}

static int do_reducescatter(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < (size_t)COUNT * c->n; i++)
        a[i] = val(c->rank, i);
    if (api(C_REDUCESCATTER, c, ncclReduceScatter(a, b, COUNT, ncclInt32, ncclSum, c->comm, NULL),
            "ncclReduceScatter"))
        return -1;
    for (size_t i = 0; i < COUNT; i++)
        if (b[i] != sum_over_ranks(c->n, (size_t)c->rank * COUNT + i))
            return failf(C_REDUCESCATTER, c->rank, "element %zu is %d", i, b[i]), 1;
    return 0;
}

static int do_broadcast(const struct ctx *c, int32_t *a, int32_t *b)
{
    int root = c->n - 1;
    for (size_t i = 0; i < COUNT; i++)
        a[i] = val(c->rank, i);
    if (api(C_BROADCAST, c, ncclBroadcast(a, b, COUNT, ncclInt32, root, c->comm, NULL),
            "ncclBroadcast from the last rank") ||
        api(C_BROADCAST, c, ncclBcast(a, COUNT, ncclInt32, root, c->comm, NULL), "ncclBcast"))
        return -1;
    return expect_i32(C_BROADCAST, c->rank, b, COUNT, want_of_rank, &root) ||
           expect_i32(C_BROADCAST, c->rank, a, COUNT, want_of_rank, &root);
}

static int do_reduce(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < COUNT; i++)
        a[i] = val(c->rank, i);
    if (api(C_REDUCE, c, ncclReduce(a, b, COUNT, ncclInt32, ncclSum, 0, c->comm, NULL),
            "ncclReduce to rank 0"))
        return -1;
    return c->rank == 0 ? expect_i32(C_REDUCE, c->rank, b, COUNT, want_sum, &c->n) : 0;
}

static int do_alltoall(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < (size_t)COUNT * c->n; i++)
        a[i] = val(c->rank, i);
    if (api(C_ALLTOALL, c, ncclAlltoAll(a, b, COUNT, ncclInt32, c->comm, NULL), "ncclAlltoAll"))
        return -1;
    for (int s = 0; s < c->n; s++)
        for (size_t i = 0; i < COUNT; i++)
            if (b[(size_t)s * COUNT + i] != val(s, (size_t)c->rank * COUNT + i))
                return failf(C_ALLTOALL, c->rank, "from rank %d element %zu is %d", s, i,
                             b[(size_t)s * COUNT + i]), 1;
    return 0;
}

static int do_gather(const struct ctx *c, int32_t *a, int32_t *b)
{
    int root = c->n - 1;
    for (size_t i = 0; i < COUNT; i++)
        a[i] = val(c->rank, i);
    if (api(C_GATHER, c, ncclGather(a, b, COUNT, ncclInt32, root, c->comm, NULL),
            "ncclGather to the last rank"))
        return -1;
    if (c->rank != root)
        return 0;
    return expect_i32(C_GATHER, c->rank, b, (size_t)COUNT * c->n, want_gathered, NULL);
}

static int do_scatter(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < (size_t)COUNT * c->n; i++)
        a[i] = val(c->rank, i);
    if (api(C_SCATTER, c, ncclScatter(a, b, COUNT, ncclInt32, 0, c->comm, NULL),
            "ncclScatter from rank 0"))
        return -1;
    for (size_t i = 0; i < COUNT; i++)
        if (b[i] != val(0, (size_t)c->rank * COUNT + i))
            return failf(C_SCATTER, c->rank, "element %zu is %d", i, b[i]), 1;
    return 0;
}

/* Every pair, this rank with itself included, in one group. */
static int do_sendrecv(const struct ctx *c, int32_t *a, int32_t *b)
{
    for (size_t i = 0; i < (size_t)COUNT * c->n; i++)
        a[i] = val(c->rank, i);
    if (api(C_SENDRECV, c, ncclGroupStart(), "ncclGroupStart"))
        return -1;
    for (int p = 0; p < c->n; p++) {
        if (api(C_SENDRECV, c, ncclSend(a + (size_t)p * COUNT, COUNT, ncclInt32, p, c->comm, NULL),
                "ncclSend") ||
            api(C_SENDRECV, c, ncclRecv(b + (size_t)p * COUNT, COUNT, ncclInt32, p, c->comm, NULL),
                "ncclRecv"))
            return -1;
    }
    if (api(C_SENDRECV, c, ncclGroupEnd(), "ncclGroupEnd"))
        return -1;
    for (int s = 0; s < c->n; s++)
        for (size_t i = 0; i < COUNT; i++)
            if (b[(size_t)s * COUNT + i] != val(s, (size_t)c->rank * COUNT + i))
                return failf(C_SENDRECV, c->rank, "from rank %d element %zu is %d", s, i,
                             b[(size_t)s * COUNT + i]), 1;
    return 0;
}

typedef int (*check_fn)(const struct ctx *c, int32_t *a, int32_t *b);
static const check_fn check_fns[C_COUNT] = {
    do_allreduce, do_allgather, do_reducescatter, do_broadcast, do_reduce,
    do_alltoall,  do_gather,    do_scatter,       do_sendrecv,
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void rank_failf(int rank, const char *what, ncclResult_t res)
{
    if (__atomic_exchange_n(&sh->has_rank_msg, 1, __ATOMIC_ACQ_REL) == 0)
        snprintf(sh->rank_msg, MSG_LEN, "rank %d: %s: %s (%s)", rank, what,
                 ncclGetErrorString(res), ncclGetLastError(NULL));
}

/* As an MPI program would: rank 0 makes the unique id and hands it to the others (here through
 * shared memory). The ranks are forked before any library thread exists. */
static ncclResult_t get_id(int rank, ncclUniqueId *id)
{
    if (rank == 0) {
        ncclResult_t res = ncclGetUniqueId(&sh->id);
        if (res != ncclSuccess)
            return res;
        __atomic_store_n(&sh->is_id_ready, 1, __ATOMIC_RELEASE);
    }
    double deadline = now_s() + DEADLINE_S;
    while (!__atomic_load_n(&sh->is_id_ready, __ATOMIC_ACQUIRE)) {
        if (now_s() > deadline)
            return ncclSystemError;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *id = sh->id;
    return ncclSuccess;
}

static int run_rank(int rank, int n)
{
    struct ctx c = {NULL, rank, n};
    size_t elems = (size_t)COUNT * n;
    int32_t *a = malloc(elems * sizeof(*a)), *b = malloc(elems * sizeof(*b));
    ncclUniqueId id;
    ncclResult_t res = get_id(rank, &id);
    if (res != ncclSuccess) {
        rank_failf(rank, "unique id from rank 0", res);
        return 1;
    }
    res = ncclCommInitRank(&c.comm, n, id, rank);
    if (res != ncclSuccess || !a || !b) {
        rank_failf(rank, "ncclCommInitRank", res);
        return 1;
    }
    int nbad = 0;
    for (int k = 0; k < C_COUNT; k++) {
        memset(b, 0xA5, elems * sizeof(*b));
        int rc = check_fns[k](&c, a, b);
        if (rc < 0) {
            ncclCommAbort(c.comm);
            return 1;
        }
        nbad += rc;
        __atomic_add_fetch(&sh->nfinished[k], 1, __ATOMIC_ACQ_REL);
    }
    /* No rank tears down while a peer may still receive from it. */
    int32_t x = 0;
    res = ncclAllReduce(&x, &x, 1, ncclInt32, ncclSum, c.comm, NULL);
    res = res == ncclSuccess ? ncclCommDestroy(c.comm) : res;
    free(a);
    free(b);
    return nbad > 0 || res != ncclSuccess;
}

/* Reaps the ranks until all have exited or the deadline passes (then kills the rest). */
static int wait_ranks(const pid_t *pids, int n, char *why, size_t len)
{
    int nleft = n, nfailed = 0;
    double deadline = now_s() + DEADLINE_S;
    while (nleft > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            nleft--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                nfailed++;
            if (WIFSIGNALED(status))
                snprintf(why, len, "a rank was killed by signal %d", WTERMSIG(status));
            continue;
        }
        if (now_s() > deadline) {
            for (int r = 0; r < n; r++)
                kill(pids[r], SIGKILL);
            while (waitpid(-1, &status, 0) > 0)
                ;
            snprintf(why, len, "timeout after %d s", DEADLINE_S);
            return 1;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return nfailed > 0;
}

static int report(const char *prefix, int n, const char *why)
{
    int nfailed = 0;
    for (int k = 0; k < C_COUNT; k++) {
        if (sh->nfinished[k] == n && !sh->is_failed[k]) {
            printf("PASS %s/%s\n", prefix, check_names[k]);
            continue;
        }
        nfailed++;
        const char *reason = sh->has_msg[k] ? sh->msg[k]
                             : sh->has_rank_msg ? sh->rank_msg
                             : why[0] ? why : "not reached (an earlier check failed)";
        printf("FAIL %s/%s: %s (finished on %d of %d ranks)\n", prefix, check_names[k], reason,
               sh->nfinished[k], n);
    }
    return nfailed;
}

/* The library serving the calls must be AnyCCL: its extension is visible and the NCCL version
 * matches the header this program was compiled with. */
static int check_library(const char *prefix)
{
    int version = 0;
    void *ext = dlsym(RTLD_DEFAULT, "anycclGetVersion");
    ncclResult_t res = ncclGetVersion(&version);
    if (ext == NULL || res != ncclSuccess) {
        printf("FAIL %s/served-by-anyccl: anycclGetVersion %s, ncclGetVersion %s\n", prefix,
               ext ? "found" : "not found (not AnyCCL)", ncclGetErrorString(res));
        return 1;
    }
    printf("PASS %s/served-by-anyccl (ncclGetVersion %d, header %d)\n", prefix, version,
           NCCL_VERSION_CODE);
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    const char *prefix = argc > 2 ? argv[2] : "dropin";
    pid_t pids[MAX_RANKS];
    char why[MSG_LEN] = "";
    if (n < 1 || n > MAX_RANKS) {
        fprintf(stderr, "usage: %s NRANKS [PREFIX] (1 <= NRANKS <= %d)\n", argv[0], MAX_RANKS);
        return 2;
    }
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (check_library(prefix))
        return 1;
    fflush(NULL);
    for (int r = 0; r < n; r++) {
        pids[r] = fork();
        if (pids[r] == 0)
            _exit(run_rank(r, n));
        if (pids[r] < 0) {
            snprintf(why, sizeof(why), "fork of rank %d failed", r);
            for (int k = 0; k < r; k++)
                kill(pids[k], SIGKILL);
            n = r;
            break;
        }
    }
    int rc = wait_ranks(pids, n, why, sizeof(why));
    return report(prefix, argc > 1 ? atoi(argv[1]) : 2, why) > 0 || rc != 0;
}
