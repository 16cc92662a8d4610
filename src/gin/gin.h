/* GPU-initiated networking (GIN), the engine side: what consumes the descriptor ring of
 * src/device/kernels/gin.h and performs its puts and signals, and the all-to-all built on it
 * (ANYCCL_GPU_INITIATED=1). See docs/gpu-initiated.md.
 *
 * An engine is a backend ops table; the software engine (a progress thread per communicator, and
 * any thread waiting on the ring) reads descriptors in ticket order and hands each one to it.
 * Backends today: "cma" (ranks of one host: puts are process_vm_writev into the peer's posted
 * window, signals are atomic adds in the peer's shared-memory segment) and "socket" (framed
 * put/signal/window messages over one TCP connection per pair, src/gin/gin_sock.c). An RDMA
 * backend (the engine of src/transport/rdma) would be another table with the same functions. */
#ifndef AC_GIN_GIN_H
#define AC_GIN_GIN_H

#include "device/kernels/gin.h"
#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a backend does with one descriptor. Each returns an enum ac_gin_status and, on
 * AC_GIN_ERR_PEER, the peer at fault in *peer_out. A put or signal returns once it is complete at
 * the target or, for asynchronous backends, once poll() will report its completion in order. */
struct ac_gin_backend {
    size_t size; /* sizeof(struct ac_gin_backend): grows only at the end */
    const char *name;
    int (*put)(void *ctx, uint32_t peer, uint64_t src_off, uint64_t dst_off, uint64_t bytes,
               int *peer_out);
    int (*signal)(void *ctx, uint32_t peer, uint32_t signal_id, uint64_t value, bool is_add,
                  int *peer_out);
    /* Liveness and completions not yet reported; AC_GIN_OK when nothing is wrong. */
    int (*poll)(void *ctx, int *peer_out);
    /* The all-to-all's rendezvous: this rank's receive window for call `epoch`, and whether a
     * peer has posted its window for `epoch` (a put may target it only then). */
    int (*post_window)(void *ctx, void *addr, uint64_t bytes, uint64_t epoch, int *peer_out);
    bool (*window_ready)(void *ctx, uint32_t peer, uint64_t epoch);
};

/* Ring memory: a control block and nslots descriptors (nslots a power of two, >= 2). */
struct ac_gin_ring *ac_gin_ring_create(uint32_t nslots, uint64_t *signals, uint32_t nsignals,
                                       const volatile int *abort_flag);
void ac_gin_ring_destroy(struct ac_gin_ring *r);

/* The consumer: performs up to `max` published descriptors, in ticket order. Only one thread may
 * consume a ring at a time (the caller serializes). Returns how many were performed; on a
 * backend failure sets the ring's error word (which every producer wait observes) and stops. */
int ac_gin_consume(struct ac_gin_ring *r, const struct ac_gin_backend *be, void *ctx, int max);
/* Records a failure in the ring once (the first error wins). */
void ac_gin_ring_fail(struct ac_gin_ring *r, int status, int peer);

/* src/gin/gin_mlx5.c: one RDMA-write WQE (64 bytes) as the mlx5 direct engine would build it.
 * Encoding only: the engine itself (QP, UAR mapping, CQ) is not written and never ran. */
void ac_gin_mlx5_rdma_write_wqe(uint8_t wqe[64], uint16_t pi, uint32_t qpn, uint64_t raddr,
                                uint32_t rkey, uint64_t laddr, uint32_t lkey, uint32_t bytes,
                                bool is_signaled);

/* src/gin/gin_comm.c: the per-communicator engine. */
struct ncclComm;
struct ac_op;
/* Runs op through the GIN path when ANYCCL_GPU_INITIATED=1 and the op is an all-to-all this path
 * handles (host buffers, no group, every peer reachable by a backend); otherwise *handled_out is
 * false and nothing happened. */
ncclResult_t ac_gin_try_op(struct ac_op *op, bool *handled_out);
/* Stops the progress thread and frees the engine (communicator destruction). */
void ac_gin_comm_free(struct ncclComm *comm);

#endif
