/* Integration test of group semantics: nested ncclGroupStart/End, one group mixing collectives and
 * send/recv over two communicators (a split and a second ncclCommInitRank), invalid arguments
 * inside and outside a group (reported at the call or at ncclGroupEnd, communicator still usable),
 * 10,000 back-to-back small operations (no growth of memory or descriptors) and
 * ncclGroupSimulateEnd (an estimate, nothing run). */
#include "coll_expect.h"
#include "launcher.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ERR_LEN 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int finish_body(const struct tl_ctx *ctx, int nbad)
{
    if (!tl_ok(ctx, ce_barrier(ctx->comm), "final barrier (1-int allreduce)"))
        return 1;
    return nbad > 0;
}

/* Sum over ranks of (rank + 1) * (i + 1): the allreduce every body uses to check a comm. */
static bool check_allreduce(const struct tl_ctx *ctx, ncclComm_t comm, int rank, int nranks,
                            const char *what)
{
    int32_t v[3];
    for (int i = 0; i < 3; i++)
        v[i] = (rank + 1) * (i + 1);
    if (!tl_ok(ctx, ncclAllReduce(v, v, 3, ncclInt32, ncclSum, comm, NULL), what))
        return false;
    for (int i = 0; i < 3; i++) {
        int32_t want = nranks * (nranks + 1) / 2 * (i + 1);
        if (v[i] != want) {
            tl_failf(ctx, "%s: element %d is %d, expected %d", what, i, v[i], want);
            return false;
        }
    }
    return true;
}

/* ---- a group of collectives and send/recv on up to two communicators ----------------------- */

struct mixed {
    int32_t ar[7];          /* allreduce (sum) on comm a */
    unsigned char ag[64 * 8]; /* allgather of 8 bytes on comm b */
    unsigned char ring[1000]; /* ring send/recv on comm b */
    unsigned char ring_in[1000];
    unsigned char bc[257];  /* broadcast from the last rank of comm a */
};

static bool post_mixed(const struct tl_ctx *ctx, struct mixed *m, ncclComm_t a, int ra, int na,
                       ncclComm_t b, int rb, int nb, int depth)
{
    bool is_ok = tl_ok(ctx, ncclAllReduce(m->ar, m->ar, 7, ncclInt32, ncclSum, a, NULL),
                       "allreduce in group");
    if (depth > 1)
        is_ok = is_ok && tl_ok(ctx, ncclGroupStart(), "nested ncclGroupStart");
    is_ok = is_ok && tl_ok(ctx, ncclAllGather(m->ag + rb * 8, m->ag, 8, ncclUint8, b, NULL),
                           "allgather in group");
    is_ok = is_ok && tl_ok(ctx, ncclSend(m->ring, sizeof(m->ring), ncclUint8, (rb + 1) % nb, b,
                                         NULL), "send in group");
    if (depth > 2)
        is_ok = is_ok && tl_ok(ctx, ncclGroupStart(), "nested ncclGroupStart (3 deep)");
    is_ok = is_ok && tl_ok(ctx, ncclRecv(m->ring_in, sizeof(m->ring_in), ncclUint8,
                                         (rb + nb - 1) % nb, b, NULL), "recv in group");
    if (depth > 2)
        is_ok = is_ok && tl_ok(ctx, ncclGroupEnd(), "nested ncclGroupEnd (3 deep)");
    if (depth > 1)
        is_ok = is_ok && tl_ok(ctx, ncclGroupEnd(), "nested ncclGroupEnd");
    return is_ok && tl_ok(ctx, ncclBroadcast(m->bc, m->bc, sizeof(m->bc), ncclUint8, na - 1, a,
                                             NULL), "broadcast in group");
}

static int check_mixed(const struct tl_ctx *ctx, const struct mixed *m, int na, int rb, int nb,
                       const char *label)
{
    char err[ERR_LEN];
    int bad = 0;
    for (int i = 0; i < 7 && !bad; i++) {
        int32_t want = na * (na + 1) / 2 * (i + 1);
        if (m->ar[i] != want) {
            snprintf(err, sizeof(err), "allreduce element %d is %d, expected %d", i, m->ar[i],
                     want);
            bad = 1;
        }
    }
    for (int r = 0; r < nb && !bad; r++)
        bad = ce_bytes_check(m->ag + r * 8, r, 0, 8, err, sizeof(err));
    bad = bad || ce_bytes_check(m->ring_in, (rb + nb - 1) % nb, 4096, sizeof(m->ring_in), err,
                                sizeof(err));
    bad = bad || ce_bytes_check(m->bc, na - 1, 0, sizeof(m->bc), err, sizeof(err));
    if (bad)
        tl_failf(ctx, "%s: %s", label, err);
    return bad;
}

/* The group on comms a (rank ra of na) and b (rank rb of nb), nested `depth` deep. */
static int run_mixed(const struct tl_ctx *ctx, ncclComm_t a, int ra, int na, ncclComm_t b, int rb,
                     int nb, int depth, const char *label)
{
    struct mixed *m = calloc(1, sizeof(*m));
    if (!m)
        return 1;
    for (int i = 0; i < 7; i++)
        m->ar[i] = (ra + 1) * (i + 1);
    memset(m->ag, CE_SENTINEL, sizeof(m->ag));
    ce_bytes_fill(m->ag + rb * 8, rb, 0, 8);
    ce_bytes_fill(m->ring, rb, 4096, sizeof(m->ring));
    memset(m->bc, CE_SENTINEL, sizeof(m->bc));
    if (ra == na - 1)
        ce_bytes_fill(m->bc, ra, 0, sizeof(m->bc));
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
                 post_mixed(ctx, m, a, ra, na, b, rb, nb, depth);
    int rc = !tl_ok(ctx, ncclGroupEnd(), label) || !is_ok ? -1
             : check_mixed(ctx, m, na, rb, nb, label);
    free(m);
    return rc;
}

static int body_nested(struct tl_ctx *ctx)
{
    int rc = 0;
    for (int depth = 1; depth <= 3 && rc == 0; depth++)
        rc = run_mixed(ctx, ctx->comm, ctx->rank, ctx->nranks, ctx->comm, ctx->rank,
                       ctx->nranks, depth, "group of allreduce, allgather, ring, broadcast");
    return rc < 0 ? 1 : finish_body(ctx, rc);
}

/* comm b: a split of the world with every rank in one color and reversed keys. */
static int body_split_group(struct tl_ctx *ctx)
{
    int n = ctx->nranks, rb = -1, nb = -1;
    ncclComm_t b = NULL;
    if (!tl_ok(ctx, ncclCommSplit(ctx->comm, 0, n - 1 - ctx->rank, &b, NULL), "ncclCommSplit"))
        return 1;
    if (!tl_ok(ctx, ncclCommUserRank(b, &rb), "ncclCommUserRank") ||
        !tl_ok(ctx, ncclCommCount(b, &nb), "ncclCommCount"))
        return 1;
    if (rb != n - 1 - ctx->rank || nb != n) {
        tl_failf(ctx, "split with reversed keys: rank %d of %d, expected %d of %d", rb, nb,
                 n - 1 - ctx->rank, n);
        return 1;
    }
    int rc = run_mixed(ctx, ctx->comm, ctx->rank, n, b, rb, nb, 2,
                       "group over the world comm and its reversed split");
    if (rc < 0 || !tl_ok(ctx, ce_barrier(b), "barrier on the split"))
        return 1;
    if (!tl_ok(ctx, ncclCommDestroy(b), "ncclCommDestroy of the split"))
        return 1;
    return finish_body(ctx, rc);
}

/* comm b: a second ncclCommInitRank, its unique id broadcast by rank 0 over the world comm. */
static int body_second_init(struct tl_ctx *ctx)
{
    ncclUniqueId id;
    ncclComm_t b = NULL;
    memset(&id, 0, sizeof(id));
    if (ctx->rank == 0 && !tl_ok(ctx, ncclGetUniqueId(&id), "ncclGetUniqueId"))
        return 1;
    if (!tl_ok(ctx, ncclBroadcast(&id, &id, sizeof(id), ncclUint8, 0, ctx->comm, NULL),
               "broadcast of the second unique id"))
        return 1;
    if (!tl_ok(ctx, ncclCommInitRank(&b, ctx->nranks, id, ctx->rank), "second ncclCommInitRank"))
        return 1;
    int rc = run_mixed(ctx, b, ctx->rank, ctx->nranks, ctx->comm, ctx->rank, ctx->nranks, 1,
                       "group over two communicators from two unique ids");
    if (rc < 0 || !tl_ok(ctx, ce_barrier(b), "barrier on the second comm"))
        return 1;
    if (!tl_ok(ctx, ncclCommDestroy(b), "ncclCommDestroy of the second comm"))
        return 1;
    return finish_body(ctx, rc);
}

/* ---- every collective in one group ----------------------------------------------------------- */

#define AC_COUNT 5 /* elements (int32) per rank and collective */

enum { G_AG_IN, G_AG_OUT, G_RS_IN, G_RS_OUT, G_BC, G_RED_IN, G_RED_OUT, G_A2A_IN, G_A2A_OUT,
       G_GA_IN, G_GA_OUT, G_SC_IN, G_SC_OUT, G_NBUFS };

static bool post_all_colls(const struct tl_ctx *ctx, struct ce_buf *b)
{
    ncclComm_t c = ctx->comm;
    int last = ctx->nranks - 1;
    return tl_ok(ctx, ncclAllGather(b[G_AG_IN].data, b[G_AG_OUT].data, AC_COUNT, ncclInt32, c,
                                    NULL), "allgather") &&
           tl_ok(ctx, ncclReduceScatter(b[G_RS_IN].data, b[G_RS_OUT].data, AC_COUNT, ncclInt32,
                                        ncclSum, c, NULL), "reducescatter") &&
           tl_ok(ctx, ncclBcast(b[G_BC].data, AC_COUNT, ncclInt32, last, c, NULL), "bcast") &&
           tl_ok(ctx, ncclReduce(b[G_RED_IN].data, b[G_RED_OUT].data, AC_COUNT, ncclInt32,
                                 ncclMax, 0, c, NULL), "reduce") &&
           tl_ok(ctx, ncclAlltoAll(b[G_A2A_IN].data, b[G_A2A_OUT].data, AC_COUNT, ncclInt32, c,
                                   NULL), "alltoall") &&
           tl_ok(ctx, ncclGather(b[G_GA_IN].data, b[G_GA_OUT].data, AC_COUNT, ncclInt32, last, c,
                                 NULL), "gather") &&
           tl_ok(ctx, ncclScatter(b[G_SC_IN].data, b[G_SC_OUT].data, AC_COUNT, ncclInt32, 0, c,
                                  NULL), "scatter");
}

/* Inputs: byte patterns of this rank (offsets by destination where it matters), int32
 * reduction inputs from coll_expect for reducescatter (sum) and reduce (max). */
static void fill_all_colls(const struct tl_ctx *ctx, struct ce_buf *b)
{
    int r = ctx->rank, n = ctx->nranks;
    size_t bytes = AC_COUNT * 4;
    ce_bytes_fill(b[G_AG_IN].data, r, 0, bytes);
    ce_red_fill(b[G_RS_IN].data, ncclInt32, ncclSum, n, r, 0, (size_t)AC_COUNT * n);
    if (r == n - 1)
        ce_bytes_fill(b[G_BC].data, r, 0, bytes);
    ce_red_fill(b[G_RED_IN].data, ncclInt32, ncclMax, n, r, 0, AC_COUNT);
    ce_bytes_fill(b[G_A2A_IN].data, r, 0, bytes * n);
    ce_bytes_fill(b[G_GA_IN].data, r, 0, bytes);
    if (r == 0)
        ce_bytes_fill(b[G_SC_IN].data, 0, 0, bytes * n);
}

static int check_all_colls(const struct tl_ctx *ctx, struct ce_buf *b, char *err)
{
    int r = ctx->rank, n = ctx->nranks, bad = 0;
    size_t bytes = AC_COUNT * 4;
    for (int s = 0; s < n && !bad; s++)
        bad = ce_bytes_check((char *)b[G_AG_OUT].data + s * bytes, s, 0, bytes, err, ERR_LEN) ||
              ce_bytes_check((char *)b[G_A2A_OUT].data + s * bytes, s, r * bytes, bytes, err,
                             ERR_LEN) ||
              (r == n - 1 && ce_bytes_check((char *)b[G_GA_OUT].data + s * bytes, s, 0, bytes,
                                            err, ERR_LEN));
    bad = bad || ce_red_check(b[G_RS_OUT].data, ncclInt32, ncclSum, n, (size_t)r * AC_COUNT,
                              AC_COUNT, err, ERR_LEN);
    bad = bad || ce_bytes_check(b[G_BC].data, n - 1, 0, bytes, err, ERR_LEN);
    bad = bad || (r == 0 && ce_red_check(b[G_RED_OUT].data, ncclInt32, ncclMax, n, 0, AC_COUNT,
                                         err, ERR_LEN));
    bad = bad || ce_bytes_check(b[G_SC_OUT].data, 0, r * bytes, bytes, err, ERR_LEN);
    bad = bad || (r != 0 && ce_check_untouched(b[G_RED_OUT].data, bytes, "non-root reduce "
                                               "recvbuff", err, ERR_LEN));
    bad = bad || (r != n - 1 && ce_check_untouched(b[G_GA_OUT].data, bytes * n, "non-root gather "
                                                   "recvbuff", err, ERR_LEN));
    for (int i = 0; i < G_NBUFS && !bad; i++)
        bad = ce_buf_check_guards(&b[i], "a buffer", err, ERR_LEN);
    return bad;
}

/* allgather, reducescatter, bcast, reduce, alltoall, gather and scatter in one group. */
static int body_all_colls(struct tl_ctx *ctx)
{
    static const int nblocks[G_NBUFS] = {1, -1, -1, 1, 1, 1, 1, -1, -1, 1, -1, -1, 1};
    struct ce_buf b[G_NBUFS];
    char err[ERR_LEN];
    int nalloc = 0, rc = 1;
    for (; nalloc < G_NBUFS; nalloc++) {
        size_t blocks = nblocks[nalloc] > 0 ? 1 : (size_t)ctx->nranks;
        if (ce_buf_alloc(&b[nalloc], blocks * AC_COUNT * 4))
            goto out;
    }
    fill_all_colls(ctx, b);
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") && post_all_colls(ctx, b);
    if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd of every collective") || !is_ok)
        goto out;
    rc = check_all_colls(ctx, b, err);
    if (rc)
        tl_failf(ctx, "every collective in one group: %s", err);
    rc = finish_body(ctx, rc);
out:
    for (int i = 0; i < nalloc; i++)
        ce_buf_free(&b[i]);
    return rc;
}

/* ---- one thread drives every communicator of ncclCommInitAll --------------------------------- */

#define ST_NCOMMS 4
#define ST_COUNT 1001

/* The classic single-process pattern: a group with one call per communicator. */
static bool st_allreduce(const struct tl_ctx *ctx, ncclComm_t *comms, float (*in)[ST_COUNT],
                         float (*out)[ST_COUNT])
{
    char err[ERR_LEN];
    for (int i = 0; i < ST_NCOMMS; i++)
        ce_red_fill(in[i], ncclFloat32, ncclSum, ST_NCOMMS, i, 0, ST_COUNT);
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart");
    for (int i = 0; i < ST_NCOMMS && is_ok; i++)
        is_ok = tl_ok(ctx, ncclAllReduce(in[i], out[i], ST_COUNT, ncclFloat32, ncclSum, comms[i],
                                         NULL), "allreduce on one of the comms");
    if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd of one allreduce per comm") || !is_ok)
        return false;
    for (int i = 0; i < ST_NCOMMS; i++) {
        if (ce_red_check(out[i], ncclFloat32, ncclSum, ST_NCOMMS, 0, ST_COUNT, err, ERR_LEN)) {
            tl_failf(ctx, "single-thread allreduce, comm %d: %s", i, err);
            return false;
        }
    }
    return true;
}

static bool st_ring(const struct tl_ctx *ctx, ncclComm_t *comms, float (*in)[ST_COUNT],
                    float (*out)[ST_COUNT])
{
    char err[ERR_LEN];
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart");
    for (int i = 0; i < ST_NCOMMS && is_ok; i++) {
        ce_bytes_fill(in[i], i, 0, sizeof(in[i]));
        is_ok = tl_ok(ctx, ncclSend(in[i], ST_COUNT, ncclFloat32, (i + 1) % ST_NCOMMS, comms[i],
                                    NULL), "send") &&
                tl_ok(ctx, ncclRecv(out[i], ST_COUNT, ncclFloat32, (i + ST_NCOMMS - 1) % ST_NCOMMS,
                                    comms[i], NULL), "recv");
    }
    if (!tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd of a ring over the comms") || !is_ok)
        return false;
    for (int i = 0; i < ST_NCOMMS; i++) {
        int from = (i + ST_NCOMMS - 1) % ST_NCOMMS;
        if (ce_bytes_check(out[i], from, 0, sizeof(out[i]), err, ERR_LEN)) {
            tl_failf(ctx, "single-thread ring, comm %d from comm %d: %s", i, from, err);
            return false;
        }
    }
    return true;
}

static int raw_single_thread(struct tl_ctx *ctx)
{
    ncclComm_t comms[ST_NCOMMS];
    float(*in)[ST_COUNT] = calloc(ST_NCOMMS, sizeof(*in));
    float(*out)[ST_COUNT] = calloc(ST_NCOMMS, sizeof(*out));
    bool is_ok = in && out &&
                 tl_ok(ctx, ncclCommInitAll(comms, ST_NCOMMS, NULL), "ncclCommInitAll(4)") &&
                 st_allreduce(ctx, comms, in, out) && st_ring(ctx, comms, in, out) &&
                 st_allreduce(ctx, comms, in, out);
    for (int i = 0; is_ok && i < ST_NCOMMS; i++)
        is_ok = tl_ok(ctx, ncclCommDestroy(comms[i]), "ncclCommDestroy");
    free(in);
    free(out);
    return is_ok ? 0 : 1;
}

/* ---- errors --------------------------------------------------------------------------------- */

enum bad_kind { BAD_TYPE, BAD_OP, BAD_ROOT, BAD_PEER, BAD_NULLBUF, BAD_KIND_COUNT };
static const char *const bad_names[] = {"datatype ncclNumTypes", "op 1000 (never created)",
                                        "broadcast root == nranks", "send to peer == nranks",
                                        "NULL recvbuff with count 3"};

static ncclResult_t call_bad(const struct tl_ctx *ctx, enum bad_kind kind, int32_t *buf)
{
    switch (kind) {
    case BAD_TYPE:
        return ncclAllReduce(buf, buf, 3, (ncclDataType_t)ncclNumTypes, ncclSum, ctx->comm, NULL);
    case BAD_OP:
        return ncclAllReduce(buf, buf, 3, ncclInt32, (ncclRedOp_t)1000, ctx->comm, NULL);
    case BAD_ROOT:
        return ncclBroadcast(buf, buf, 3, ncclInt32, ctx->nranks, ctx->comm, NULL);
    case BAD_PEER:
        return ncclSend(buf, 3, ncclInt32, ctx->nranks, ctx->comm, NULL);
    default:
        return ncclAllReduce(buf, NULL, 3, ncclInt32, ncclSum, ctx->comm, NULL);
    }
}

/* NCCL returns ncclInvalidArgument at the call, and ncclGroupEnd then reports the group's error;
 * either place is accepted as long as the error is ncclInvalidArgument. */
static bool one_bad(const struct tl_ctx *ctx, enum bad_kind kind, bool is_grouped)
{
    int32_t buf[3] = {1, 2, 3}, other[3] = {4, 5, 6};
    ncclResult_t at_call, at_end = ncclSuccess;
    const char *where = is_grouped ? "inside a group" : "outside a group";
    if (is_grouped && !tl_ok(ctx, ncclGroupStart(), "ncclGroupStart"))
        return false;
    if (is_grouped && !tl_ok(ctx, ncclAllReduce(other, other, 3, ncclInt32, ncclSum, ctx->comm,
                                                NULL), "valid allreduce before the bad call"))
        return false;
    at_call = call_bad(ctx, kind, buf);
    if (is_grouped)
        at_end = ncclGroupEnd();
    if (at_call == ncclSuccess && at_end == ncclSuccess) {
        tl_failf(ctx, "%s %s: accepted (the call and ncclGroupEnd returned ncclSuccess)",
                 bad_names[kind], where);
        return false;
    }
    ncclResult_t got = at_call != ncclSuccess ? at_call : at_end;
    if (got != ncclInvalidArgument) {
        tl_failf(ctx, "%s %s: %s returned %s, expected ncclInvalidArgument", bad_names[kind],
                 where, at_call != ncclSuccess ? "the call" : "ncclGroupEnd",
                 ncclGetErrorString(got));
        return false;
    }
    return check_allreduce(ctx, ctx->comm, ctx->rank, ctx->nranks,
                           is_grouped ? "allreduce after a group that failed"
                                      : "allreduce after a rejected call");
}

static bool misc_errors(const struct tl_ctx *ctx)
{
    int32_t buf[3] = {0};
    ncclResult_t res = ncclAllReduce(buf, buf, 3, ncclInt32, ncclSum, NULL, NULL);
    if (res != ncclInvalidArgument) {
        tl_failf(ctx, "allreduce on a NULL comm returned %s, expected ncclInvalidArgument",
                 ncclGetErrorString(res));
        return false;
    }
    res = ncclGroupEnd();
    if (res != ncclInvalidUsage) {
        tl_failf(ctx, "ncclGroupEnd without ncclGroupStart returned %s, expected "
                      "ncclInvalidUsage", ncclGetErrorString(res));
        return false;
    }
    return check_allreduce(ctx, ctx->comm, ctx->rank, ctx->nranks, "allreduce after misuse");
}

static int body_errors(struct tl_ctx *ctx)
{
    for (int kind = 0; kind < BAD_KIND_COUNT; kind++)
        for (int is_grouped = 0; is_grouped <= 1; is_grouped++)
            if (!one_bad(ctx, kind, is_grouped))
                return 1;
    return misc_errors(ctx) ? finish_body(ctx, 0) : 1;
}

/* ---- 10,000 back-to-back operations ---------------------------------------------------------- */

#define NITERS 5000 /* one allreduce and one grouped send/recv pair each */
#define PHASE 250

/* AddressSanitizer keeps freed memory in quarantine (tens of MiB): resident size then says
 * nothing about leaks, which LeakSanitizer reports instead. */
static bool is_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#endif
#endif
    return false;
}

static long resident_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static bool one_iter(const struct tl_ctx *ctx, int it)
{
    int n = ctx->nranks, next = (ctx->rank + 1) % n, prev = (ctx->rank + n - 1) % n;
    int32_t v = ctx->rank + it, s = ctx->rank * 100000 + it, r = -1;
    if (!tl_ok(ctx, ncclAllReduce(&v, &v, 1, ncclInt32, ncclSum, ctx->comm, NULL), "allreduce"))
        return false;
    if (!tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") ||
        !tl_ok(ctx, ncclSend(&s, 1, ncclInt32, next, ctx->comm, NULL), "send") ||
        !tl_ok(ctx, ncclRecv(&r, 1, ncclInt32, prev, ctx->comm, NULL), "recv") ||
        !tl_ok(ctx, ncclGroupEnd(), "ncclGroupEnd of send/recv"))
        return false;
    if (v != n * it + n * (n - 1) / 2 || r != prev * 100000 + it) {
        tl_failf(ctx, "iteration %d: allreduce %d (expected %d), received %d (expected %d)", it,
                 v, n * it + n * (n - 1) / 2, r, prev * 100000 + it);
        return false;
    }
    return true;
}

/* Growth: 16 MiB of resident memory and 4 descriptors from the end of the first PHASE
 * iterations to the end. Time is not asserted (the machine is shared; work that grows with the
 * number of operations shows up as memory here, and in the benchmarks): the fastest early and
 * late windows are printed for the log. */
#define NWINDOWS (NITERS / PHASE)

static double fastest(const double *t, int first, int last)
{
    double best = t[first];
    for (int i = first + 1; i <= last; i++)
        best = t[i] < best ? t[i] : best;
    return best;
}

static int body_many(struct tl_ctx *ctx)
{
    double t[NWINDOWS], t0 = now_s();
    long rss0 = 0;
    int fds0 = 0;
    for (int it = 0; it < NITERS; it++) {
        if (it == PHASE) {
            rss0 = resident_kib();
            fds0 = open_fds();
        }
        if (!one_iter(ctx, it))
            return 1;
        if ((it + 1) % PHASE == 0) {
            t[it / PHASE] = now_s() - t0;
            t0 = now_s();
        }
    }
    long rss_growth = resident_kib() - rss0;
    int fd_growth = open_fds() - fds0;
    if (ctx->rank == 0)
        fprintf(stderr, "  [%d iterations: fastest window of %d early %.3f s, late %.3f s]\n",
                NITERS, PHASE, fastest(t, 1, 4), fastest(t, NWINDOWS - 4, NWINDOWS - 1));
    if (rss_growth > 16 * 1024 && ctx->mode == TL_PROCS && !is_sanitized())
        tl_failf(ctx, "leak: resident memory grew by %ld KiB over %d iterations", rss_growth,
                 NITERS - PHASE);
    else if (fd_growth > 4 && ctx->mode == TL_PROCS)
        tl_failf(ctx, "leak: %d more open descriptors after %d iterations", fd_growth,
                 NITERS - PHASE);
    else
        return finish_body(ctx, 0);
    return 1;
}

/* ---- ncclGroupSimulateEnd -------------------------------------------------------------------- */

#define SIM_COUNT (1 << 18)

static int body_simulate(struct tl_ctx *ctx)
{
    ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
    struct ce_buf send, recv;
    char err[ERR_LEN];
    if (ce_buf_alloc(&send, SIM_COUNT * 4) || ce_buf_alloc(&recv, SIM_COUNT * 4))
        return 1;
    ce_red_fill(send.data, ncclFloat32, ncclSum, ctx->nranks, ctx->rank, 0, SIM_COUNT);
    bool is_ok = tl_ok(ctx, ncclGroupStart(), "ncclGroupStart") &&
                 tl_ok(ctx, ncclAllReduce(send.data, recv.data, SIM_COUNT, ncclFloat32, ncclSum,
                                          ctx->comm, NULL), "allreduce in a simulated group") &&
                 tl_ok(ctx, ncclGroupSimulateEnd(&sim), "ncclGroupSimulateEnd");
    if (is_ok && !(sim.estimatedTime > 0 && isfinite(sim.estimatedTime))) {
        tl_failf(ctx, "ncclGroupSimulateEnd: estimatedTime %g, expected > 0", sim.estimatedTime);
        is_ok = false;
    }
    if (is_ok && ce_check_untouched(recv.data, SIM_COUNT * 4, "recvbuff of a simulated group",
                                    err, sizeof(err))) {
        tl_failf(ctx, "%s", err);
        is_ok = false;
    }
    is_ok = is_ok && tl_ok(ctx, ncclAllReduce(send.data, recv.data, SIM_COUNT, ncclFloat32, ncclSum,
                                              ctx->comm, NULL), "allreduce after the simulation");
    if (is_ok && ce_red_check(recv.data, ncclFloat32, ncclSum, ctx->nranks, 0, SIM_COUNT, err,
                              sizeof(err))) {
        tl_failf(ctx, "allreduce after the simulation: %s", err);
        is_ok = false;
    }
    ce_buf_free(&send);
    ce_buf_free(&recv);
    return is_ok ? finish_body(ctx, 0) : 1;
}

#define MAX_CASES 192
#define TIMEOUT_S 300

int main(int argc, char **argv)
{
    static struct tl_case cases[MAX_CASES];
    static const struct {
        int np;
        enum tl_mode mode;
        const char *env, *name;
        bool is_slow;
    } many[] = {
        {2, TL_PROCS, NULL, "np2/shm/proc", false},
        {4, TL_PROCS, NULL, "np4/shm/proc", true},
        {2, TL_PROCS, "NCCL_SHM_DISABLE=1", "np2/tcp/proc", false},
        {2, TL_THREADS, NULL, "np2/threads", false},
    };
    size_t n = 0;
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/nested", body_nested, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/splitcomm", body_split_group, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/secondinit", body_second_init, NULL,
                      TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/errors", body_errors, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/simulate", body_simulate, NULL, TIMEOUT_S);
    n = ce_add_matrix(cases, n, MAX_CASES, "groups/allcolls", body_all_colls, NULL, TIMEOUT_S);
    n = ce_add_proto_cases(cases, n, MAX_CASES, "groups/allcolls", body_all_colls, NULL,
                           TIMEOUT_S);
    struct tl_case st = {NULL, TL_PROCS, 1, NULL, NULL, raw_single_thread, NULL, 60, false};
    n = ce_add_case(cases, n, MAX_CASES, st, "groups/single-thread-initall/np4");
    for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++) {
        struct tl_case c = {NULL, many[i].mode, many[i].np, many[i].env, body_many, NULL, NULL,
                            TIMEOUT_S, many[i].is_slow};
        n = ce_add_case(cases, n, MAX_CASES, c, "groups/10k-ops/%s", many[i].name);
    }
    return tl_main(argc, argv, cases, n);
}
