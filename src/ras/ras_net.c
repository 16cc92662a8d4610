/* The RAS thread: one per process, a poll loop over its listening socket, the connections to peer
 * RAS threads and the RAS clients. Peers are the processes this one shares a communicator with:
 * all of them up to 16, the two nearest on each side of a ring sorted by address beyond that (the
 * lower address connects, the higher one connects too if nothing arrives within two heartbeats).
 * A connection is authenticated by HELLO (HMAC of a shared communicator's key) and acknowledged;
 * then both sides send KEEPALIVE (with their progress records) every ANYCCL_RAS_HEARTBEAT_MS.
 * A peer is declared dead when an acknowledged connection closes without BYE, when it is silent
 * for ANYCCL_RAS_DEAD_MS, or when its port refuses connections that long; the news is flooded. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "core/comm.h"
#include "ras/ras_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define AUTH_TIMEOUT_NS (5ull * 1000000000ull)
#define MAX_OUT_BYTES (4u << 20)
#ifndef AC_RAS_MESH_MAX /* -DAC_RAS_MESH_MAX=2 tests the ring with a few processes */
#define AC_RAS_MESH_MAX 16
#endif
#define MESH_MAX AC_RAS_MESH_MAX
#define RING_REACH 2

enum conn_state { C_CONNECTING, C_WAIT_ACK, C_AUTH, C_UP, C_CLOSED };

struct conn {
    int fd;
    enum conn_state state;
    int proc; /* index in ac_ras_g.procs, -1 until known */
    bool has_bye;
    uint64_t created_ns;
    char peer_str[AC_SOCKADDR_STRLEN];
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    struct conn *next;
};

static struct {
    pthread_t thread;
    bool is_running;
    int wake_fd;
    int listen_fd;
    _Atomic bool should_stop;
    volatile sig_atomic_t dump_pending;
    struct conn *conns;
    uint64_t next_hb_ns;
    uint32_t msg_seq;
    pid_t owner;
} net = {.wake_fd = -1, .listen_fd = -1};

static void flood_dead(int idx);

void ac_ras_net_wake(void)
{
    uint64_t one = 1;
    if (net.wake_fd >= 0 && write(net.wake_fd, &one, sizeof(one)) < 0) {
        /* full counter: the thread is awake anyway */
    }
}

void ac_ras_net_signal_dump(void)
{
    net.dump_pending = 1;
    ac_ras_net_wake();
}

/* ---- sending ---- */

static void conn_queue(struct conn *c, uint16_t type, const uint8_t *payload, uint32_t len)
{
    if (c->state == C_CLOSED || c->out_len - c->out_off + AC_RAS_HDR_BYTES + len > MAX_OUT_BYTES)
        return; /* a peer that stopped reading: heartbeats are dropped, the timers decide */
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    size_t need = c->out_len + AC_RAS_HDR_BYTES + len;
    if (need > c->out_cap) {
        size_t cap = need < 4096 ? 4096 : need * 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p)
            return;
        c->out = p;
        c->out_cap = cap;
    }
    struct ac_ras_hdr h = {AC_RAS_MAGIC,  AC_RAS_VERSION,     type, len,
                           ++net.msg_seq, (uint32_t)getpid(), 0};
    ac_ras_hdr_encode(&h, c->out + c->out_len);
    if (len)
        memcpy(c->out + c->out_len + AC_RAS_HDR_BYTES, payload, len);
    c->out_len += AC_RAS_HDR_BYTES + len;
}

static void conn_flush(struct conn *c)
{
    while (c->state != C_CLOSED && c->state != C_CONNECTING && c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            return; /* EAGAIN, or an error the next recv reports */
        c->out_off += (size_t)n;
    }
}

/* The local progress records (lock held); *n_out of them, in a malloc'ed buffer. */
static uint8_t *encode_records(uint64_t prefix, size_t *len_out)
{
    uint32_t n = 0;
    for (struct ac_ras_comm *c = ac_ras_g.comms; c; c = c->next)
        n += c->rank_proc != NULL && n < AC_RAS_MAX_RECORDS;
    size_t len = 8 + 4 + (size_t)n * AC_RAS_RECORD_BYTES;
    uint8_t *p = malloc(len);
    struct ac_ras_record *recs = calloc(n ? n : 1, sizeof(*recs));
    if (!p || !recs) {
        free(p);
        free(recs);
        return NULL;
    }
    uint32_t i = 0;
    uint64_t now = ac_now_ns();
    for (struct ac_ras_comm *c = ac_ras_g.comms; c && i < n; c = c->next)
        if (c->rank_proc)
            ac_ras_rec_snapshot(c, &recs[i++], now);
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, p, len);
    ac_ras_put_u64(&b, prefix);
    ac_ras_records_put(&b, recs, i);
    free(recs);
    *len_out = b.pos;
    return p;
}

static struct conn *proc_conn(int idx, bool is_up_only)
{
    for (struct conn *c = net.conns; c; c = c->next)
        if (c->proc == idx && (c->state == C_UP || (!is_up_only && c->state != C_CLOSED)))
            return c;
    return NULL;
}

static void send_to_all_up(uint16_t type, const uint8_t *payload, uint32_t len)
{
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        struct conn *c = ac_ras_g.procs[i].state == AC_RAS_PROC_ALIVE ? proc_conn(i, true) : NULL;
        if (c)
            conn_queue(c, type, payload, len);
    }
}

static void send_heartbeats(void)
{
    size_t len;
    uint8_t *p = encode_records(ac_now_ns(), &len);
    if (p)
        send_to_all_up(AC_RAS_MSG_KEEPALIVE, p, (uint32_t)len);
    free(p);
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    if (c->state == C_CLOSED)
        return;
    close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
}

static struct conn *conn_new(int fd, enum conn_state state, int proc)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->state = state;
    c->proc = proc;
    c->created_ns = ac_now_ns();
    c->next = net.conns;
    net.conns = c;
    return c;
}

static void queue_hello(struct conn *c, const struct ac_ras_proc *p)
{
    struct ac_ras_hello h;
    uint8_t buf[128];
    struct ac_ras_buf b;
    memset(&h, 0, sizeof(h));
    h.key_id = p->key_id;
    uint64_t r1 = ac_now_ns() ^ ((uint64_t)getpid() << 32), r2 = (uint64_t)(uintptr_t)c;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, h.nonce, sizeof(h.nonce)) != (ssize_t)sizeof(h.nonce)) {
        memcpy(h.nonce, &r1, 8);
        memcpy(h.nonce + 8, &r2, 8);
    }
    if (fd >= 0)
        close(fd);
    h.from = ac_ras_g.self;
    ac_ras_buf_init(&b, buf, sizeof(buf));
    ac_ras_hello_encode(&b, &h, p->key, sizeof(p->key));
    conn_queue(c, AC_RAS_MSG_HELLO, buf, (uint32_t)b.pos);
}

static void connect_failed(int idx, const char *why)
{
    struct ac_ras_proc *p = &ac_ras_g.procs[idx];
    uint64_t now = ac_now_ns();
    if (p->connect_fail_since_ns == 0)
        p->connect_fail_since_ns = now;
    p->next_connect_ns = now + (uint64_t)ac_config_get()->ras_heartbeat_ms * 1000000ull;
    AC_INFO(AC_SUB_RAS, "RAS: connection to pid %u on %s failed: %s", p->addr.pid, p->host, why);
}

static void start_connect(int idx)
{
    struct ac_ras_proc *p = &ac_ras_g.procs[idx];
    struct sockaddr_storage sa;
    ac_ras_addr_to_sockaddr(&p->addr, &sa);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(idx, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, ac_socket_addr_len(&sa)) != 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        connect_failed(idx, strerror(err));
        return;
    }
    struct conn *c = conn_new(fd, C_CONNECTING, idx);
    if (!c)
        return;
    ac_socket_addr_str(&sa, c->peer_str, sizeof(c->peer_str));
    queue_hello(c, p);
}

static void accept_all(void)
{
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(net.listen_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = conn_new(fd, C_AUTH, -1);
        if (c)
            ac_socket_addr_str(&sa, c->peer_str, sizeof(c->peer_str));
    }
}

/* ---- receiving ---- */

static void drop(struct conn *c, const char *why)
{
    AC_WARN("RAS: dropped the connection from %s: %s (another job, a port scanner, or a "
            "mismatched AnyCCL version?)",
            c->peer_str, why);
    conn_close(c);
}

static void handle_hello(struct conn *c, struct ac_ras_buf *b)
{
    struct ac_ras_hello h;
    uint8_t key[8];
    if (!ac_ras_hello_decode(b, &h))
        return drop(c, "malformed HELLO");
    if (!ac_ras_key_lookup(h.key_id, key) || !ac_ras_hello_verify(&h, key, sizeof(key)))
        return drop(c, "HELLO not signed with the key of any communicator of this process");
    int idx = ac_ras_proc_add(&h.from);
    if (idx < 0)
        return conn_close(c);
    struct ac_ras_proc *p = &ac_ras_g.procs[idx];
    if (p->state == AC_RAS_PROC_DEAD && p->addr.pid == h.from.pid)
        return drop(c, "a process already declared dead");
    if (p->state != AC_RAS_PROC_ALIVE || p->addr.pid != h.from.pid) {
        p->state = AC_RAS_PROC_ALIVE;
        p->addr.pid = h.from.pid;
    }
    if (p->key_id == 0) {
        memcpy(p->key, key, 8);
        p->key_id = h.key_id;
    }
    p->last_rx_ns = ac_now_ns();
    p->connect_fail_since_ns = 0;
    c->proc = idx;
    c->state = C_UP;
    uint8_t ack[4] = {0};
    conn_queue(c, AC_RAS_MSG_HELLO_ACK, ack, sizeof(ack));
}

static void store_records(struct ac_ras_proc *p, struct ac_ras_buf *b, uint64_t query)
{
    uint32_t max = (uint32_t)(ac_ras_buf_left(b) / AC_RAS_RECORD_BYTES);
    struct ac_ras_record *r = calloc(max ? max : 1, sizeof(*r));
    uint32_t n = 0;
    if (!r || !ac_ras_records_get(b, r, max < AC_RAS_MAX_RECORDS ? max : AC_RAS_MAX_RECORDS, &n)) {
        free(r);
        return;
    }
    free(p->recs);
    p->recs = r;
    p->nrecs = n;
    p->recs_ns = ac_now_ns();
    if (query)
        p->replied_query = query;
}

static void handle_dead_peer(struct conn *c, struct ac_ras_buf *b)
{
    struct ac_ras_addr a;
    ac_ras_addr_get(b, &a);
    if (b->has_failed || ac_ras_addr_equal(&a, &ac_ras_g.self))
        return;
    int idx = ac_ras_proc_find(&a);
    if (idx < 0 || ac_ras_g.procs[idx].addr.pid != a.pid)
        return;
    char why[64];
    snprintf(why, sizeof(why), "reported dead by pid %u",
             c->proc >= 0 ? ac_ras_g.procs[c->proc].addr.pid : 0);
    if (ac_ras_proc_declare_dead(idx, why))
        flood_dead(idx);
}

static void handle_msg(struct conn *c, const struct ac_ras_hdr *h, uint8_t *payload)
{
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, payload, h->length);
    if (c->state == C_AUTH) {
        if (h->type != AC_RAS_MSG_HELLO)
            return drop(c, "first message is not HELLO");
        return handle_hello(c, &b);
    }
    struct ac_ras_proc *p = &ac_ras_g.procs[c->proc];
    p->last_rx_ns = ac_now_ns();
    switch (h->type) {
    case AC_RAS_MSG_HELLO_ACK:
        if (c->state == C_WAIT_ACK && ac_ras_get_u32(&b) == 0 && !b.has_failed) {
            c->state = C_UP;
            p->connect_fail_since_ns = 0;
            if (p->replied_query < ac_ras_g.query_id) {
                uint8_t q[8];
                struct ac_ras_buf w;
                ac_ras_buf_init(&w, q, sizeof(q));
                ac_ras_put_u64(&w, ac_ras_g.query_id);
                conn_queue(c, AC_RAS_MSG_QUERY, q, sizeof(q));
            }
        }
        break;
    case AC_RAS_MSG_KEEPALIVE:
        (void)ac_ras_get_u64(&b);
        store_records(p, &b, 0);
        break;
    case AC_RAS_MSG_REPLY: {
        uint64_t id = ac_ras_get_u64(&b);
        store_records(p, &b, id);
        break;
    }
    case AC_RAS_MSG_QUERY: {
        size_t len;
        uint8_t *r = encode_records(ac_ras_get_u64(&b), &len);
        if (r && !b.has_failed)
            conn_queue(c, AC_RAS_MSG_REPLY, r, (uint32_t)len);
        free(r);
        break;
    }
    case AC_RAS_MSG_DEAD_PEER:
        handle_dead_peer(c, &b);
        break;
    case AC_RAS_MSG_BYE:
        c->has_bye = true;
        break;
    default:
        break; /* newer types are skipped by length */
    }
}

/* Parses every complete message in c->in. */
static void parse_input(struct conn *c)
{
    size_t off = 0;
    while (c->state != C_CLOSED && c->in_len - off >= AC_RAS_HDR_BYTES) {
        struct ac_ras_hdr h;
        const char *why;
        if (!ac_ras_hdr_decode(c->in + off, &h, &why))
            return drop(c, why);
        if (c->state == C_AUTH && h.length > 256)
            return drop(c, "oversized first message");
        if (c->in_len - off - AC_RAS_HDR_BYTES < h.length)
            break;
        handle_msg(c, &h, c->in + off + AC_RAS_HDR_BYTES);
        off += AC_RAS_HDR_BYTES + h.length;
    }
    if (off > 0 && c->state != C_CLOSED) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void on_closed(struct conn *c, const char *why)
{
    int idx = c->proc;
    enum conn_state state = c->state;
    bool has_bye = c->has_bye;
    conn_close(c);
    if (idx < 0)
        return;
    struct ac_ras_proc *p = &ac_ras_g.procs[idx];
    if (state == C_CONNECTING || state == C_WAIT_ACK)
        return connect_failed(idx, why);
    if (p->state != AC_RAS_PROC_ALIVE || proc_conn(idx, true))
        return;
    if (has_bye) {
        p->state = AC_RAS_PROC_LEFT;
        AC_INFO(AC_SUB_RAS, "RAS: pid %u on %s left (its last communicator is gone)", p->addr.pid,
                p->host);
        return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "its RAS connection closed (%s): the process exited or was killed",
             why);
    if (ac_ras_proc_declare_dead(idx, msg))
        flood_dead(idx);
}

static void conn_read(struct conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            if (cap > AC_RAS_MAX_PAYLOAD + 2 * AC_RAS_HDR_BYTES + 8192)
                cap = AC_RAS_MAX_PAYLOAD + 2 * AC_RAS_HDR_BYTES + 8192;
            uint8_t *p = cap > c->in_cap ? realloc(c->in, cap) : NULL;
            if (!p)
                return on_closed(c, "out of memory");
            c->in = p;
            c->in_cap = cap;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n == 0)
            return on_closed(c, "end of stream");
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? (void)0 : on_closed(c, strerror(errno));
        c->in_len += (size_t)n;
        parse_input(c);
        if (c->state == C_CLOSED)
            return;
    }
}

static void conn_events(struct conn *c, short revents)
{
    if (c->state == C_CONNECTING && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0)
            return on_closed(c, strerror(err));
        c->state = C_WAIT_ACK;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP))
        conn_read(c);
    conn_flush(c);
}

static void flood_dead(int idx)
{
    uint8_t buf[AC_RAS_ADDR_BYTES];
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, buf, sizeof(buf));
    ac_ras_addr_put(&b, &ac_ras_g.procs[idx].addr);
    for (struct conn *c = net.conns; c; c = c->next)
        if (c->proc == idx && c->state != C_CLOSED)
            conn_close(c);
    send_to_all_up(AC_RAS_MSG_DEAD_PEER, buf, (uint32_t)b.pos);
}

/* ---- timers ---- */

static int addr_cmp(const struct ac_ras_addr *a, const struct ac_ras_addr *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    int c = memcmp(a->ip, b->ip, sizeof(a->ip));
    return c ? c : a->port < b->port ? -1 : a->port > b->port ? 1 : 0;
}

static int cmp_proc_idx(const void *x, const void *y)
{
    int i = *(const int *)x, j = *(const int *)y;
    const struct ac_ras_addr *a = i < 0 ? &ac_ras_g.self : &ac_ras_g.procs[i].addr;
    const struct ac_ras_addr *b = j < 0 ? &ac_ras_g.self : &ac_ras_g.procs[j].addr;
    return addr_cmp(a, b);
}

/* wanted[i]: this process keeps a connection to process i. All peers up to MESH_MAX, else the
 * RING_REACH nearest on each side of the ring of peers sorted by address. */
static void pick_fanout(bool *wanted)
{
    int n = 0;
    int *order = malloc(((size_t)ac_ras_g.nprocs + 1) * sizeof(int));
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        bool is_peer = ac_ras_g.procs[i].nrefs > 0 && ac_ras_g.procs[i].state == AC_RAS_PROC_ALIVE;
        wanted[i] = is_peer && (ac_ras_g.nprocs <= MESH_MAX || !order);
        if (is_peer && order)
            order[n++] = i;
    }
    if (!order || n <= MESH_MAX) {
        for (int i = 0; order && i < n; i++)
            wanted[order[i]] = true;
        free(order);
        return;
    }
    order[n++] = -1; /* self */
    qsort(order, (size_t)n, sizeof(int), cmp_proc_idx);
    int me = 0;
    while (order[me] != -1)
        me++;
    for (int d = 1; d <= RING_REACH; d++) {
        wanted[order[(me + d) % n]] = true;
        wanted[order[(me - d + n) % n]] = true;
    }
    free(order);
}

static void check_proc(int i, bool is_wanted, uint64_t now)
{
    const struct ac_config *cfg = ac_config_get();
    uint64_t hb_ns = (uint64_t)cfg->ras_heartbeat_ms * 1000000ull;
    uint64_t dead_ns = (uint64_t)cfg->ras_dead_ms * 1000000ull;
    struct ac_ras_proc *p = &ac_ras_g.procs[i];
    if (p->state != AC_RAS_PROC_ALIVE || p->nrefs <= 0)
        return;
    char why[96];
    if (proc_conn(i, true) && now - p->last_rx_ns > dead_ns) {
        snprintf(why, sizeof(why), "no heartbeat for %.1f s (ANYCCL_RAS_DEAD_MS=%lld)",
                 (double)(now - p->last_rx_ns) / 1e9, (long long)cfg->ras_dead_ms);
    } else if (p->connect_fail_since_ns && now - p->connect_fail_since_ns > dead_ns) {
        snprintf(why, sizeof(why), "its RAS port refused connections for %.1f s",
                 (double)(now - p->connect_fail_since_ns) / 1e9);
    } else {
        bool is_lower = addr_cmp(&ac_ras_g.self, &p->addr) < 0;
        bool should = (is_wanted && (is_lower || now - p->last_rx_ns > 2 * hb_ns)) ||
                      p->replied_query < ac_ras_g.query_id;
        if (should && !proc_conn(i, false) && now >= p->next_connect_ns)
            start_connect(i);
        return;
    }
    if (ac_ras_proc_declare_dead(i, why))
        flood_dead(i);
}

static void run_timers(void)
{
    uint64_t now = ac_now_ns();
    const struct ac_config *cfg = ac_config_get();
    if (now >= net.next_hb_ns) {
        send_heartbeats();
        net.next_hb_ns = now + (uint64_t)cfg->ras_heartbeat_ms * 1000000ull;
    }
    bool *wanted = calloc((size_t)ac_ras_g.nprocs + 1, sizeof(bool));
    if (wanted)
        pick_fanout(wanted);
    for (int i = 0; i < ac_ras_g.nprocs; i++)
        check_proc(i, wanted && wanted[i], now);
    free(wanted);
    for (struct conn *c = net.conns; c; c = c->next) {
        if (c->created_ns >= now)
            continue; /* made by check_proc just now */
        if (c->state == C_AUTH && now - c->created_ns > AUTH_TIMEOUT_NS)
            drop(c, "no valid HELLO within 5 s");
        else if ((c->state == C_CONNECTING || c->state == C_WAIT_ACK) &&
                 now - c->created_ns > (uint64_t)cfg->ras_dead_ms * 1000000ull)
            on_closed(c, "no answer to HELLO");
    }
}

/* ---- queries (lock held) ---- */

uint64_t ac_ras_query_start(void)
{
    uint64_t id = ++ac_ras_g.query_id;
    uint8_t q[8];
    struct ac_ras_buf w;
    ac_ras_buf_init(&w, q, sizeof(q));
    ac_ras_put_u64(&w, id);
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        struct ac_ras_proc *p = &ac_ras_g.procs[i];
        if (p->state != AC_RAS_PROC_ALIVE || p->nrefs <= 0)
            continue;
        struct conn *c = proc_conn(i, true);
        if (c)
            conn_queue(c, AC_RAS_MSG_QUERY, q, sizeof(q));
        else
            p->next_connect_ns = 0; /* connect now; the HELLO_ACK handler sends the query */
    }
    ac_ras_net_wake();
    return id;
}

bool ac_ras_query_complete(uint64_t id)
{
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        const struct ac_ras_proc *p = &ac_ras_g.procs[i];
        if (p->state == AC_RAS_PROC_ALIVE && p->nrefs > 0 && p->replied_query < id)
            return false;
    }
    return true;
}

/* ---- the loop ---- */

struct poll_set {
    struct pollfd *fds;
    struct conn **conns;
    int cap;
    int n;
    int nconns;
};

static bool build_poll_set(struct poll_set *ps)
{
    int need = 2 + 64 + 1;
    for (struct conn *c = net.conns; c; c = c->next)
        need++;
    if (need > ps->cap) {
        struct pollfd *f = realloc(ps->fds, (size_t)need * sizeof(*f));
        if (f)
            ps->fds = f;
        struct conn **cs = realloc(ps->conns, (size_t)need * sizeof(*cs));
        if (cs)
            ps->conns = cs;
        if (!f || !cs)
            return false;
        ps->cap = need;
    }
    ps->fds[0] = (struct pollfd){.fd = net.wake_fd, .events = POLLIN};
    ps->fds[1] = (struct pollfd){.fd = net.listen_fd, .events = POLLIN};
    ps->n = 2;
    ps->nconns = 0;
    for (struct conn *c = net.conns; c; c = c->next) {
        short ev = POLLIN;
        if (c->state == C_CONNECTING || c->out_off < c->out_len)
            ev |= POLLOUT;
        ps->conns[ps->nconns++] = c;
        ps->fds[ps->n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    ps->n += ac_ras_clients_pollfds(ps->fds + ps->n, ps->cap - ps->n);
    return true;
}

static void reap_closed(void)
{
    for (struct conn **pp = &net.conns; *pp;) {
        struct conn *c = *pp;
        if (c->state == C_CLOSED) {
            *pp = c->next;
            free(c->in);
            free(c->out);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void dump_all(void)
{
    for (struct ac_ras_comm *c = ac_ras_g.comms; c; c = c->next)
        ac_ras_fr_dump(c, "SIGUSR1");
}

static void loop_once(struct poll_set *ps)
{
    pthread_mutex_lock(&ac_ras_g.lock);
    bool is_ok = build_poll_set(ps);
    pthread_mutex_unlock(&ac_ras_g.lock);
    if (!is_ok || poll(ps->fds, (nfds_t)ps->n, 100) < 0) {
        usleep(100000);
        return;
    }
    pthread_mutex_lock(&ac_ras_g.lock);
    uint64_t v;
    if ((ps->fds[0].revents & POLLIN) && read(net.wake_fd, &v, sizeof(v)) < 0) {
        /* nothing to drain */
    }
    if (net.dump_pending) {
        net.dump_pending = 0;
        dump_all();
    }
    if (ps->fds[1].revents & POLLIN)
        accept_all();
    for (int i = 0; i < ps->nconns; i++)
        if (ps->conns[i]->state != C_CLOSED)
            conn_events(ps->conns[i], ps->fds[2 + i].revents);
    ac_ras_clients_handle(ps->fds + 2 + ps->nconns, ps->n - 2 - ps->nconns);
    run_timers();
    for (struct conn *c = net.conns; c; c = c->next)
        conn_flush(c);
    reap_closed();
    pthread_mutex_unlock(&ac_ras_g.lock);
}

/* Says BYE on every acknowledged connection and gives the bytes ~200 ms to leave. */
static void shut_down(void)
{
    pthread_mutex_lock(&ac_ras_g.lock);
    for (struct conn *c = net.conns; c; c = c->next)
        if (c->state == C_UP)
            conn_queue(c, AC_RAS_MSG_BYE, NULL, 0);
    uint64_t deadline = ac_now_ns() + 200000000ull;
    for (bool is_pending = true; is_pending && ac_now_ns() < deadline;) {
        is_pending = false;
        for (struct conn *c = net.conns; c; c = c->next) {
            conn_flush(c);
            is_pending |= c->state == C_UP && c->out_off < c->out_len;
        }
        if (is_pending)
            usleep(2000);
    }
    for (struct conn *c = net.conns; c; c = c->next)
        conn_close(c);
    reap_closed();
    ac_ras_clients_close_all();
    for (int i = 0; i < ac_ras_g.nprocs; i++)
        free(ac_ras_g.procs[i].recs);
    ac_ras_g.nprocs = 0;
    pthread_mutex_unlock(&ac_ras_g.lock);
}

static void *thread_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    ac_log_set_rank(-1);
    struct poll_set ps = {0};
    while (!atomic_load(&net.should_stop))
        loop_once(&ps);
    shut_down();
    free(ps.fds);
    free(ps.conns);
    return NULL;
}

static int listen_on(const struct sockaddr_storage *bootstrap_addr)
{
    struct sockaddr_storage sa = *bootstrap_addr;
    ac_socket_addr_set_port(&sa, 0);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, ac_socket_addr_len(&sa)) != 0 ||
        listen(fd, 128) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        char str[AC_SOCKADDR_STRLEN];
        AC_WARN("RAS: cannot listen on %s (%s); RAS is off in this process (set "
                "ANYCCL_RAS_ENABLE=0 to silence this)",
                ac_socket_addr_str(&sa, str, sizeof(str)), strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    pthread_mutex_lock(&ac_ras_g.lock);
    ac_ras_addr_from_sockaddr(&sa, &ac_ras_g.self);
    gethostname(ac_ras_g.self_host, sizeof(ac_ras_g.self_host) - 1);
    pthread_mutex_unlock(&ac_ras_g.lock);
    return fd;
}

bool ac_ras_net_start(const struct sockaddr_storage *bootstrap_addr)
{
    if (net.is_running)
        return true;
    net.listen_fd = listen_on(bootstrap_addr);
    net.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (net.listen_fd < 0 || net.wake_fd < 0)
        goto fail;
    atomic_store(&net.should_stop, false);
    net.next_hb_ns = 0;
    pthread_mutex_lock(&ac_ras_g.lock);
    ac_ras_clients_open();
    pthread_mutex_unlock(&ac_ras_g.lock);
    if (pthread_create(&net.thread, NULL, thread_main, NULL) != 0) {
        AC_WARN("RAS: cannot start the RAS thread (%s); RAS is off in this process",
                strerror(errno));
        pthread_mutex_lock(&ac_ras_g.lock);
        ac_ras_clients_close_all();
        pthread_mutex_unlock(&ac_ras_g.lock);
        goto fail;
    }
    net.is_running = true;
    net.owner = getpid();
    char str[AC_SOCKADDR_STRLEN];
    AC_INFO(AC_SUB_RAS | AC_SUB_INIT, "RAS: thread listening for peers on %s",
            ac_ras_addr_str(&ac_ras_g.self, str, sizeof(str)));
    return true;
fail:
    if (net.listen_fd >= 0)
        close(net.listen_fd);
    if (net.wake_fd >= 0)
        close(net.wake_fd);
    net.listen_fd = net.wake_fd = -1;
    ac_ras_g.self.family = 0;
    return false;
}

void ac_ras_net_stop(void)
{
    if (!net.is_running)
        return;
    atomic_store(&net.should_stop, true);
    ac_ras_net_wake();
    pthread_join(net.thread, NULL);
    close(net.listen_fd);
    close(net.wake_fd);
    net.listen_fd = net.wake_fd = -1;
    net.is_running = false;
    ac_ras_g.self.family = 0;
}

/* In a child of fork(): the parent's thread does not exist here; forget its sockets. */
void ac_ras_net_forget(void)
{
    for (struct conn *c = net.conns; c; c = c->next)
        if (c->fd >= 0)
            close(c->fd);
    net.conns = NULL; /* the parent's buffers leak once in the child */
    if (net.listen_fd >= 0)
        close(net.listen_fd);
    if (net.wake_fd >= 0)
        close(net.wake_fd);
    net.listen_fd = net.wake_fd = -1;
    net.is_running = false;
}
