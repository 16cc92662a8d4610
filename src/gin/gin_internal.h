/* Shared by the files of src/gin: the per-communicator engine state and its backends. */
#ifndef AC_GIN_GIN_INTERNAL_H
#define AC_GIN_GIN_INTERNAL_H

#include "common/time.h"
#include "gin/gin.h"

#include <pthread.h>
#include <stdint.h>

struct gin_seg {
    uint64_t win_epoch AC_GIN_LINE; /* written last, with release: the window below is posted */
    uint64_t win_addr;
    uint64_t win_bytes;
    uint64_t signals[] AC_GIN_LINE; /* [nranks]: signal i is added to by rank i */
};

/* The frame both network backends carry (socket, rdma): 24 bytes, little-endian whatever the
 * host, encoded field by field: type u32 | src u32 | a u64 | b u64, a put followed by its b
 * bytes. The meaning of a and b per type is in gin_sock.c and gin_rdma.c. */
#define AC_GIN_FRAME_BYTES 24
enum {
    AC_GIN_FRAME_PUT = 1,
    AC_GIN_FRAME_SIGNAL_ADD = 2,
    AC_GIN_FRAME_SIGNAL_SET = 3,
    AC_GIN_FRAME_WINDOW = 4,
    AC_GIN_FRAME_BYE = 5,
};

static inline void ac_gin_put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t ac_gin_get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void ac_gin_frame_encode(uint8_t *hdr, uint32_t type, uint32_t src, uint64_t a,
                                       uint64_t b)
{
    ac_gin_put_le(hdr, type, 4);
    ac_gin_put_le(hdr + 4, src, 4);
    ac_gin_put_le(hdr + 8, a, 8);
    ac_gin_put_le(hdr + 16, b, 8);
}

/* A SIGNAL_ADD / SIGNAL_SET frame received (signal a, value b) into signals[nranks]; release, so
 * that the puts read before it are visible to a waiter that acquires. AC_GIN_ERR_ACCESS for a
 * signal id out of range. */
static inline int ac_gin_apply_signal(uint64_t *signals, int nranks, uint32_t type, uint64_t a,
                                      uint64_t b)
{
    if (a >= (uint64_t)nranks)
        return AC_GIN_ERR_ACCESS;
    if (type == AC_GIN_FRAME_SIGNAL_ADD)
        __atomic_fetch_add(&signals[a], b, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&signals[a], b, __ATOMIC_RELEASE);
    return AC_GIN_OK;
}

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
