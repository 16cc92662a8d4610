/* All-to-all through the GIN path (ANYCCL_GPU_INITIATED=1, set by tests/gin/run.sh): this program
 * forks the ranks of one job itself (the parent holds the bootstrap root and waits).
 * GIN_SPLIT_HOSTS=1 gives every rank its own ANYCCL_HOSTID, so no two share a host (the socket
 * backend). The ranks meet at NCCL_COMM_ID (set here to a port on 127.0.0.1 when unset).
 *   gin_a2a check NRANKS        exact results for several sizes and types, interleaved with
 *                               allreduces (normal path) on the same communicator; prints
 *                               "RESULT rank=R ok=1" or "RESULT rank=R ok=0 <what differed>"
 *   gin_a2a kill NRANKS VICTIM  every rank loops on 64 KiB-per-peer all-to-alls; VICTIM SIGKILLs
 *                               itself in the middle of one; survivors print
 *                               "RESULT rank=R rc=<ncclResult_t> err=<last error>" */
#include "nccl.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RANKS 16

static uint64_t value_of(int from, int to, size_t i, int call)
{
    return ((uint64_t)from * 1000003u + (uint64_t)to * 7919u + i * 31u + (uint64_t)call) & 0x7f;
}

static const struct {
    ncclDataType_t type;
    size_t bytes;
} types[] = {{ncclInt8, 1}, {ncclFloat32, 4}, {ncclInt64, 8}};

static void put_elem(void *buf, size_t k, size_t bytes, uint64_t v)
{
    if (bytes == 1)
        ((int8_t *)buf)[k] = (int8_t)v;
    else if (bytes == 4)
        ((float *)buf)[k] = (float)v;
    else
        ((int64_t *)buf)[k] = (int64_t)v;
}

static uint64_t get_elem(const void *buf, size_t k, size_t bytes)
{
    if (bytes == 1)
        return (uint64_t)((const int8_t *)buf)[k];
    if (bytes == 4)
        return (uint64_t)((const float *)buf)[k];
    return (uint64_t)((const int64_t *)buf)[k];
}

static int run_check(ncclComm_t comm, int rank, int n)
{
    static const size_t counts[] = {1, 2, 7, 64, 1000, 16384};
    int call = 0;
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++, call++) {
            size_t count = counts[c], eb = types[t].bytes;
            char *send = malloc(count * eb * (size_t)n), *recv = malloc(count * eb * (size_t)n);
            for (int p = 0; p < n; p++)
                for (size_t i = 0; i < count; i++) {
                    put_elem(send, (size_t)p * count + i, eb, value_of(rank, p, i, call));
                    put_elem(recv, (size_t)p * count + i, eb, 0x55);
                }
            ncclResult_t rc = ncclAlltoAll(send, recv, count, types[t].type, comm, NULL);
            if (rc != ncclSuccess) {
                printf("RESULT rank=%d ok=0 call %d: rc %d: %s\n", rank, call, (int)rc,
                       ncclGetLastError(comm));
                return 1;
            }
            for (int p = 0; p < n; p++)
                for (size_t i = 0; i < count; i++) {
                    uint64_t got = get_elem(recv, (size_t)p * count + i, eb);
                    uint64_t want = value_of(p, rank, i, call);
                    if (got != want) {
                        printf("RESULT rank=%d ok=0 call %d type %d count %zu: from rank %d "
                               "element %zu is %llu, expected %llu\n",
                               rank, call, (int)types[t].type, count, p, i, (unsigned long long)got,
                               (unsigned long long)want);
                        return 1;
                    }
                }
            free(send);
            free(recv);
            /* A collective of the normal path between GIN calls: both keep working. */
            float one = 1.0f, sum = 0;
            if (ncclAllReduce(&one, &sum, 1, ncclFloat32, ncclSum, comm, NULL) != ncclSuccess ||
                sum != (float)n) {
                printf("RESULT rank=%d ok=0 allreduce between alltoalls gave %g\n", rank, sum);
                return 1;
            }
        }
    }
    printf("RESULT rank=%d ok=1\n", rank);
    return 0;
}

static void *killer(void *arg)
{
    usleep(300);
    kill(getpid(), SIGKILL);
    return arg;
}

static int run_kill(ncclComm_t comm, int rank, int n, int victim)
{
    size_t count = 16384; /* floats: 64 KiB per peer */
    float *send = calloc(count * (size_t)n, sizeof(float));
    float *recv = calloc(count * (size_t)n, sizeof(float));
    ncclResult_t rc = ncclSuccess;
    for (int i = 0; i < 100000 && rc == ncclSuccess; i++) {
        if (rank == victim && i == 20) {
            pthread_t t;
            pthread_create(&t, NULL, killer, NULL);
        }
        rc = ncclAlltoAll(send, recv, count, ncclFloat32, comm, NULL);
    }
    printf("RESULT rank=%d rc=%d err=%s\n", rank, (int)rc, ncclGetLastError(comm));
    fflush(stdout);
    /* Stay alive a moment: the other survivors must find the victim dead, not us. */
    sleep(2);
    ncclCommAbort(comm);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "kill") == 0 && argc < 4)) {
        fprintf(stderr, "usage: %s check NRANKS | kill NRANKS VICTIM\n", argv[0]);
        return 2;
    }
    bool is_kill = strcmp(argv[1], "kill") == 0;
    int n = atoi(argv[2]), victim = is_kill ? atoi(argv[3]) : -1;
    if (n < 1 || n > MAX_RANKS)
        return 2;
    /* No library call in the parent: a thread it started (the bootstrap root) could hold a lock
     * (the sanitizer's allocator, malloc's) at fork and leave it locked forever in a child. The
     * ranks meet at NCCL_COMM_ID instead, where rank 0 starts the root. */
    if (!getenv("NCCL_COMM_ID") && !getenv("ANYCCL_COMM_ID")) {
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", 20000 + (int)((getpid() * 7919u) % 30000));
        setenv("NCCL_COMM_ID", addr, 1);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t pids[MAX_RANKS];
    for (int r = 0; r < n; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            ncclComm_t comm;
            ncclUniqueId id;
            const char *split = getenv("GIN_SPLIT_HOSTS");
            if (split && *split) { /* every rank its own "host": the socket backend */
                char host[32];
                snprintf(host, sizeof(host), "gin-host-%d", r);
                setenv("ANYCCL_HOSTID", host, 1);
            }
            if (ncclGetUniqueId(&id) != ncclSuccess ||
                ncclCommInitRank(&comm, n, id, r) != ncclSuccess) {
                printf("SETUP-FAILED rank=%d: %s\n", r, ncclGetLastError(NULL));
                _exit(1);
            }
            int rc = is_kill ? run_kill(comm, r, n, victim) : run_check(comm, r, n);
            if (!is_kill)
                ncclCommDestroy(comm);
            _exit(rc);
        }
    }
    int failed = 0;
    for (int r = 0; r < n; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        failed |= r != victim && !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    return failed;
}
