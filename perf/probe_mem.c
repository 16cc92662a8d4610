/* Single-core memory probe for perf/compare.sh: memcpy bandwidth and float add (y += x)
 * bandwidth on buffers far larger than the caches, best and median of several runs.
 * Bandwidth counts the bytes of the destination per second (memcpy of N bytes in t: N / t;
 * y += x over N bytes of y in t: N / t), the unit the bounds of docs/performance.md use.
 *
 * Usage: probe_mem [-s bytes (default 256M)] [-r runs (default 5)]
 * Prints two lines, "copy <best GB/s> <median GB/s>" and "add <best GB/s> <median GB/s>". */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Kept out of line and restrict-qualified so the compiler vectorizes it without alias checks. */
static __attribute__((noinline)) void add_floats(float *restrict y, const float *restrict x,
                                                 size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, double *gbps, int runs)
{
    qsort(gbps, (size_t)runs, sizeof(*gbps), cmp_double);
    double median = runs % 2 ? gbps[runs / 2] : (gbps[runs / 2 - 1] + gbps[runs / 2]) / 2;
    printf("%s %.3f %.3f\n", what, gbps[runs - 1], median);
}

static int probe(size_t bytes, int runs)
{
    size_t n = bytes / sizeof(float);
    float *x = NULL, *y = NULL;
    double copy[MAX_RUNS], add[MAX_RUNS];
    if (posix_memalign((void **)&x, 4096, n * sizeof(float)) != 0 ||
        posix_memalign((void **)&y, 4096, n * sizeof(float)) != 0) {
        fprintf(stderr, "probe_mem: cannot allocate 2 buffers of %zu bytes; lower -s\n", bytes);
        free(x);
        return 1;
    }
    for (size_t i = 0; i < n; i++) { /* touch every page before timing */
        x[i] = (float)(i & 1023);
        y[i] = 0.0f;
    }
    bytes = n * sizeof(float);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        memcpy(y, x, bytes);
        double t1 = now();
        add_floats(y, x, n);
        double t2 = now();
        copy[r] = (double)bytes / (t1 - t0) / 1e9;
        add[r] = (double)bytes / (t2 - t1) / 1e9;
    }
    /* Reading a result keeps the compiler from dropping the work. */
    if (y[n - 1] != 2.0f * x[n - 1])
        fprintf(stderr, "probe_mem: unexpected result %g\n", (double)y[n - 1]);
    report("copy", copy, runs);
    report("add", add, runs);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv)
{
    size_t bytes = 256UL << 20;
    int runs = 5, c;
    while ((c = getopt(argc, argv, "s:r:")) != -1) {
        char *end = NULL;
        if (c == 's')
            bytes = strtoull(optarg, &end, 10);
        else if (c == 'r')
            runs = (int)strtol(optarg, &end, 10);
        if (c == '?' || end == optarg) {
            fprintf(stderr, "usage: probe_mem [-s bytes] [-r runs (1-%d)]\n", MAX_RUNS);
            return 2;
        }
        if (end != NULL && (*end == 'M' || *end == 'm'))
            bytes <<= 20;
    }
    if (runs < 1 || runs > MAX_RUNS || bytes < 4096) {
        fprintf(stderr, "probe_mem: need 1 <= -r <= %d and -s >= 4096\n", MAX_RUNS);
        return 2;
    }
    return probe(bytes, runs);
}
