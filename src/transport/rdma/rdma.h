/* The RDMA protocol engine (rdma_engine.c) and the small provider interface it sits on. The engine
 * is written once; a provider (ib/: verbs, ofi/: libfabric) only registers memory, creates and
 * joins endpoints, posts writes (with or without immediate data) and receives for immediate data,
 * and polls completions. Each provider becomes one transport of the registry (ac_ib_transport,
 * ac_ofi_transport) through AC_RDMA_TRANSPORT below.
 *
 * Protocol, for one connector (sender S -> receiver R, nslots slots of slot_bytes):
 *   - R's slot FIFO is registered for remote writes; S stages each slot in its own registered copy
 *     and RDMA-writes it into the same slot index at R, with immediate data (verbs) / remote CQ
 *     data (libfabric) = slot index (6 bits) | lap parity (1 bit) | payload bytes (25 bits);
 *   - slots are spread round-robin over nqps queue pairs / endpoints; R restores the order from
 *     the slot index (a slot is handed to the executor only when every earlier one has arrived);
 *   - R returns credits: after each release it RDMA-writes its released count (8 bytes) into a
 *     word S registered, always on queue pair 0 so the writes land in order; S reuses a slot when
 *     the credit says R released it and the local completion of its previous write has come;
 *   - set-up: R's blob carries its slot window, endpoint address and a TCP listener; S joins and
 *     sends its own endpoint address and credit window over that TCP connection, R joins and sends
 *     one "ready" byte; S writes nothing before it. The TCP connection stays open as a liveness
 *     channel: its EOF (the peer process is gone) turns waits on that peer into errors.
 * Nothing blocks on the data path: completions are polled in progress(). */
#ifndef AC_TRANSPORT_RDMA_H
#define AC_TRANSPORT_RDMA_H

#include "transport/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AC_RDMA_ADDR_MAX 176 /* bytes of a provider's endpoint address (all its queue pairs) */
#define AC_RDMA_MAX_QPS 8
#define AC_RDMA_ERR_MAX 160

struct ac_rdma_ep; /* the provider's: its queue pairs / endpoints and completion queue */

/* A registered buffer. rbase is what the peer adds offsets to (the virtual address, or 0 for
 * providers that address registrations from 0); key is the remote key. */
struct ac_rdma_mr {
    void *handle;
    void *desc; /* local descriptor passed with writes (libfabric FI_MR_LOCAL), or NULL */
    uint64_t rbase;
    uint64_t key;
    bool is_direct; /* registered outside the provider's cache (a dma-buf): deregistered alone */
};

enum ac_rdma_wc_kind {
    AC_RDMA_WC_WRITE, /* a write this side posted has completed locally */
    AC_RDMA_WC_IMM,   /* a peer's write with immediate data has landed here */
};

struct ac_rdma_wc {
    enum ac_rdma_wc_kind kind;
    uint64_t ctx;  /* WRITE: the ctx given to write() */
    uint32_t imm;  /* IMM: the immediate data */
    int qp;        /* IMM: queue pair it arrived on, -1 when the provider cannot tell */
    bool is_error; /* err holds the provider's own words */
    char err[AC_RDMA_ERR_MAX];
};

struct ac_rdma_provider {
    const char *name; /* "ib", "ofi" */
    /* Loads the library and finds a device once per process; false (why filled) when unusable.
     * is_forced: the user asked for this network (ANYCCL_NET), so software fabrics may be used. */
    bool (*is_usable)(bool is_forced, char *why, size_t why_len);
    /* One line for logs: the device / provider in use. */
    const char *(*describe)(void);
    /* Creates a local endpoint with nqps queue pairs, each able to hold depth posted writes;
     * writes its address for the peer into addr_out (at most AC_RDMA_ADDR_MAX bytes). */
    ncclResult_t (*ep_open)(int nqps, int depth, struct ac_rdma_ep **ep_out, void *addr_out,
                            size_t *addr_len_out);
    /* Joins the endpoint to the peer's (queue pair i to the peer's queue pair i). */
    ncclResult_t (*ep_connect)(struct ac_rdma_ep *ep, const void *peer_addr, size_t len);
    ncclResult_t (*reg)(struct ac_rdma_ep *ep, void *buf, size_t len, struct ac_rdma_mr *mr_out);
    void (*dereg)(struct ac_rdma_ep *ep, struct ac_rdma_mr *mr); /* ep: NULL once closed */
    /* Posts a write of len bytes from local (inside mr) to raddr/rkey on queue pair qp, with
     * immediate data when has_imm. *is_busy_out: the queue is full, try again after a poll. */
    ncclResult_t (*write)(struct ac_rdma_ep *ep, int qp, const void *local, size_t len,
                          const struct ac_rdma_mr *mr, uint64_t raddr, uint64_t rkey, bool has_imm,
                          uint32_t imm, uint64_t ctx, bool *is_busy_out);
    /* Posts n receives that incoming immediate data consume (no-op where none are needed). */
    ncclResult_t (*post_recv)(struct ac_rdma_ep *ep, int qp, int n);
    /* Up to max completions into wc; *n_out of them. Errors of single operations come back as
     * wc[i].is_error, not as a failed call. */
    ncclResult_t (*poll)(struct ac_rdma_ep *ep, struct ac_rdma_wc *wc, int max, int *n_out);
    void (*ep_close)(struct ac_rdma_ep *ep);
};

/* A transport of the registry bound to one provider: the engine finds its provider from conn->tp.
 */
struct ac_rdma_transport {
    struct ac_transport tp; /* first: conn->tp points here */
    const struct ac_rdma_provider *pv;
    int (*nqps)(void); /* queue pairs per connection, from the configuration */
};

/* The two RDMA transports of the registry (ib/ib_provider.c, ofi/ofi_provider.c). */
extern const struct ac_rdma_transport ac_ib_transport;
extern const struct ac_rdma_transport ac_ofi_transport;

/* ib/ib_provider.c: the RDMA device and port of this rank's rail NIC, chosen by the topology
 * (src/core/netdev.c): the verbs provider uses it, switching to it if it opened another device
 * and no endpoint exists yet. */
void ac_ib_prefer_device(const char *name, int port);

bool ac_rdma_can_connect(const struct ac_rdma_transport *rt, const struct ac_peer_info *self,
                         const struct ac_peer_info *peer);
ncclResult_t ac_rdma_recv_setup(struct ac_conn *conn, struct ac_conn_blob *blob_out);
ncclResult_t ac_rdma_send_connect(struct ac_conn *conn, const struct ac_conn_blob *peer_blob);
ncclResult_t ac_rdma_recv_connect(struct ac_conn *conn);
ncclResult_t ac_rdma_send_slot(struct ac_conn *conn, void **slot_out);
ncclResult_t ac_rdma_send_post(struct ac_conn *conn, size_t bytes);
ncclResult_t ac_rdma_recv_slot(struct ac_conn *conn, const void **slot_out, size_t *bytes_out);
ncclResult_t ac_rdma_recv_release(struct ac_conn *conn);
ncclResult_t ac_rdma_progress(struct ac_conn *conn);
bool ac_rdma_is_flushing(struct ac_conn *conn);
void ac_rdma_close(struct ac_conn *conn);

/* Immediate data of a slot: index in the low 6 bits, then the parity of the slot's lap (seq /
 * nslots: a re-sent write of a slot the receiver already released is recognised and dropped),
 * then the payload bytes. */
#define AC_RDMA_IMM_SLOT_BITS 6
#define AC_RDMA_IMM_SIZE_SHIFT (AC_RDMA_IMM_SLOT_BITS + 1)
#define AC_RDMA_MAX_SLOT_BYTES ((size_t)1 << (32 - AC_RDMA_IMM_SIZE_SHIFT))
static inline uint32_t ac_rdma_imm_encode(unsigned slot, unsigned lap, size_t bytes)
{
    return (uint32_t)(bytes << AC_RDMA_IMM_SIZE_SHIFT) | ((lap & 1u) << AC_RDMA_IMM_SLOT_BITS) |
           (uint32_t)slot;
}
static inline unsigned ac_rdma_imm_slot(uint32_t imm)
{
    return imm & ((1u << AC_RDMA_IMM_SLOT_BITS) - 1);
}
static inline unsigned ac_rdma_imm_lap(uint32_t imm)
{
    return (imm >> AC_RDMA_IMM_SLOT_BITS) & 1u;
}
static inline size_t ac_rdma_imm_bytes(uint32_t imm)
{
    return imm >> AC_RDMA_IMM_SIZE_SHIFT;
}

#define AC_RDMA_TRANSPORT(tp_name, can_connect_fn, provider, nqps_fn)                              \
    {                                                                                              \
        .tp = {.name = (tp_name),                                                                  \
               .can_connect = (can_connect_fn),                                                    \
               .recv_setup = ac_rdma_recv_setup,                                                   \
               .send_connect = ac_rdma_send_connect,                                               \
               .recv_connect = ac_rdma_recv_connect,                                               \
               .send_slot = ac_rdma_send_slot,                                                     \
               .send_post = ac_rdma_send_post,                                                     \
               .recv_slot = ac_rdma_recv_slot,                                                     \
               .recv_release = ac_rdma_recv_release,                                               \
               .progress = ac_rdma_progress,                                                       \
               .is_flushing = ac_rdma_is_flushing,                                                 \
               .close = ac_rdma_close},                                                            \
        .pv = &(provider), .nqps = (nqps_fn)                                                       \
    }

#endif
