/* The socket connector: one TCP connection per connector, the fallback that joins any two ranks.
 * The sender stages data in nslots local slots; progress writes each posted slot as
 * [u64 bytes][payload] with non-blocking sends (resuming partial writes, several slots per call)
 * and frees it once the kernel has it. The receiver's progress reads messages, in order, into its
 * own nslots slots, only into a free one; TCP's flow control does the rest.
 *
 * Rails: the receiver listens on its rank's NIC (peer_info addr, chosen by topology affinity at
 * init). The sender connects from the NIC of its own node that is on the receiver's subnet (its
 * own NIC when it is; else the node's NIC of the receiver's rail; else its own NIC), so traffic
 * between nodes stays on the receiver's rail: where sender and receiver own different rails the
 * change of rail happens inside the sending node, as NCCL's PXN does, not in the fabric's spine. */
#include "transport/transport.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/uio.h>

#define BLOB_MAGIC 0x41435342u  /* "ACSB" */
#define HELLO_MAGIC 0x41435348u /* "ACSH" */
#define HELLO_READ_NS (5ull * 1000000000ull)
#define SOCKET_BUF_BYTES (4 << 20)
#define IOV_SLOTS 32 /* slots written per sendmsg */
#define READ_AHEAD_MIN_BYTES (64 << 10)
/* Every payload starts at a multiple of WIRE_ALIGN bytes of the stream: its header (the word:
 * payload bytes, and the operation's tag in the upper half) is followed by zeros up to there.
 * The kernel's copies on a loopback connection (into its buffers in sendmsg, out of them in
 * recvmsg) ran at about half speed when the user's buffer and the stream were aligned
 * differently within a cache line, as an 8-byte header left every payload: a 2-rank allgather
 * of 1 MiB over loopback TCP took 275 us with it and 159 us with aligned payloads (4 alternated
 * launches; Open MPI 138). Both ends count the stream's bytes, so both know each header's
 * length. */
#define WIRE_ALIGN 64
struct wire_hdr {
    uint64_t word;
    char zeros[WIRE_ALIGN];
};

/* The length of the header that starts at stream_pos: its payload then starts aligned. */
static size_t hdr_len(uint64_t stream_pos)
{
    return sizeof(uint64_t) +
           (WIRE_ALIGN - (stream_pos + sizeof(uint64_t)) % WIRE_ALIGN) % WIRE_ALIGN;
}

/* A dead path (a link or a host down: no FIN, no RST) fails a connection in bounded time: the
 * receiving side of a connection (nothing of ours unacknowledged) sends keepalive probes after
 * KEEPIDLE_S of silence, every KEEPINTVL_S, and gives up after KEEPCNT unanswered ones
 * (LIVENESS_S in all). A peer that is alive but late answers them, however long it is late. Not
 * TCP_USER_TIMEOUT: Linux also applies it to a window the receiver keeps closed, which would fail
 * a connection to a live rank that is late to a collective. Documented in
 * docs/troubleshooting.md. */
#define KEEPIDLE_S 5
#define KEEPINTVL_S 2
#define KEEPCNT 5
#define LIVENESS_S (KEEPIDLE_S + KEEPINTVL_S * KEEPCNT)

struct sock_blob {
    uint32_t magic;
    uint32_t pad;
    uint64_t nonce;
    struct sockaddr_storage addr;
};
_Static_assert(sizeof(struct sock_blob) <= AC_CONN_BLOB_BYTES, "blob too large");

struct sock_hello {
    uint32_t magic;
    int32_t sender_rank;
    int32_t channel;
    uint32_t pad;
    uint64_t comm_hash;
    uint64_t nonce;
};

struct sock_conn {
    struct ac_socket listener; /* receiver, until recv_connect */
    struct ac_socket sock;
    uint64_t nonce;
    char *slots;           /* nslots * slot_bytes */
    uint64_t *sizes;       /* [nslots]: payload bytes; the sender sends it as the header */
    struct wire_hdr *hdrs; /* sender [nslots]: the header as sent (word, then zeros) */
    uint8_t *hlens;        /* sender [nslots]: bytes of that header on the wire */
    uint64_t stream_pos;   /* bytes of the messages posted (sender) or completed (receiver) */
    const void **refs;     /* sender [nslots]: where a slot's payload lies when not in the slot */
    char **landed;         /* receiver [nslots]: where a slot's payload landed when not in it */
    char *direct;          /* receiver: where the message being read goes (recv_direct), or NULL */
    size_t direct_cap;
    uint64_t head;          /* sender: posted; receiver: fully received */
    uint64_t tail;          /* sender: fully written; receiver: released */
    size_t cur_done;        /* bytes of [header][payload] moved for the current slot */
    struct wire_hdr rx_hdr; /* receiver: the header being read */
    size_t rx_hlen;         /* receiver: its length (hdr_len of stream_pos) */
    size_t expect;          /* receiver: payload bytes of the next message (recv_expect), or 0 */
    bool is_peer_closed;    /* receiver: EOF seen between two slots */
    bool is_out_of_step;    /* receiver: a message shorter than expected was read past */
};

/* "rank R (host H, addr A)" */
static const char *peer_str(const struct ac_conn *conn, char *buf, size_t len)
{
    const struct sock_conn *sc = conn->priv;
    const char *host = conn->peer_info != NULL ? conn->peer_info->hostname : "?";
    snprintf(buf, len, "rank %d (host %s, %s)", conn->peer, host,
             sc != NULL && sc->sock.fd >= 0 ? sc->sock.addr_str : "not connected");
    return buf;
}

static ncclResult_t io_fail(struct ac_conn *conn, int err)
{
    char peer[AC_SOCKADDR_STRLEN + AC_HOSTNAME_MAX + 32];
    peer_str(conn, peer, sizeof(peer));
    if (err == AC_SOCKET_CLOSED)
        return AC_FAIL(ncclRemoteError,
                       "socket transport: connection to %s closed by peer (channel %d): the peer "
                       "process probably exited or crashed",
                       peer, conn->channel);
    if (err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH || err == ENETDOWN) {
        const struct sock_conn *sc = conn->priv;
        struct sockaddr_storage local;
        socklen_t len = sizeof(local);
        char local_str[AC_SOCKADDR_STRLEN] = "?";
        if (getsockname(sc->sock.fd, (struct sockaddr *)&local, &len) == 0)
            ac_socket_addr_str(&local, local_str, sizeof(local_str));
        return AC_FAIL(ncclRemoteError,
                       "socket transport: %s %s (local address %s, channel %d) failed: %s "
                       "(no answer to keepalive probes for %d s, or to retransmissions): a network "
                       "link or the peer's host is down",
                       conn->is_send ? "send to" : "receive from", peer, local_str, conn->channel,
                       strerror(err), LIVENESS_S);
    }
    return AC_FAIL(ncclSystemError, "socket transport: %s to %s (channel %d) failed: %s",
                   conn->is_send ? "send" : "receive", peer, conn->channel, strerror(err));
}

/* See LIVENESS_S. Best effort: a kernel without these options keeps TCP's own bounds. */
static void set_liveness(int fd)
{
    int on = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static bool sock_can_connect(const struct ac_peer_info *self, const struct ac_peer_info *peer)
{
    return true;
}

static ncclResult_t conn_alloc(struct ac_conn *conn)
{
    if (conn->nslots <= 0 || conn->slot_bytes == 0)
        return AC_FAIL(ncclInternalError,
                       "socket transport: connector to rank %d has %d slots "
                       "of %zu bytes",
                       conn->peer, conn->nslots, conn->slot_bytes);
    struct sock_conn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return AC_FAIL(ncclSystemError, "socket transport: out of memory");
    ac_socket_init(&sc->listener);
    ac_socket_init(&sc->sock);
    sc->slots = malloc((size_t)conn->nslots * conn->slot_bytes);
    sc->sizes = calloc((size_t)conn->nslots, sizeof(*sc->sizes));
    sc->hdrs = calloc((size_t)conn->nslots, sizeof(*sc->hdrs));
    sc->hlens = calloc((size_t)conn->nslots, sizeof(*sc->hlens));
    sc->rx_hlen = hdr_len(0);
    sc->refs = calloc((size_t)conn->nslots, sizeof(*sc->refs));
    sc->landed = calloc((size_t)conn->nslots, sizeof(*sc->landed));
    conn->priv = sc;
    if (sc->slots == NULL || sc->sizes == NULL || sc->refs == NULL || sc->landed == NULL ||
        sc->hdrs == NULL || sc->hlens == NULL)
        return AC_FAIL(ncclSystemError,
                       "socket transport: out of memory for %d slots of %zu "
                       "bytes (NCCL_BUFFSIZE, ANYCCL_NSLOTS)",
                       conn->nslots, conn->slot_bytes);
    return ncclSuccess;
}

static void sock_close(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    if (sc == NULL)
        return;
    ac_socket_close(&sc->listener);
    ac_socket_close(&sc->sock);
    free(sc->slots);
    free(sc->sizes);
    free(sc->hdrs);
    free(sc->hlens);
    free(sc->refs);
    free(sc->landed);
    free(sc);
    conn->priv = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* set-up                                                                                       */

static ncclResult_t sock_recv_setup(struct ac_conn *conn, struct ac_conn_blob *blob_out)
{
    struct sock_blob blob = {.magic = BLOB_MAGIC};
    struct sockaddr_storage local;
    AC_CHECK(conn_alloc(conn));
    struct sock_conn *sc = conn->priv;
    if (conn->self_info != NULL && ac_socket_addr_is_valid(&conn->self_info->addr))
        local = conn->self_info->addr;
    else
        AC_CHECK(ac_socket_pick_addr(NULL, &local, NULL, 0));
    ac_socket_addr_set_port(&local, 0);
    if (getrandom(&sc->nonce, sizeof(sc->nonce), 0) != (ssize_t)sizeof(sc->nonce))
        return AC_SYSFAIL("getrandom (socket transport nonce)");
    AC_CHECK(ac_socket_listen(&sc->listener, &local));
    blob.nonce = sc->nonce;
    blob.addr = sc->listener.addr;
    memset(blob_out, 0, sizeof(*blob_out));
    memcpy(blob_out->bytes, &blob, sizeof(blob));
    return ncclSuccess;
}

static ncclResult_t sock_send_connect(struct ac_conn *conn, const struct ac_conn_blob *peer_blob)
{
    struct sock_blob blob;
    memcpy(&blob, peer_blob->bytes, sizeof(blob));
    if (blob.magic != BLOB_MAGIC || !ac_socket_addr_is_valid(&blob.addr))
        return AC_FAIL(ncclInternalError,
                       "socket transport: rank %d sent a connection blob "
                       "that is not the socket transport's (channel %d)",
                       conn->peer, conn->channel);
    AC_CHECK(conn_alloc(conn));
    struct sock_conn *sc = conn->priv;
    uint64_t deadline = ac_now_ns() + (uint64_t)ac_config_setup_timeout_s() * 1000000000ull;
    struct sock_hello hello = {.magic = HELLO_MAGIC,
                               .channel = conn->channel,
                               .comm_hash = conn->comm_hash,
                               .nonce = blob.nonce,
                               .sender_rank = conn->self_info ? conn->self_info->rank : -1};
    struct sockaddr_storage src;
    const struct sockaddr_storage *own = conn->self_info ? &conn->self_info->addr : NULL;
    bool has_src = ac_socket_source_for(&blob.addr, own, &src);
    if (ac_log_enabled(AC_LOG_INFO, AC_SUB_NET)) {
        char to[AC_SOCKADDR_STRLEN], from[AC_SOCKADDR_STRLEN];
        AC_INFO(AC_SUB_NET, "socket: channel %d to rank %d at %s from %s", conn->channel,
                conn->peer, ac_socket_addr_str(&blob.addr, to, sizeof(to)),
                has_src ? ac_socket_addr_str(&src, from, sizeof(from)) : "any address");
    }
    AC_CHECK(ac_socket_connect_from(&sc->sock, &blob.addr, has_src ? &src : NULL, deadline, NULL));
    ac_socket_set_bufsize(&sc->sock, SOCKET_BUF_BYTES);
    set_liveness(sc->sock.fd);
    AC_CHECK(ac_socket_send_all(&sc->sock, &hello, sizeof(hello), deadline, NULL));
    return ac_socket_set_nonblocking(&sc->sock);
}

/* NULL when the hello is from the sender this connector waits for, else why not. */
static const char *check_hello(const struct ac_conn *conn, const struct sock_hello *h)
{
    const struct sock_conn *sc = conn->priv;
    if (h->magic != HELLO_MAGIC)
        return "not a socket transport hello";
    if (h->nonce != sc->nonce || h->comm_hash != conn->comm_hash)
        return "wrong nonce or communicator (a stale or foreign connection)";
    if (h->sender_rank != conn->peer || h->channel != conn->channel)
        return "unexpected sender rank or channel";
    return NULL;
}

static ncclResult_t sock_recv_connect(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    int64_t t = ac_config_setup_timeout_s();
    uint64_t deadline = ac_now_ns() + (uint64_t)t * 1000000000ull;
    char peer[AC_SOCKADDR_STRLEN + AC_HOSTNAME_MAX + 32];
    for (;;) {
        struct ac_socket s;
        struct sock_hello hello;
        ac_socket_init(&s);
        AC_CHECK(ac_socket_accept(&sc->listener, &s, deadline, NULL));
        if (s.fd < 0)
            return AC_FAIL(ncclRemoteError,
                           "socket transport: %s did not connect to %s within "
                           "%lld s (channel %d): is it alive? see ANYCCL_INIT_TIMEOUT",
                           peer_str(conn, peer, sizeof(peer)), sc->listener.addr_str, (long long)t,
                           conn->channel);
        uint64_t d = ac_now_ns() + HELLO_READ_NS;
        int err = ac_socket_xfer_quiet(&s, &hello, sizeof(hello), false,
                                       d < deadline ? d : deadline, NULL);
        const char *why = err != 0 ? strerror(err) : check_hello(conn, &hello);
        if (why == NULL) {
            sc->sock = s;
            break;
        }
        AC_WARN("socket transport: dropping connection from %s while waiting for rank %d "
                "(channel %d): %s",
                s.addr_str, conn->peer, conn->channel, why);
        ac_socket_close(&s);
    }
    ac_socket_close(&sc->listener);
    ac_socket_set_bufsize(&sc->sock, SOCKET_BUF_BYTES);
    set_liveness(sc->sock.fd);
    return ac_socket_set_nonblocking(&sc->sock);
}

/* ------------------------------------------------------------------------------------------ */
/* data path                                                                                    */

static ncclResult_t sock_send_slot(struct ac_conn *conn, void **slot_out)
{
    struct sock_conn *sc = conn->priv;
    if (sc->head - sc->tail >= (uint64_t)conn->nslots) {
        *slot_out = NULL;
        return ncclSuccess;
    }
    *slot_out = sc->slots + (sc->head % (uint64_t)conn->nslots) * conn->slot_bytes;
    return ncclSuccess;
}

static size_t payload_bytes(uint64_t header)
{
    return (size_t)(header & 0xffffffffu);
}

static ncclResult_t post(struct ac_conn *conn, const void *ref, size_t bytes)
{
    struct sock_conn *sc = conn->priv;
    if (bytes > conn->slot_bytes || sc->head - sc->tail >= (uint64_t)conn->nslots)
        return AC_FAIL(ncclInternalError,
                       "socket transport: post of %zu bytes to rank %d "
                       "(slot bytes %zu, %llu slots in flight)",
                       bytes, conn->peer, conn->slot_bytes,
                       (unsigned long long)(sc->head - sc->tail));
    size_t i = sc->head % (uint64_t)conn->nslots;
    /* the header word: payload bytes, and the operation's tag (transport.h) in the upper half */
    sc->sizes[i] = bytes | (uint64_t)conn->tx_tag << 32;
    sc->hdrs[i].word = sc->sizes[i];
    sc->hlens[i] = (uint8_t)hdr_len(sc->stream_pos);
    sc->stream_pos += sc->hlens[i] + bytes;
    sc->refs[i] = ref;
    sc->head++;
    return ncclSuccess;
}

static ncclResult_t sock_send_post(struct ac_conn *conn, size_t bytes)
{
    return post(conn, NULL, bytes);
}

/* The kernel copies the payload at sendmsg time, so a reference is held only until its slot is
 * written: is_flushing covers it. */
static ncclResult_t sock_send_post_ref(struct ac_conn *conn, const void *data, size_t bytes)
{
    return post(conn, data, bytes);
}

/* One sendmsg of the posted slots from tail on; returns bytes written, 0 on EAGAIN, -errno. */
static ssize_t write_slots(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    struct iovec iov[2 * IOV_SLOTS];
    int n = 0;
    size_t skip = sc->cur_done;
    for (uint64_t k = sc->tail; k < sc->head && n < 2 * IOV_SLOTS; k++) {
        size_t i = k % (uint64_t)conn->nslots;
        iov[n++] = (struct iovec){.iov_base = &sc->hdrs[i], .iov_len = sc->hlens[i]};
        void *payload = sc->refs[i] ? (void *)sc->refs[i] : sc->slots + i * conn->slot_bytes;
        iov[n++] = (struct iovec){.iov_base = payload, .iov_len = payload_bytes(sc->sizes[i])};
    }
    for (int j = 0; j < n && skip > 0; j++) { /* resume a partly written slot */
        size_t d = skip < iov[j].iov_len ? skip : iov[j].iov_len;
        iov[j].iov_base = (char *)iov[j].iov_base + d;
        iov[j].iov_len -= d;
        skip -= d;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    for (;;) {
        ssize_t w = sendmsg(sc->sock.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return errno == EPIPE || errno == ECONNRESET ? -AC_SOCKET_CLOSED : -errno;
    }
}

static ncclResult_t progress_send(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    while (sc->tail < sc->head) {
        ssize_t w = write_slots(conn);
        if (w < 0)
            return io_fail(conn, (int)-w);
        if (w == 0)
            return ncclSuccess;
        size_t left = (size_t)w;
        while (left > 0) {
            size_t i = sc->tail % (uint64_t)conn->nslots;
            size_t total = sc->hlens[i] + payload_bytes(sc->sizes[i]);
            size_t d = total - sc->cur_done < left ? total - sc->cur_done : left;
            sc->cur_done += d;
            left -= d;
            if (sc->cur_done == total) {
                sc->cur_done = 0;
                sc->tail++;
            }
        }
    }
    return ncclSuccess;
}

static ncclResult_t check_header(struct ac_conn *conn)
{
    const struct sock_conn *sc = conn->priv;
    if (payload_bytes(sc->rx_hdr.word) <= conn->slot_bytes)
        return ncclSuccess;
    return AC_FAIL(ncclRemoteError,
                   "socket transport: rank %d sent %llu bytes for a slot of %zu (channel %d): do "
                   "both ranks use the same NCCL_BUFFSIZE and ANYCCL_NSLOTS?",
                   conn->peer, (unsigned long long)payload_bytes(sc->rx_hdr.word), conn->slot_bytes,
                   conn->channel);
}

/* The message at head is all there (its payload in the slot, or where landed[] says). */
static void complete_slot(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    sc->sizes[sc->head % (uint64_t)conn->nslots] = sc->rx_hdr.word;
    sc->stream_pos += sc->rx_hlen + payload_bytes(sc->rx_hdr.word);
    sc->rx_hlen = hdr_len(sc->stream_pos);
    sc->cur_done = 0;
    sc->direct = NULL;
    sc->head++;
}

/* The message at head, of the size the executor expects (sc->expect), header and payload in one
 * read (a system call is most of a small message's cost), the payload where it is to land or in
 * slot i. Reads no further than that message unless the sender sent less. *is_stopped: nothing
 * more to do in this progress call; otherwise the rest of the message, if any, is read as usual. */
static ncclResult_t read_expected(struct ac_conn *conn, size_t i, bool *is_stopped)
{
    struct sock_conn *sc = conn->priv;
    bool is_direct = sc->direct != NULL && sc->expect <= sc->direct_cap;
    char *slot = sc->slots + i * conn->slot_bytes, *to = is_direct ? sc->direct : slot;
    size_t done = 0, expect = sc->expect;
    struct iovec iov[2] = {{.iov_base = &sc->rx_hdr, .iov_len = sc->rx_hlen},
                           {.iov_base = to, .iov_len = expect}};
    int err = ac_socket_recv_iov(&sc->sock, iov, 2, &done);
    *is_stopped = true;
    if (err == AC_SOCKET_CLOSED) {
        sc->is_peer_closed = true; /* between two slots, as in progress_recv */
        return ncclSuccess;
    }
    if (err != 0)
        return io_fail(conn, err);
    if (done == 0)
        return ncclSuccess;
    sc->expect = 0;
    sc->cur_done = done;
    *is_stopped = false;
    if (done < sc->rx_hlen)
        return ncclSuccess;
    AC_CHECK(check_header(conn));
    size_t want = payload_bytes(sc->rx_hdr.word), read = done - sc->rx_hlen;
    if (read > want) {
        /* The sender sent less than expected, and this read took the start of its next
         * message: deliver this one (the executor reports the difference in size), and fail
         * whatever comes after. */
        sc->is_out_of_step = true;
        if (is_direct)
            sc->landed[i] = to;
        *is_stopped = true;
        complete_slot(conn);
        return ncclSuccess;
    }
    if (is_direct && want <= expect)
        sc->landed[i] = to;
    else if (is_direct && read > 0)
        memcpy(slot, to, read); /* more than expected: the slot takes it all */
    return ncclSuccess;
}

static ncclResult_t progress_recv(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    if (sc->is_out_of_step)
        return AC_FAIL(ncclRemoteError,
                       "socket transport: the stream from rank %d (channel %d) is out of step "
                       "after a message shorter than expected: the ranks called different "
                       "operations",
                       conn->peer, conn->channel);
    while (sc->head - sc->tail < (uint64_t)conn->nslots) {
        size_t i = sc->head % (uint64_t)conn->nslots, got;
        int err = 0;
        bool is_expected = sc->cur_done == 0 && sc->expect > 0 && sc->tail == sc->head;
        if (is_expected) {
            bool is_stopped = false;
            AC_CHECK(read_expected(conn, i, &is_stopped));
            if (is_stopped)
                return ncclSuccess;
        }
        if (sc->cur_done < sc->rx_hlen) {
            bool is_boundary = sc->cur_done == 0;
            err = ac_socket_recv_some(&sc->sock, &sc->rx_hdr, sc->rx_hlen, &sc->cur_done);
            /* A peer that sent everything and closed is not an error until a slot is missing:
             * it may have finished the collective and destroyed its communicator already. */
            if (err == AC_SOCKET_CLOSED && is_boundary && sc->cur_done == 0) {
                sc->is_peer_closed = true;
                return ncclSuccess;
            }
            if (err != 0)
                return io_fail(conn, err);
            if (sc->cur_done < sc->rx_hlen)
                return ncclSuccess;
            AC_CHECK(check_header(conn));
        }
        got = sc->cur_done - sc->rx_hlen;
        size_t want = payload_bytes(sc->rx_hdr.word);
        char *to = sc->slots + i * conn->slot_bytes;
        if (sc->direct != NULL && sc->tail == sc->head && want <= sc->direct_cap) {
            if (sc->landed[i] == NULL && got > 0)
                memcpy(sc->direct, to, got); /* the hint came in the middle of the payload */
            sc->landed[i] = to = sc->direct;
        }
        err = ac_socket_recv_some(&sc->sock, to, want, &got);
        sc->cur_done = sc->rx_hlen + got;
        if (err != 0)
            return io_fail(conn, err);
        if (got < want)
            return ncclSuccess;
        bool is_landed = sc->landed[i] != NULL;
        complete_slot(conn);
        /* The next message is left in the socket until its step gives where it lands: read
         * ahead now, it would go through a slot and be copied out (a point-to-point receiver,
         * whose sender is ahead, then copied a third of its messages). */
        if (is_landed)
            return ncclSuccess;
        /* The small message the executor waits for is in: looking for the next one now would
         * cost a system call that mostly finds nothing. Large ones keep draining the socket. */
        if (is_expected && want < READ_AHEAD_MIN_BYTES)
            return ncclSuccess;
    }
    return ncclSuccess;
}

static ncclResult_t sock_progress(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    if (conn->is_send)
        return progress_send(conn);
    if (sc->is_peer_closed)
        return sc->tail == sc->head ? io_fail(conn, AC_SOCKET_CLOSED) : ncclSuccess;
    return progress_recv(conn);
}

static ncclResult_t sock_recv_slot(struct ac_conn *conn, const void **slot_out, size_t *bytes_out)
{
    struct sock_conn *sc = conn->priv;
    if (sc->tail == sc->head) {
        *slot_out = NULL;
        return ncclSuccess;
    }
    size_t i = sc->tail % (uint64_t)conn->nslots;
    *slot_out = sc->landed[i] != NULL ? sc->landed[i] : sc->slots + i * conn->slot_bytes;
    *bytes_out = payload_bytes(sc->sizes[i]);
    conn->rx_tag = (uint32_t)(sc->sizes[i] >> 32);
    return ncclSuccess;
}

static ncclResult_t sock_recv_release(struct ac_conn *conn)
{
    struct sock_conn *sc = conn->priv;
    if (sc->tail == sc->head)
        return AC_FAIL(ncclInternalError,
                       "socket transport: release with no slot held (rank %d "
                       "channel %d)",
                       conn->peer, conn->channel);
    sc->landed[sc->tail % (uint64_t)conn->nslots] = NULL;
    sc->tail++;
    return ncclSuccess;
}

/* Only at a message boundary with nothing older unconsumed: the message read next is the one
 * the executor's step waits for. */
static void sock_recv_expect(struct ac_conn *conn, size_t bytes)
{
    struct sock_conn *sc = conn->priv;
    if (sc->tail == sc->head && sc->cur_done == 0 && bytes <= conn->slot_bytes)
        sc->expect = bytes;
}

/* Only for the message the receiver waits for (nothing older unconsumed): data already read
 * for it moves over once, the rest of its payload lands at dst. */
static void sock_recv_direct(struct ac_conn *conn, void *dst, size_t bytes)
{
    struct sock_conn *sc = conn->priv;
    if (sc->tail == sc->head && sc->direct == NULL) {
        sc->direct = dst;
        sc->direct_cap = bytes;
    }
}

static bool sock_is_flushing(struct ac_conn *conn)
{
    const struct sock_conn *sc = conn->priv;
    return conn->is_send && sc != NULL && sc->sock.fd >= 0 && sc->tail < sc->head;
}

const struct ac_transport ac_socket_transport = {
    .name = "socket",
    .has_full_p2p_slots = true,
    .wants_large_chunks = true,
    .can_connect = sock_can_connect,
    .recv_setup = sock_recv_setup,
    .send_connect = sock_send_connect,
    .recv_connect = sock_recv_connect,
    .send_slot = sock_send_slot,
    .send_post = sock_send_post,
    .send_post_ref = sock_send_post_ref,
    .recv_slot = sock_recv_slot,
    .recv_release = sock_recv_release,
    .recv_direct = sock_recv_direct,
    .recv_expect = sock_recv_expect,
    .progress = sock_progress,
    .is_flushing = sock_is_flushing,
    .close = sock_close,
};
