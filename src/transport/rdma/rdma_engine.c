/* The RDMA protocol engine: one connector implementation for every RDMA provider (see rdma.h for
 * the protocol). Set-up here, then the data path: sender (slots, writes, credits), receiver
 * (arrivals in slot order, releases, credit writes), liveness through the set-up TCP socket. */
#include "transport/rdma/rdma.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define BLOB_MAGIC 0x41435242u  /* "ACRB" */
#define HELLO_MAGIC 0x41435248u /* "ACRH" */
#define READY_BYTE 0x52
#define HELLO_READ_NS (5ull * 1000000000ull)
#define PEER_CLOSED_GRACE_NS (1000000000ull) /* data may still land after the peer's EOF */
#define CREDIT_WRITES_MAX 8                  /* credit writes in flight at once */
#define POLL_BATCH 32
#define CTX_CREDIT (UINT64_C(1) << 63)
#define MAX_RESENDS 3 /* a write that failed while the peer is alive is posted again */

/* The receiver's description of its side, sent through the bootstrap (fits AC_CONN_BLOB_BYTES). */
struct rdma_blob {
    uint32_t magic;
    uint8_t nqps;
    uint8_t family; /* of the TCP listener: 4 or 6 */
    uint16_t port;
    uint64_t nonce;
    uint8_t ip[16];
    uint64_t slots_base, slots_key;
    uint32_t addr_len;
    uint32_t pad;
    uint8_t addr[AC_RDMA_ADDR_MAX];
};
_Static_assert(sizeof(struct rdma_blob) <= AC_CONN_BLOB_BYTES, "rdma blob too large");

/* The sender's answer over TCP. */
struct rdma_hello {
    uint32_t magic;
    int32_t sender_rank;
    int32_t channel;
    uint32_t addr_len;
    uint64_t comm_hash;
    uint64_t nonce;
    uint64_t credit_base, credit_key;
    uint8_t addr[AC_RDMA_ADDR_MAX];
};

struct rdma_conn {
    const struct ac_rdma_provider *pv;
    struct ac_rdma_ep *ep;
    int nqps;
    struct ac_socket listener; /* receiver, until recv_connect */
    struct ac_socket sock;     /* set-up, then liveness */
    uint64_t nonce;
    char *slots; /* nslots * slot_bytes, registered */
    struct ac_rdma_mr slots_mr;
    uint64_t *word; /* sender: the credit the receiver writes; receiver: the credit it sends */
    struct ac_rdma_mr word_mr;
    uint64_t peer_base, peer_key; /* sender: receiver's slots; receiver: sender's credit word */
    uint32_t *sizes;              /* receiver: bytes of each arrived slot */
    bool *is_busy;                /* sender: write in flight; receiver: slot arrived */
    uint32_t *imms;               /* sender: immediate data of each slot's write in flight */
    uint8_t *nresends;            /* sender: times that write was posted again after an error */
    bool *is_resend_due;          /* sender: to be posted again */
    uint64_t head;                /* sender: posted by the executor; receiver: next expected */
    uint64_t issued;              /* sender: handed to the provider */
    uint64_t tail;                /* receiver: released */
    uint64_t credit_sent;         /* receiver: the last released count written to the sender */
    int ninflight;                /* sender: slot writes; receiver: credit writes */
    bool is_ready;                /* sender: the receiver's ready byte has come */
    bool is_wanted;               /* the executor's last poll for a slot found none */
    bool has_mrs;
    uint64_t closed_ns;              /* when the peer's EOF was seen; 0: not seen */
    char close_why[AC_RDMA_ERR_MAX]; /* receiver: the failed credit write that implied it */
};

static const struct ac_rdma_transport *rdma_tp(const struct ac_conn *conn)
{
    return (const struct ac_rdma_transport *)conn->tp;
}

/* "rank R (host H)" */
static const char *peer_str(const struct ac_conn *conn, char *buf, size_t len)
{
    snprintf(buf, len, "rank %d (host %s)", conn->peer,
             conn->peer_info != NULL ? conn->peer_info->hostname : "?");
    return buf;
}

static ncclResult_t wc_fail(struct ac_conn *conn, const struct ac_rdma_wc *wc)
{
    char peer[AC_HOSTNAME_MAX + 32];
    struct rdma_conn *rc = conn->priv;
    return AC_FAIL(rc->closed_ns ? ncclRemoteError : ncclSystemError,
                   "%s transport (%s): %s to %s failed on channel %d: %s%s", conn->tp->name,
                   rc->pv->describe(), wc->kind == AC_RDMA_WC_WRITE ? "RDMA write" : "receive",
                   peer_str(conn, peer, sizeof(peer)), conn->channel, wc->err,
                   rc->closed_ns ? " (the peer closed its connection: it probably exited)" : "");
}

static ncclResult_t closed_fail(struct ac_conn *conn)
{
    char peer[AC_HOSTNAME_MAX + 32];
    const struct rdma_conn *rc = conn->priv;
    return AC_FAIL(ncclRemoteError,
                   "%s transport: connection to %s closed by peer (channel %d) while %s: the peer "
                   "process probably exited or crashed%s%s%s",
                   conn->tp->name, peer_str(conn, peer, sizeof(peer)), conn->channel,
                   conn->is_send ? "sending to it" : "waiting for its data",
                   rc->close_why[0] ? " (" : "", rc->close_why, rc->close_why[0] ? ")" : "");
}

/* ------------------------------------------------------------------------------------------ */
/* set-up                                                                                       */

bool ac_rdma_can_connect(const struct ac_rdma_transport *rt, const struct ac_peer_info *self,
                         const struct ac_peer_info *peer)
{
    const char *net = ac_config_get()->net;
    bool is_forced = net != NULL && strcmp(net, rt->tp.name) == 0;
    char why[256] = "";
    bool is_usable = rt->pv->is_usable(is_forced, why, sizeof(why));
    static int nwarned; /* once per process: every connector asks */
    if (!is_usable && is_forced && __atomic_fetch_add(&nwarned, 1, __ATOMIC_RELAXED) == 0)
        AC_WARN("ANYCCL_NET=%s, but the %s transport cannot be used: %s", net, rt->tp.name, why);
    /* The peer advertised what it can run (init): a transport it cannot is not chosen, instead of
     * failing in its send_connect. */
    uint8_t bit = rt == &ac_ib_transport ? AC_RDMA_CAP_IB : AC_RDMA_CAP_OFI;
    if (is_usable && peer != NULL && (peer->rdma_caps & AC_RDMA_CAP_KNOWN) &&
        !(peer->rdma_caps & bit)) {
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "%s: rank %d (host %s) cannot run it (advertised at init)", rt->tp.name, peer->rank,
                peer->hostname);
        if (is_forced && __atomic_fetch_add(&nwarned, 1, __ATOMIC_RELAXED) == 0)
            AC_WARN(
                "ANYCCL_NET=%s, but rank %d (host %s) cannot use the %s transport (see its log)",
                net, peer->rank, peer->hostname, rt->tp.name);
        return false;
    }
    return is_usable;
}

static ncclResult_t conn_alloc(struct ac_conn *conn, int nqps)
{
    const char *name = conn->tp->name;
    if (conn->nslots <= 0 || conn->nslots > (1 << AC_RDMA_IMM_SLOT_BITS) || conn->slot_bytes == 0)
        return AC_FAIL(ncclInvalidUsage,
                       "%s transport: %d slots per connection (ANYCCL_NSLOTS) "
                       "outside 1..%d",
                       name, conn->nslots, 1 << AC_RDMA_IMM_SLOT_BITS);
    if (conn->slot_bytes >= AC_RDMA_MAX_SLOT_BYTES)
        return AC_FAIL(ncclInvalidUsage,
                       "%s transport: slots of %zu bytes exceed the %zu the "
                       "immediate data can describe: lower NCCL_BUFFSIZE or raise ANYCCL_NSLOTS",
                       name, conn->slot_bytes, AC_RDMA_MAX_SLOT_BYTES - 1);
    /* The receiver chose the transport: this side may not have opened the provider yet. */
    char why[256] = "";
    if (!rdma_tp(conn)->pv->is_usable(true, why, sizeof(why)))
        return AC_FAIL(ncclSystemError,
                       "%s transport: rank %d chose it for channel %d, but this "
                       "rank cannot use it: %s",
                       name, conn->peer, conn->channel, why);
    struct rdma_conn *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return AC_FAIL(ncclSystemError, "%s transport: out of memory", name);
    conn->priv = rc;
    rc->pv = rdma_tp(conn)->pv;
    rc->nqps = nqps;
    ac_socket_init(&rc->listener);
    ac_socket_init(&rc->sock);
    size_t bytes = (size_t)conn->nslots * conn->slot_bytes;
    if (posix_memalign((void **)&rc->slots, 4096, bytes) != 0) {
        rc->slots = NULL;
        return AC_FAIL(ncclSystemError,
                       "%s transport: out of memory for %d slots of %zu bytes "
                       "(NCCL_BUFFSIZE, ANYCCL_NSLOTS)",
                       name, conn->nslots, conn->slot_bytes);
    }
    if (posix_memalign((void **)&rc->word, 4096, 4096) != 0) {
        rc->word = NULL;
        return AC_FAIL(ncclSystemError, "%s transport: out of memory", name);
    }
    memset(rc->word, 0, 4096);
    rc->sizes = calloc((size_t)conn->nslots, sizeof(*rc->sizes));
    rc->is_busy = calloc((size_t)conn->nslots, sizeof(*rc->is_busy));
    rc->imms = calloc((size_t)conn->nslots, sizeof(*rc->imms));
    rc->nresends = calloc((size_t)conn->nslots, sizeof(*rc->nresends));
    rc->is_resend_due = calloc((size_t)conn->nslots, sizeof(*rc->is_resend_due));
    if (rc->sizes == NULL || rc->is_busy == NULL || rc->imms == NULL || rc->nresends == NULL ||
        rc->is_resend_due == NULL)
        return AC_FAIL(ncclSystemError, "%s transport: out of memory", name);
    return ncclSuccess;
}

/* Opens the provider endpoint (its address into addr_out) and registers slots and credit word. */
static ncclResult_t open_ep(struct ac_conn *conn, void *addr_out, size_t *addr_len_out)
{
    struct rdma_conn *rc = conn->priv;
    /* each queue pair may hold every slot's write plus the credit writes */
    AC_CHECK(rc->pv->ep_open(rc->nqps, conn->nslots + CREDIT_WRITES_MAX + 4, &rc->ep, addr_out,
                             addr_len_out));
    AC_CHECK(
        rc->pv->reg(rc->ep, rc->slots, (size_t)conn->nslots * conn->slot_bytes, &rc->slots_mr));
    if (rc->pv->reg(rc->ep, rc->word, 4096, &rc->word_mr) != ncclSuccess) {
        rc->pv->dereg(rc->ep, &rc->slots_mr);
        return ncclSystemError;
    }
    rc->has_mrs = true;
    return ncclSuccess;
}

void ac_rdma_close(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    if (rc == NULL)
        return;
    /* the queue pairs / endpoints first, then the memory they may still reference */
    if (rc->ep != NULL)
        rc->pv->ep_close(rc->ep);
    if (rc->has_mrs) {
        rc->pv->dereg(NULL, &rc->slots_mr);
        rc->pv->dereg(NULL, &rc->word_mr);
    }
    ac_socket_close(&rc->listener);
    ac_socket_close(&rc->sock);
    free(rc->slots);
    free(rc->word);
    free(rc->sizes);
    free(rc->is_busy);
    free(rc->imms);
    free(rc->nresends);
    free(rc->is_resend_due);
    free(rc);
    conn->priv = NULL;
}

static void addr_pack(const struct sockaddr_storage *ss, struct rdma_blob *b)
{
    memset(b->ip, 0, sizeof(b->ip));
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        b->family = 6;
        b->port = s6->sin6_port;
        memcpy(b->ip, &s6->sin6_addr, 16);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        b->family = 4;
        b->port = s4->sin_port;
        memcpy(b->ip, &s4->sin_addr, 4);
    }
}

static void addr_unpack(const struct rdma_blob *b, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (b->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = b->port;
        memcpy(&s6->sin6_addr, b->ip, 16);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = b->port;
        memcpy(&s4->sin_addr, b->ip, 4);
    }
}

ncclResult_t ac_rdma_recv_setup(struct ac_conn *conn, struct ac_conn_blob *blob_out)
{
    struct rdma_blob blob = {.magic = BLOB_MAGIC};
    struct sockaddr_storage local;
    int nqps = rdma_tp(conn)->nqps();
    size_t addr_len = 0;
    AC_CHECK(conn_alloc(conn, nqps));
    struct rdma_conn *rc = conn->priv;
    AC_CHECK(open_ep(conn, blob.addr, &addr_len));
    /* every slot may carry one immediate on any queue pair */
    for (int q = 0; q < nqps; q++)
        AC_CHECK(rc->pv->post_recv(rc->ep, q, conn->nslots));
    if (conn->self_info != NULL && ac_socket_addr_is_valid(&conn->self_info->addr))
        local = conn->self_info->addr;
    else
        AC_CHECK(ac_socket_pick_addr(NULL, &local, NULL, 0));
    ac_socket_addr_set_port(&local, 0);
    if (getrandom(&rc->nonce, sizeof(rc->nonce), 0) != (ssize_t)sizeof(rc->nonce))
        return AC_SYSFAIL("getrandom (rdma transport nonce)");
    AC_CHECK(ac_socket_listen(&rc->listener, &local));
    blob.nqps = (uint8_t)nqps;
    blob.nonce = rc->nonce;
    addr_pack(&rc->listener.addr, &blob);
    blob.slots_base = rc->slots_mr.rbase;
    blob.slots_key = rc->slots_mr.key;
    blob.addr_len = (uint32_t)addr_len;
    memset(blob_out, 0, sizeof(*blob_out));
    memcpy(blob_out->bytes, &blob, sizeof(blob));
    return ncclSuccess;
}

ncclResult_t ac_rdma_send_connect(struct ac_conn *conn, const struct ac_conn_blob *peer_blob)
{
    struct rdma_blob blob;
    struct rdma_hello hello = {.magic = HELLO_MAGIC};
    struct sockaddr_storage dst;
    size_t addr_len = 0;
    memcpy(&blob, peer_blob->bytes, sizeof(blob));
    if (blob.magic != BLOB_MAGIC || blob.nqps < 1 || blob.nqps > AC_RDMA_MAX_QPS ||
        blob.addr_len > AC_RDMA_ADDR_MAX)
        return AC_FAIL(ncclInternalError,
                       "%s transport: rank %d sent a connection blob that is "
                       "not this transport's (channel %d)",
                       conn->tp->name, conn->peer, conn->channel);
    AC_CHECK(conn_alloc(conn, blob.nqps));
    struct rdma_conn *rc = conn->priv;
    AC_CHECK(open_ep(conn, hello.addr, &addr_len));
    AC_CHECK(rc->pv->ep_connect(rc->ep, blob.addr, blob.addr_len));
    rc->peer_base = blob.slots_base;
    rc->peer_key = blob.slots_key;
    hello.sender_rank = conn->self_info ? conn->self_info->rank : -1;
    hello.channel = conn->channel;
    hello.addr_len = (uint32_t)addr_len;
    hello.comm_hash = conn->comm_hash;
    hello.nonce = blob.nonce;
    hello.credit_base = rc->word_mr.rbase;
    hello.credit_key = rc->word_mr.key;
    addr_unpack(&blob, &dst);
    uint64_t deadline = ac_now_ns() + (uint64_t)ac_config_setup_timeout_s() * 1000000000ull;
    AC_INFO(AC_SUB_NET, "%s: channel %d to rank %d over %s, %d queue pair(s)", conn->tp->name,
            conn->channel, conn->peer, rc->pv->describe(), rc->nqps);
    AC_CHECK(ac_socket_connect(&rc->sock, &dst, deadline, NULL));
    AC_CHECK(ac_socket_send_all(&rc->sock, &hello, sizeof(hello), deadline, NULL));
    return ac_socket_set_nonblocking(&rc->sock);
}

static const char *check_hello(const struct ac_conn *conn, const struct rdma_hello *h)
{
    const struct rdma_conn *rc = conn->priv;
    if (h->magic != HELLO_MAGIC || h->addr_len > AC_RDMA_ADDR_MAX)
        return "not an rdma transport hello";
    if (h->nonce != rc->nonce || h->comm_hash != conn->comm_hash)
        return "wrong nonce or communicator (a stale or foreign connection)";
    if (h->sender_rank != conn->peer || h->channel != conn->channel)
        return "unexpected sender rank or channel";
    return NULL;
}

ncclResult_t ac_rdma_recv_connect(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    int64_t t = ac_config_setup_timeout_s();
    uint64_t deadline = ac_now_ns() + (uint64_t)t * 1000000000ull;
    char peer[AC_HOSTNAME_MAX + 32];
    struct rdma_hello hello;
    for (;;) {
        struct ac_socket s;
        ac_socket_init(&s);
        AC_CHECK(ac_socket_accept(&rc->listener, &s, deadline, NULL));
        if (s.fd < 0)
            return AC_FAIL(ncclRemoteError,
                           "%s transport: %s did not connect to %s within %lld s "
                           "(channel %d): is it alive? see ANYCCL_INIT_TIMEOUT",
                           conn->tp->name, peer_str(conn, peer, sizeof(peer)),
                           rc->listener.addr_str, (long long)t, conn->channel);
        uint64_t d = ac_now_ns() + HELLO_READ_NS;
        int err = ac_socket_xfer_quiet(&s, &hello, sizeof(hello), false,
                                       d < deadline ? d : deadline, NULL);
        const char *why = err != 0 ? strerror(err) : check_hello(conn, &hello);
        if (why == NULL) {
            rc->sock = s;
            break;
        }
        AC_WARN("%s transport: dropping connection from %s while waiting for rank %d (channel "
                "%d): %s",
                conn->tp->name, s.addr_str, conn->peer, conn->channel, why);
        ac_socket_close(&s);
    }
    ac_socket_close(&rc->listener);
    AC_CHECK(rc->pv->ep_connect(rc->ep, hello.addr, hello.addr_len));
    rc->peer_base = hello.credit_base;
    rc->peer_key = hello.credit_key;
    uint8_t ready = READY_BYTE;
    AC_CHECK(ac_socket_send_all(&rc->sock, &ready, 1, deadline, NULL));
    AC_INFO(AC_SUB_NET, "%s: channel %d from rank %d over %s, %d queue pair(s)", conn->tp->name,
            conn->channel, conn->peer, rc->pv->describe(), rc->nqps);
    return ac_socket_set_nonblocking(&rc->sock);
}

/* ------------------------------------------------------------------------------------------ */
/* liveness                                                                                     */

/* Reads what the peer sent on the set-up socket: the ready byte (sender), else nothing until EOF.
 */
static ncclResult_t poll_socket(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    if (rc->closed_ns != 0 || rc->sock.fd < 0)
        return ncclSuccess;
    for (;;) {
        uint8_t b;
        size_t got = 0;
        int err = ac_socket_recv_some(&rc->sock, &b, 1, &got);
        if (err == AC_SOCKET_CLOSED) {
            rc->closed_ns = ac_now_ns();
            return ncclSuccess;
        }
        if (err != 0) {
            char peer[AC_HOSTNAME_MAX + 32];
            return AC_FAIL(ncclSystemError, "%s transport: connection to %s (channel %d): %s",
                           conn->tp->name, peer_str(conn, peer, sizeof(peer)), conn->channel,
                           strerror(err));
        }
        if (got == 0)
            return ncclSuccess;
        if (b != READY_BYTE || !conn->is_send || rc->is_ready)
            return AC_FAIL(ncclRemoteError,
                           "%s transport: rank %d sent an unexpected byte 0x%02x "
                           "on channel %d",
                           conn->tp->name, conn->peer, b, conn->channel);
        rc->is_ready = true;
    }
}

/* An error once the peer is gone for longer than the grace and this side still waits on it. */
static ncclResult_t check_closed(struct ac_conn *conn, bool is_waiting)
{
    struct rdma_conn *rc = conn->priv;
    if (rc->closed_ns == 0 || !is_waiting)
        return ncclSuccess;
    if (ac_now_ns() - rc->closed_ns < PEER_CLOSED_GRACE_NS)
        return ncclSuccess;
    return closed_fail(conn);
}

/* ------------------------------------------------------------------------------------------ */
/* completions                                                                                  */

static ncclResult_t on_imm(struct ac_conn *conn, const struct ac_rdma_wc *wc)
{
    struct rdma_conn *rc = conn->priv;
    unsigned slot = ac_rdma_imm_slot(wc->imm);
    size_t bytes = ac_rdma_imm_bytes(wc->imm);
    if (!conn->is_send && wc->qp >= 0)
        AC_CHECK(rc->pv->post_recv(rc->ep, wc->qp, 1));
    if (!conn->is_send && slot < (unsigned)conn->nslots) {
        /* the sequence number this slot holds next, and its lap: a write the sender posted
         * again after an error may land twice, or after the slot was released */
        uint64_t n = (uint64_t)conn->nslots;
        uint64_t seq = rc->tail + ((slot + n - rc->tail % n) % n);
        if (ac_rdma_imm_lap(wc->imm) != ((seq / n) & 1) || rc->is_busy[slot]) {
            AC_INFO(AC_SUB_NET, "%s: rank %d channel %d: dropped a repeated delivery of slot %u",
                    conn->tp->name, conn->peer, conn->channel, slot);
            return ncclSuccess;
        }
    }
    if (conn->is_send || slot >= (unsigned)conn->nslots || bytes > conn->slot_bytes)
        return AC_FAIL(
            ncclRemoteError,
            "%s transport: rank %d delivered slot %u of %zu bytes "
            "(channel %d, %d slots of %zu bytes%s): do both ranks use the same "
            "NCCL_BUFFSIZE and ANYCCL_NSLOTS?",
            conn->tp->name, conn->peer, slot, bytes, conn->channel, conn->nslots, conn->slot_bytes,
            slot < (unsigned)conn->nslots && rc->is_busy[slot] ? ", slot still full" : "");
    rc->sizes[slot] = (uint32_t)bytes;
    rc->is_busy[slot] = true;
    return ncclSuccess;
}

/* A slot write that failed while the peer is still alive (libfabric's tcp;ofi_rxm has been seen
 * to fail a write with ENOTCONN under load): posted again, up to MAX_RESENDS times. Safe because
 * the receiver drops a delivery it already has (same slot and lap) or already released. */
static bool should_resend(struct ac_conn *conn, const struct ac_rdma_wc *wc)
{
    struct rdma_conn *rc = conn->priv;
    if (!conn->is_send || wc->kind != AC_RDMA_WC_WRITE || (wc->ctx & CTX_CREDIT) ||
        wc->ctx >= (uint64_t)conn->nslots || rc->closed_ns != 0 ||
        rc->nresends[wc->ctx] >= MAX_RESENDS)
        return false;
    AC_INFO(AC_SUB_NET,
            "%s: write of slot %llu to rank %d (channel %d) failed (%s): posting it "
            "again",
            conn->tp->name, (unsigned long long)wc->ctx, conn->peer, conn->channel, wc->err);
    rc->nresends[wc->ctx]++;
    rc->is_resend_due[wc->ctx] = true;
    rc->ninflight--;
    return true;
}

static ncclResult_t poll_cq(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    struct ac_rdma_wc wc[POLL_BATCH];
    int n;
    do {
        AC_CHECK(rc->pv->poll(rc->ep, wc, POLL_BATCH, &n));
        for (int i = 0; i < n; i++) {
            if (wc[i].is_error) {
                AC_CHECK(poll_socket(conn)); /* is the peer gone? the message says so */
                /* A credit write to a sender that is leaving (its connection may fail before its
                 * EOF reaches us) is harmless while nothing more is expected from it: treat it as
                 * the peer's close, which fails later waits on it, keeping the provider's words. */
                if (!conn->is_send && wc[i].kind == AC_RDMA_WC_WRITE) {
                    rc->ninflight--;
                    if (rc->closed_ns == 0)
                        rc->closed_ns = ac_now_ns();
                    if (rc->close_why[0] == '\0')
                        snprintf(rc->close_why, sizeof(rc->close_why), "%s", wc[i].err);
                    continue;
                }
                if (should_resend(conn, &wc[i]))
                    continue;
                return wc_fail(conn, &wc[i]);
            }
            if (wc[i].kind == AC_RDMA_WC_IMM) {
                AC_CHECK(on_imm(conn, &wc[i]));
            } else if (conn->is_send && !(wc[i].ctx & CTX_CREDIT) &&
                       wc[i].ctx < (uint64_t)conn->nslots) {
                rc->is_busy[wc[i].ctx] = false;
                rc->nresends[wc[i].ctx] = 0;
                rc->ninflight--;
            } else if (!conn->is_send) {
                rc->ninflight--;
            }
        }
    } while (n == POLL_BATCH);
    return ncclSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* sender                                                                                       */

static uint64_t credit(const struct rdma_conn *rc)
{
    return __atomic_load_n(rc->word, __ATOMIC_ACQUIRE);
}

/* Posts the write of slot (its payload and immediate are already set); *is_busy_out when the
 * provider's queue is full. */
static ncclResult_t post_slot(struct ac_conn *conn, unsigned slot, int qp, bool *is_busy_out)
{
    struct rdma_conn *rc = conn->priv;
    size_t off = (size_t)slot * conn->slot_bytes, bytes = rc->sizes[slot];
    /* a zero-byte slot still writes one byte: some providers refuse empty writes */
    AC_CHECK(rc->pv->write(rc->ep, qp, rc->slots + off, bytes ? bytes : 1, &rc->slots_mr,
                           rc->peer_base + off, rc->peer_key, true, rc->imms[slot], slot,
                           is_busy_out));
    if (!*is_busy_out)
        rc->ninflight++;
    return ncclSuccess;
}

static ncclResult_t issue_writes(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    for (int s = 0; rc->is_ready && s < conn->nslots; s++) {
        bool is_busy = false;
        if (!rc->is_resend_due[s])
            continue;
        AC_CHECK(post_slot(conn, (unsigned)s, s % rc->nqps, &is_busy));
        if (is_busy)
            return ncclSuccess;
        rc->is_resend_due[s] = false;
    }
    while (rc->is_ready && rc->issued < rc->head) {
        unsigned slot = (unsigned)(rc->issued % (uint64_t)conn->nslots);
        int qp = (int)(rc->issued % (uint64_t)rc->nqps);
        unsigned lap = (unsigned)((rc->issued / (uint64_t)conn->nslots) & 1);
        bool is_busy = false;
        rc->imms[slot] = ac_rdma_imm_encode(slot, lap, rc->sizes[slot]);
        AC_CHECK(post_slot(conn, slot, qp, &is_busy));
        if (is_busy)
            return ncclSuccess;
        rc->is_busy[slot] = true;
        rc->issued++;
    }
    return ncclSuccess;
}

ncclResult_t ac_rdma_send_slot(struct ac_conn *conn, void **slot_out)
{
    struct rdma_conn *rc = conn->priv;
    unsigned slot = (unsigned)(rc->head % (uint64_t)conn->nslots);
    /* free: the receiver released it (credit) and our previous write from it has completed */
    rc->is_wanted =
        !rc->is_ready || rc->head - credit(rc) >= (uint64_t)conn->nslots || rc->is_busy[slot];
    if (rc->is_wanted) {
        *slot_out = NULL;
        return ncclSuccess;
    }
    *slot_out = rc->slots + (size_t)slot * conn->slot_bytes;
    return ncclSuccess;
}

ncclResult_t ac_rdma_send_post(struct ac_conn *conn, size_t bytes)
{
    struct rdma_conn *rc = conn->priv;
    unsigned slot = (unsigned)(rc->head % (uint64_t)conn->nslots);
    if (bytes > conn->slot_bytes || !rc->is_ready ||
        rc->head - credit(rc) >= (uint64_t)conn->nslots || rc->is_busy[slot])
        return AC_FAIL(ncclInternalError,
                       "%s transport: post of %zu bytes to rank %d with no free "
                       "slot (slot bytes %zu, channel %d)",
                       conn->tp->name, bytes, conn->peer, conn->slot_bytes, conn->channel);
    rc->sizes[slot] = (uint32_t)bytes;
    rc->head++;
    return issue_writes(conn);
}

static ncclResult_t progress_send(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    AC_CHECK(poll_socket(conn));
    if (!rc->is_ready)
        return check_closed(conn, true);
    AC_CHECK(poll_cq(conn));
    AC_CHECK(issue_writes(conn));
    /* waiting on the peer: writes not yet complete, or the executor wants a slot it has not freed
     * (credits it may have sent just before leaving do not matter if no slot is wanted) */
    bool is_blocked = rc->is_wanted && rc->head - credit(rc) >= (uint64_t)conn->nslots;
    return check_closed(conn, rc->ninflight > 0 || rc->issued < rc->head || is_blocked);
}

bool ac_rdma_is_flushing(struct ac_conn *conn)
{
    const struct rdma_conn *rc = conn->priv;
    return conn->is_send && rc != NULL && rc->closed_ns == 0 &&
           (rc->ninflight > 0 || rc->issued < rc->head);
}

/* ------------------------------------------------------------------------------------------ */
/* receiver                                                                                     */

static ncclResult_t send_credit(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    if (rc->credit_sent == rc->tail || rc->ninflight >= CREDIT_WRITES_MAX || rc->closed_ns != 0)
        return ncclSuccess;
    bool is_busy = false;
    /* the source word only grows, so a write that reads it late still carries a valid credit */
    __atomic_store_n(rc->word, rc->tail, __ATOMIC_RELEASE);
    AC_CHECK(rc->pv->write(rc->ep, 0, rc->word, sizeof(uint64_t), &rc->word_mr, rc->peer_base,
                           rc->peer_key, false, 0, CTX_CREDIT, &is_busy));
    if (is_busy)
        return ncclSuccess;
    rc->ninflight++;
    rc->credit_sent = rc->tail;
    return ncclSuccess;
}

static ncclResult_t progress_recv(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    AC_CHECK(poll_socket(conn));
    AC_CHECK(poll_cq(conn));
    AC_CHECK(send_credit(conn));
    unsigned slot = (unsigned)(rc->tail % (uint64_t)conn->nslots);
    /* Only a wait the executor is in counts: a task still running may be done with this peer,
     * which may then have left for good (its last slot landed before its EOF). */
    return check_closed(conn, rc->is_wanted && !rc->is_busy[slot]);
}

ncclResult_t ac_rdma_progress(struct ac_conn *conn)
{
    return conn->is_send ? progress_send(conn) : progress_recv(conn);
}

ncclResult_t ac_rdma_recv_slot(struct ac_conn *conn, const void **slot_out, size_t *bytes_out)
{
    struct rdma_conn *rc = conn->priv;
    unsigned slot = (unsigned)(rc->tail % (uint64_t)conn->nslots);
    rc->is_wanted = !rc->is_busy[slot];
    if (!rc->is_busy[slot]) {
        *slot_out = NULL;
        return ncclSuccess;
    }
    *slot_out = rc->slots + (size_t)slot * conn->slot_bytes;
    *bytes_out = rc->sizes[slot];
    return ncclSuccess;
}

ncclResult_t ac_rdma_recv_release(struct ac_conn *conn)
{
    struct rdma_conn *rc = conn->priv;
    unsigned slot = (unsigned)(rc->tail % (uint64_t)conn->nslots);
    if (!rc->is_busy[slot])
        return AC_FAIL(ncclInternalError,
                       "%s transport: release with no slot held (rank %d "
                       "channel %d)",
                       conn->tp->name, conn->peer, conn->channel);
    rc->is_busy[slot] = false;
    rc->tail++;
    return send_credit(conn);
}
