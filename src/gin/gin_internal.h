/* Shared by the files of src/gin: the per-communicator engine state and its backends. */
#ifndef AC_GIN_GIN_INTERNAL_H
#define AC_GIN_GIN_INTERNAL_H

#include "common/time.h"
#include "gin/gin.h"

#include <pthread.h>

struct gin_seg {
    uint64_t win_epoch AC_GIN_LINE; /* written last, with release: the window below is posted */
    uint64_t win_addr;
    uint64_t win_bytes;
    uint64_t signals[] AC_GIN_LINE; /* [nranks]: signal i is added to by rank i */
};

struct gin_sock;
struct gin_rdma;
struct ac_rdma_transport;

struct ac_gin {
    struct ncclComm *comm;
    struct ac_gin_ring *ring;
    const struct ac_gin_backend *be;
    struct gin_seg **segs; /* cma: [nranks], segs[rank] is ours */
    size_t seg_bytes;
    struct gin_sock *sock;  /* socket backend state */
    struct gin_rdma *rdma;  /* rdma backend state */
    uint64_t *signals;      /* socket backend: this rank's signals [nranks] */
    const char *local_base; /* the local window of the call in flight */
    uint64_t local_bytes;
    uint64_t epoch; /* all-to-all calls made through this engine */
    pthread_mutex_t consume_lock;
    pthread_t thread;
    bool has_thread;
    int stop;
    uint64_t deadline_ns; /* of the call in flight; 0: none */
    uint64_t next_liveness_ns;
    struct ac_backoff backoff; /* of the thread waiting in a call (host_poll) */
    bool is_broken;
    bool has_why;  /* why holds the words of the first failure (set once) */
    char why[256]; /* the rdma engine's own message for the failure the ring records */
};

/* src/gin/gin_sock.c: framed put/signal/window messages over one TCP connection per pair. */
extern const struct ac_gin_backend ac_gin_sock_backend;
ncclResult_t ac_gin_sock_setup(struct ac_gin *g);
void ac_gin_sock_free(struct ac_gin *g);
/* Reads what peers sent (puts into the posted window, signals, window posts); called by waiters
 * and the progress thread. Returns an ac_gin_status (a closed connection: AC_GIN_ERR_PEER). */
int ac_gin_sock_drain(struct ac_gin *g, int *peer_out);

/* src/gin/gin_rdma.c: the same frames in the slots of the RDMA engine's connectors (verbs,
 * libfabric), two per pair. */
extern const struct ac_gin_backend ac_gin_rdma_backend;
ncclResult_t ac_gin_rdma_setup(struct ac_gin *g, const struct ac_rdma_transport *rt);
void ac_gin_rdma_free(struct ac_gin *g);
/* Reads delivered slots and progresses the send side; an ac_gin_status like ac_gin_sock_drain. */
int ac_gin_rdma_drain(struct ac_gin *g, int *peer_out);

#endif
