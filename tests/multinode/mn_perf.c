/* One rank of the calibration run (tests/multinode/calib.sh): times allreduce, allgather and
 * broadcast for sizes MIN..MAX (x4), nccl-tests' meaning of size (allgather: the whole output),
 * under whatever NCCL_ALGO the caller set. Rank 0 prints, per op and size, the slowest rank's
 * mean time over a few calls (the better of two such measurements below 64 MiB):
 *   TIME <op> <size bytes> <microseconds>
 *
 *   mn_perf RANK NRANKS IDFILE MIN_BYTES MAX_BYTES OPS     (OPS: e.g. allreduce,broadcast) */
#include "nccl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(ncclResult_t res, const char *what)
{
    if (res != ncclSuccess) {
        fprintf(stderr, "mn_perf: %s failed: %s (%s)\n", what, ncclGetErrorString(res),
                ncclGetLastError(NULL));
        exit(1);
    }
}

static int exchange_id(int rank, const char *path, ncclUniqueId *id)
{
    if (rank == 0) {
        char tmp[4096];
        check(ncclGetUniqueId(id), "ncclGetUniqueId");
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (!f || fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
            fprintf(stderr, "mn_perf: cannot write %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    for (double deadline = now_s() + 30; now_s() < deadline; usleep(20000)) {
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t got = fread(id, sizeof(*id), 1, f);
        fclose(f);
        if (got == 1)
            return 0;
    }
    fprintf(stderr, "mn_perf: no unique id in %s after 30 s\n", path);
    return -1;
}

static void run_op(ncclComm_t comm, const char *op, size_t size, int nranks, float *sb, float *rb)
{
    size_t count = size / sizeof(float);
    if (strcmp(op, "allreduce") == 0)
        check(ncclAllReduce(sb, rb, count, ncclFloat32, ncclSum, comm, NULL), "ncclAllReduce");
    else if (strcmp(op, "allgather") == 0)
        check(ncclAllGather(sb, rb, count / (size_t)nranks, ncclFloat32, comm, NULL),
              "ncclAllGather");
    else
        check(ncclBroadcast(sb, rb, count, ncclFloat32, 0, comm, NULL), "ncclBroadcast");
}

/* Calls per measurement: about 8 MiB of user data, at least two (a rank that leaves the barrier
 * late would otherwise time less than the whole transfer). */
static int iterations(size_t size)
{
    size_t n = ((size_t)8 << 20) / size;
    return n < 2 ? 2 : n > 8 ? 8 : (int)n;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: mn_perf RANK NRANKS IDFILE MIN_BYTES MAX_BYTES OPS\n");
        return 2;
    }
    int rank = atoi(argv[1]), nranks = atoi(argv[2]);
    size_t lo = strtoull(argv[4], NULL, 0), hi = strtoull(argv[5], NULL, 0);
    ncclUniqueId id;
    ncclComm_t comm;
    if (nranks < 1 || rank < 0 || rank >= nranks || lo < 4096 || hi < lo)
        return 2;
    if (exchange_id(rank, argv[3], &id) != 0)
        return 1;
    check(ncclCommInitRank(&comm, nranks, id, rank), "ncclCommInitRank");
    float *sb = calloc(hi / sizeof(float), sizeof(float));
    float *rb = calloc(hi / sizeof(float), sizeof(float));
    float one = 1, sum;
    if (!sb || !rb)
        return 1;
    char ops[256];
    snprintf(ops, sizeof(ops), "%s", argv[6]);
    for (char *save = NULL, *op = strtok_r(ops, ",", &save); op; op = strtok_r(NULL, ",", &save)) {
        run_op(comm, op, lo, nranks, sb, rb); /* warm-up: connections */
        for (size_t size = lo; size <= hi; size *= 4) {
            float best = 0;
            int reps = size >= ((size_t)64 << 20) ? 1 : 2;
            for (int rep = 0; rep < reps; rep++) { /* the better of two: load on the host */
                int iters = iterations(size);
                check(ncclAllReduce(&one, &sum, 1, ncclFloat32, ncclSum, comm, NULL), "barrier");
                double t0 = now_s();
                for (int i = 0; i < iters; i++)
                    run_op(comm, op, size, nranks, sb, rb);
                float us = (float)((now_s() - t0) / iters * 1e6), worst;
                check(ncclAllReduce(&us, &worst, 1, ncclFloat32, ncclMax, comm, NULL), "max");
                best = rep == 0 || worst < best ? worst : best;
            }
            if (rank == 0)
                printf("TIME %s %zu %.1f\n", op, size, best);
            fflush(stdout);
        }
    }
    check(ncclCommDestroy(comm), "ncclCommDestroy");
    free(sb);
    free(rb);
    return 0;
}
