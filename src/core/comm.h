/* The communicator: who the ranks are, how to reach them, and the connectors made so far. */
#ifndef AC_CORE_COMM_H
#define AC_CORE_COMM_H

#include "collectives/coll.h"
#include "core/bootstrap.h"
#include "transport/transport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define AC_COMM_MAGIC 0x636f6d6d41434331ull /* checked by every entry point */
#define AC_MAX_CHANNELS 16
#define AC_MAX_USER_OPS 64

/* Large chunks (large_slot_bytes): this many usual slots' worth. */
#define AC_LARGE_CHUNK_SLOTS 4

/* Connector sets: ring channels first, then the channels of point-to-point traffic, which never
 * share a connector with collectives (NCCL matches send/recv independently of collectives), then
 * the exchanges of collectives built from transfers (all-to-all, gather, scatter, direct
 * broadcast and allgather). Single-copy transfers send a descriptor on the data set and get the
 * reader's acknowledgement back on the matching ack set, which carries nothing else, so that
 * acknowledgements and descriptors can never be taken for one another. */
#define AC_P2P_CONN_BASE AC_MAX_CHANNELS
#define AC_P2P_ACK_SET (AC_P2P_CONN_BASE + 1)
#define AC_XCHG_CONN_SET (AC_P2P_CONN_BASE + 2)
#define AC_XCHG_ACK_SET (AC_P2P_CONN_BASE + 3)
#define AC_NCONN_SETS (2 * AC_MAX_CHANNELS)

static inline bool ac_set_is_ack(int set)
{
    return set == AC_P2P_ACK_SET || set == AC_XCHG_ACK_SET;
}

/* Connector sets of collectives only (channels, and the exchanges of all-to-all, gather,
 * scatter and direct reads): every rank plans them from the same calls in the same order, unlike
 * sends and receives. */
static inline bool ac_set_is_coll(int set)
{
    return set < AC_P2P_CONN_BASE || set == AC_XCHG_CONN_SET || set == AC_XCHG_ACK_SET;
}

/* Which collective a rank is running: its number among the communicator's collectives (1, 2, ...;
 * 0: none yet), and what it is, for messages. */
struct ac_coll_stamp {
    uint64_t seq;
    uint64_t count;
    uint32_t coll; /* enum ac_coll */
    int32_t type;  /* ncclDataType_t */
};

struct ac_user_op {
    bool is_used;
    ncclDataType_t type;
    ncclScalarResidence_t residence;
    uint64_t scalar;          /* host-immediate: the value; otherwise read at each call */
    const void *scalar_ptr;
};

/* A buffer registered with ncclCommRegister or ncclCommWindowRegister (src/core/misc.c). */
struct ac_region_cache;
struct ac_devreg;
struct ac_board;
struct ac_board_direct;
struct ac_reg_range {
    const char *buff;
    size_t size;
    struct ac_reg_range *next;
};

struct ncclComm {
    uint64_t magic;
    int rank;
    int nranks;
    uint64_t comm_hash;                 /* from the unique id: names shared resources */
    struct ac_bootstrap *bs;
    struct ac_peer_info *peers;         /* nranks entries */
    struct ac_layout layout;            /* nodes, rings, trees */
    int nchannels;                      /* ring channels used by collectives */
    size_t slot_bytes;                  /* per slot of ring connectors: the usual chunk */
    /* Slots of ring connectors: AC_LARGE_CHUNK_SLOTS x slot_bytes where every rank's connectors
     * would be of transports that want large chunks and every rank shares its core, for
     * allreduces from large_chunk_min_bytes (src/core/plan.c, rank 0's
     * ANYCCL_LARGE_CHUNK_MIN_BYTES); otherwise slot_bytes (src/core/init.c, agree_on_cma). */
    size_t large_slot_bytes;
    size_t large_chunk_min_bytes;
    size_t p2p_slot_bytes;
    int nslots;
    /* [set * nranks + peer]; NULL until first needed. */
    struct ac_conn **send_conns;
    struct ac_conn **recv_conns;

    bool is_oversubscribed;             /* more ranks on this node than usable cores */
    bool is_cma_all;                    /* one host, and every rank can read every other */
    bool is_cma_enabled;                /* every rank set ANYCCL_CMA_ENABLE */
    size_t cma_min_bytes;               /* transfers at least this large are single-copy */
    bool is_blocking;
    _Atomic int async_error;            /* ncclResult_t: ncclInProgress while init runs */
    volatile int abort_flag;            /* set by ncclCommAbort / Revoke: waits end */
    _Atomic int nactive;                /* calls running on this communicator right now */
    _Atomic int ras_dead_rank;          /* set by RAS: a peer known dead, -1 when none */
    struct ac_ras_comm *ras;            /* the RAS module's record of this communicator */
    bool is_revoked;
    bool is_finalized;
    pthread_t init_thread;
    bool has_init_thread;

    struct ac_reg_range *regs;          /* registered buffers, under reg_lock */
    pthread_mutex_t reg_lock;
    struct ac_region_cache *region_cache; /* peers' shared regions mapped here (exec.c) */
    struct ac_devreg *devreg;           /* registered GPU buffers, peers' imports (devreg.c) */
    struct ac_gin *gin;                 /* GPU-initiated engine (src/gin/), NULL until used */
    struct ac_stream_q *stream_q;       /* calls on streams (src/core/stream.c), NULL until one */
    struct ac_devpath *devpath;         /* the P2P device path (src/core/devpath.c), NULL until a
                                         * collective on GPU buffers */
    struct ac_plan_memo *plan_memo;     /* the last lone call's plan (src/core/plan.c) */
    struct ac_board *board;             /* small allreduces of one host (board.h), or NULL */
    struct ac_board_direct *board_direct; /* calls on registered buffers (board_direct.c) */

    struct ac_user_op user_ops[AC_MAX_USER_OPS];
    uint64_t nops_issued;               /* collectives and p2p calls, for logs */
    uint64_t ncolls_issued;             /* collectives: every rank issues them in one order */
    struct ac_coll_stamp running_coll;  /* the latest collective started (src/core/exec.c) */
    char name[64];                      /* config.commName or "" */
};

/* src/core/misc.c: whether [buff, buff + bytes) lies in one buffer registered on comm. */
bool ac_comm_is_registered(struct ncclComm *comm, const void *buff, size_t bytes);

/* Whether rank peer's buffers can be read by this rank, and this rank's by it, with cross-memory
 * attach (src/transport/cma/): same host, both probed their host's peers successfully. */
bool ac_comm_pair_cma(const struct ncclComm *comm, int peer);
/* Whether this rank may map peer's shared memory (same host, each could read the other at init,
 * whatever ANYCCL_CMA_ENABLE says). */
bool ac_comm_pair_can_map(const struct ncclComm *comm, int peer);

/* Checks a handle from the user; names `what` in the message. */
ncclResult_t ac_comm_check(const struct ncclComm *comm, const char *what);
/* Also refuses a communicator that is still initializing, failed, or was revoked. */
ncclResult_t ac_comm_check_usable(struct ncclComm *comm, const char *what);

/* Connects the communicator's ranks (bootstrap, peer info, sizes). Used by every way of
 * creating a communicator: init, init-all, split, shrink, scalable init. */
ncclResult_t ac_comm_init(struct ncclComm *comm, const ncclUniqueId *id, int rank, int nranks,
                          const ncclConfig_t *config);
struct ncclComm *ac_comm_alloc(void);
void ac_comm_free(struct ncclComm *comm);
/* Creates a communicator the way ncclCommInitRankConfig does (blocking or not). */
ncclResult_t ac_comm_create(ncclComm_t *out, int nranks, const ncclUniqueId *id, int rank,
                            const ncclConfig_t *config);

/* src/core/connect.c: makes sure the connectors in need[] exist, running the set-up with the
 * peers (which do the same for their side). need[i] = set * nranks + peer. The connectors of
 * collectives carry comm->running_coll to the peer. */
struct ac_conn_need {
    int set;
    int peer;
    bool is_send;
};
ncclResult_t ac_connect(struct ncclComm *comm, const struct ac_conn_need *need, int nneed);
/* For a rank past its connection set-up: a connector description that a peer sent for a
 * collective this rank has started or passed, still untaken, shows that the two called different
 * operations there (or the same with counts or settings that planned them differently), which
 * would otherwise each wait for the other until the timeout. ncclInvalidUsage naming both. */
ncclResult_t ac_connect_check_stray(struct ncclComm *comm);
void ac_disconnect_all(struct ncclComm *comm);

static inline struct ac_conn **ac_conn_slot(struct ncclComm *comm, int set, int peer, bool is_send)
{
    return &(is_send ? comm->send_conns : comm->recv_conns)[(size_t)set * comm->nranks + peer];
}

/* src/core/redop.c: the kernels' description of (op, type) on this communicator. */
ncclResult_t ac_redop_resolve(struct ncclComm *comm, ncclRedOp_t op, ncclDataType_t type,
                              struct ac_redop *out);

#endif
