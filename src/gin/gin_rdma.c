/* The GIN rdma backend: the descriptor ring's puts and signals carried by the one RDMA protocol
 * engine (src/transport/rdma), over whichever provider the transports use (libfabric, verbs).
 *
 * Each pair of ranks gets two engine connectors (one per direction), set up through the bootstrap
 * like the transports' (receiver's blob first). A slot carries one or more frames, the same as
 * the socket backend's (24 bytes, little-endian: type u32 | src u32 | a u64 | b u64, a put
 * followed by its b bytes):
 *   PUT     a = offset in the receiver's posted window, b = bytes (a put larger than a slot is
 *           several frames)
 *   SIGNAL  a = signal id, b = value; SIGNAL_ADD adds, SIGNAL_SET sets
 *   WINDOW  a = epoch: the sender posted its receive window for that call
 *   BYE     the sender destroys its engine: its connection closing next is not a failure
 * The engine delivers a connector's slots in order, so a signal is read after the data of the
 * puts before it. A put's last frame stays in the open slot so that the signal that usually
 * follows shares its RDMA write; whatever is left open is posted by the next frame that does not
 * fit, by a signal or window, or by the progress thread's drain.
 *
 * Flow control and liveness are the engine's: a sender waits for a free slot (credits), and a
 * peer whose set-up connection closed fails every wait on it after the engine's grace. A peer
 * that sent BYE left on purpose and is no longer polled. */
#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "core/comm.h"
#include "gin/gin_internal.h"
#include "transport/rdma/rdma.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AC_TAG_GIN_RDMA 0x47490000u   /* "GI" */
#define SLOT_BYTES_MAX (256u * 1024u) /* GIN connectors per pair: keep memory bounded */
#define SLOT_BYTES_MIN 4096u
#define PUT_TAIL_MIN 512          /* open-slot room worth a put frame; less: next slot */
#define BYE_WAIT_NS 2000000000ull /* destroy waits this long for its last writes to land */
#define SPIN_YIELDS 64

struct rdma_peer {
    struct ac_conn send, recv;
    bool has_send, has_recv; /* the connector has transport state to close */
    char *open_slot;         /* the slot being filled (send side), NULL when none */
    size_t open_bytes;
    uint64_t epoch; /* the last window the peer posted (release-stored, acquire-read) */
    bool has_left;  /* BYE received */
};

struct gin_rdma {
    const struct ac_rdma_transport *rt;
    struct rdma_peer *peers;
    pthread_mutex_t recv_lock; /* the recv connectors and the window */
    pthread_mutex_t send_lock; /* the send connectors and their open slots */
    char *win;
    uint64_t win_bytes;
    bool is_set_up;
};

struct setup_msg {
    uint32_t nslots;
    uint32_t pad;
    uint64_t slot_bytes;
    struct ac_conn_blob blob;
};

/* The engine decided an error about peer p and wrote its message: keep the first one for the
 * call's error (the ring only carries a status and a peer). */
static int engine_fail(struct ac_gin *g, int p, int *peer_out)
{
    bool expected = false;
    if (__atomic_compare_exchange_n(&g->has_why, &expected, true, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED))
        snprintf(g->why, sizeof(g->why), "%s", ac_last_error());
    *peer_out = p;
    return AC_GIN_ERR_PEER;
}

/* --- receive side ------------------------------------------------------------------------ */

/* The frames of one delivered slot. */
static int on_slot(struct ac_gin *g, struct rdma_peer *pp, const uint8_t *s, size_t bytes)
{
    struct gin_rdma *rd = g->rdma;
    size_t off = 0;
    while (off + AC_GIN_FRAME_BYTES <= bytes) {
        uint32_t type = (uint32_t)ac_gin_get_le(s + off, 4);
        uint64_t a = ac_gin_get_le(s + off + 8, 8), b = ac_gin_get_le(s + off + 16, 8);
        off += AC_GIN_FRAME_BYTES;
        switch (type) {
        case AC_GIN_FRAME_PUT:
            if (b > bytes - off || a > rd->win_bytes || b > rd->win_bytes - a)
                return AC_GIN_ERR_ACCESS;
            memcpy(rd->win + a, s + off, b);
            off += b;
            break;
        case AC_GIN_FRAME_SIGNAL_ADD:
        case AC_GIN_FRAME_SIGNAL_SET:
            if (ac_gin_apply_signal(g->signals, g->comm->nranks, type, a, b) != AC_GIN_OK)
                return AC_GIN_ERR_ACCESS;
            break;
        case AC_GIN_FRAME_WINDOW:
            __atomic_store_n(&pp->epoch, a, __ATOMIC_RELEASE);
            break;
        case AC_GIN_FRAME_BYE:
            pp->has_left = true;
            return AC_GIN_OK;
        default:
            return AC_GIN_ERR_SYSTEM;
        }
    }
    return off == bytes ? AC_GIN_OK : AC_GIN_ERR_SYSTEM;
}

static int drain_peer(struct ac_gin *g, int p, int *peer_out)
{
    struct rdma_peer *pp = &g->rdma->peers[p];
    struct ac_conn *c = &pp->recv;
    while (!pp->has_left) {
        const void *slot = NULL;
        size_t bytes = 0;
        if (c->tp->progress(c) != ncclSuccess || c->tp->recv_slot(c, &slot, &bytes) != ncclSuccess)
            return engine_fail(g, p, peer_out);
        if (slot == NULL)
            return AC_GIN_OK;
        int st = on_slot(g, pp, slot, bytes);
        if (st != AC_GIN_OK) {
            *peer_out = p;
            return st;
        }
        if (c->tp->recv_release(c) != ncclSuccess)
            return engine_fail(g, p, peer_out);
    }
    return AC_GIN_OK;
}

static int flush_open(struct ac_gin *g, int p, int *peer_out);

/* Progress of the send connectors (completions, credits) and their open slots, when no sender
 * holds them. */
static int progress_senders(struct ac_gin *g, int *peer_out)
{
    struct gin_rdma *rd = g->rdma;
    int st = AC_GIN_OK;
    if (pthread_mutex_trylock(&rd->send_lock) != 0)
        return AC_GIN_OK;
    for (int p = 0; p < g->comm->nranks && st == AC_GIN_OK; p++) {
        struct rdma_peer *pp = &rd->peers[p];
        if (p == g->comm->rank || pp->has_left)
            continue;
        st = flush_open(g, p, peer_out);
        if (st == AC_GIN_OK && pp->send.tp->progress(&pp->send) != ncclSuccess)
            st = engine_fail(g, p, peer_out);
    }
    pthread_mutex_unlock(&rd->send_lock);
    return st;
}

int ac_gin_rdma_drain(struct ac_gin *g, int *peer_out)
{
    struct gin_rdma *rd = g->rdma;
    int st = AC_GIN_OK;
    if (pthread_mutex_trylock(&rd->recv_lock) == 0) {
        for (int p = 0; p < g->comm->nranks && st == AC_GIN_OK; p++)
            if (p != g->comm->rank)
                st = drain_peer(g, p, peer_out);
        pthread_mutex_unlock(&rd->recv_lock);
    }
    return st == AC_GIN_OK ? progress_senders(g, peer_out) : st;
}

/* --- send side (send_lock held) ---------------------------------------------------------- */

static int flush_open(struct ac_gin *g, int p, int *peer_out)
{
    struct rdma_peer *pp = &g->rdma->peers[p];
    if (pp->open_slot == NULL)
        return AC_GIN_OK;
    if (pp->send.tp->send_post(&pp->send, pp->open_bytes) != ncclSuccess)
        return engine_fail(g, p, peer_out);
    pp->open_slot = NULL;
    pp->open_bytes = 0;
    return AC_GIN_OK;
}

/* An open slot with at least `need` bytes free for peer p: posts the open one if it has less,
 * then waits for a free slot (credits), reading incoming frames meanwhile so that two ranks
 * sending to each other never wait on each other. */
static int reserve(struct ac_gin *g, int p, size_t need, int *peer_out)
{
    struct rdma_peer *pp = &g->rdma->peers[p];
    struct ac_conn *c = &pp->send;
    if (pp->open_slot != NULL && c->slot_bytes - pp->open_bytes >= need)
        return AC_GIN_OK;
    int st = flush_open(g, p, peer_out);
    for (unsigned idle = 0; st == AC_GIN_OK; idle++) {
        void *slot = NULL;
        if (c->tp->progress(c) != ncclSuccess || c->tp->send_slot(c, &slot) != ncclSuccess)
            return engine_fail(g, p, peer_out);
        if (slot != NULL) {
            pp->open_slot = slot;
            pp->open_bytes = 0;
            return AC_GIN_OK;
        }
        *peer_out = p;
        if (pp->has_left)
            return AC_GIN_ERR_PEER;
        if (g->comm->abort_flag)
            return AC_GIN_ERR_ABORT;
        int dead = atomic_load(&g->comm->ras_dead_rank);
        if (dead >= 0) {
            *peer_out = dead;
            return AC_GIN_ERR_PEER;
        }
        if (g->deadline_ns && ac_now_ns() > g->deadline_ns)
            return AC_GIN_ERR_TIMEOUT;
        if (pthread_mutex_trylock(&g->rdma->recv_lock) == 0) {
            for (int q = 0; q < g->comm->nranks && st == AC_GIN_OK; q++)
                if (q != g->comm->rank)
                    st = drain_peer(g, q, peer_out);
            pthread_mutex_unlock(&g->rdma->recv_lock);
        }
        if (idle < SPIN_YIELDS) {
            sched_yield();
        } else {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
    return st;
}

static int send_ctl(struct ac_gin *g, int p, uint32_t type, uint64_t a, uint64_t b, int *peer_out)
{
    struct rdma_peer *pp = &g->rdma->peers[p];
    int st = reserve(g, p, AC_GIN_FRAME_BYTES, peer_out);
    if (st != AC_GIN_OK)
        return st;
    ac_gin_frame_encode((uint8_t *)pp->open_slot + pp->open_bytes, type, (uint32_t)g->comm->rank, a,
                        b);
    pp->open_bytes += AC_GIN_FRAME_BYTES;
    return flush_open(g, p, peer_out);
}

static int rdma_put(void *ctx, uint32_t peer, uint64_t src_off, uint64_t dst_off, uint64_t bytes,
                    int *peer_out)
{
    struct ac_gin *g = ctx;
    *peer_out = (int)peer;
    if (peer >= (uint32_t)g->comm->nranks || peer == (uint32_t)g->comm->rank ||
        src_off > g->local_bytes || bytes > g->local_bytes - src_off)
        return AC_GIN_ERR_ACCESS;
    struct rdma_peer *pp = &g->rdma->peers[peer];
    size_t slot_bytes = pp->send.slot_bytes;
    int st = AC_GIN_OK;
    uint64_t done = 0;
    pthread_mutex_lock(&g->rdma->send_lock);
    while (st == AC_GIN_OK && done < bytes) {
        uint64_t left = bytes - done;
        size_t want = AC_GIN_FRAME_BYTES + (size_t)(left < PUT_TAIL_MIN ? left : PUT_TAIL_MIN);
        st = reserve(g, (int)peer, want, peer_out);
        if (st != AC_GIN_OK)
            break;
        size_t room = slot_bytes - pp->open_bytes - AC_GIN_FRAME_BYTES;
        size_t n = left < room ? (size_t)left : room;
        uint8_t *f = (uint8_t *)pp->open_slot + pp->open_bytes;
        ac_gin_frame_encode(f, AC_GIN_FRAME_PUT, (uint32_t)g->comm->rank, dst_off + done, n);
        memcpy(f + AC_GIN_FRAME_BYTES, g->local_base + src_off + done, n);
        pp->open_bytes += AC_GIN_FRAME_BYTES + n;
        done += n;
        /* a full slot goes now; a partial one waits for the signal that usually follows */
        if (pp->open_bytes + AC_GIN_FRAME_BYTES > slot_bytes)
            st = flush_open(g, (int)peer, peer_out);
    }
    pthread_mutex_unlock(&g->rdma->send_lock);
    return st;
}

static int rdma_signal(void *ctx, uint32_t peer, uint32_t signal_id, uint64_t value, bool is_add,
                       int *peer_out)
{
    struct ac_gin *g = ctx;
    *peer_out = (int)peer;
    if (peer >= (uint32_t)g->comm->nranks || peer == (uint32_t)g->comm->rank)
        return AC_GIN_ERR_ACCESS;
    pthread_mutex_lock(&g->rdma->send_lock);
    int st = send_ctl(g, (int)peer, is_add ? AC_GIN_FRAME_SIGNAL_ADD : AC_GIN_FRAME_SIGNAL_SET,
                      signal_id, value, peer_out);
    pthread_mutex_unlock(&g->rdma->send_lock);
    return st;
}

static int rdma_poll(void *ctx, int *peer_out)
{
    struct ac_gin *g = ctx;
    int dead = atomic_load(&g->comm->ras_dead_rank);
    if (dead >= 0) {
        *peer_out = dead;
        return AC_GIN_ERR_PEER;
    }
    return ac_gin_rdma_drain(g, peer_out);
}

static int rdma_post_window(void *ctx, void *addr, uint64_t bytes, uint64_t epoch, int *peer_out)
{
    struct ac_gin *g = ctx;
    int st = AC_GIN_OK;
    /* Under the receive lock: no put of an earlier call is being copied into the old window. */
    pthread_mutex_lock(&g->rdma->recv_lock);
    g->rdma->win = addr;
    g->rdma->win_bytes = bytes;
    pthread_mutex_unlock(&g->rdma->recv_lock);
    pthread_mutex_lock(&g->rdma->send_lock);
    for (int p = 0; p < g->comm->nranks && st == AC_GIN_OK; p++)
        if (p != g->comm->rank)
            st = send_ctl(g, p, AC_GIN_FRAME_WINDOW, epoch, 0, peer_out);
    pthread_mutex_unlock(&g->rdma->send_lock);
    return st;
}

static bool rdma_window_ready(void *ctx, uint32_t peer, uint64_t epoch)
{
    struct ac_gin *g = ctx;
    return __atomic_load_n(&g->rdma->peers[peer].epoch, __ATOMIC_ACQUIRE) == epoch;
}

const struct ac_gin_backend ac_gin_rdma_backend = {
    .size = sizeof(struct ac_gin_backend),
    .name = "rdma",
    .put = rdma_put,
    .signal = rdma_signal,
    .poll = rdma_poll,
    .post_window = rdma_post_window,
    .window_ready = rdma_window_ready,
};

/* --- set-up and tear-down ---------------------------------------------------------------- */

static void conn_init(struct ac_gin *g, struct ac_conn *c, int peer, bool is_send, int nslots,
                      size_t slot_bytes)
{
    struct ncclComm *comm = g->comm;
    memset(c, 0, sizeof(*c));
    c->tp = &g->rdma->rt->tp;
    c->is_send = is_send;
    c->peer = peer;
    c->channel = 0;
    c->nslots = nslots;
    c->slot_bytes = slot_bytes;
    c->self_info = &comm->peers[comm->rank];
    c->peer_info = &comm->peers[peer];
    c->comm_hash = comm->comm_hash;
}

/* Tells every live peer that this engine goes away, and waits (bounded) for the last writes to
 * land: a peer then reads our connection's close as a departure, not a crash. */
static void say_bye(struct ac_gin *g)
{
    struct gin_rdma *rd = g->rdma;
    int peer = -1;
    uint64_t deadline = ac_now_ns() + BYE_WAIT_NS;
    if (g->comm->abort_flag || g->ring == NULL ||
        __atomic_load_n(&g->ring->error, __ATOMIC_ACQUIRE) != AC_GIN_OK)
        return;
    g->deadline_ns = deadline;
    pthread_mutex_lock(&rd->send_lock);
    for (int p = 0; p < g->comm->nranks; p++)
        if (p != g->comm->rank && !rd->peers[p].has_left &&
            send_ctl(g, p, AC_GIN_FRAME_BYE, 0, 0, &peer) != AC_GIN_OK)
            break;
    for (bool is_flushing = true; is_flushing && ac_now_ns() < deadline;) {
        is_flushing = false;
        /* Our writes complete once the peers' providers take them, and theirs once ours does:
         * keep reading (manual-progress providers such as tcp;ofi_rxm move data only when
         * polled), or two ranks leaving together would each wait for the other until the
         * deadline. Errors here are peers already gone: nothing is waited on for them. */
        for (int p = 0; p < g->comm->nranks; p++)
            if (p != g->comm->rank)
                (void)drain_peer(g, p, &peer);
        for (int p = 0; p < g->comm->nranks; p++) {
            struct ac_conn *c = &rd->peers[p].send;
            if (p == g->comm->rank || !rd->peers[p].has_send)
                continue;
            if (c->tp->progress(c) != ncclSuccess)
                continue;
            is_flushing |= c->tp->is_flushing(c);
        }
        if (is_flushing)
            sched_yield();
    }
    pthread_mutex_unlock(&rd->send_lock);
}

void ac_gin_rdma_free(struct ac_gin *g)
{
    struct gin_rdma *rd = g->rdma;
    if (!rd)
        return;
    /* A failure while saying goodbye must not replace the error the caller may report. */
    char saved[512];
    snprintf(saved, sizeof(saved), "%s", ac_last_error());
    if (rd->is_set_up)
        say_bye(g);
    for (int p = 0; rd->peers && p < g->comm->nranks; p++) {
        if (rd->peers[p].has_send)
            rd->peers[p].send.tp->close(&rd->peers[p].send);
        if (rd->peers[p].has_recv)
            rd->peers[p].recv.tp->close(&rd->peers[p].recv);
    }
    ac_restore_error(saved);
    free(rd->peers);
    pthread_mutex_destroy(&rd->recv_lock);
    pthread_mutex_destroy(&rd->send_lock);
    free(rd);
    free(g->signals);
    g->rdma = NULL;
    g->signals = NULL;
}

/* Collective: every rank sets up its receive connector from each peer and sends the blob, then
 * joins each peer's, then accepts (the order of src/core/connect.c, so no rank waits on a step a
 * peer has not reached). Bounded by the engine's set-up timeout. */
ncclResult_t ac_gin_rdma_setup(struct ac_gin *g, const struct ac_rdma_transport *rt)
{
    struct ncclComm *comm = g->comm;
    int n = comm->nranks, me = comm->rank;
    struct setup_msg msg;
    struct gin_rdma *rd = calloc(1, sizeof(*rd));
    g->rdma = rd;
    g->signals = calloc((size_t)n, sizeof(uint64_t));
    if (!rd || !g->signals || !(rd->peers = calloc((size_t)n, sizeof(*rd->peers))))
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    rd->rt = rt;
    pthread_mutex_init(&rd->recv_lock, NULL);
    pthread_mutex_init(&rd->send_lock, NULL);
    int nslots = comm->nslots < 1 ? 1 : comm->nslots > 64 ? 64 : comm->nslots;
    size_t slot_bytes = comm->slot_bytes > SLOT_BYTES_MAX   ? SLOT_BYTES_MAX
                        : comm->slot_bytes < SLOT_BYTES_MIN ? SLOT_BYTES_MIN
                                                            : comm->slot_bytes;
    for (int p = 0; p < n; p++) {
        if (p == me)
            continue;
        struct rdma_peer *pp = &rd->peers[p];
        conn_init(g, &pp->recv, p, false, nslots, slot_bytes);
        pp->has_recv = true;
        memset(&msg, 0, sizeof(msg));
        AC_CHECK(rt->tp.recv_setup(&pp->recv, &msg.blob));
        msg.nslots = (uint32_t)nslots;
        msg.slot_bytes = slot_bytes;
        AC_CHECK(ac_bootstrap_send(comm->bs, p, AC_TAG_GIN_RDMA, &msg, sizeof(msg)));
    }
    for (int p = 0; p < n; p++) {
        if (p == me)
            continue;
        struct rdma_peer *pp = &rd->peers[p];
        AC_CHECK(ac_bootstrap_recv(comm->bs, p, AC_TAG_GIN_RDMA, &msg, sizeof(msg)));
        if (msg.nslots < 1 || msg.nslots > 64 || msg.slot_bytes < SLOT_BYTES_MIN ||
            msg.slot_bytes > SLOT_BYTES_MAX)
            return AC_FAIL(ncclInternalError, "GIN: rank %d: bad connector description from %d", me,
                           p);
        conn_init(g, &pp->send, p, true, (int)msg.nslots, (size_t)msg.slot_bytes);
        pp->has_send = true;
        AC_CHECK(rt->tp.send_connect(&pp->send, &msg.blob));
    }
    for (int p = 0; p < n; p++)
        if (p != me)
            AC_CHECK(rt->tp.recv_connect(&rd->peers[p].recv));
    rd->is_set_up = true;
    AC_INFO(AC_SUB_NET,
            "GIN: rdma backend: %d peers over the %s transport (%s), %d slots of %zu "
            "bytes per direction",
            n - 1, rt->tp.name, rt->pv->describe(), nslots, slot_bytes);
    return ncclSuccess;
}
