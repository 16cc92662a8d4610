/* The GIN socket backend: ranks on different hosts (or that cannot write each other's memory).
 * One TCP connection per pair, set up through the bootstrap; frames of 24 bytes, little-endian,
 * encoded field by field: type u32 | src u32 | a u64 | b u64, a put followed by its b bytes.
 *   PUT     a = offset in the receiver's posted window, b = bytes
 *   SIGNAL  a = signal id, b = value; type SIGNAL_ADD adds, SIGNAL_SET sets
 *   WINDOW  a = epoch: the sender posted its receive window for that call
 *   BYE     the sender destroys its engine: its connection closing next is not a failure
 * TCP keeps a connection's bytes in order, so a signal is read after the data of the puts the
 * same engine sent before it: put-then-signal holds without any acknowledgement. A put lands in
 * the receiver's window while the receiver reads it (drain), after the receiver posted that
 * window (the sender waits for WINDOW first), so the receiver never needs a bounce buffer.
 *
 * Sends never block with incoming data unread: while a send cannot progress, the sender drains
 * (two ranks putting 64 KiB to each other would otherwise fill both kernels' buffers and wait on
 * each other forever). */
#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "core/comm.h"
#include "gin/gin_internal.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define BYE_WAIT_NS 2000000000ull /* destroy waits this long to hand its BYE frames over */

struct sock_peer {
    struct ac_socket s;
    uint8_t hdr[AC_GIN_FRAME_BYTES];
    size_t hdr_got;
    char *body; /* where the put's bytes go, NULL when no put is being read */
    size_t body_len, body_got;
    uint64_t epoch; /* the last window the peer posted (release-stored, acquire-read) */
    bool is_connected;
    bool has_left; /* BYE read: the peer finished every call; its end-of-file is no error */
};

struct gin_sock {
    struct sock_peer *peers;
    pthread_mutex_t recv_lock;
    pthread_mutex_t send_lock;
    char *win; /* this rank's posted window */
    uint64_t win_bytes;
};

/* One complete frame header was read from peer p: act on it. */
static int on_frame(struct ac_gin *g, int p, struct sock_peer *sp)
{
    struct gin_sock *ss = g->sock;
    uint32_t type = (uint32_t)ac_gin_get_le(sp->hdr, 4);
    uint64_t a = ac_gin_get_le(sp->hdr + 8, 8), b = ac_gin_get_le(sp->hdr + 16, 8);
    sp->hdr_got = 0;
    switch (type) {
    case AC_GIN_FRAME_PUT:
        if (a > ss->win_bytes || b > ss->win_bytes - a)
            return AC_GIN_ERR_ACCESS;
        if (b == 0)
            return AC_GIN_OK;
        sp->body = ss->win + a;
        sp->body_len = b;
        sp->body_got = 0;
        return AC_GIN_OK;
    case AC_GIN_FRAME_SIGNAL_ADD:
    case AC_GIN_FRAME_SIGNAL_SET:
        return ac_gin_apply_signal(g->signals, g->comm->nranks, type, a, b);
    case AC_GIN_FRAME_WINDOW:
        __atomic_store_n(&sp->epoch, a, __ATOMIC_RELEASE);
        return AC_GIN_OK;
    case AC_GIN_FRAME_BYE:
        sp->has_left = true;
        return AC_GIN_OK;
    default:
        (void)p;
        return AC_GIN_ERR_SYSTEM;
    }
}

/* A peer that finished all its calls may destroy its engine while this rank still waits on
 * others: it says BYE first (TCP delivers it after all its data), and is not read any more. */
static int drain_peer(struct ac_gin *g, int p, struct sock_peer *sp)
{
    for (;;) {
        int rc;
        if (sp->has_left)
            return AC_GIN_OK;
        if (sp->body) {
            size_t before = sp->body_got;
            rc = ac_socket_recv_some(&sp->s, sp->body, sp->body_len, &sp->body_got);
            if (rc != 0)
                return AC_GIN_ERR_PEER;
            if (sp->body_got == sp->body_len)
                sp->body = NULL;
            else if (sp->body_got == before)
                return AC_GIN_OK;
            continue;
        }
        size_t before = sp->hdr_got;
        rc = ac_socket_recv_some(&sp->s, sp->hdr, AC_GIN_FRAME_BYTES, &sp->hdr_got);
        if (rc != 0)
            return AC_GIN_ERR_PEER;
        if (sp->hdr_got < AC_GIN_FRAME_BYTES) {
            if (sp->hdr_got == before)
                return AC_GIN_OK;
            continue;
        }
        int st = on_frame(g, p, sp);
        if (st != AC_GIN_OK)
            return st;
    }
}

int ac_gin_sock_drain(struct ac_gin *g, int *peer_out)
{
    struct gin_sock *ss = g->sock;
    int st = AC_GIN_OK;
    if (pthread_mutex_trylock(&ss->recv_lock) != 0)
        return AC_GIN_OK;
    for (int p = 0; p < g->comm->nranks && st == AC_GIN_OK; p++) {
        if (p == g->comm->rank)
            continue;
        st = drain_peer(g, p, &ss->peers[p]);
        if (st != AC_GIN_OK)
            *peer_out = p;
    }
    pthread_mutex_unlock(&ss->recv_lock);
    return st;
}

/* Sends all of buf to peer, draining incoming frames whenever the kernel takes nothing. */
static int send_frame(struct ac_gin *g, uint32_t peer, const uint8_t *hdr, const void *body,
                      size_t body_len, int *peer_out)
{
    struct sock_peer *sp = &g->sock->peers[peer];
    const void *parts[2] = {hdr, body};
    size_t lens[2] = {AC_GIN_FRAME_BYTES, body_len};
    int st = AC_GIN_OK;
    *peer_out = (int)peer;
    pthread_mutex_lock(&g->sock->send_lock);
    for (int i = 0; i < 2 && st == AC_GIN_OK; i++) {
        size_t done = 0;
        while (done < lens[i] && st == AC_GIN_OK) {
            size_t before = done;
            if (ac_socket_send_some(&sp->s, parts[i], lens[i], &done) != 0) {
                st = AC_GIN_ERR_PEER;
                break;
            }
            if (done != before)
                continue;
            st = ac_gin_sock_drain(g, peer_out);
            if (st == AC_GIN_OK && g->comm->abort_flag)
                st = AC_GIN_ERR_ABORT;
            if (st == AC_GIN_OK) {
                struct pollfd pfd = {sp->s.fd, POLLOUT, 0};
                poll(&pfd, 1, 1);
            }
        }
    }
    pthread_mutex_unlock(&g->sock->send_lock);
    return st;
}

static int sock_put(void *ctx, uint32_t peer, uint64_t src_off, uint64_t dst_off, uint64_t bytes,
                    int *peer_out)
{
    struct ac_gin *g = ctx;
    uint8_t hdr[AC_GIN_FRAME_BYTES];
    *peer_out = (int)peer;
    if (peer >= (uint32_t)g->comm->nranks || peer == (uint32_t)g->comm->rank ||
        src_off > g->local_bytes || bytes > g->local_bytes - src_off)
        return AC_GIN_ERR_ACCESS;
    ac_gin_frame_encode(hdr, AC_GIN_FRAME_PUT, (uint32_t)g->comm->rank, dst_off, bytes);
    return send_frame(g, peer, hdr, g->local_base + src_off, bytes, peer_out);
}

static int sock_signal(void *ctx, uint32_t peer, uint32_t signal_id, uint64_t value, bool is_add,
                       int *peer_out)
{
    struct ac_gin *g = ctx;
    uint8_t hdr[AC_GIN_FRAME_BYTES];
    *peer_out = (int)peer;
    if (peer >= (uint32_t)g->comm->nranks || peer == (uint32_t)g->comm->rank)
        return AC_GIN_ERR_ACCESS;
    ac_gin_frame_encode(hdr, is_add ? AC_GIN_FRAME_SIGNAL_ADD : AC_GIN_FRAME_SIGNAL_SET,
                        (uint32_t)g->comm->rank, signal_id, value);
    return send_frame(g, peer, hdr, NULL, 0, peer_out);
}

static int sock_poll(void *ctx, int *peer_out)
{
    struct ac_gin *g = ctx;
    int dead = atomic_load(&g->comm->ras_dead_rank);
    if (dead >= 0) {
        *peer_out = dead;
        return AC_GIN_ERR_PEER;
    }
    return ac_gin_sock_drain(g, peer_out);
}

static int sock_post_window(void *ctx, void *addr, uint64_t bytes, uint64_t epoch, int *peer_out)
{
    struct ac_gin *g = ctx;
    uint8_t hdr[AC_GIN_FRAME_BYTES];
    int st = AC_GIN_OK;
    /* Under the receive lock: no put of an earlier call is being read into the old window. */
    pthread_mutex_lock(&g->sock->recv_lock);
    g->sock->win = addr;
    g->sock->win_bytes = bytes;
    pthread_mutex_unlock(&g->sock->recv_lock);
    ac_gin_frame_encode(hdr, AC_GIN_FRAME_WINDOW, (uint32_t)g->comm->rank, epoch, 0);
    for (int p = 0; p < g->comm->nranks && st == AC_GIN_OK; p++)
        if (p != g->comm->rank)
            st = send_frame(g, (uint32_t)p, hdr, NULL, 0, peer_out);
    return st;
}

static bool sock_window_ready(void *ctx, uint32_t peer, uint64_t epoch)
{
    struct ac_gin *g = ctx;
    return __atomic_load_n(&g->sock->peers[peer].epoch, __ATOMIC_ACQUIRE) == epoch;
}

const struct ac_gin_backend ac_gin_sock_backend = {
    .size = sizeof(struct ac_gin_backend),
    .name = "socket",
    .put = sock_put,
    .signal = sock_signal,
    .poll = sock_poll,
    .post_window = sock_post_window,
    .window_ready = sock_window_ready,
};

/* Tells every peer that this engine goes away (bounded; best effort), reading meanwhile so that
 * two ranks leaving together do not wait on each other's full buffers. Then reads what is left
 * to read: closing a socket with unread bytes resets the connection, and the peer could lose
 * what it sent last. Nothing of this after an abort or an error: peers then see a failure. */
static void say_bye(struct ac_gin *g)
{
    struct gin_sock *ss = g->sock;
    uint8_t hdr[AC_GIN_FRAME_BYTES];
    int peer = -1;
    uint64_t deadline = ac_now_ns() + BYE_WAIT_NS;
    if (g->comm->abort_flag || g->ring == NULL ||
        __atomic_load_n(&g->ring->error, __ATOMIC_ACQUIRE) != AC_GIN_OK)
        return;
    ac_gin_frame_encode(hdr, AC_GIN_FRAME_BYE, (uint32_t)g->comm->rank, 0, 0);
    for (int p = 0; p < g->comm->nranks; p++) {
        struct sock_peer *sp = &ss->peers[p];
        size_t done = 0;
        if (p == g->comm->rank || !sp->is_connected || sp->has_left)
            continue;
        while (done < AC_GIN_FRAME_BYTES && ac_now_ns() < deadline) {
            size_t before = done;
            if (ac_socket_send_some(&sp->s, hdr, AC_GIN_FRAME_BYTES, &done) != 0)
                break;
            if (done == before) {
                struct pollfd pfd = {sp->s.fd, POLLOUT, 0};
                (void)ac_gin_sock_drain(g, &peer);
                poll(&pfd, 1, 1);
            }
        }
    }
    (void)ac_gin_sock_drain(g, &peer);
}

void ac_gin_sock_free(struct ac_gin *g)
{
    struct gin_sock *ss = g->sock;
    if (!ss)
        return;
    if (ss->peers)
        say_bye(g);
    for (int p = 0; ss->peers && p < g->comm->nranks; p++)
        if (ss->peers[p].is_connected)
            ac_socket_close(&ss->peers[p].s);
    free(ss->peers);
    pthread_mutex_destroy(&ss->recv_lock);
    pthread_mutex_destroy(&ss->send_lock);
    free(ss);
    free(g->signals);
    g->sock = NULL;
    g->signals = NULL;
}

/* Collective: every rank listens, the addresses are allgathered, the lower rank of each pair
 * connects and says who it is. Bounded by ANYCCL_INIT_TIMEOUT. */
ncclResult_t ac_gin_sock_setup(struct ac_gin *g)
{
    struct ncclComm *comm = g->comm;
    int n = comm->nranks, me = comm->rank;
    ncclResult_t res = ncclSuccess;
    struct ac_socket listener;
    struct sockaddr_storage *addrs = calloc((size_t)n, sizeof(*addrs));
    g->sock = calloc(1, sizeof(*g->sock));
    g->signals = calloc((size_t)n, sizeof(uint64_t));
    if (!addrs || !g->sock || !g->signals ||
        !(g->sock->peers = calloc((size_t)n, sizeof(struct sock_peer)))) {
        free(addrs);
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    }
    pthread_mutex_init(&g->sock->recv_lock, NULL);
    pthread_mutex_init(&g->sock->send_lock, NULL);
    uint64_t deadline = ac_now_ns() + (uint64_t)ac_config_get()->init_timeout_s * 1000000000ull;
    ac_socket_init(&listener);
    struct sockaddr_storage own = *ac_bootstrap_local_addr(comm->bs);
    ac_socket_addr_set_port(&own, 0);
    AC_CHECK_GOTO(ac_socket_listen(&listener, &own), res, out);
    addrs[me] = listener.addr;
    AC_CHECK_GOTO(ac_bootstrap_allgather(comm->bs, addrs, sizeof(*addrs)), res, out_listener);
    for (int p = me + 1; p < n; p++) {
        struct sock_peer *sp = &g->sock->peers[p];
        uint8_t who[4];
        ac_socket_init(&sp->s);
        AC_CHECK_GOTO(ac_socket_connect(&sp->s, &addrs[p], deadline, &comm->abort_flag), res,
                      out_listener);
        sp->is_connected = true;
        ac_gin_put_le(who, (uint32_t)me, 4);
        AC_CHECK_GOTO(ac_socket_send_all(&sp->s, who, 4, deadline, &comm->abort_flag), res,
                      out_listener);
    }
    for (int i = 0; i < me; i++) {
        struct ac_socket s;
        uint8_t who[4];
        ac_socket_init(&s);
        AC_CHECK_GOTO(ac_socket_accept(&listener, &s, deadline, &comm->abort_flag), res,
                      out_listener);
        if (s.fd < 0) {
            res = AC_FAIL(ncclRemoteError,
                          "GIN: rank %d: peers did not connect within "
                          "ANYCCL_INIT_TIMEOUT",
                          me);
            goto out_listener;
        }
        int p = -1;
        if (ac_socket_recv_all(&s, who, 4, deadline, &comm->abort_flag) == ncclSuccess)
            p = (int)ac_gin_get_le(who, 4);
        if (p < 0 || p >= me || g->sock->peers[p].is_connected) {
            ac_socket_close(&s);
            res = AC_FAIL(ncclRemoteError, "GIN: rank %d: a connection said it was rank %d", me, p);
            goto out_listener;
        }
        g->sock->peers[p].s = s;
        g->sock->peers[p].is_connected = true;
    }
    for (int p = 0; p < n && res == ncclSuccess; p++)
        if (p != me)
            res = ac_socket_set_nonblocking(&g->sock->peers[p].s);
out_listener:
    ac_socket_close(&listener);
out:
    free(addrs);
    return res;
}
