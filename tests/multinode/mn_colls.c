/* One rank of the multi-node test (tests/multinode/run.sh starts one process per rank inside its
 * node's network namespace). Public API only: every collective (allreduce, allgather,
 * reduce-scatter, broadcast, reduce, alltoall, gather, scatter, send/recv) with exact checks on a
 * few types, counts 0, 1, 1001 and 1M, roots first and last.
 *
 *   mn_colls NAME RANK NRANKS IDFILE [ID_WAIT_S [SPLIT]]
 *
 * Rank 0 writes the unique id to IDFILE (atomically: a temporary file renamed); the others wait
 * for it up to ID_WAIT_S seconds (default 30): the node namespaces share the file system. IDFILE
 * "-": every rank takes the id from ncclGetUniqueId, which NCCL_COMM_ID (set by the caller to an
 * address of rank 0's node) makes the same everywhere; rank 0 runs the root there. SPLIT = L > 0:
 * the sweep runs on ncclCommSplit(color = rank mod L) instead, named NAME/local<color>: with L
 * ranks per node, each sub-communicator holds one rank per node, all on the same rail (what
 * rail-optimized rings would do for the whole job). A data
 * mismatch is counted and the run goes on; at the end one allreduce sums the failures per
 * collective and rank 0 prints "PASS NAME/<collective>" or "FAIL NAME/<collective>: ...". A
 * failed library call ends the process at once (exit 1): its peers then fail or time out, and
 * run.sh reports the configuration as failed. Exit status 0 only if every check passed. */
#include "coll_expect.h"
#include "nccl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ERR_LEN 256
#define BIG_COUNT ((size_t)1 << 20)

enum coll {
    C_ALLREDUCE,
    C_ALLGATHER,
    C_REDUCESCATTER,
    C_BROADCAST,
    C_REDUCE,
    C_ALLTOALL,
    C_GATHER,
    C_SCATTER,
    C_SENDRECV,
    C_COUNT,
};
static const char *const coll_names[C_COUNT] = {
    "allreduce", "allgather", "reducescatter", "broadcast", "reduce",
    "alltoall",  "gather",    "scatter",       "sendrecv",
};

/* Reductions run on these types; data movement is byte-exact whatever the type, so it runs on
 * int8 and float32 (element sizes 1 and 4). The 1M count runs on the first type of each list. */
static const ncclDataType_t red_types[] = {ncclFloat32, ncclInt32, ncclBfloat16, ncclUint8};
static const ncclDataType_t move_types[] = {ncclInt8, ncclFloat32};
static const size_t counts[] = {0, 1, 1001, BIG_COUNT};
#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct mn {
    const char *name;
    int rank;
    int nranks;
    ncclComm_t comm;
    int32_t nfail[C_COUNT];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A data mismatch: counted, and the first few per rank printed to stderr. */
static void mismatch(struct mn *m, enum coll c, const char *fmt, ...)
{
    va_list ap;
    if (m->nfail[c]++ >= 3)
        return;
    fprintf(stderr, "%s rank %d: %s: ", m->name, m->rank, coll_names[c]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A failed call leaves the communicator in an unknown state: stop here (peers fail or time out). */
static void call_ok(const struct mn *m, ncclResult_t res, const char *what)
{
    if (res == ncclSuccess)
        return;
    fprintf(stderr, "%s rank %d: %s failed: %s (%s)\n", m->name, m->rank, what,
            ncclGetErrorString(res), ncclGetLastError(m->comm));
    exit(1);
}

static void *xalloc(const struct mn *m, size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    if (p == NULL) {
        fprintf(stderr, "%s rank %d: out of memory (%zu bytes)\n", m->name, m->rank, nbytes);
        exit(1);
    }
    memset(p, CE_SENTINEL, nbytes);
    return p;
}

/* ---- reductions --------------------------------------------------------------------------- */

static void run_allreduce(struct mn *m, ncclDataType_t t, ncclRedOp_t op, size_t count,
                          bool is_inplace)
{
    size_t sz = ce_type_size(t);
    char err[ERR_LEN];
    void *send = xalloc(m, count * sz), *recv = is_inplace ? send : xalloc(m, count * sz);
    ce_red_fill(send, t, op, m->nranks, m->rank, 0, count);
    call_ok(m, ncclAllReduce(send, recv, count, t, op, m->comm, NULL), "ncclAllReduce");
    if (ce_red_check(recv, t, op, m->nranks, 0, count, err, sizeof(err)) != 0)
        mismatch(m, C_ALLREDUCE, "count %zu%s: %s", count, is_inplace ? " in place" : "", err);
    if (!is_inplace)
        free(recv);
    free(send);
}

static void run_reducescatter(struct mn *m, ncclDataType_t t, ncclRedOp_t op, size_t count)
{
    size_t sz = ce_type_size(t), n = (size_t)m->nranks;
    char err[ERR_LEN];
    void *send = xalloc(m, n * count * sz), *recv = xalloc(m, count * sz);
    ce_red_fill(send, t, op, m->nranks, m->rank, 0, n * count);
    call_ok(m, ncclReduceScatter(send, recv, count, t, op, m->comm, NULL), "ncclReduceScatter");
    if (ce_red_check(recv, t, op, m->nranks, (size_t)m->rank * count, count, err, sizeof(err)))
        mismatch(m, C_REDUCESCATTER, "recvcount %zu: %s", count, err);
    free(recv);
    free(send);
}

static void run_reduce(struct mn *m, ncclDataType_t t, ncclRedOp_t op, size_t count, int root)
{
    size_t sz = ce_type_size(t);
    char err[ERR_LEN];
    void *send = xalloc(m, count * sz), *recv = xalloc(m, count * sz);
    ce_red_fill(send, t, op, m->nranks, m->rank, 0, count);
    call_ok(m, ncclReduce(send, recv, count, t, op, root, m->comm, NULL), "ncclReduce");
    if (m->rank == root && ce_red_check(recv, t, op, m->nranks, 0, count, err, sizeof(err)))
        mismatch(m, C_REDUCE, "count %zu root %d: %s", count, root, err);
    free(recv);
    free(send);
}

/* ---- data movement ------------------------------------------------------------------------ */

static void check_bytes(struct mn *m, enum coll c, const void *buf, int src, size_t first,
                        size_t nbytes, const char *what)
{
    char err[ERR_LEN];
    if (ce_bytes_check(buf, src, first, nbytes, err, sizeof(err)) != 0)
        mismatch(m, c, "%s: %s", what, err);
}

static void run_allgather(struct mn *m, ncclDataType_t t, size_t count)
{
    size_t nb = count * ce_type_size(t), n = (size_t)m->nranks;
    char *send = xalloc(m, nb), *recv = xalloc(m, n * nb), what[64];
    ce_bytes_fill(send, m->rank, 0, nb);
    call_ok(m, ncclAllGather(send, recv, count, t, m->comm, NULL), "ncclAllGather");
    for (int j = 0; j < m->nranks; j++) {
        snprintf(what, sizeof(what), "sendcount %zu, block of rank %d", count, j);
        check_bytes(m, C_ALLGATHER, recv + (size_t)j * nb, j, 0, nb, what);
    }
    free(recv);
    free(send);
}

static void run_broadcast(struct mn *m, ncclDataType_t t, size_t count, int root)
{
    size_t nb = count * ce_type_size(t);
    char *send = xalloc(m, nb), *recv = xalloc(m, nb), what[64];
    ce_bytes_fill(send, m->rank, 0, nb);
    call_ok(m, ncclBroadcast(send, recv, count, t, root, m->comm, NULL), "ncclBroadcast");
    snprintf(what, sizeof(what), "count %zu root %d", count, root);
    check_bytes(m, C_BROADCAST, recv, root, 0, nb, what);
    free(recv);
    free(send);
}

static void run_alltoall(struct mn *m, ncclDataType_t t, size_t count)
{
    size_t nb = count * ce_type_size(t), n = (size_t)m->nranks, me = (size_t)m->rank;
    char *send = xalloc(m, n * nb), *recv = xalloc(m, n * nb), what[64];
    for (size_t j = 0; j < n; j++) /* block j goes to rank j: tagged with j's offset */
        ce_bytes_fill(send + j * nb, m->rank, j * nb, nb);
    call_ok(m, ncclAlltoAll(send, recv, count, t, m->comm, NULL), "ncclAlltoAll");
    for (size_t i = 0; i < n; i++) {
        snprintf(what, sizeof(what), "count %zu, block from rank %zu", count, i);
        check_bytes(m, C_ALLTOALL, recv + i * nb, (int)i, me * nb, nb, what);
    }
    free(recv);
    free(send);
}

static void run_gather(struct mn *m, ncclDataType_t t, size_t count, int root)
{
    size_t nb = count * ce_type_size(t), n = (size_t)m->nranks;
    char *send = xalloc(m, nb), *recv = xalloc(m, n * nb), what[64];
    ce_bytes_fill(send, m->rank, 0, nb);
    call_ok(m, ncclGather(send, recv, count, t, root, m->comm, NULL), "ncclGather");
    for (int i = 0; m->rank == root && i < m->nranks; i++) {
        snprintf(what, sizeof(what), "count %zu root %d, block of rank %d", count, root, i);
        check_bytes(m, C_GATHER, recv + (size_t)i * nb, i, 0, nb, what);
    }
    free(recv);
    free(send);
}

static void run_scatter(struct mn *m, ncclDataType_t t, size_t count, int root)
{
    size_t nb = count * ce_type_size(t), n = (size_t)m->nranks;
    char *send = xalloc(m, n * nb), *recv = xalloc(m, nb), what[64];
    for (size_t j = 0; j < n; j++)
        ce_bytes_fill(send + j * nb, m->rank, j * nb, nb);
    call_ok(m, ncclScatter(send, recv, count, t, root, m->comm, NULL), "ncclScatter");
    snprintf(what, sizeof(what), "count %zu root %d", count, root);
    check_bytes(m, C_SCATTER, recv, root, (size_t)m->rank * nb, nb, what);
    free(recv);
    free(send);
}

/* Shifts 1 (the neighbour, often on the same node) and n/2 (always on another node when ranks
 * are numbered node by node) in one group; each message is tagged with its shift. */
static void run_sendrecv(struct mn *m, ncclDataType_t t, size_t count)
{
    int n = m->nranks, shifts[2] = {1, n / 2}, nshift = (n / 2 > 1) ? 2 : 1;
    size_t nb = count * ce_type_size(t);
    char *send[2], *recv[2], what[64];
    call_ok(m, ncclGroupStart(), "ncclGroupStart");
    for (int s = 0; s < nshift; s++) {
        send[s] = xalloc(m, nb);
        recv[s] = xalloc(m, nb);
        ce_bytes_fill(send[s], m->rank, (size_t)shifts[s] * 7919, nb);
        call_ok(m, ncclSend(send[s], count, t, (m->rank + shifts[s]) % n, m->comm, NULL),
                "ncclSend");
        call_ok(m, ncclRecv(recv[s], count, t, (m->rank - shifts[s] + n) % n, m->comm, NULL),
                "ncclRecv");
    }
    call_ok(m, ncclGroupEnd(), "ncclGroupEnd");
    for (int s = 0; s < nshift; s++) {
        snprintf(what, sizeof(what), "count %zu shift %d", count, shifts[s]);
        check_bytes(m, C_SENDRECV, recv[s], (m->rank - shifts[s] + n) % n, (size_t)shifts[s] * 7919,
                    nb, what);
        free(recv[s]);
        free(send[s]);
    }
}

/* ---- the sweep ---------------------------------------------------------------------------- */

static void sweep_reductions(struct mn *m)
{
    for (size_t ci = 0; ci < NELEMS(counts); ci++) {
        size_t count = counts[ci];
        size_t ntypes = count == BIG_COUNT ? 1 : NELEMS(red_types);
        for (size_t ti = 0; ti < ntypes; ti++) {
            ncclDataType_t t = red_types[ti];
            run_allreduce(m, t, ncclSum, count, false);
            run_reducescatter(m, t, ncclSum, count);
            run_reduce(m, t, ncclSum, count, m->nranks - 1);
        }
    }
    /* Every operator once, on the middle count; in place; the first root. */
    for (int o = 0; o < ce_nops; o++) {
        run_allreduce(m, ncclFloat32, ce_all_ops[o], 1001, false);
        run_reducescatter(m, ncclInt32, ce_all_ops[o], 1001);
        run_reduce(m, ncclFloat32, ce_all_ops[o], 1001, 0);
    }
    run_allreduce(m, ncclInt32, ncclSum, 1001, true);
}

static void sweep_movement(struct mn *m)
{
    for (size_t ci = 0; ci < NELEMS(counts); ci++) {
        size_t count = counts[ci];
        size_t ntypes = count == BIG_COUNT ? 1 : NELEMS(move_types);
        for (size_t ti = 0; ti < ntypes; ti++) {
            ncclDataType_t t = move_types[ti];
            for (int r = 0; r < 2; r++) {
                int root = r == 0 ? m->nranks - 1 : 0;
                if (r == 1 && count != 1001)
                    continue; /* root 0 once per collective is enough */
                run_broadcast(m, t, count, root);
                run_gather(m, t, count, root);
                run_scatter(m, t, count, root);
            }
            run_allgather(m, t, count);
            run_alltoall(m, t, count);
            run_sendrecv(m, t, count);
        }
    }
}

/* ---- unique id and main ------------------------------------------------------------------- */

static int publish_id(const char *path, const ncclUniqueId *id)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f == NULL || fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "cannot rename %s to %s: %s\n", tmp, path, strerror(errno));
        return -1;
    }
    return 0;
}

static int wait_id(const char *path, ncclUniqueId *id, double wait_s)
{
    double deadline = now_s() + wait_s;
    for (;;) {
        FILE *f = fopen(path, "rb");
        if (f != NULL) {
            size_t got = fread(id, sizeof(*id), 1, f);
            fclose(f);
            if (got == 1)
                return 0;
        }
        if (now_s() > deadline) {
            fprintf(stderr, "no unique id in %s after %.0f s (rank 0 not started?)\n", path,
                    wait_s);
            return -1;
        }
        usleep(20000);
    }
}

static int report(struct mn *m, double t_init, double t_run)
{
    int32_t total[C_COUNT];
    int bad = 0;
    call_ok(m, ncclAllReduce(m->nfail, total, C_COUNT, ncclInt32, ncclSum, m->comm, NULL),
            "ncclAllReduce (failure counts)");
    for (int c = 0; c < C_COUNT; c++) {
        bad |= total[c] != 0;
        if (m->rank != 0)
            continue;
        if (total[c] == 0)
            printf("PASS %s/%s\n", m->name, coll_names[c]);
        else
            printf("FAIL %s/%s: %d mismatches over all ranks (rank stderr in the log)\n", m->name,
                   coll_names[c], (int)total[c]);
    }
    if (m->rank == 0)
        printf("INFO %s: %d ranks, init %.2f s, collectives %.2f s\n", m->name, m->nranks, t_init,
               t_run);
    fflush(stdout);
    return bad;
}

/* Replaces m's communicator with its part for color rank mod split; keeps the parent in *parent. */
static void split_by_local_rank(struct mn *m, int split, ncclComm_t *parent)
{
    static char name[256];
    int color = m->rank % split;
    ncclComm_t sub = NULL;
    call_ok(m, ncclCommSplit(m->comm, color, m->rank, &sub, NULL), "ncclCommSplit");
    *parent = m->comm;
    m->comm = sub;
    call_ok(m, ncclCommUserRank(sub, &m->rank), "ncclCommUserRank");
    call_ok(m, ncclCommCount(sub, &m->nranks), "ncclCommCount");
    snprintf(name, sizeof(name), "%s/local%d", m->name, color);
    m->name = name;
}

int main(int argc, char **argv)
{
    struct mn m = {0};
    ncclUniqueId id;
    ncclComm_t parent = NULL;
    if (argc < 5) {
        fprintf(stderr, "usage: %s NAME RANK NRANKS IDFILE [ID_WAIT_S [SPLIT]]\n", argv[0]);
        return 2;
    }
    int split = argc > 6 ? atoi(argv[6]) : 0;
    m.name = argv[1];
    m.rank = atoi(argv[2]);
    m.nranks = atoi(argv[3]);
    double wait_s = argc > 5 ? atof(argv[5]) : 30.0, t0 = now_s();
    if (m.nranks < 1 || m.rank < 0 || m.rank >= m.nranks) {
        fprintf(stderr, "%s: rank %d of %d makes no sense\n", m.name, m.rank, m.nranks);
        return 2;
    }
    if (strcmp(argv[4], "-") == 0) {
        call_ok(&m, ncclGetUniqueId(&id), "ncclGetUniqueId (NCCL_COMM_ID)");
    } else if (m.rank == 0) {
        call_ok(&m, ncclGetUniqueId(&id), "ncclGetUniqueId");
        if (publish_id(argv[4], &id) != 0)
            return 1;
    } else if (wait_id(argv[4], &id, wait_s) != 0) {
        return 1;
    }
    call_ok(&m, ncclCommInitRank(&m.comm, m.nranks, id, m.rank), "ncclCommInitRank");
    if (split > 0)
        split_by_local_rank(&m, split, &parent);
    double t1 = now_s();
    sweep_reductions(&m);
    sweep_movement(&m);
    int bad = report(&m, t1 - t0, now_s() - t1);
    call_ok(&m, ncclCommDestroy(m.comm), "ncclCommDestroy");
    if (parent != NULL)
        call_ok(&m, ncclCommDestroy(parent), "ncclCommDestroy (parent)");
    return bad ? 1 : 0;
}
