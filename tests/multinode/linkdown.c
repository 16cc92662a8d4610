/* One rank of the link-down test (tests/multinode/linkdown.sh, issue 6): allreduces in a loop
 * until one fails or LIMIT_S seconds pass. The script cuts a node's NIC (ip link set ... down) in
 * the middle; every rank must then return an error, not hang, and the message must name the
 * connection.
 *
 *   linkdown RANK NRANKS IDFILE LIMIT_S [LATE_S]
 *
 * Rank 0 writes the unique id to IDFILE (a temporary file renamed); the others wait for it. After
 * the first allreduce each rank prints "READY", after the second "STEP2". With LATE_S, the last
 * rank sleeps that long between the two (a rank late to a collective is not dead: nothing may
 * fail).
 * After the loop each rank prints one line:
 *   ERROR <unix time of the error, s> result <ncclResult_t>: <ncclGetLastError>
 *   NOERROR <allreduces done>     (LIMIT_S passed without an error)
 * and ends with ncclCommAbort (exit 0 either way; 1 when set-up fails). After an error it waits
 * LINGER_S first, as an application that reports its error would: a rank that exits at once is
 * itself a fault its local peers report (they would name it instead of the link). */
#include "nccl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COUNT ((size_t)16 << 20) /* 64 MiB of float per allreduce */
#define LINGER_S 3

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int get_id(int rank, const char *path, ncclUniqueId *id)
{
    char tmp[4096];
    if (rank == 0) {
        if (ncclGetUniqueId(id) != ncclSuccess)
            return -1;
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (f == NULL || fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0 ||
            rename(tmp, path) != 0) {
            fprintf(stderr, "rank 0: cannot write %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    for (int i = 0; i < 3000; i++) { /* 30 s */
        FILE *f = fopen(path, "rb");
        if (f != NULL) {
            size_t n = fread(id, sizeof(*id), 1, f);
            fclose(f);
            if (n == 1)
                return 0;
        }
        usleep(10000);
    }
    fprintf(stderr, "rank %d: no unique id in %s after 30 s\n", rank, path);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: linkdown RANK NRANKS IDFILE LIMIT_S [LATE_S]\n");
        return 2;
    }
    int rank = atoi(argv[1]), nranks = atoi(argv[2]);
    double limit = atof(argv[4]);
    int late = argc == 6 ? atoi(argv[5]) : 0;
    ncclUniqueId id;
    ncclComm_t comm;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (get_id(rank, argv[3], &id) != 0)
        return 1;
    ncclResult_t res = ncclCommInitRank(&comm, nranks, id, rank);
    if (res != ncclSuccess) {
        fprintf(stderr, "rank %d: ncclCommInitRank: %s (%s)\n", rank, ncclGetErrorString(res),
                ncclGetLastError(NULL));
        return 1;
    }
    float *buf = malloc(COUNT * sizeof(float));
    if (buf == NULL)
        return 1;
    for (size_t i = 0; i < COUNT; i++)
        buf[i] = 1.0f;
    double start = wall_s();
    long n = 0;
    for (; wall_s() - start < limit; n++) {
        res = ncclAllReduce(buf, buf, COUNT, ncclFloat32, ncclMax, comm, NULL);
        if (res != ncclSuccess)
            break;
        if (n == 0)
            printf("READY\n");
        if (n == 0 && late > 0 && rank == nranks - 1)
            sleep((unsigned)late);
        if (n == 1)
            printf("STEP2\n");
    }
    if (res != ncclSuccess) {
        printf("ERROR %.3f result %d: %s\n", wall_s(), (int)res, ncclGetLastError(comm));
        sleep(LINGER_S);
    } else
        printf("NOERROR %ld\n", n);
    ncclCommAbort(comm);
    free(buf);
    return 0;
}
