/* Bootstrap, rank side: the unique id, joining the rendezvous, and messages between ranks.
 *
 * Each rank listens on its own socket. A send connects once to the peer's listener (the
 * connection is cached) and writes {secret, from, kind, tag, bytes}{payload}; the receiver reads
 * whatever arrives on any of its incoming connections into a list of messages, which receives
 * match by (peer, kind, tag) in arrival order. A send that cannot write keeps reading incoming
 * messages meanwhile, so ranks that all send before they receive never deadlock. A bootstrap is
 * used by one thread at a time; separate bootstraps share nothing. */
#include "core/bootstrap.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"
#include "core/bootstrap_wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#define TABLE_GRACE_NS (2ull * 1000000000ull) /* the root's verdict arrives before ours */
#define POLL_SLICE_MS 50
#define UID_HASHED_BYTES 48

struct msg {
    struct msg *next;
    int from;
    uint32_t kind;
    uint32_t tag;
    size_t bytes;
    char *data;
};

/* An incoming connection and the message being read from it. */
struct in_conn {
    struct ac_socket sock;
    int from; /* -1 until its first header */
    struct ac_bootstrap_msg_hdr hdr;
    size_t hdr_got;
    char *data;
    size_t data_got;
};

struct ac_bootstrap {
    int rank;
    int nranks;
    uint64_t secret;
    volatile int *abort_flag;
    int64_t timeout_s;
    struct ac_socket listener;
    struct sockaddr_storage *peers; /* [nranks] listen addresses */
    struct ac_socket *out;          /* [nranks] cached send connections */
    bool *is_peer_gone;             /* [nranks] its connection to us closed: it sends no more */
    _Atomic int *dead_rank;         /* a rank that RAS found dead, -1 (NULL: not watched) */
    struct in_conn *in;
    int nin, in_cap;
    struct pollfd *fds;
    int fds_cap;
    struct msg *head, *tail; /* received, not yet matched */
    bool has_root_thread;
    volatile int root_stop; /* tells the root thread to give up (we close) */
    pthread_t root_thread;
};

/* ------------------------------------------------------------------------------------------ */
/* unique id                                                                                    */

static uint64_t fnv1a(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Address bytes in a fixed form: family, port, 16 address bytes, scope id. */
static void pack_addr(const struct sockaddr_storage *a, unsigned char out[24])
{
    uint16_t family = a->ss_family, port = htons((uint16_t)ac_socket_addr_port(a));
    uint32_t scope = 0;
    memset(out, 0, 24);
    memcpy(out, &family, 2);
    memcpy(out + 2, &port, 2);
    if (a->ss_family == AF_INET) {
        memcpy(out + 4, &((const struct sockaddr_in *)a)->sin_addr, 4);
    } else if (a->ss_family == AF_INET6) {
        memcpy(out + 4, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
        scope = ((const struct sockaddr_in6 *)a)->sin6_scope_id;
    }
    memcpy(out + 20, &scope, 4);
}

static bool unpack_addr(const unsigned char in[24], struct sockaddr_storage *a)
{
    uint16_t family, port;
    memcpy(&family, in, 2);
    memcpy(&port, in + 2, 2);
    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)a;
        s->sin_family = AF_INET;
        s->sin_port = port;
        memcpy(&s->sin_addr, in + 4, 4);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)a;
        s->sin6_family = AF_INET6;
        s->sin6_port = port;
        memcpy(&s->sin6_addr, in + 4, 16);
        memcpy(&s->sin6_scope_id, in + 20, 4);
    } else {
        return false;
    }
    return true;
}

/* Layout: magic u32, version u32, secret u64, id_hash u64, address (24 bytes), FNV-1a of the
 * first 48 bytes (u64), zeros. */
void ac_unique_id_encode(const struct ac_unique_id *in, ncclUniqueId *out)
{
    unsigned char *b = (unsigned char *)out->internal;
    memset(out, 0, sizeof(*out));
    memcpy(b, &in->magic, 4);
    memcpy(b + 4, &in->version, 4);
    memcpy(b + 8, &in->secret, 8);
    memcpy(b + 16, &in->id_hash, 8);
    pack_addr(&in->root, b + 24);
    uint64_t sum = fnv1a(b, UID_HASHED_BYTES, 0xcbf29ce484222325ull);
    memcpy(b + UID_HASHED_BYTES, &sum, 8);
}

ncclResult_t ac_unique_id_decode(const ncclUniqueId *in, struct ac_unique_id *out)
{
    const unsigned char *b = (const unsigned char *)in->internal;
    struct ac_unique_id id;
    uint64_t sum;
    memset(&id, 0, sizeof(id));
    memcpy(&id.magic, b, 4);
    memcpy(&id.version, b + 4, 4);
    memcpy(&sum, b + UID_HASHED_BYTES, 8);
    if (id.magic != AC_UNIQUE_ID_MAGIC)
        return AC_FAIL(ncclInvalidArgument,
                       "the ncclUniqueId is not one of AnyCCL's (magic 0x%08x, expected 0x%08x): "
                       "pass every rank the id that ncclGetUniqueId returned, unchanged",
                       id.magic, AC_UNIQUE_ID_MAGIC);
    if (id.version != AC_BOOTSTRAP_VERSION)
        return AC_FAIL(ncclInvalidArgument,
                       "the ncclUniqueId has version %u, this library reads %u: all ranks must "
                       "run the same AnyCCL",
                       id.version, AC_BOOTSTRAP_VERSION);
    if (sum != fnv1a(b, UID_HASHED_BYTES, 0xcbf29ce484222325ull))
        return AC_FAIL(ncclInvalidArgument,
                       "the ncclUniqueId is corrupted (checksum mismatch): pass every rank the "
                       "id that ncclGetUniqueId returned, unchanged");
    memcpy(&id.secret, b + 8, 8);
    memcpy(&id.id_hash, b + 16, 8);
    if (!unpack_addr(b + 24, &id.root))
        return AC_FAIL(ncclInvalidArgument, "the ncclUniqueId holds no valid root address");
    *out = id;
    return ncclSuccess;
}

/* With NCCL_COMM_ID every process builds the same id from the address alone, so the secret and
 * id_hash derive from it. Rule (NCCL's): an id whose secret is derived from its own address has no
 * root thread yet; rank 0 starts the root at that address inside ac_bootstrap_init. A random
 * secret equals the derived one with probability 2^-64. */
static uint64_t derived_secret(const struct sockaddr_storage *root, uint64_t salt)
{
    unsigned char packed[24];
    pack_addr(root, packed);
    return fnv1a(packed, sizeof(packed), 0xcbf29ce484222325ull ^ salt);
}
#define SALT_SECRET 0x5345435245543a31ull
#define SALT_HASH 0x49445f484153483aull

static bool is_comm_id_style(const struct ac_unique_id *id)
{
    return id->secret == derived_secret(&id->root, SALT_SECRET);
}

ncclResult_t ac_bootstrap_create_root(ncclUniqueId *id_out)
{
    struct ac_unique_id id = {.magic = AC_UNIQUE_ID_MAGIC, .version = AC_BOOTSTRAP_VERSION};
    const char *comm_id = ac_config_get()->comm_id;
    char str[AC_SOCKADDR_STRLEN];
    if (comm_id == NULL || *comm_id == '\0')
        return ac_bootstrap_create_private_root(id_out);
    AC_CHECK(ac_socket_addr_parse(comm_id, &id.root));
    id.secret = derived_secret(&id.root, SALT_SECRET);
    id.id_hash = derived_secret(&id.root, SALT_HASH);
    AC_INFO(AC_SUB_INIT | AC_SUB_BOOTSTRAP,
            "bootstrap: NCCL_COMM_ID=%s: rank 0 will run the root "
            "at %s",
            comm_id, ac_socket_addr_str(&id.root, str, sizeof(str)));
    ac_unique_id_encode(&id, id_out);
    return ncclSuccess;
}

ncclResult_t ac_bootstrap_create_private_root(ncclUniqueId *id_out)
{
    struct ac_unique_id id = {.magic = AC_UNIQUE_ID_MAGIC, .version = AC_BOOTSTRAP_VERSION};
    uint64_t rnd[2];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return AC_SYSFAIL("getrandom (the unique id's secret)");
    id.secret = rnd[0];
    id.id_hash = rnd[1];
    /* With NCCL_COMM_ID, the interface that reaches it: the one the job's ranks use. */
    const char *comm_id = ac_config_get()->comm_id;
    struct sockaddr_storage local, comm_addr;
    bool has_comm_addr = comm_id != NULL && *comm_id != '\0' &&
                         ac_socket_addr_parse(comm_id, &comm_addr) == ncclSuccess;
    AC_CHECK(ac_socket_pick_addr(has_comm_addr ? &comm_addr : NULL, &local, NULL, 0));
    AC_CHECK(ac_bootstrap_root_start(&local, id.secret, NULL, NULL, &id.root));
    if (is_comm_id_style(&id)) /* the port is known only now */
        return AC_FAIL(ncclInternalError, "bootstrap: random secret collided; call again");
    ac_unique_id_encode(&id, id_out);
    return ncclSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* incoming messages                                                                            */

static ncclResult_t fail_wait(struct ac_bootstrap *bs, int err, const char *what)
{
    if (err == AC_SOCKET_ABORTED)
        return AC_FAIL(ncclRemoteError, "bootstrap rank %d: %s: aborted", bs->rank, what);
    if (err == ETIMEDOUT)
        return AC_FAIL(ncclRemoteError,
                       "bootstrap rank %d: %s: nothing within %lld s (a peer stuck or dead? see "
                       "ANYCCL_INIT_TIMEOUT)",
                       bs->rank, what, (long long)bs->timeout_s);
    return AC_FAIL(ncclSystemError, "bootstrap rank %d: %s: %s", bs->rank, what, strerror(err));
}

static void enqueue(struct ac_bootstrap *bs, struct msg *m)
{
    m->next = NULL;
    if (bs->tail != NULL)
        bs->tail->next = m;
    else
        bs->head = m;
    bs->tail = m;
}

static void drop_in(struct ac_bootstrap *bs, struct in_conn *c, const char *why)
{
    if (why != NULL)
        AC_WARN("bootstrap rank %d: dropping connection from %s (rank %d): %s", bs->rank,
                c->sock.addr_str, c->from, why);
    if (c->from >= 0 && bs->is_peer_gone != NULL)
        bs->is_peer_gone[c->from] = true;
    ac_socket_close(&c->sock);
    free(c->data);
    c->data = NULL;
}

const char *ac_bootstrap_msg_hdr_check(const struct ac_bootstrap_msg_hdr *h, uint64_t secret,
                                       int nranks, int from)
{
    if (h->secret != secret)
        return "wrong secret (not a rank of this communicator)";
    if (h->from < 0 || h->from >= nranks || (from >= 0 && from != h->from))
        return "bad sender rank";
    if (h->kind < AC_BOOTSTRAP_KIND_USER || h->kind > AC_BOOTSTRAP_KIND_BARRIER)
        return "bad message kind";
    if (h->bytes > AC_BOOTSTRAP_MSG_MAX_BYTES)
        return "message larger than 64 MiB";
    return NULL;
}

/* Reads what is available on c; complete messages go to the list. */
static void read_in(struct ac_bootstrap *bs, struct in_conn *c)
{
    for (;;) {
        int err = 0;
        if (c->hdr_got < sizeof(c->hdr)) {
            err = ac_socket_recv_some(&c->sock, &c->hdr, sizeof(c->hdr), &c->hdr_got);
            if (err == 0 && c->hdr_got == sizeof(c->hdr)) {
                const char *why =
                    ac_bootstrap_msg_hdr_check(&c->hdr, bs->secret, bs->nranks, c->from);
                if (why == NULL && (c->data = malloc(c->hdr.bytes ? c->hdr.bytes : 1)) == NULL)
                    why = "out of memory";
                if (why != NULL)
                    return drop_in(bs, c, why);
                c->from = c->hdr.from;
                bs->is_peer_gone[c->from] = false; /* it reconnected */
            }
        }
        if (err == 0 && c->hdr_got == sizeof(c->hdr))
            err = ac_socket_recv_some(&c->sock, c->data, c->hdr.bytes, &c->data_got);
        if (err != 0) {
            bool is_clean = err == AC_SOCKET_CLOSED && c->hdr_got == 0;
            return drop_in(bs, c, is_clean ? NULL : "closed in the middle of a message");
        }
        if (c->hdr_got < sizeof(c->hdr) || c->data_got < c->hdr.bytes)
            return;
        struct msg *m = malloc(sizeof(*m));
        if (m == NULL)
            return drop_in(bs, c, "out of memory");
        *m = (struct msg){.from = c->from,
                          .kind = c->hdr.kind,
                          .tag = c->hdr.tag,
                          .bytes = c->hdr.bytes,
                          .data = c->data};
        enqueue(bs, m);
        c->data = NULL;
        c->hdr_got = c->data_got = 0;
    }
}

static void accept_in(struct ac_bootstrap *bs)
{
    for (;;) {
        if (bs->nin == bs->in_cap) {
            int cap = bs->in_cap ? 2 * bs->in_cap : 8;
            struct in_conn *n = realloc(bs->in, (size_t)cap * sizeof(*n));
            if (n == NULL)
                return;
            bs->in = n;
            bs->in_cap = cap;
        }
        struct in_conn *c = &bs->in[bs->nin];
        memset(c, 0, sizeof(*c));
        ac_socket_init(&c->sock);
        c->from = -1;
        if (ac_socket_accept(&bs->listener, &c->sock, ac_now_ns(), NULL) != ncclSuccess ||
            c->sock.fd < 0)
            return;
        bs->nin++;
    }
}

/* Polls the listener, incoming connections and (when out_fd >= 0) out_fd for writing for up to
 * timeout_ms, then reads what arrived. Returns 0 or ENOMEM. */
static int poll_and_read(struct ac_bootstrap *bs, int out_fd, int timeout_ms)
{
    if (bs->fds_cap < bs->nin + 2) {
        int cap = 2 * (bs->nin + 2);
        struct pollfd *f = realloc(bs->fds, (size_t)cap * sizeof(*f));
        if (f == NULL)
            return ENOMEM;
        bs->fds = f;
        bs->fds_cap = cap;
    }
    int n = 0;
    bs->fds[n++] = (struct pollfd){.fd = bs->listener.fd, .events = POLLIN};
    bs->fds[n++] = (struct pollfd){.fd = out_fd, .events = POLLOUT}; /* fd -1 is ignored */
    for (int i = 0; i < bs->nin; i++)
        bs->fds[n++] = (struct pollfd){.fd = bs->in[i].sock.fd, .events = POLLIN};
    poll(bs->fds, (nfds_t)n, timeout_ms);
    int nin = bs->nin;
    for (int i = 0; i < nin; i++)
        if (bs->fds[i + 2].revents != 0)
            read_in(bs, &bs->in[i]);
    if (bs->fds[0].revents & POLLIN)
        accept_in(bs);
    int kept = 0;
    for (int i = 0; i < bs->nin; i++)
        if (bs->in[i].sock.fd >= 0)
            bs->in[kept++] = bs->in[i];
    bs->nin = kept;
    return 0;
}

/* poll_and_read in slices until deadline_ns. Returns 0 or AC_SOCKET_ABORTED / ETIMEDOUT /
 * ENOMEM. */
static int wait_and_read(struct ac_bootstrap *bs, int out_fd, uint64_t deadline_ns)
{
    if (bs->abort_flag != NULL && *bs->abort_flag)
        return AC_SOCKET_ABORTED;
    uint64_t now = ac_now_ns();
    if (now >= deadline_ns)
        return ETIMEDOUT;
    uint64_t ms = (deadline_ns - now) / 1000000 + 1;
    return poll_and_read(bs, out_fd, (int)(ms < POLL_SLICE_MS ? ms : POLL_SLICE_MS));
}

void ac_bootstrap_watch_dead(struct ac_bootstrap *bs, _Atomic int *dead_rank)
{
    bs->dead_rank = dead_rank;
}

bool ac_bootstrap_scan(struct ac_bootstrap *bs, uint32_t tag_lo, uint32_t tag_hi,
                       bool (*visit)(void *arg, int from, uint32_t tag, const void *data,
                                     size_t bytes),
                       void *arg)
{
    poll_and_read(bs, -1, 0);
    for (const struct msg *m = bs->head; m != NULL; m = m->next)
        if (m->kind == AC_BOOTSTRAP_KIND_USER && m->tag >= tag_lo && m->tag <= tag_hi &&
            visit(arg, m->from, m->tag, m->data, m->bytes))
            return true;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* send / recv                                                                                  */

static uint64_t op_deadline(const struct ac_bootstrap *bs)
{
    return ac_now_ns() + (uint64_t)bs->timeout_s * 1000000000ull;
}

static ncclResult_t check_peer(const struct ac_bootstrap *bs, int peer, const char *what)
{
    if (peer < 0 || peer >= bs->nranks)
        return AC_FAIL(ncclInvalidArgument, "bootstrap rank %d: %s peer %d is not in [0, %d)",
                       bs->rank, what, peer, bs->nranks);
    return ncclSuccess;
}

static ncclResult_t send_self(struct ac_bootstrap *bs, uint32_t kind, uint32_t tag,
                              const void *data, size_t bytes)
{
    struct msg *m = malloc(sizeof(*m));
    char *copy = malloc(bytes ? bytes : 1);
    if (m == NULL || copy == NULL) {
        free(m);
        free(copy);
        return AC_FAIL(ncclSystemError, "bootstrap rank %d: out of memory", bs->rank);
    }
    memcpy(copy, data, bytes);
    *m = (struct msg){.from = bs->rank, .kind = kind, .tag = tag, .bytes = bytes, .data = copy};
    enqueue(bs, m);
    return ncclSuccess;
}

/* Writes buf to s, reading incoming messages whenever the socket is full. */
static ncclResult_t write_reading(struct ac_bootstrap *bs, int peer, const void *buf, size_t len,
                                  uint64_t deadline_ns)
{
    struct ac_socket *s = &bs->out[peer];
    size_t done = 0;
    char what[AC_SOCKADDR_STRLEN + 48];
    for (;;) {
        int err = ac_socket_send_some(s, buf, len, &done);
        if (err == 0 && done == len)
            return ncclSuccess;
        if (err == 0)
            err = wait_and_read(bs, s->fd, deadline_ns);
        if (err != 0) {
            ac_socket_close(s);
            snprintf(what, sizeof(what), "send to rank %d at %s", peer, s->addr_str);
            if (err == AC_SOCKET_CLOSED)
                return AC_FAIL(ncclRemoteError,
                               "bootstrap rank %d: %s: connection closed by "
                               "peer (the peer process probably exited)",
                               bs->rank, what);
            return fail_wait(bs, err, what);
        }
    }
}

static ncclResult_t send_kind(struct ac_bootstrap *bs, int peer, uint32_t kind, uint32_t tag,
                              const void *data, size_t bytes)
{
    AC_CHECK(check_peer(bs, peer, "send to"));
    if (bytes > AC_BOOTSTRAP_MSG_MAX_BYTES)
        return AC_FAIL(ncclInvalidArgument,
                       "bootstrap rank %d: send of %zu bytes to rank %d: "
                       "more than 64 MiB",
                       bs->rank, bytes, peer);
    if (peer == bs->rank)
        return send_self(bs, kind, tag, data, bytes);
    uint64_t deadline = op_deadline(bs);
    if (bs->out[peer].fd < 0)
        AC_CHECK(ac_socket_connect(&bs->out[peer], &bs->peers[peer], deadline, bs->abort_flag));
    struct ac_bootstrap_msg_hdr hdr = {
        .secret = bs->secret, .from = bs->rank, .kind = kind, .tag = tag, .bytes = bytes};
    AC_CHECK(write_reading(bs, peer, &hdr, sizeof(hdr), deadline));
    return write_reading(bs, peer, data, bytes, deadline);
}

static struct msg *take_match(struct ac_bootstrap *bs, int peer, uint32_t kind, uint32_t tag)
{
    struct msg *prev = NULL;
    for (struct msg *m = bs->head; m != NULL; prev = m, m = m->next) {
        if (m->from != peer || m->kind != kind || m->tag != tag)
            continue;
        if (prev != NULL)
            prev->next = m->next;
        else
            bs->head = m->next;
        if (bs->tail == m)
            bs->tail = prev;
        return m;
    }
    return NULL;
}

/* got NULL: waiting until deadline is an error; otherwise *got says whether the message came. */
static ncclResult_t recv_until(struct ac_bootstrap *bs, int peer, uint32_t kind, uint32_t tag,
                               void *data, size_t bytes, uint64_t deadline, bool *got)
{
    AC_CHECK(check_peer(bs, peer, "receive from"));
    struct msg *m;
    char what[96];
    while ((m = take_match(bs, peer, kind, tag)) == NULL) {
        /* RAS also sees ranks that never connected to this one die */
        if (bs->dead_rank != NULL && atomic_load(bs->dead_rank) == peer)
            return AC_FAIL(
                ncclRemoteError, "bootstrap rank %d: rank %d (%s) is dead (RAS) and sent no tag %u",
                bs->rank, peer, ac_socket_addr_str(&bs->peers[peer], what, sizeof(what)), tag);
        if (bs->is_peer_gone[peer])
            return AC_FAIL(ncclRemoteError,
                           "bootstrap rank %d: rank %d (%s) closed its connection before sending "
                           "tag %u: did it exit or fail?",
                           bs->rank, peer, ac_socket_addr_str(&bs->peers[peer], what, sizeof(what)),
                           tag);
        int err = wait_and_read(bs, -1, deadline);
        if (err == ETIMEDOUT && got != NULL) {
            *got = false;
            return ncclSuccess;
        }
        if (err != 0) {
            snprintf(what, sizeof(what), "receive from rank %d (tag %u)", peer, tag);
            return fail_wait(bs, err, what);
        }
    }
    ncclResult_t res = ncclSuccess;
    if (m->bytes != bytes)
        res = AC_FAIL(ncclInvalidUsage,
                      "bootstrap rank %d: rank %d sent %zu bytes (tag %u) but "
                      "%zu were expected",
                      bs->rank, peer, m->bytes, tag, bytes);
    else
        memcpy(data, m->data, bytes);
    free(m->data);
    free(m);
    if (got != NULL)
        *got = true;
    return res;
}

static ncclResult_t recv_kind(struct ac_bootstrap *bs, int peer, uint32_t kind, uint32_t tag,
                              void *data, size_t bytes)
{
    return recv_until(bs, peer, kind, tag, data, bytes, op_deadline(bs), NULL);
}

ncclResult_t ac_bootstrap_send(struct ac_bootstrap *bs, int peer, uint32_t tag, const void *data,
                               size_t bytes)
{
    return send_kind(bs, peer, AC_BOOTSTRAP_KIND_USER, tag, data, bytes);
}

ncclResult_t ac_bootstrap_recv(struct ac_bootstrap *bs, int peer, uint32_t tag, void *data,
                               size_t bytes)
{
    return recv_kind(bs, peer, AC_BOOTSTRAP_KIND_USER, tag, data, bytes);
}

ncclResult_t ac_bootstrap_recv_for(struct ac_bootstrap *bs, int peer, uint32_t tag, void *data,
                                   size_t bytes, int wait_ms, bool *got)
{
    return recv_until(bs, peer, AC_BOOTSTRAP_KIND_USER, tag, data, bytes,
                      ac_now_ns() + (uint64_t)wait_ms * 1000000ull, got);
}

/* Ring: at step s, pass on the block received at step s-1 (own block first). Messages on one
 * connection arrive in order, so the same tag serves every step. */
static ncclResult_t ring_allgather(struct ac_bootstrap *bs, uint32_t kind, void *all, size_t bytes)
{
    int n = bs->nranks, next = (bs->rank + 1) % n, prev = (bs->rank + n - 1) % n;
    char *base = all;
    for (int s = 0; s < n - 1; s++) {
        int send_block = (bs->rank - s + n) % n, recv_block = (bs->rank - s - 1 + n) % n;
        AC_CHECK(send_kind(bs, next, kind, 0, base + (size_t)send_block * bytes, bytes));
        AC_CHECK(recv_kind(bs, prev, kind, 0, base + (size_t)recv_block * bytes, bytes));
    }
    return ncclSuccess;
}

ncclResult_t ac_bootstrap_allgather(struct ac_bootstrap *bs, void *all, size_t bytes)
{
    return ring_allgather(bs, AC_BOOTSTRAP_KIND_ALLGATHER, all, bytes);
}

ncclResult_t ac_bootstrap_barrier(struct ac_bootstrap *bs)
{
    char stack[64], *flags = bs->nranks <= 64 ? stack : calloc((size_t)bs->nranks, 1);
    if (flags == NULL)
        return AC_FAIL(ncclSystemError, "bootstrap rank %d: out of memory", bs->rank);
    ncclResult_t res = ring_allgather(bs, AC_BOOTSTRAP_KIND_BARRIER, flags, 1);
    if (flags != stack)
        free(flags);
    return res;
}

const struct sockaddr_storage *ac_bootstrap_local_addr(const struct ac_bootstrap *bs)
{
    return &bs->listener.addr;
}

/* ------------------------------------------------------------------------------------------ */
/* init / close                                                                                 */

static ncclResult_t fail_reply(struct ac_bootstrap *bs, const struct ac_socket *root, int err)
{
    if (err == AC_SOCKET_ABORTED)
        return AC_FAIL(ncclRemoteError, "bootstrap rank %d: waiting for the root at %s: aborted",
                       bs->rank, root->addr_str);
    bool is_remote = err == ETIMEDOUT || err == AC_SOCKET_CLOSED;
    return AC_FAIL(is_remote ? ncclRemoteError : ncclSystemError,
                   "bootstrap rank %d: no answer from the root at %s: %s (is the process that "
                   "called ncclGetUniqueId still running, and did every rank get its id?)",
                   bs->rank, root->addr_str,
                   err == AC_SOCKET_CLOSED ? "it closed the connection" : strerror(err));
}

/* Sends the hello and waits for the table (or the root's reason for failing). */
static ncclResult_t join_root(struct ac_bootstrap *bs, const struct ac_unique_id *id,
                              uint64_t deadline_ns)
{
    struct ac_socket root;
    struct ac_bootstrap_hello hello = {.magic = AC_BOOTSTRAP_HELLO_MAGIC,
                                       .version = AC_BOOTSTRAP_VERSION,
                                       .secret = id->secret,
                                       .nranks = bs->nranks,
                                       .rank = bs->rank,
                                       .listen_addr = bs->listener.addr};
    struct ac_bootstrap_reply reply;
    ncclResult_t res = ncclSuccess;
    int err;
    ac_socket_init(&root);
    AC_CHECK(ac_socket_connect(&root, &id->root, deadline_ns, bs->abort_flag));
    err = ac_socket_xfer_quiet(&root, &hello, sizeof(hello), true, deadline_ns, bs->abort_flag);
    if (err == 0)
        err = ac_socket_xfer_quiet(&root, &reply, sizeof(reply), false,
                                   deadline_ns + TABLE_GRACE_NS, bs->abort_flag);
    if (err == 0 && reply.magic != AC_BOOTSTRAP_REPLY_MAGIC)
        err = EPROTO;
    if (err != 0) {
        res = fail_reply(bs, &root, err);
    } else if (reply.status != ncclSuccess) {
        reply.msg[sizeof(reply.msg) - 1] = '\0';
        res = AC_FAIL((ncclResult_t)reply.status, "%s (rank %d, root at %s)", reply.msg, bs->rank,
                      root.addr_str);
    } else {
        err = ac_socket_xfer_quiet(&root, bs->peers, (size_t)bs->nranks * sizeof(*bs->peers), false,
                                   deadline_ns + TABLE_GRACE_NS, bs->abort_flag);
        if (err != 0)
            res = fail_reply(bs, &root, err);
    }
    ac_socket_close(&root);
    return res;
}

static ncclResult_t bs_alloc(int rank, int nranks, volatile int *abort_flag,
                             struct ac_bootstrap **bs_out)
{
    struct ac_bootstrap *bs = calloc(1, sizeof(*bs));
    if (bs == NULL)
        return AC_FAIL(ncclSystemError, "bootstrap rank %d: out of memory", rank);
    bs->rank = rank;
    bs->nranks = nranks;
    bs->abort_flag = abort_flag;
    bs->timeout_s = ac_config_setup_timeout_s();
    ac_socket_init(&bs->listener);
    bs->peers = calloc((size_t)nranks, sizeof(*bs->peers));
    bs->out = calloc((size_t)nranks, sizeof(*bs->out));
    bs->is_peer_gone = calloc((size_t)nranks, sizeof(*bs->is_peer_gone));
    if (bs->peers == NULL || bs->out == NULL || bs->is_peer_gone == NULL) {
        ac_bootstrap_close(bs);
        return AC_FAIL(ncclSystemError, "bootstrap rank %d: out of memory for %d ranks", rank,
                       nranks);
    }
    for (int i = 0; i < nranks; i++)
        ac_socket_init(&bs->out[i]);
    *bs_out = bs;
    return ncclSuccess;
}

ncclResult_t ac_bootstrap_init(const ncclUniqueId *id, int rank, int nranks,
                               volatile int *abort_flag, struct ac_bootstrap **bs_out)
{
    struct ac_unique_id uid;
    struct ac_bootstrap *bs = NULL;
    struct sockaddr_storage local, bound;
    ncclResult_t res;
    AC_CHECK(ac_unique_id_decode(id, &uid));
    if (nranks <= 0 || nranks > AC_BOOTSTRAP_MAX_RANKS || rank < 0 || rank >= nranks)
        return AC_FAIL(ncclInvalidArgument,
                       "bootstrap: rank %d of nranks %d: need 0 <= rank < "
                       "nranks <= %d",
                       rank, nranks, AC_BOOTSTRAP_MAX_RANKS);
    AC_CHECK(bs_alloc(rank, nranks, abort_flag, &bs));
    uint64_t deadline = op_deadline(bs);
    bs->secret = uid.secret;
    if (rank == 0 && is_comm_id_style(&uid)) {
        AC_CHECK_GOTO(ac_bootstrap_root_start(&uid.root, uid.secret, &bs->root_stop,
                                              &bs->root_thread, &bound),
                      res, fail);
        bs->has_root_thread = true;
    }
    AC_CHECK_GOTO(ac_socket_pick_addr(&uid.root, &local, NULL, 0), res, fail);
    AC_CHECK_GOTO(ac_socket_listen(&bs->listener, &local), res, fail);
    AC_CHECK_GOTO(join_root(bs, &uid, deadline), res, fail);
    for (int i = 0; i < nranks; i++) {
        if (!ac_socket_addr_is_valid(&bs->peers[i])) {
            res = AC_FAIL(ncclRemoteError,
                          "bootstrap rank %d: the root sent no valid address "
                          "for rank %d",
                          rank, i);
            goto fail;
        }
    }
    AC_INFO(AC_SUB_INIT | AC_SUB_BOOTSTRAP, "bootstrap rank %d/%d: joined, listening on %s", rank,
            nranks, bs->listener.addr_str);
    *bs_out = bs;
    return ncclSuccess;
fail:
    ac_bootstrap_close(bs);
    return res;
}

void ac_bootstrap_close(struct ac_bootstrap *bs)
{
    if (bs == NULL)
        return;
    ac_socket_close(&bs->listener);
    for (int i = 0; bs->out != NULL && i < bs->nranks; i++)
        ac_socket_close(&bs->out[i]);
    for (int i = 0; i < bs->nin; i++)
        drop_in(bs, &bs->in[i], NULL);
    while (bs->head != NULL) {
        struct msg *m = bs->head;
        bs->head = m->next;
        free(m->data);
        free(m);
    }
    if (bs->has_root_thread) {
        bs->root_stop = 1;
        pthread_join(bs->root_thread, NULL);
    }
    free(bs->peers);
    free(bs->out);
    free(bs->is_peer_gone);
    free(bs->in);
    free(bs->fds);
    free(bs);
}
