/* Open MPI counterpart of the perf binaries, for perf/compare.sh: one collective (-C), float
 * sum, the same size sweep, counts, timing and bandwidth formulas as perf/bench.c, printed in
 * the same nccl-tests columns (out-of-place only) so one parser reads both.
 *
 * Timing as perf/bench.c: warm-up calls at the largest and the smallest size, then per size one
 * untimed call, a barrier, -n timed calls; the per-rank mean time per call is averaged over the
 * ranks (nccl-tests' -a 1). MPI_Bcast has a single buffer, so the broadcast here is in place
 * by nature (the root copies nothing locally, unlike an out-of-place ncclBroadcast).
 *
 * Usage: mpirun -np N mpi_coll_bench -C allreduce|allgather|reduce_scatter|broadcast|alltoall
 *            [-b minbytes] [-e maxbytes] [-f factor] [-n iters] [-w warmup] [-c 0/1] */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGN 4096

enum coll { C_ALLREDUCE, C_ALLGATHER, C_REDUCE_SCATTER, C_BROADCAST, C_ALLTOALL, C_COUNT };

static const char *const coll_names[C_COUNT] = {"allreduce", "allgather", "reduce_scatter",
                                                "broadcast", "alltoall"};

struct opts {
    enum coll coll;
    size_t min_bytes, max_bytes, factor;
    int iters, warmup, check;
};

struct bench {
    struct opts o;
    int rank, nranks;
    float *send, *recv;
};

/* Counts of one call for a sweep size, as the perf binaries' get_counts: count = bytes / 4;
 * param is the count argument, send/recv the element counts of the buffers. */
struct counts {
    size_t param, send, recv;
};

static void get_counts(enum coll c, size_t bytes, int nranks, struct counts *out)
{
    size_t count = bytes / sizeof(float), per_rank = count / (size_t)nranks;
    switch (c) {
    case C_ALLREDUCE:
    case C_BROADCAST:
        *out = (struct counts){count, count, count};
        break;
    case C_ALLGATHER:
        *out = (struct counts){per_rank, per_rank, per_rank * (size_t)nranks};
        break;
    case C_REDUCE_SCATTER:
        *out = (struct counts){per_rank, per_rank * (size_t)nranks, per_rank};
        break;
    default: /* alltoall: param is the count per peer */
        *out = (struct counts){per_rank, per_rank * (size_t)nranks, per_rank * (size_t)nranks};
        break;
    }
}

static double bus_factor(enum coll c, int n)
{
    if (c == C_ALLREDUCE)
        return 2.0 * (n - 1) / n;
    if (c == C_BROADCAST)
        return 1.0;
    return (double)(n - 1) / n;
}

static int call(const struct bench *b, const struct counts *k)
{
    int cnt = (int)k->param;
    switch (b->o.coll) {
    case C_ALLREDUCE:
        return MPI_Allreduce(b->send, b->recv, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    case C_ALLGATHER:
        return MPI_Allgather(b->send, cnt, MPI_FLOAT, b->recv, cnt, MPI_FLOAT, MPI_COMM_WORLD);
    case C_REDUCE_SCATTER:
        return MPI_Reduce_scatter_block(b->send, b->recv, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    case C_BROADCAST:
        return MPI_Bcast(b->recv, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD);
    default:
        return MPI_Alltoall(b->send, cnt, MPI_FLOAT, b->recv, cnt, MPI_FLOAT, MPI_COMM_WORLD);
    }
}

/* Small integers keep every float sum exact. */
static float gen(int rank, size_t i)
{
    return (float)((rank * 7 + (int)(i % 61)) % 13);
}

static void fill(const struct bench *b, const struct counts *k)
{
    for (size_t i = 0; i < k->send; i++)
        b->send[i] = gen(b->rank, i);
    if (b->o.coll == C_BROADCAST)
        for (size_t i = 0; i < k->recv; i++)
            b->recv[i] = b->rank == 0 ? gen(0, i) : -1.0f;
}

static float expect(const struct bench *b, const struct counts *k, size_t j)
{
    size_t p = k->param;
    float sum = 0;
    switch (b->o.coll) {
    case C_ALLREDUCE:
        for (int r = 0; r < b->nranks; r++)
            sum += gen(r, j);
        return sum;
    case C_ALLGATHER:
        return gen((int)(j / p), j % p);
    case C_REDUCE_SCATTER:
        for (int r = 0; r < b->nranks; r++)
            sum += gen(r, (size_t)b->rank * p + j);
        return sum;
    case C_BROADCAST:
        return gen(0, j);
    default: /* element j comes from rank j / p, its block for this rank */
        return gen((int)(j / p), (size_t)b->rank * p + j % p);
    }
}

/* One checked call; returns the number of wrong elements over all ranks. */
static double check(const struct bench *b, const struct counts *k)
{
    double wrong = 0, total = 0;
    fill(b, k);
    if (call(b, k) != MPI_SUCCESS)
        return -1;
    for (size_t j = 0; j < k->recv; j++)
        wrong += b->recv[j] != expect(b, k, j);
    MPI_Allreduce(&wrong, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return total;
}

static int bench_size(const struct bench *b, size_t bytes)
{
    struct counts k;
    get_counts(b->o.coll, bytes, b->nranks, &k);
    if (call(b, &k) != MPI_SUCCESS)
        return -1;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int it = 0; it < b->o.iters; it++)
        if (call(b, &k) != MPI_SUCCESS)
            return -1;
    double sec = (MPI_Wtime() - t0) / b->o.iters, sum = 0;
    MPI_Allreduce(&sec, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    sec = sum / b->nranks;
    double wrong = b->o.check ? check(b, &k) : -1;
    if (b->rank != 0)
        return wrong > 0; /* every rank stops at the same size */
    size_t size = (k.send > k.recv ? k.send : k.recv) * sizeof(float);
    bool times_n = b->o.coll != C_ALLREDUCE && b->o.coll != C_BROADCAST;
    double algbw = (double)k.param * sizeof(float) * (times_n ? b->nranks : 1) / 1.0e9 / sec;
    double usec = sec * 1.0e6;
    printf("%12zu  %12zu  %8s  %6s  %6d  ", size, k.param, "float",
           b->o.coll == C_ALLGATHER || b->o.coll == C_ALLTOALL ? "none" : "sum",
           b->o.coll == C_BROADCAST ? 0 : -1);
    printf(usec >= 10000.0 ? "%7.0f" : usec >= 100.0 ? "%7.1f" : "%7.2f", usec);
    printf("  %6.2f  %6.2f  ", algbw, algbw * bus_factor(b->o.coll, b->nranks));
    if (wrong < 0)
        printf("%5s\n", "N/A");
    else
        printf("%5g\n", wrong);
    fflush(stdout);
    return wrong > 0 ? 1 : 0;
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mul = 1;
    if (end == s)
        return false;
    if (*end == 'K' || *end == 'k')
        mul = 1ULL << 10;
    else if (*end == 'M' || *end == 'm')
        mul = 1ULL << 20;
    else if (*end == 'G' || *end == 'g')
        mul = 1ULL << 30;
    if (mul != 1)
        end++;
    if (*end != '\0')
        return false;
    *out = (size_t)(v * mul);
    return true;
}

static int find_coll(const char *name)
{
    for (int c = 0; c < C_COUNT; c++)
        if (strcmp(name, coll_names[c]) == 0)
            return c;
    return -1;
}

/* Returns NULL when the options are valid, else what is wrong. */
static const char *parse_opts(int argc, char **argv, struct opts *o)
{
    int c, coll = -1;
    *o =
        (struct opts){.min_bytes = 8, .max_bytes = 32 << 20, .factor = 2, .iters = 20, .warmup = 5};
    while ((c = getopt(argc, argv, "C:b:e:f:n:w:c:")) != -1) {
        bool ok = true;
        if (c == 'C')
            ok = (coll = find_coll(optarg)) >= 0;
        else if (c == 'b')
            ok = parse_size(optarg, &o->min_bytes);
        else if (c == 'e')
            ok = parse_size(optarg, &o->max_bytes);
        else if (c == 'f')
            ok = parse_size(optarg, &o->factor) && o->factor >= 2;
        else if (c == 'n')
            ok = (o->iters = atoi(optarg)) > 0;
        else if (c == 'w')
            ok = (o->warmup = atoi(optarg)) >= 0;
        else if (c == 'c')
            o->check = atoi(optarg) != 0;
        else
            ok = false;
        if (!ok)
            return "bad option or value";
    }
    if (coll < 0)
        return "-C allreduce|allgather|reduce_scatter|broadcast|alltoall is required";
    if (o->min_bytes == 0 || o->min_bytes > o->max_bytes)
        return "need 0 < -b <= -e";
    o->coll = (enum coll)coll;
    return NULL;
}

static void warmup(const struct bench *b, size_t bytes)
{
    struct counts k;
    get_counts(b->o.coll, bytes, b->nranks, &k);
    for (int i = 0; i < b->o.warmup; i++)
        call(b, &k);
}

static int run(struct bench *b)
{
    size_t bytes = (b->o.max_bytes + ALIGN - 1) / ALIGN * ALIGN;
    int rc = 0;
    if (posix_memalign((void **)&b->send, ALIGN, bytes) != 0 ||
        posix_memalign((void **)&b->recv, ALIGN, bytes) != 0) {
        fprintf(stderr, "rank %d: cannot allocate 2 buffers of %zu bytes; lower -e\n", b->rank,
                bytes);
        return 1;
    }
    memset(b->send, 0, bytes);
    memset(b->recv, 0, bytes);
    if (b->rank == 0) {
        printf("# mpi_coll_bench %s nranks %d float sum, out-of-place columns only\n",
               coll_names[b->o.coll], b->nranks);
        printf("#       size         count      type   redop    root     time   algbw   busbw "
               "#wrong\n");
    }
    warmup(b, b->o.max_bytes);
    warmup(b, b->o.min_bytes);
    for (size_t s = b->o.min_bytes; s <= b->o.max_bytes && rc == 0; s *= b->o.factor)
        rc = bench_size(b, s);
    free(b->send);
    free(b->recv);
    return rc;
}

int main(int argc, char **argv)
{
    struct bench b = {0};
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &b.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b.nranks);
    const char *why = parse_opts(argc, argv, &b.o);
    if (why != NULL) {
        if (b.rank == 0)
            fprintf(stderr, "mpi_coll_bench: %s\n", why);
        MPI_Finalize();
        return 2;
    }
    int rc = run(&b), any = 0;
    MPI_Allreduce(&rc, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
