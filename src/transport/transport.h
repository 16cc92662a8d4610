/* The connector interface. A connector (struct ac_conn) is one direction between two ranks on one
 * channel: a FIFO of nslots slots of slot_bytes each, filled by the sender and drained, in order,
 * by the receiver. Algorithms see only this file; each transport is one folder behind it.
 *
 * Set-up, for a pair where rank S sends to rank R (run by src/core/connect.c):
 *   R: recv_setup(conn, &blob)        creates what the sender writes into, describes it in blob
 *   R -> S: blob (bootstrap message)
 *   S: send_connect(conn, &blob)      attaches to / connects to the receiver's side
 *   R: recv_connect(conn)             finishes (accepts the connection, waits for the attach)
 * recv_setup and send_connect never wait on the peer; recv_connect may, bounded by the timeout.
 *
 * Data path: nothing here blocks. A call that cannot proceed yet reports so through its output
 * (a NULL slot) and the caller polls again, calling progress between polls. Errors (peer gone,
 * connection reset) are returned as ncclRemoteError / ncclSystemError naming the peer. */
#ifndef AC_TRANSPORT_H
#define AC_TRANSPORT_H

#include "device/kernels/ll.h"
#include "transport/slot_store.h"
#include "nccl.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AC_HOSTNAME_MAX 64

/* What each rank tells the others at init (bootstrap allgather). */
struct ac_peer_info {
    int rank;
    int pid;
    uint64_t host_hash;              /* equal for ranks that share a machine (and /dev/shm) */
    uint64_t pid_ns_hash;            /* equal when pids are comparable (same pid namespace) */
    char hostname[AC_HOSTNAME_MAX];
    struct sockaddr_storage addr;    /* an address of this rank that peers can reach (port 0) */
    uint64_t cma_addr, cma_value;    /* a word peers read to test cross-memory attach */
    bool can_cma;                    /* read every peer of its host (filled after the probe) */
    uint8_t rdma_caps;               /* AC_RDMA_CAP_*: the RDMA transports this rank can run */
    uint8_t gpu_kind;                /* enum ac_mem_kind of its first usable GPU backend, or
                                      * AC_MEM_HOST (0) for a rank without one */
};

/* ac_peer_info.rdma_caps: which RDMA transports a rank can run, advertised at init so that the
 * receiver of a pair never picks one its sender cannot run. 0 (nothing advertised: a peer info
 * not filled by init) means "unknown": the receiver decides from its own side alone. */
#define AC_RDMA_CAP_KNOWN 0x80u
#define AC_RDMA_CAP_IB 0x01u
#define AC_RDMA_CAP_OFI 0x02u

/* Same machine and same pid namespace: shared memory works and pids can be looked at. */
static inline bool ac_peer_shares_host(const struct ac_peer_info *a, const struct ac_peer_info *b)
{
    return a->host_hash == b->host_hash && a->pid_ns_hash == b->pid_ns_hash;
}

/* Peer p, seen from me, is a process of this host that has exited (its pid is gone). A peer on
 * another host is never known gone here: the network transports report a closed connection. */
static inline bool ac_peer_has_exited(const struct ac_peer_info *me, const struct ac_peer_info *p)
{
    return ac_peer_shares_host(me, p) && p->pid != me->pid && kill(p->pid, 0) != 0 &&
           errno == ESRCH;
}

#define AC_CONN_BLOB_BYTES 256
/* Opaque to everyone but the transport that wrote it. */
struct ac_conn_blob {
    char bytes[AC_CONN_BLOB_BYTES];
};

struct ac_transport;

struct ac_conn {
    const struct ac_transport *tp;
    bool is_send;
    int peer;                        /* rank of the other side in the communicator */
    int channel;
    int nslots;
    size_t slot_bytes;               /* payload bytes per slot */
    const struct ac_peer_info *self_info;
    const struct ac_peer_info *peer_info;
    uint64_t comm_hash;              /* unique per communicator: names shared resources */
    void *priv;                      /* the transport's state */
    /* Scheduling state owned by the executor (src/core/exec.c): tickets serialize the operations
     * that share this connector in the order they were issued, which is the same on both sides. */
    uint64_t next_ticket;
    uint64_t serving_ticket;
    /* A description of the operation that sends or receives a slot (the executor sets tx_tag
     * for the first slot of each operation; 0: none). Transports that can carry it beside the
     * slot's size do (shared memory), so the receiver can tell that the ranks called different
     * operations; the others leave rx_tag 0, which means "not known". */
    uint32_t tx_tag;
    uint32_t rx_tag;
    /* The executor's, for a sender on a transport with is_slot_peer_cached. */
    struct ac_slot_stores stores;
    /* The protocol of the operation now using the connector (src/device/kernels/ll.h); both
     * ends derive it the same way, and the executor sets it before each data-path call.
     * Transports whose receiver learns of each slot from the transport itself (sockets, RDMA)
     * carry every protocol as Simple. */
    enum ac_proto proto;
};

struct ac_transport {
    const char *name;
    /* The receiver reads slots in place with its own core (shared memory): the lines of a slot
     * it consumed lately are still in its cache, and a sender that rewrites them with plain
     * stores must take each back from there. The executor writes repeated mid-size chunks
     * with non-temporal stores (src/core/exec.c, is_slot_streamed), and chooses by measurement
     * for larger ones (transport/slot_store.h). */
    bool is_slot_peer_cached;
    /* Point-to-point connectors get the collectives' slot size, not the smaller one that keeps
     * shared memory small: the slots are private memory that payloads sent by reference and
     * landed in place never touch, and each message costs system calls (sockets). */
    bool has_full_p2p_slots;
    /* Large allreduces move in chunks of several slots' worth where every connector of the
     * communicator is of a transport with this flag (sockets) and ranks share cores: each
     * message costs system calls and a wake-up. The communicator's collective connectors then
     * get slots that large (src/core/init.c, agree_on_cma; src/core/plan.c). */
    bool wants_large_chunks;
    /* Whether this transport can join self and peer, given the configuration (no I/O). */
    bool (*can_connect)(const struct ac_peer_info *self, const struct ac_peer_info *peer);
    ncclResult_t (*recv_setup)(struct ac_conn *conn, struct ac_conn_blob *blob_out);
    ncclResult_t (*send_connect)(struct ac_conn *conn, const struct ac_conn_blob *peer_blob);
    ncclResult_t (*recv_connect)(struct ac_conn *conn);

    /* Sender: a free slot to fill (*slot_out = NULL when all are in flight). A peek: calling it
     * again before send_post returns the same slot. send_post hands that slot to the receiver with
     * its payload size. */
    ncclResult_t (*send_slot)(struct ac_conn *conn, void **slot_out);
    ncclResult_t (*send_post)(struct ac_conn *conn, size_t bytes);
    /* As send_post, for the slot send_slot returned, but the payload is `bytes` at data instead
     * of in the slot: data must stay unchanged until is_flushing says the transport has
     * passed it on (the executor never returns before then). Saves the copy into the slot
     * where the data already lies in the user's buffer. NULL: not supported. */
    ncclResult_t (*send_post_ref)(struct ac_conn *conn, const void *data, size_t bytes);
    /* Receiver: the oldest delivered slot (*slot_out = NULL when none yet). A peek: calling it
     * again before recv_release returns the same slot. recv_release gives it back to the sender
     * once its contents have been consumed. */
    ncclResult_t (*recv_slot)(struct ac_conn *conn, const void **slot_out, size_t *bytes_out);
    ncclResult_t (*recv_release)(struct ac_conn *conn);
    /* Receiver, a hint: the slot recv_slot will return next (not there yet) is wanted at dst,
     * which has room for `bytes`. A transport that can still do so lands its payload there
     * (recv_slot then returns dst) instead of in the slot; otherwise nothing changes. dst must
     * not be read or written by anyone else until recv_slot returns it. NULL: not supported. */
    void (*recv_direct)(struct ac_conn *conn, void *dst, size_t bytes);
    /* Receiver, a hint: the message recv_slot will return next (not there yet) should carry
     * `bytes` of payload, as both ends compute the same slot sizes. A transport that frames each
     * payload with a header can then read both at once. A different size from the sender is
     * still delivered as sent, for the executor to report (after it, the connector may fail: the
     * ranks called different operations). NULL: not supported. */
    void (*recv_expect)(struct ac_conn *conn, size_t bytes);
    /* Moves data for transports that need the CPU to do so (sockets); NULL when nothing to do. */
    ncclResult_t (*progress)(struct ac_conn *conn);
    /* Whether the transport is still sending data already posted (sockets): close waits for it. */
    bool (*is_flushing)(struct ac_conn *conn);
    void (*close)(struct ac_conn *conn);
};

extern const struct ac_transport ac_shm_transport;
extern const struct ac_transport ac_socket_transport;

/* src/transport/registry.c: every transport, in order of preference (shm before socket). */
extern const struct ac_transport *const ac_transports_all[];
extern const int ac_transports_count;

/* src/transport/registry.c: the first transport, in order of preference, that can join the two
 * (logged), and the same without the log. */
const struct ac_transport *ac_transport_would_pick(const struct ac_peer_info *self,
                                                   const struct ac_peer_info *peer);
const struct ac_transport *ac_transport_pick(const struct ac_peer_info *self,
                                             const struct ac_peer_info *peer);
/* src/transport/registry.c: AC_RDMA_CAP_* of this process under ANYCCL_NET (probes the providers:
 * cheap unless one is forced or RDMA hardware is present, which the first connection would pay
 * anyway). */
uint8_t ac_transport_rdma_caps(void);
/* src/transport/registry.c: the rank's rail NIC is this RDMA device and port (the NIC choice of
 * src/core/netdev.c): the RDMA transports use it, as the socket transport uses its address. */
void ac_transport_rdma_prefer(const char *rdma_dev, int port);

#endif
