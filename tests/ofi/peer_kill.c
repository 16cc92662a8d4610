/* Error injection for the network transports: one rank of a job, started by tests/ofi/run.sh with
 * NCCL_COMM_ID set (every rank builds the same unique id from it). Every rank runs allreduces of
 * 8 MiB in a loop; the victim rank SIGKILLs itself after `kill_after` of them, in the middle of the
 * next one. A survivor must get an error (not hang) and prints one line:
 *   RESULT rank=<r> rc=<ncclResult_t> err=<message>
 *   peer_kill RANK NRANKS VICTIM KILL_AFTER */
#include "nccl.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COUNT (2u << 20) /* floats: 8 MiB */
#define MAX_ITERS 100000

static void *killer(void *arg)
{
    usleep(20000); /* inside the allreduce that follows */
    kill(getpid(), SIGKILL);
    return arg;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s RANK NRANKS VICTIM KILL_AFTER\n", argv[0]);
        return 2;
    }
    int rank = atoi(argv[1]), nranks = atoi(argv[2]), victim = atoi(argv[3]);
    int kill_after = atoi(argv[4]);
    ncclUniqueId id;
    ncclComm_t comm;
    float *buf = calloc(COUNT, sizeof(float));
    if (buf == NULL || ncclGetUniqueId(&id) != ncclSuccess ||
        ncclCommInitRank(&comm, nranks, id, rank) != ncclSuccess) {
        printf("SETUP-FAILED rank=%d err=%s\n", rank, ncclGetLastError(NULL));
        return 1;
    }
    ncclResult_t rc = ncclSuccess;
    for (int i = 0; i < MAX_ITERS && rc == ncclSuccess; i++) {
        if (rank == victim && i == kill_after) {
            pthread_t t;
            pthread_create(&t, NULL, killer, NULL);
        }
        rc = ncclAllReduce(buf, buf, COUNT, ncclFloat32, ncclSum, comm, NULL);
    }
    printf("RESULT rank=%d rc=%d err=%s\n", rank, (int)rc,
           rc == ncclSuccess ? "none" : ncclGetLastError(comm));
    fflush(stdout);
    ncclCommAbort(comm);
    free(buf);
    return rc == ncclSuccess ? 1 : 0;
}
