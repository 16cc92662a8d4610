/* Bootstrap: the TCP rendezvous that turns a unique id into a set of connected ranks, and the
 * small out-of-band messages that set-up needs afterwards (allgather, point-to-point, barrier).
 *
 * The unique id carries the root's address and a random secret. ac_bootstrap_create_root starts a
 * root thread in the calling process: it accepts ranks, checks the secret, the rank count and
 * duplicates, and, once all have arrived, sends every rank the table of all ranks' bootstrap
 * addresses. Connections with a wrong secret or garbage are dropped and logged; they never stop
 * the root. Every wait is bounded by the init timeout (ANYCCL_INIT_TIMEOUT, or ANYCCL_TIMEOUT). */
#ifndef AC_CORE_BOOTSTRAP_H
#define AC_CORE_BOOTSTRAP_H

#include "nccl.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The layout of ncclUniqueId's 128 bytes. */
struct ac_unique_id {
    uint32_t magic;                  /* AC_UNIQUE_ID_MAGIC */
    uint32_t version;
    uint64_t secret;                 /* random: authenticates ranks of this job */
    uint64_t id_hash;                /* random: names this communicator's shared resources */
    struct sockaddr_storage root;    /* where the root listens */
};
#define AC_UNIQUE_ID_MAGIC 0x41434349u   /* "ACCI" */

/* Encode/decode with validation (decode fails with ncclInvalidArgument naming what is wrong). */
void ac_unique_id_encode(const struct ac_unique_id *in, ncclUniqueId *out);
ncclResult_t ac_unique_id_decode(const ncclUniqueId *in, struct ac_unique_id *out);

/* ncclGetUniqueId: picks the interface (NCCL_SOCKET_IFNAME, NCCL_COMM_ID), starts the root thread. */
ncclResult_t ac_bootstrap_create_root(ncclUniqueId *id_out);
/* The same with a fresh root on an ephemeral port whatever NCCL_COMM_ID says: for ids the library
 * makes for itself (ncclCommSplit, ncclCommShrink), which must not all share the one address. */
ncclResult_t ac_bootstrap_create_private_root(ncclUniqueId *id_out);

struct ac_bootstrap;

/* Joins the rendezvous as `rank` of `nranks`; returns when every rank has arrived. `abort_flag`,
 * when not NULL, is polled: a non-zero value ends any wait with ncclRemoteError... (abort). */
ncclResult_t ac_bootstrap_init(const ncclUniqueId *id, int rank, int nranks,
                               volatile int *abort_flag, struct ac_bootstrap **bs_out);
/* all[rank * bytes .. +bytes] holds this rank's contribution on entry; everyone's on return. */
ncclResult_t ac_bootstrap_allgather(struct ac_bootstrap *bs, void *all, size_t bytes);
/* Sends never wait for the peer to receive (messages are queued at the receiver); receives
 * match (peer, tag) and keep other messages for later receives. */
ncclResult_t ac_bootstrap_send(struct ac_bootstrap *bs, int peer, uint32_t tag, const void *data,
                               size_t bytes);
ncclResult_t ac_bootstrap_recv(struct ac_bootstrap *bs, int peer, uint32_t tag, void *data,
                               size_t bytes);
ncclResult_t ac_bootstrap_barrier(struct ac_bootstrap *bs);
/* As ac_bootstrap_recv, waiting at most wait_ms: *got says whether the message came. */
ncclResult_t ac_bootstrap_recv_for(struct ac_bootstrap *bs, int peer, uint32_t tag, void *data,
                                   size_t bytes, int wait_ms, bool *got);
/* Receives give up on a peer once *dead_rank names it (RAS: src/ras/ras.h). */
void ac_bootstrap_watch_dead(struct ac_bootstrap *bs, _Atomic int *dead_rank);
/* Reads what has arrived without waiting, then calls visit on each message queued for
 * ac_bootstrap_recv whose tag lies in [tag_lo, tag_hi], oldest first, until it returns true
 * (then returns true). The messages stay queued. */
bool ac_bootstrap_scan(struct ac_bootstrap *bs, uint32_t tag_lo, uint32_t tag_hi,
                       bool (*visit)(void *arg, int from, uint32_t tag, const void *data,
                                     size_t bytes),
                       void *arg);
/* The address other ranks can reach this process on (for transports: same interface). */
const struct sockaddr_storage *ac_bootstrap_local_addr(const struct ac_bootstrap *bs);
void ac_bootstrap_close(struct ac_bootstrap *bs);

#endif
