/* The device collective engine (src/device/kernels/engine.h), host build: kernel ac_k_coll as the
 * emulated CUDA driver runs it (tests/unit/device/emu_kernels.cc: each block in a thread of its
 * own). N ranks are threads of this process; their connectors (devcoll.h) lie in plain memory.
 * Tasks come from the real planner (ac_ring_plan, ac_tree_plan, ac_oneshot_plan, channel shares
 * and chunk sizes as src/core/plan.c computes them) through ac_sched_from_task, as the host side
 * of the GPU path builds them. Every collective, protocol, type and operator, counts 0 to a size
 * that wraps the slot rings several times, in place and out of place, 2 to 8 ranks, one and two
 * channels; every call continues the connectors' counters of the previous ones (base). Inputs are
 * small integers, exact in every type, so that every fold order gives the same value; the
 * expectation folds them in rank order with ops.h's element functions (the one-shot's order).
 * Plus: ranks that disagree (AC_DEV_MISMATCH, no hang), and a peer that never posts while abort
 * is set from another thread (AC_DEV_ABORTED). */
#include "collectives/coll.h"
#include "device/kernels/devcoll.h"
#include "device/kernels/launch.h"
#include "device/kernels/ops.h"

#include "emu_kernels.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

#define MAX_RANKS 8
#define MAX_SETS 2
#define MAX_TASKS 8
/* A call that takes longer than this is a hang: abort is set and the test fails. */
#define WATCHDOG_S 60

/* ---- connectors in plain memory ---- */

struct conn_mem {
    uint64_t posted, freed;
    uint64_t *sizes;
    char *area[AC_PROTO_COUNT];
};

struct world {
    int nranks;
    uint32_t nslots, slot_bytes;
    struct ac_layout layout;
    struct conn_mem conn[MAX_SETS][MAX_RANKS][MAX_RANKS]; /* [set][from][to] */
};

static struct world *world_new(int nranks, uint32_t nslots, uint32_t slot_bytes, int ppn)
{
    struct world *w = calloc(1, sizeof(*w));
    uint64_t hash[MAX_RANKS];
    cr_assert(w);
    w->nranks = nranks;
    w->nslots = nslots;
    w->slot_bytes = slot_bytes;
    for (int r = 0; r < nranks; r++)
        hash[r] = (uint64_t)(r / ppn) + 1;
    cr_assert_eq(ac_layout_build(&w->layout, hash, nranks), ncclSuccess);
    size_t bytes[AC_PROTO_COUNT] = {slot_bytes, AC_DEV_LL_SLOT_BYTES, AC_DEV_LL128_SLOT_BYTES};
    for (int s = 0; s < MAX_SETS; s++)
        for (int a = 0; a < nranks; a++)
            for (int b = 0; b < nranks; b++) {
                struct conn_mem *c = &w->conn[s][a][b];
                if (a == b)
                    continue;
                c->sizes = calloc(nslots, sizeof(uint64_t));
                cr_assert(c->sizes);
                for (int p = 0; p < AC_PROTO_COUNT; p++) {
                    c->area[p] = aligned_alloc(128, bytes[p] * nslots);
                    cr_assert(c->area[p]);
                    memset(c->area[p], 0, bytes[p] * nslots);
                }
            }
    return w;
}

static void world_free(struct world *w)
{
    for (int s = 0; s < MAX_SETS; s++)
        for (int a = 0; a < w->nranks; a++)
            for (int b = 0; b < w->nranks; b++) {
                free(w->conn[s][a][b].sizes);
                for (int p = 0; p < AC_PROTO_COUNT; p++)
                    free(w->conn[s][a][b].area[p]);
            }
    ac_layout_free(&w->layout);
    free(w);
}

static void dev_conn(const struct world *w, int set, int from, int to, struct ac_dev_conn *out)
{
    struct conn_mem *c = (struct conn_mem *)&w->conn[set][from][to];
    cr_assert(from != to && c->sizes, "connector %d -> %d of set %d", from, to, set);
    /* every earlier call completed: what was posted was consumed */
    cr_assert_eq(c->posted, c->freed, "connector %d -> %d left with unread slots", from, to);
    for (int p = 0; p < AC_PROTO_COUNT; p++)
        out->slots[p] = (uint64_t)(uintptr_t)c->area[p];
    out->posted = (uint64_t)(uintptr_t)&c->posted;
    out->freed = (uint64_t)(uintptr_t)&c->freed;
    out->sizes = (uint64_t)(uintptr_t)c->sizes;
    out->base = c->posted;
    out->nslots = w->nslots;
    out->slot_bytes = w->slot_bytes;
}

/* ---- types and values ---- */

static const ncclDataType_t all_types[] = {ncclInt8,    ncclInt32,   ncclUint64, ncclFloat16,
                                           ncclBfloat16, ncclFloat32, ncclFloat64,
                                           ncclFloat8e4m3};
#define NTYPES (int)(sizeof(all_types) / sizeof(all_types[0]))

enum test_op { OP_SUM, OP_PROD, OP_MAX, OP_MIN, OP_AVG, OP_PREMUL, OP_COUNT };
static const char *const op_names[] = {"sum", "prod", "max", "min", "avg", "premulsum"};

static size_t tsize(ncclDataType_t t)
{
    return ac_type_size(t);
}

/* Bits of the type's value v (a small integer, exact in the type). */
static uint64_t enc(ncclDataType_t t, int64_t v)
{
    switch (t) {
    case ncclInt8: return (uint8_t)(int8_t)v;
    case ncclUint8: return (uint8_t)v;
    case ncclInt32: return (uint32_t)(int32_t)v;
    case ncclUint32: return (uint32_t)v;
    case ncclInt64: case ncclUint64: return (uint64_t)v;
    case ncclFloat16: return ac_dt_float_to_half((float)v);
    case ncclBfloat16: return ac_dt_float_to_bf16((float)v);
    case ncclFloat8e4m3: return ac_dt_float_to_fp8e4m3((float)v);
    case ncclFloat8e5m2: return ac_dt_float_to_fp8e5m2((float)v);
    case ncclFloat32: { float f = (float)v; uint32_t u; memcpy(&u, &f, 4); return u; }
    case ncclFloat64: { double d = (double)v; uint64_t u; memcpy(&u, &d, 8); return u; }
    default: return 0;
    }
}

static uint64_t get(ncclDataType_t t, const void *buf, size_t i)
{
    uint64_t v = 0;
    memcpy(&v, (const char *)buf + i * tsize(t), tsize(t));
    return v;
}

static void put(ncclDataType_t t, void *buf, size_t i, uint64_t v)
{
    memcpy((char *)buf + i * tsize(t), &v, tsize(t));
}

/* a OP b with the element functions of ops.h, on the bits of two values of type t. */
#define OPS_CASE(nt, sfx, T)                                                                      \
    case nt: {                                                                                     \
        T x, y, r;                                                                                 \
        memcpy(&x, &a, sizeof x);                                                                  \
        memcpy(&y, &b, sizeof y);                                                                  \
        r = kind == AC_OP_PROD  ? ac_op_prod_##sfx(x, y)                                           \
            : kind == AC_OP_MAX ? ac_op_max_##sfx(x, y)                                            \
            : kind == AC_OP_MIN ? ac_op_min_##sfx(x, y)                                            \
            : kind == 99        ? ac_op_div_##sfx(x, (uint32_t)b)                                  \
                                : ac_op_sum_##sfx(x, y);                                           \
        memcpy(&out, &r, sizeof r);                                                                \
        return out;                                                                                \
    }

static uint64_t apply(ncclDataType_t t, int kind, uint64_t a, uint64_t b)
{
    uint64_t out = 0;
    switch (t) {
        OPS_CASE(ncclInt8, i8, int8_t)
        OPS_CASE(ncclUint8, u8, uint8_t)
        OPS_CASE(ncclInt32, i32, int32_t)
        OPS_CASE(ncclUint32, u32, uint32_t)
        OPS_CASE(ncclInt64, i64, int64_t)
        OPS_CASE(ncclUint64, u64, uint64_t)
        OPS_CASE(ncclFloat16, f16, uint16_t)
        OPS_CASE(ncclBfloat16, bf16, uint16_t)
        OPS_CASE(ncclFloat32, f32, float)
        OPS_CASE(ncclFloat64, f64, double)
        OPS_CASE(ncclFloat8e4m3, e4m3, uint8_t)
        OPS_CASE(ncclFloat8e5m2, e5m2, uint8_t)
    default:
        return 0;
    }
}

/* Largest input value: sums of 8 ranks, doubled by premul, stay exact in the type. */
static int64_t vmax(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8: return 7;
    case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclBfloat16: return 15;
    case ncclFloat16: return 63;
    default: return 999;
    }
}

/* Input element i of rank r (i counts over the whole send buffer). */
static int64_t input(ncclDataType_t t, enum test_op op, int r, size_t i, int salt)
{
    uint64_t x = (uint64_t)r * 7 + i * 13 + (uint64_t)salt * 5 + 3;
    if (op == OP_PROD)
        return (r + i + (size_t)salt) % 5 == 0 ? 2 : 1; /* at most two 2s among 8 ranks */
    return (int64_t)(x % (uint64_t)(vmax(t) + 1));
}

static struct ac_redop redop_of(ncclDataType_t t, enum test_op op, int nranks)
{
    struct ac_redop r = {.type = t, .kind = AC_OP_SUM};
    if (op == OP_PROD)
        r.kind = AC_OP_PROD;
    else if (op == OP_MAX)
        r.kind = AC_OP_MAX;
    else if (op == OP_MIN)
        r.kind = AC_OP_MIN;
    else if (op == OP_AVG)
        r.postdiv = (uint32_t)nranks;
    else if (op == OP_PREMUL) {
        r.has_premul = true;
        r.scalar = enc(t, 2);
    }
    return r;
}

/* The reduction of element i over every rank, folded in rank order. */
static uint64_t reduced(ncclDataType_t t, enum test_op op, int nranks, size_t i, int salt)
{
    struct ac_redop r = redop_of(t, op, nranks);
    uint64_t acc = 0;
    for (int k = 0; k < nranks; k++) {
        uint64_t x = enc(t, input(t, op, k, i, salt));
        if (r.has_premul)
            x = apply(t, AC_OP_PROD, x, r.scalar);
        acc = k == 0 ? x : apply(t, (int)r.kind, acc, x);
    }
    if (r.postdiv > 1)
        acc = apply(t, 99, acc, r.postdiv);
    return acc;
}

/* ---- one call ---- */

enum kind { K_RING, K_TREE, K_ONESHOT };

struct call {
    enum ac_coll coll;
    enum kind kind;
    ncclDataType_t type;
    enum test_op op;
    enum ac_proto proto;
    size_t count;
    int root;
    int nch;
    bool in_place;
    int salt;
    /* mismatch tests: a rank that calls with another count */
    int odd_rank;
    size_t odd_count;
};

struct rank_run {
    struct world *w;
    int rank, ntasks;
    struct ac_dev_task tasks[MAX_TASKS];
    volatile uint32_t abort;
    uint32_t status;
    pthread_t thread;
    volatile int is_done;
};

static uint32_t tag_of(const struct call *c, size_t count)
{
    uint64_t h = (uint64_t)c->coll * 1000003u ^ count * 7919u ^ (uint64_t)c->type << 40 ^
                 (uint64_t)c->op << 44 ^ (uint64_t)(c->root + 1) << 48 ^
                 (uint64_t)c->proto << 52 ^ (uint64_t)c->kind << 56;
    h *= 0x9e3779b97f4a7c15ull;
    return 0x80000000u | (uint32_t)(h >> 33);
}

static void add_task(struct rank_run *rr, const struct call *c, const struct ac_task *t, int set,
                     size_t count)
{
    cr_assert_lt(rr->ntasks, MAX_TASKS);
    struct ac_dev_task *d = &rr->tasks[rr->ntasks++];
    memset(d, 0, sizeof(*d));
    ac_sched_from_task(t, &d->sched);
    for (int k = 0; k < t->nrecv; k++)
        dev_conn(rr->w, set, t->recv_peers[k], rr->rank, &d->recv[k]);
    for (int k = 0; k < t->nsend; k++)
        dev_conn(rr->w, set, rr->rank, t->send_peers[k], &d->send[k]);
    d->proto = (uint32_t)c->proto;
    d->tag = tag_of(c, count);
}

/* What src/core/plan.c does for a collective, on rank `rank`. */
static void plan_rank(struct rank_run *rr, const struct call *c, const void *sendbuff,
                      void *recvbuff)
{
    struct world *w = rr->w;
    int rank = rr->rank;
    size_t tb = tsize(c->type);
    size_t count = rank == c->odd_rank ? c->odd_count : c->count;
    struct ac_task base;
    memset(&base, 0, sizeof(base));
    base.coll = c->coll;
    base.sendbuff = sendbuff;
    base.recvbuff = recvbuff;
    base.count = count;
    base.type_bytes = tb;
    base.op = redop_of(c->type, c->op, w->nranks);
    base.is_reduction = c->coll == AC_COLL_ALLREDUCE || c->coll == AC_COLL_REDUCESCATTER ||
                        c->coll == AC_COLL_REDUCE;
    base.nranks = w->nranks;
    base.op_coll = c->coll;
    base.root = c->root;
    base.proto = c->proto;
    rr->ntasks = 0;
    if (c->kind == K_ONESHOT) {
        struct ac_task t = base;
        t.region_count = count;
        t.chunk_elems = count;
        ac_oneshot_plan(&t, rank);
        add_task(rr, c, &t, 0, count);
        return;
    }
    for (int ch = 0; ch < c->nch; ch++) {
        struct ac_task t = base;
        ac_channel_share(count, ch, c->nch, tb >= 64 ? 1 : 64 / tb, &t.region_off,
                         &t.region_count);
        if (t.region_count == 0)
            continue;
        t.chunk_elems = ac_proto_chunk_elems(c->proto, w->slot_bytes, tb);
        t.conn_index = ch;
        if (c->kind == K_RING) {
            ac_ring_plan(&t, &w->layout, rank, c->root);
            if (t.nsteps > 0)
                add_task(rr, c, &t, ch, count);
            continue;
        }
        int root = c->coll == AC_COLL_ALLREDUCE ? -1 : c->root;
        struct ac_task down = t;
        if (c->coll != AC_COLL_BROADCAST &&
            ac_tree_plan(&t, &w->layout, rank, root, ch, AC_TREE_UP))
            add_task(rr, c, &t, ch, count);
        if (c->coll != AC_COLL_REDUCE &&
            ac_tree_plan(&down, &w->layout, rank, root, ch, AC_TREE_DOWN))
            add_task(rr, c, &down, ch, count);
    }
}

static void *rank_thread(void *arg)
{
    struct rank_run *rr = arg;
    const struct emu_kernel *k = emu_kernel_find(AC_KERNEL_COLL_NAME);
    struct ac_kcoll_args a = {
        .tasks = (uint64_t)(uintptr_t)rr->tasks,
        .abort = (uint64_t)(uintptr_t)&rr->abort,
        .status = (uint64_t)(uintptr_t)&rr->status,
        .ntasks = (uint32_t)rr->ntasks,
    };
    void *params[1] = {&a};
    /* a GPU launch would ask for AC_KERNEL_THREADS; the emulator runs one per block */
    if (rr->ntasks > 0)
        emu_kernel_run(k, (unsigned)rr->ntasks, AC_KERNEL_THREADS, params);
    __atomic_store_n(&rr->is_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Runs every rank's launch (ranks listed in `who`, or all) to the end; a hang past the watchdog
 * sets every abort flag. Returns true when it had to. */
static bool run_ranks(struct rank_run *rr, int n, double watchdog_s)
{
    for (int r = 0; r < n; r++)
        cr_assert_eq(pthread_create(&rr[r].thread, NULL, rank_thread, &rr[r]), 0);
    bool is_hung = false;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int ndone = 0;
        for (int r = 0; r < n; r++)
            ndone += __atomic_load_n(&rr[r].is_done, __ATOMIC_ACQUIRE);
        if (ndone == n)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!is_hung && (double)(now.tv_sec - t0.tv_sec) +
                                (double)(now.tv_nsec - t0.tv_nsec) * 1e-9 > watchdog_s) {
            is_hung = true;
            for (int r = 0; r < n; r++)
                rr[r].abort = 1;
        }
        usleep(200);
    }
    for (int r = 0; r < n; r++)
        pthread_join(rr[r].thread, NULL);
    return is_hung;
}

static const char *coll_kind_name(const struct call *c)
{
    return c->kind == K_ONESHOT ? "oneshot" : c->kind == K_TREE ? "tree" : "ring";
}

static void describe(const struct call *c, int nranks, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s %s %s %s count %zu root %d nch %d %s, %d ranks",
             ac_coll_name(c->coll), coll_kind_name(c), ac_proto_name(c->proto),
             ac_type_name(c->type), op_names[c->op], c->count, c->root, c->nch,
             c->in_place ? "in place" : "out of place", nranks);
}

/* Runs one call on every rank and checks every rank's output exactly. */
static void run_call(struct world *w, const struct call *c)
{
    int n = w->nranks;
    ncclDataType_t t = c->type;
    size_t tb = tsize(t), cnt = c->count;
    bool is_gather = c->coll == AC_COLL_ALLGATHER, is_scatter = c->coll == AC_COLL_REDUCESCATTER;
    size_t in_elems = is_scatter ? cnt * (size_t)n : cnt;
    size_t out_elems = is_gather ? cnt * (size_t)n : cnt;
    size_t big = (in_elems > out_elems ? in_elems : out_elems) + 1;
    char what[200];
    describe(c, n, what, sizeof(what));
    struct rank_run *rr = calloc((size_t)n, sizeof(*rr));
    char *mem[MAX_RANKS][2], *recvs[MAX_RANKS];
    cr_assert(rr);
    bool is_red = c->coll != AC_COLL_ALLGATHER && c->coll != AC_COLL_BROADCAST;
    for (int r = 0; r < n; r++) {
        mem[r][0] = malloc(big * tb);
        mem[r][1] = malloc(big * tb);
        cr_assert(mem[r][0] && mem[r][1]);
        memset(mem[r][1], 0xa5, big * tb); /* output sentinel */
        char *send = mem[r][0], *recv = mem[r][1];
        if (c->in_place && is_gather)
            send = recv + (size_t)r * cnt * tb;
        else if (c->in_place && is_scatter)
            send = recv, recv = send + (size_t)r * cnt * tb;
        else if (c->in_place)
            send = recv;
        for (size_t i = 0; i < in_elems; i++) {
            size_t gi = is_gather ? (size_t)r * cnt + i : i;
            put(t, send, i, enc(t, input(t, is_red ? c->op : OP_SUM, r, gi, c->salt)));
        }
        recvs[r] = recv;
        rr[r].w = w;
        rr[r].rank = r;
        plan_rank(&rr[r], c, send, recv);
    }
    bool is_hung = run_ranks(rr, n, WATCHDOG_S);
    for (int r = 0; r < n; r++) {
        cr_assert(!is_hung, "%s: hung (rank %d status %u)", what, r, rr[r].status);
        cr_assert_eq(rr[r].status, AC_DEV_OK, "%s: rank %d status %u", what, r, rr[r].status);
        const char *recv = recvs[r];
        for (size_t i = 0; i < out_elems; i++) {
            uint64_t want;
            switch (c->coll) {
            case AC_COLL_ALLGATHER:
                want = enc(t, input(t, OP_SUM, (int)(i / (cnt ? cnt : 1)), i, c->salt));
                break;
            case AC_COLL_BROADCAST:
                want = enc(t, input(t, OP_SUM, c->root, i, c->salt));
                break;
            case AC_COLL_REDUCESCATTER:
                want = reduced(t, c->op, n, (size_t)r * cnt + i, c->salt);
                break;
            case AC_COLL_REDUCE:
                if (r != c->root) {
                    /* not the root: the output is untouched (in place: the input) */
                    want = c->in_place ? enc(t, input(t, c->op, r, i, c->salt))
                                       : 0xa5a5a5a5a5a5a5a5ull >> (64 - 8 * tb);
                    break;
                }
                want = reduced(t, c->op, n, i, c->salt);
                break;
            default:
                want = reduced(t, c->op, n, i, c->salt);
                break;
            }
            uint64_t got = get(t, recv, i);
            if (got != want)
                cr_assert_fail("%s: rank %d element %zu is %#llx, expected %#llx", what, r, i,
                         (unsigned long long)got, (unsigned long long)want);
        }
        /* nothing written past the output */
        if (!(c->in_place && (is_scatter || is_gather)))
            cr_assert_eq((unsigned char)recv[out_elems * tb], 0xa5, "%s: rank %d wrote past "
                         "its output", what, r);
    }
    for (int r = 0; r < n; r++) {
        free(mem[r][0]);
        free(mem[r][1]);
    }
    free(rr);
}

static void run_both(struct world *w, struct call c)
{
    c.in_place = false;
    run_call(w, &c);
    c.in_place = true;
    c.salt++;
    run_call(w, &c);
}

/* ---- tests ---- */

static const size_t counts[] = {0, 1, 7, 1027, 5000};
#define NCOUNTS (int)(sizeof(counts) / sizeof(counts[0]))
static const int rank_counts[] = {2, 3, 4, 8};

/* Every collective and algorithm on one protocol, 2-8 ranks, every count, both placements:
 * small slots (1 KiB, 2 per connector) so that the larger counts wrap the slot rings many times;
 * one rank per node, then two (trees with several children, rings not in rank order). */
static void collectives(enum ac_proto proto, ncclDataType_t type, enum test_op op)
{
    for (int ri = 0; ri < 4; ri++) {
        int n = rank_counts[ri];
        for (int ppn = 1; ppn <= 2; ppn++) {
            struct world *w = world_new(n, 2, 1024, ppn);
            for (int ci = 0; ci < NCOUNTS; ci++) {
                struct call c = {.type = type, .op = op, .proto = proto, .count = counts[ci],
                                 .root = -1, .nch = 1, .odd_rank = -1,
                                 .salt = ci + ri};
                c.coll = AC_COLL_ALLREDUCE;
                c.kind = K_RING;
                run_both(w, c);
                c.nch = 2;
                run_both(w, c);
                c.kind = K_TREE;
                run_both(w, c);
                c.nch = 1;
                if (counts[ci] * tsize(type) <= AC_ONESHOT_MAX_BYTES &&
                    counts[ci] <= ac_proto_chunk_elems(proto, 1024, tsize(type)) &&
                    counts[ci] > 0) {
                    c.kind = K_ONESHOT;
                    run_both(w, c);
                }
                c.kind = K_RING;
                c.coll = AC_COLL_ALLGATHER;
                run_both(w, c);
                c.coll = AC_COLL_REDUCESCATTER;
                c.nch = 2;
                run_both(w, c);
                c.nch = 1;
                for (int root = 0; root < n; root += n > 2 ? n / 2 : 1) {
                    c.root = root;
                    c.coll = AC_COLL_BROADCAST;
                    c.kind = K_RING;
                    run_both(w, c);
                    c.kind = K_TREE;
                    c.nch = 2;
                    run_both(w, c);
                    c.coll = AC_COLL_REDUCE;
                    run_both(w, c);
                    c.kind = K_RING;
                    c.nch = 1;
                    run_both(w, c);
                }
                c.root = n - 1;
                c.coll = AC_COLL_REDUCE;
                run_both(w, c);
            }
            world_free(w);
        }
    }
}

Test(dev_engine, collectives_simple, .timeout = 240)
{
    collectives(AC_PROTO_SIMPLE, ncclFloat32, OP_SUM);
}

Test(dev_engine, collectives_ll, .timeout = 240)
{
    collectives(AC_PROTO_LL, ncclInt32, OP_SUM);
}

Test(dev_engine, collectives_ll128, .timeout = 240)
{
    collectives(AC_PROTO_LL128, ncclFloat16, OP_MAX);
}

/* Every type and operator, each protocol, ring, tree and one-shot allreduce, reduce-scatter and
 * reduce on 3 ranks (several children in the trees: 4 ranks, two per node). */
static void types_ops(enum ac_proto proto)
{
    struct world *w3 = world_new(3, 2, 1024, 1);
    struct world *w4 = world_new(4, 3, 4096, 2);
    for (int ti = 0; ti < NTYPES; ti++)
        for (int op = 0; op < OP_COUNT; op++) {
            struct call c = {.type = all_types[ti], .op = (enum test_op)op, .proto = proto,
                             .root = -1, .nch = 1, .odd_rank = -1, .salt = ti + op};
            static const size_t cs[] = {7, 1027};
            for (int ci = 0; ci < 2; ci++) {
                c.count = cs[ci];
                c.coll = AC_COLL_ALLREDUCE;
                c.kind = K_RING;
                run_both(w3, c);
                c.kind = K_TREE;
                run_both(w4, c);
                c.kind = K_ONESHOT;
                if (c.count <= ac_proto_chunk_elems(proto, 1024, tsize(c.type)))
                    run_both(w3, c);
                c.kind = K_RING;
                c.coll = AC_COLL_REDUCESCATTER;
                run_both(w3, c);
                c.coll = AC_COLL_REDUCE;
                c.root = 1;
                run_both(w3, c);
                c.kind = K_TREE;
                c.nch = 2;
                run_both(w4, c);
                c.root = -1;
                c.nch = 1;
            }
        }
    world_free(w3);
    world_free(w4);
}

Test(dev_engine, types_ops_simple, .timeout = 240)
{
    types_ops(AC_PROTO_SIMPLE);
}

Test(dev_engine, types_ops_ll, .timeout = 240)
{
    types_ops(AC_PROTO_LL);
}

Test(dev_engine, types_ops_ll128, .timeout = 240)
{
    types_ops(AC_PROTO_LL128);
}

/* Full-size slots: LL steps of 4 KiB and LL128 steps of 16 KiB, Simple of 64 KiB, with counts
 * that fill several of them. */
Test(dev_engine, full_slots, .timeout = 240)
{
    struct world *w = world_new(4, 4, 64 * 1024, 1);
    for (int p = 0; p < AC_PROTO_COUNT; p++) {
        struct call c = {.type = ncclFloat32, .op = OP_SUM, .proto = (enum ac_proto)p,
                         .count = 70000, .root = -1, .nch = 2, .odd_rank = -1};
        c.coll = AC_COLL_ALLREDUCE;
        c.kind = K_RING;
        run_both(w, c);
        c.kind = K_TREE;
        run_both(w, c);
        c.kind = K_RING;
        c.coll = AC_COLL_ALLGATHER;
        c.type = ncclInt8;
        c.count = 50001;
        run_both(w, c);
    }
    world_free(w);
}

/* Two ranks that disagree on the count: both find out from the first slot (size and tag), no
 * rank hangs. Then the same with the ranks in different protocols (LL against Simple). */
Test(dev_engine, mismatch, .timeout = 120)
{
    for (int p = 0; p < AC_PROTO_COUNT; p++) {
        struct world *w = world_new(2, 2, 1024, 1);
        struct call c = {.coll = AC_COLL_ALLREDUCE, .kind = K_RING, .type = ncclInt32,
                         .op = OP_SUM, .proto = (enum ac_proto)p, .count = 100, .root = -1,
                         .nch = 1, .odd_rank = 1, .odd_count = 101};
        struct rank_run rr[2];
        int32_t bufs[2][2][202];
        memset(rr, 0, sizeof(rr));
        for (int r = 0; r < 2; r++) {
            memset(bufs[r], 0, sizeof(bufs[r]));
            rr[r].w = w;
            rr[r].rank = r;
            plan_rank(&rr[r], &c, bufs[r][0], bufs[r][1]);
        }
        cr_assert(!run_ranks(rr, 2, WATCHDOG_S), "mismatch (%s) hung", ac_proto_name(c.proto));
        for (int r = 0; r < 2; r++)
            cr_assert_eq(rr[r].status, AC_DEV_MISMATCH, "%s: rank %d status %u",
                         ac_proto_name(c.proto), r, rr[r].status);
        world_free(w);
    }
    /* same count, different protocols: Simple posts where an LL receiver waits */
    for (int p = 1; p < AC_PROTO_COUNT; p++) {
        struct world *w = world_new(2, 2, 1024, 1);
        struct rank_run rr[2];
        int32_t bufs[2][2][100];
        memset(rr, 0, sizeof(rr));
        for (int r = 0; r < 2; r++) {
            struct call c = {.coll = AC_COLL_ALLREDUCE, .kind = K_RING, .type = ncclInt32,
                             .op = OP_SUM, .proto = r == 0 ? AC_PROTO_SIMPLE : (enum ac_proto)p,
                             .count = 100, .root = -1, .nch = 1, .odd_rank = -1};
            memset(bufs[r], 0, sizeof(bufs[r]));
            rr[r].w = w;
            rr[r].rank = r;
            plan_rank(&rr[r], &c, bufs[r][0], bufs[r][1]);
        }
        cr_assert(!run_ranks(rr, 2, WATCHDOG_S), "protocol mismatch hung");
        cr_assert_eq(rr[1].status, AC_DEV_MISMATCH, "rank 1 (%s) status %u",
                     ac_proto_name((enum ac_proto)p), rr[1].status);
        cr_assert_eq(rr[0].status, AC_DEV_MISMATCH, "rank 0 (Simple) status %u", rr[0].status);
        world_free(w);
    }
}

struct aborter {
    struct rank_run *rr;
    unsigned delay_us;
};

static void *abort_later(void *arg)
{
    struct aborter *a = arg;
    usleep(a->delay_us);
    a->rr->abort = 1;
    return NULL;
}

/* A peer that never launches: rank 0 waits for its slot until another thread sets abort; every
 * block of the launch (two channels) stops. */
Test(dev_engine, abort_while_waiting, .timeout = 120)
{
    for (int p = 0; p < AC_PROTO_COUNT; p++) {
        struct world *w = world_new(2, 2, 1024, 1);
        struct call c = {.coll = AC_COLL_ALLREDUCE, .kind = K_RING, .type = ncclFloat32,
                         .op = OP_SUM, .proto = (enum ac_proto)p, .count = 5000, .root = -1,
                         .nch = 2, .odd_rank = -1};
        static float in[5000], out[5000];
        struct rank_run rr;
        memset(&rr, 0, sizeof(rr));
        rr.w = w;
        rr.rank = 0;
        plan_rank(&rr, &c, in, out);
        cr_assert_eq(rr.ntasks, 2);
        struct aborter a = {&rr, 50 * 1000};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, abort_later, &a), 0);
        cr_assert(!run_ranks(&rr, 1, WATCHDOG_S));
        pthread_join(th, NULL);
        cr_assert_eq(rr.status, AC_DEV_ABORTED, "%s: status %u", ac_proto_name(c.proto),
                     rr.status);
        world_free(w);
    }
}

/* Inputs that are not exact: the result depends on the fold order, which must be the host
 * executor's. One-shot: ranks in rank order. Ring allreduce of one loop on a ring in rank order:
 * the chunk of element i is finished by position c = i / chunk, folded from position c + 1 on
 * (its step-0 sender), each next position computing received OP pre(own). */
static uint64_t noisy(ncclDataType_t t, int r, size_t i)
{
    float f = (float)((r * 2654435761u + i * 40503u) % 1000) / 997.0f + 0.1f * (float)r;
    switch (t) {
    case ncclFloat16: return ac_dt_float_to_half(f);
    case ncclBfloat16: return ac_dt_float_to_bf16(f);
    default: { uint32_t u; memcpy(&u, &f, 4); return u; }
    }
}

Test(dev_engine, fold_order, .timeout = 120)
{
    static const ncclDataType_t types[] = {ncclFloat16, ncclBfloat16, ncclFloat32};
    static const enum test_op ops[] = {OP_SUM, OP_PROD, OP_PREMUL, OP_AVG};
    for (int n = 2; n <= 5; n += 3)
        for (int p = 0; p < AC_PROTO_COUNT; p++)
            for (int ti = 0; ti < 3; ti++)
                for (int oi = 0; oi < 4; oi++)
                    for (int kind = K_RING; kind <= K_ONESHOT; kind += K_ONESHOT - K_RING) {
                        ncclDataType_t t = types[ti];
                        size_t tb = tsize(t), cnt = 301;
                        struct world *w = world_new(n, 2, 4096, 1);
                        struct call c = {.coll = AC_COLL_ALLREDUCE, .kind = (enum kind)kind,
                                         .type = t, .op = ops[oi], .proto = (enum ac_proto)p,
                                         .count = cnt, .root = -1, .nch = 1, .odd_rank = -1};
                        struct ac_redop op = redop_of(t, c.op, n);
                        size_t chunk = ac_proto_chunk_elems(c.proto, 4096, tb);
                        cr_assert_leq(cnt, chunk); /* one loop, and one-shot fits */
                        struct rank_run rr[MAX_RANKS];
                        char in[MAX_RANKS][301 * 4], out[MAX_RANKS][301 * 4];
                        memset(rr, 0, sizeof(rr));
                        for (int r = 0; r < n; r++) {
                            for (size_t i = 0; i < cnt; i++)
                                put(t, in[r], i, noisy(t, r, i));
                            rr[r].w = w;
                            rr[r].rank = r;
                            plan_rank(&rr[r], &c, in[r], out[r]);
                        }
                        cr_assert(!run_ranks(rr, n, WATCHDOG_S));
                        size_t cs = (cnt + (size_t)n - 1) / (size_t)n;
                        for (size_t i = 0; i < cnt; i++) {
                            int first = kind == K_ONESHOT ? 0 : (int)(i / cs + 1) % n;
                            uint64_t acc = 0;
                            for (int j = 0; j < n; j++) {
                                uint64_t x = noisy(t, (first + j) % n, i);
                                if (op.has_premul)
                                    x = apply(t, AC_OP_PROD, x, op.scalar);
                                acc = j == 0 ? x : apply(t, (int)op.kind, acc, x);
                            }
                            if (op.postdiv > 1)
                                acc = apply(t, 99, acc, op.postdiv);
                            for (int r = 0; r < n; r++) {
                                cr_assert_eq(rr[r].status, AC_DEV_OK);
                                uint64_t got = get(t, out[r], i);
                                if (got != acc)
                                    cr_assert_fail("%s %s %s %s, %d ranks: rank %d element %zu "
                                                   "is %#llx, expected %#llx",
                                                   kind == K_ONESHOT ? "one-shot" : "ring",
                                                   ac_proto_name(c.proto), ac_type_name(t),
                                                   op_names[c.op], n, r, i,
                                                   (unsigned long long)got,
                                                   (unsigned long long)acc);
                            }
                        }
                        world_free(w);
                    }
}
