/* The driver shared by the nccl-tests style benchmarks: options, launch (ranks as threads with
 * -t, processes under mpirun, or both), the header, the result table and the final summary, in
 * nccl-tests' format so that scripts reading its output read ours.
 *
 * Launching under MPI: the binaries link MPI when mk/perf.mk finds mpicc at build time
 * (-DAC_PERF_MPI); rank = process * nthreads + thread. Open MPI refuses to run as root unless
 * given --allow-run-as-root (or OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1), and
 * more ranks than cores (4 ranks on 2 cores) needs --oversubscribe, e.g.
 *     mpirun --allow-run-as-root --oversubscribe -np 4 build/bin/all_reduce_perf -b 8 -e 1M -f 2
 * A binary built without MPI that sees a launcher's environment says so and exits 1.
 *
 * Collectives run on host buffers with a NULL stream: each call has completed when it returns,
 * so the time of a call is the wall time between calls (no stream synchronization). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef AC_PERF_MPI
#include <mpi.h>
#endif

#include "perf.h"
#include "perf_internal.h"

struct perf_world perf_world;

static const char *const op_names[PERF_OP_COUNT + 1] = {
    "sum", "prod", "max", "min", "avg", "mulsum", "none",
};

const char *perf_op_name(enum perf_op op)
{
    return op_names[op];
}

double perf_factor_one(int nranks)
{
    return 1.0;
}

double perf_factor_gather(int nranks)
{
    return (double)(nranks - 1) / nranks;
}

double perf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void perf_fatal(void)
{
    fflush(stdout);
    fflush(stderr);
#ifdef AC_PERF_MPI
    if (perf_world.nprocs > 1)
        MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    exit(1);
}

void perf_nccl_failed(const char *what, const char *file, int line, ncclResult_t res,
                      ncclComm_t comm, int rank)
{
    const char *detail = ncclGetLastError(comm);
    fflush(stdout);
    fprintf(stderr, "%s: Test NCCL failure %s:%d rank %d: %s returned '%s'%s%s\n",
            perf_world.hostname, file, line, rank, what, ncclGetErrorString(res),
            detail != NULL && detail[0] != '\0' ? ": " : "", detail != NULL ? detail : "");
    perf_fatal();
}

/* Combines one value from every rank (threads of this process, then processes); every caller
 * gets the result. Also the barrier of the benchmark. The last thread to arrive does the MPI
 * part while holding the lock, so MPI is only ever called by one thread at a time. */
double perf_allreduce(int thread, double v, enum perf_red mode)
{
    struct perf_world *w = &perf_world;
    pthread_mutex_lock(&w->lock);
    if (w->arrived == 0)
        w->acc = (mode != PERF_RED_RANK0 || thread == 0) ? v : 0.0;
    else if (mode == PERF_RED_RANK0)
        w->acc = thread == 0 ? v : w->acc;
    else if (mode == PERF_RED_MIN)
        w->acc = v < w->acc ? v : w->acc;
    else if (mode == PERF_RED_MAX)
        w->acc = v > w->acc ? v : w->acc;
    else
        w->acc += v;
    if (++w->arrived == w->nthreads) {
#ifdef AC_PERF_MPI
        if (w->nprocs > 1 && mode == PERF_RED_RANK0) {
            MPI_Bcast(&w->acc, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        } else if (w->nprocs > 1) {
            MPI_Op op = mode == PERF_RED_MIN ? MPI_MIN : mode == PERF_RED_MAX ? MPI_MAX : MPI_SUM;
            MPI_Allreduce(MPI_IN_PLACE, &w->acc, 1, MPI_DOUBLE, op, MPI_COMM_WORLD);
        }
#endif
        w->result = mode == PERF_RED_AVG ? w->acc / w->nranks : w->acc;
        w->arrived = 0;
        w->generation++;
        pthread_cond_broadcast(&w->cond);
    } else {
        unsigned long gen = w->generation;
        while (gen == w->generation)
            pthread_cond_wait(&w->cond, &w->lock);
    }
    double result = w->result;
    pthread_mutex_unlock(&w->lock);
    return result;
}

void perf_barrier(int thread)
{
    perf_allreduce(thread, 0.0, PERF_RED_SUM);
}

/* ---- options ---- */

static void set_defaults(struct perf_opts *o)
{
    *o = (struct perf_opts){
        .nthreads = 1,
        .ngpus = 1,
        .min_bytes = 32 << 20,
        .max_bytes = 32 << 20,
        .step_bytes = 1 << 20,
        .step_factor = 1,
        .iters = 20,
        .warmup = 5,
        .agg_iters = 1,
        .run_cycles = 1,
        .check = 1,
        .average = 1,
        .op = PERF_OP_SUM,
        .type = ncclFloat32,
    };
}

/* nccl-tests' size syntax: a number with an optional K, M or G suffix (powers of 1024). */
static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double unit = 1;
    if (end == s || errno != 0 || v < 0)
        return false;
    if (*end == 'K' || *end == 'k')
        unit = 1024.0;
    else if (*end == 'M' || *end == 'm')
        unit = 1024.0 * 1024;
    else if (*end == 'G' || *end == 'g')
        unit = 1024.0 * 1024 * 1024;
    if (unit != 1)
        end++;
    if (*end != '\0')
        return false;
    *out = (size_t)(v * unit);
    return true;
}

static bool parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (end == s || *end != '\0' || errno != 0 || v < -1000000000L || v > 1000000000L)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_op(const char *s, int *out)
{
    if (strcmp(s, "all") == 0) {
        *out = -1;
        return true;
    }
    if (strcmp(s, "premulsum") == 0) {
        *out = PERF_OP_MULSUM;
        return true;
    }
    for (int i = 0; i < PERF_OP_COUNT; i++) {
        if (strcmp(s, op_names[i]) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static bool parse_type(const char *s, int *out)
{
    if (strcmp(s, "all") == 0) {
        *out = -1;
        return true;
    }
    for (int t = 0; t < ncclNumTypes; t++) {
        if (strcmp(s, perf_type_name((ncclDataType_t)t)) == 0) {
            *out = t;
            return true;
        }
    }
    return false;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "USAGE: %s\n"
            "\t[-t,--nthreads <num threads (ranks in this process)>]\n"
            "\t[-g,--ngpus <gpus per thread: 1>]\n"
            "\t[-b,--minbytes <min size in bytes, K/M/G suffixes>]\n"
            "\t[-e,--maxbytes <max size in bytes, K/M/G suffixes>]\n"
            "\t[-i,--stepbytes <increment size>]\n"
            "\t[-f,--stepfactor <increment factor>]\n"
            "\t[-n,--iters <iteration count>]\n"
            "\t[-m,--agg_iters <aggregated iteration count>]\n"
            "\t[-w,--warmup_iters <warmup iteration count>]\n"
            "\t[-N,--run_cycles <cycle count> run & print each cycle (default: 1; 0=infinite)]\n"
            "\t[-p,--parallel_init <0/1>]\n"
            "\t[-c,--check <check iteration count>]\n"
            "\t[-o,--op <sum/prod/min/max/avg/mulsum(premulsum)/all>]\n"
            "\t[-d,--datatype <int8/uint8/int32/uint32/int64/uint64/half/float/double/bfloat16/"
            "f8e4m3/f8e5m2/all>]\n"
            "\t[-r,--root <root/all>]\n"
            "\t[-z,--blocking <0/1>]\n"
            "\t[-y,--stream_null <0/1>]\n"
            "\t[-T,--timeout <time in seconds>]\n"
            "\t[-G,--cudagraph <num graph launches: 0>]\n"
            "\t[-C,--report_cputime <0/1>]\n"
            "\t[-a,--average <0/1/2/3> report average iteration time <0=RANK0/1=AVG/2=MIN/3=MAX>]\n"
            "\t[-R,--local_register <0/1/2> register buffers: 1=ncclCommRegister, "
            "2=symmetric window]\n"
            "\t[-h,--help]\n",
            prog);
}

static const struct option long_opts[] = {
    {"nthreads", required_argument, 0, 't'},
    {"ngpus", required_argument, 0, 'g'},
    {"minbytes", required_argument, 0, 'b'},
    {"maxbytes", required_argument, 0, 'e'},
    {"stepbytes", required_argument, 0, 'i'},
    {"stepfactor", required_argument, 0, 'f'},
    {"iters", required_argument, 0, 'n'},
    {"agg_iters", required_argument, 0, 'm'},
    {"warmup_iters", required_argument, 0, 'w'},
    {"run_cycles", required_argument, 0, 'N'},
    {"parallel_init", required_argument, 0, 'p'},
    {"check", required_argument, 0, 'c'},
    {"op", required_argument, 0, 'o'},
    {"datatype", required_argument, 0, 'd'},
    {"root", required_argument, 0, 'r'},
    {"blocking", required_argument, 0, 'z'},
    {"stream_null", required_argument, 0, 'y'},
    {"timeout", required_argument, 0, 'T'},
    {"cudagraph", required_argument, 0, 'G'},
    {"report_cputime", required_argument, 0, 'C'},
    {"average", required_argument, 0, 'a'},
    {"local_register", required_argument, 0, 'R'},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

/* Returns the int field an integer option sets, NULL for the others. */
static int *int_field(struct perf_opts *o, int c)
{
    switch (c) {
    case 't':
        return &o->nthreads;
    case 'g':
        return &o->ngpus;
    case 'n':
        return &o->iters;
    case 'm':
        return &o->agg_iters;
    case 'w':
        return &o->warmup;
    case 'N':
        return &o->run_cycles;
    case 'p':
        return &o->parallel_init;
    case 'c':
        return &o->check;
    case 'z':
        return &o->blocking;
    case 'y':
        return &o->stream_null;
    case 'T':
        return &o->timeout_s;
    case 'G':
        return &o->graph;
    case 'C':
        return &o->report_cputime;
    case 'a':
        return &o->average;
    case 'R':
        return &o->reg;
    default:
        return NULL;
    }
}

static bool parse_one(struct perf_opts *o, int c, const char *arg)
{
    size_t factor;
    int *field = int_field(o, c);
    if (field != NULL)
        return parse_int(arg, field);
    switch (c) {
    case 'b':
        return parse_size(arg, &o->min_bytes);
    case 'e':
        return parse_size(arg, &o->max_bytes);
    case 'i':
        return parse_size(arg, &o->step_bytes);
    case 'f':
        if (!parse_size(arg, &factor))
            return false;
        o->step_factor = factor;
        return true;
    case 'o':
        return parse_op(arg, &o->op);
    case 'd':
        return parse_type(arg, &o->type);
    case 'r':
        if (strcmp(arg, "all") == 0) {
            o->root = -1;
            return true;
        }
        return parse_int(arg, &o->root) && o->root >= -1;
    default:
        return false;
    }
}

/* What this build cannot do is refused with the reason, not ignored. */
static bool check_opts(const struct perf_opts *o)
{
    const char *why = NULL;
    if (o->nthreads < 1)
        why = "-t must be at least 1";
    else if (o->ngpus != 1)
        why = "-g must be 1: each rank (thread or process) drives one device; use -t for more "
              "ranks per process";
    else if (o->graph != 0)
        why = "-G must be 0: CUDA graphs do not apply to host-buffer collectives";
    else if (o->min_bytes > o->max_bytes)
        why = "minbytes (-b) is larger than maxbytes (-e)";
    else if (o->iters < 1 || o->warmup < 0 || o->agg_iters < 1 || o->run_cycles < 0)
        why = "-n and -m must be at least 1, -w and -N at least 0";
    else if (o->average < 0 || o->average > 3)
        why = "-a must be 0 (rank 0), 1 (average), 2 (min) or 3 (max)";
    else if (o->reg < 0 || o->reg > 2)
        why = "-R must be 0, 1 (ncclCommRegister) or 2 (symmetric window)";
    else if (o->step_factor <= 1 && o->step_bytes == 0 && o->min_bytes < o->max_bytes)
        why = "-i 0 with -f 1 would never reach maxbytes";
    if (why != NULL)
        fprintf(stderr, "invalid options: %s\n", why);
    return why == NULL;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct perf_opts *o)
{
    const char *prog = basename(argv[0]);
    set_defaults(o);
    for (;;) {
        int c = getopt_long(argc, argv, "t:g:b:e:i:f:n:m:w:N:p:c:o:d:r:z:y:T:G:C:a:R:h", long_opts,
                            NULL);
        if (c == -1)
            break;
        if (c == 'h') {
            usage(stdout, prog);
            return 0;
        }
        if (c == '?' || !parse_one(o, c, optarg)) {
            if (c != '?')
                fprintf(stderr, "%s: invalid value '%s' for option -%c\n", prog, optarg, c);
            usage(stderr, prog);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
        usage(stderr, prog);
        return 1;
    }
    return check_opts(o) ? -1 : 1;
}

/* ---- launch ---- */

/* Under a launcher without MPI support each process would run alone and report nonsense. */
static bool launched_without_mpi(void)
{
#ifdef AC_PERF_MPI
    return false;
#else
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && atoi(v) > 1) {
            fprintf(stderr,
                    "error: started by a launcher with %s=%s, but this binary was built without "
                    "MPI, so its processes cannot find each other. Install MPI (apt-get install "
                    "openmpi-bin libopenmpi-dev) so that mpicc is found, and rebuild "
                    "(make perf); or run one process with -t <ranks>.\n",
                    vars[i], v);
            return true;
        }
    }
    return false;
#endif
}

static int init_world(int *argc, char ***argv, const struct perf_opts *o)
{
    struct perf_world *w = &perf_world;
    w->nprocs = 1;
    w->proc = 0;
#ifdef AC_PERF_MPI
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_size(MPI_COMM_WORLD, &w->nprocs);
    MPI_Comm_rank(MPI_COMM_WORLD, &w->proc);
    if (w->nprocs > 1 && provided < MPI_THREAD_SERIALIZED) {
        fprintf(stderr, "error: the MPI library does not provide MPI_THREAD_SERIALIZED\n");
        return 1;
    }
#endif
    w->nthreads = o->nthreads;
    w->nranks = w->nprocs * o->nthreads;
    w->opts = *o;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (gethostname(w->hostname, sizeof(w->hostname) - 1) != 0)
        strcpy(w->hostname, "unknown");
    char *dot = strchr(w->hostname, '.');
    if (dot != NULL)
        *dot = '\0';
    if (w->coll->has_root && o->root >= w->nranks) {
        fprintf(stderr, "invalid options: root %d is not a rank (there are %d ranks)\n", o->root,
                w->nranks);
        return 1;
    }
    return 0;
}

static void finalize_world(void)
{
#ifdef AC_PERF_MPI
    MPI_Finalize();
#endif
}

#define PERF_LINE_MAX 4096

static void print_devices(void)
{
    struct perf_world *w = &perf_world;
    char line[PERF_LINE_MAX];
    int len = 0;
    for (int t = 0; t < w->nthreads && len < PERF_LINE_MAX; t++)
        len += snprintf(line + len, (size_t)(PERF_LINE_MAX - len),
                        "#  Rank %2d Group %2d Pid %6d on %10s device %2d [host]\n",
                        w->proc * w->nthreads + t, 0, (int)getpid(), w->hostname, t);
#ifdef AC_PERF_MPI
    char *all = w->proc == 0 ? malloc((size_t)w->nprocs * PERF_LINE_MAX) : NULL;
    if (w->proc == 0 && all == NULL) {
        fprintf(stderr, "out of memory gathering the rank table\n");
        perf_fatal();
    }
    MPI_Gather(line, PERF_LINE_MAX, MPI_CHAR, all, PERF_LINE_MAX, MPI_CHAR, 0, MPI_COMM_WORLD);
    for (int p = 0; w->proc == 0 && p < w->nprocs; p++)
        printf("%s", all + (size_t)p * PERF_LINE_MAX);
    free(all);
#else
    printf("%s", line);
#endif
}

static void print_header(void)
{
    const struct perf_world *w = &perf_world;
    const struct perf_opts *o = &w->opts;
    int version = 0;
    ncclGetVersion(&version);
    if (w->proc == 0) {
        printf("# nccl-tests style: %s, AnyCCL perf harness (host buffers) nccl-headers=%d "
               "nccl-library=%d\n",
               w->coll->name, NCCL_VERSION_CODE, version);
        printf("# Collective test starting: %s\n", w->coll->name);
        printf("# nThread %d nGpus %d minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d "
               "iters: %d agg iters: %d validation: %d graph: %d\n",
               o->nthreads, o->ngpus, o->min_bytes, o->max_bytes,
               o->step_factor > 1 ? o->step_factor : o->step_bytes,
               o->step_factor > 1 ? "factor" : "bytes", o->warmup, o->iters, o->agg_iters, o->check,
               o->graph);
        if (o->blocking)
            printf("# Blocking Enabled: wait for completion and barrier after each collective \n");
        if (o->parallel_init)
            printf("# Parallel Init Enabled: threads call into NcclInitRank concurrently \n");
        printf("#\n# Using devices\n");
    }
    print_devices();
    if (w->proc == 0)
        printf("#\n");
}

static void print_table_header(void)
{
    const char *t = perf_world.opts.report_cputime ? "cputime" : "time";
    printf("# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place"
           "          \n",
           "", "", "", "", "");
    printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s\n", "size", "count",
           "type", "redop", "root", t, "algbw", "busbw", "#wrong", t, "algbw", "busbw", "#wrong");
    printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s\n", "(B)",
           "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)",
           "");
}

static void *rank_main(void *arg)
{
    perf_run_rank(arg);
    return NULL;
}

static int launch_ranks(const ncclUniqueId *id)
{
    struct perf_world *w = &perf_world;
    struct perf_rank *ranks = calloc((size_t)w->nthreads, sizeof(*ranks));
    if (ranks == NULL) {
        fprintf(stderr, "out of memory for %d ranks\n", w->nthreads);
        return 1;
    }
    for (int t = 0; t < w->nthreads; t++) {
        ranks[t].thread = t;
        ranks[t].rank = w->proc * w->nthreads + t;
        ranks[t].id = *id;
        int err = pthread_create(&ranks[t].tid, NULL, rank_main, &ranks[t]);
        if (err != 0) {
            fprintf(stderr, "pthread_create for rank %d: %s\n", ranks[t].rank, strerror(err));
            perf_fatal();
        }
    }
    for (int t = 0; t < w->nthreads; t++)
        pthread_join(ranks[t].tid, NULL);
    free(ranks);
    return 0;
}

static void *watchdog_main(void *arg)
{
    struct perf_world *w = &perf_world;
    unsigned long seen = 0;
    double since = perf_now();
    for (;;) {
        sleep(1);
        unsigned long now_calls = __atomic_load_n(&w->progress, __ATOMIC_RELAXED);
        if (now_calls != seen || now_calls == 0) { /* ncclCommInitRank is not timed */
            seen = now_calls;
            since = perf_now();
        } else if (perf_now() - since > w->opts.timeout_s) {
            fflush(stdout);
            fprintf(stderr, "%s: Test timeout (%ds): no collective completed for %d seconds\n",
                    w->hostname, w->opts.timeout_s, w->opts.timeout_s);
            perf_fatal();
        }
    }
    return NULL;
}

static void start_watchdog(void)
{
    pthread_t tid;
    if (perf_world.opts.timeout_s <= 0)
        return;
    if (pthread_create(&tid, NULL, watchdog_main, NULL) == 0)
        pthread_detach(tid);
}

static int print_summary(void)
{
    struct perf_world *w = &perf_world;
    double errors = w->errors;
#ifdef AC_PERF_MPI
    if (w->nprocs > 1)
        MPI_Allreduce(MPI_IN_PLACE, &errors, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
    if (w->proc == 0) {
        double avg = w->bw_count > 0 ? w->bw_sum / w->bw_count : 0.0;
        printf("# Out of bounds values : %.0f %s\n", errors, errors > 0 ? "FAILED" : "OK");
        printf("# Avg bus bandwidth    : %g \n", avg);
        printf("#\n");
    }
    return errors > 0 ? 1 : 0;
}

int perf_main(int argc, char **argv, const struct perf_coll *coll)
{
    struct perf_opts opts;
    ncclUniqueId id;
    setlinebuf(stdout);
    int status = parse_args(argc, argv, &opts);
    if (status >= 0)
        return status;
    if (launched_without_mpi())
        return 1;
    perf_world.coll = coll;
    if (init_world(&argc, &argv, &opts) != 0) {
        perf_fatal();
    }
    print_header();
    memset(&id, 0, sizeof(id));
    if (perf_world.proc == 0)
        PERF_NCCLCHECK(ncclGetUniqueId(&id), NULL, 0);
#ifdef AC_PERF_MPI
    MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
#endif
    if (perf_world.proc == 0)
        print_table_header();
    start_watchdog();
    status = launch_ranks(&id);
    if (status == 0)
        status = print_summary();
    finalize_world();
    return status;
}
