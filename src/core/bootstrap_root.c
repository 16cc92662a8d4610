/* The bootstrap root thread: one rendezvous. It polls its listener and every connection that has
 * not yet sent a complete hello, so that a stalled or garbage client never delays genuine ranks;
 * strangers (bad magic, version or secret) are dropped and logged, never answered. A rank count
 * that disagrees or a duplicate rank fails the whole rendezvous: every rank gets the reason. */
#include "core/bootstrap_wire.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#define HELLO_READ_NS (5ull * 1000000000ull) /* a connection must say hello this fast */
#define REPLY_SEND_NS (5ull * 1000000000ull)
#define POLL_SLICE_MS 100
#define MISSING_LISTED_MAX 16

struct pending {
    struct ac_socket sock;
    struct ac_bootstrap_hello hello;
    size_t got;
    uint64_t deadline_ns;
};

struct root {
    struct ac_socket listener;
    uint64_t secret;
    uint64_t deadline_ns;
    int64_t timeout_s;
    volatile int *stop_flag;
    int nranks;                     /* 0 until the first valid hello */
    int first_rank;                 /* the rank whose hello set nranks */
    struct ac_socket *ranks;        /* [nranks], fd -1 until that rank arrived */
    struct sockaddr_storage *table; /* [nranks] listen addresses */
    int narrived;
    struct pending *pend;
    int npend, pend_cap;
    bool has_failed;
    int nfail_replies;
    ncclResult_t fail_status;
    char fail_msg[AC_BOOTSTRAP_MSG_LEN];
};

static void send_reply(struct ac_socket *s, ncclResult_t status, const char *msg)
{
    struct ac_bootstrap_reply reply;
    memset(&reply, 0, sizeof(reply));
    reply.magic = AC_BOOTSTRAP_REPLY_MAGIC;
    reply.status = (int32_t)status;
    snprintf(reply.msg, sizeof(reply.msg), "%s", msg);
    int err =
        ac_socket_xfer_quiet(s, &reply, sizeof(reply), true, ac_now_ns() + REPLY_SEND_NS, NULL);
    if (err != 0)
        AC_INFO(AC_SUB_BOOTSTRAP, "bootstrap root: could not tell %s (%s): %s", s->addr_str, msg,
                strerror(err));
}

/* Fails the rendezvous: every rank that arrived, and from now on every rank that arrives, gets
 * status and msg. */
static void fail_all(struct root *r, ncclResult_t status, const char *msg)
{
    AC_WARN("bootstrap root %s: %s", r->listener.addr_str, msg);
    r->has_failed = true;
    r->fail_status = status;
    snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", msg);
    for (int i = 0; i < r->nranks; i++) {
        if (r->ranks[i].fd < 0)
            continue;
        send_reply(&r->ranks[i], status, msg);
        ac_socket_close(&r->ranks[i]);
        r->nfail_replies++;
    }
}

static void drop(struct pending *p, const char *why)
{
    AC_WARN("bootstrap root: dropping connection from %s: %s", p->sock.addr_str, why);
    ac_socket_close(&p->sock);
}

static bool set_nranks(struct root *r, const struct ac_bootstrap_hello *h)
{
    r->ranks = calloc((size_t)h->nranks, sizeof(*r->ranks));
    r->table = calloc((size_t)h->nranks, sizeof(*r->table));
    if (r->ranks == NULL || r->table == NULL)
        return false;
    for (int i = 0; i < h->nranks; i++)
        ac_socket_init(&r->ranks[i]);
    r->nranks = h->nranks;
    r->first_rank = h->rank;
    return true;
}

enum ac_bootstrap_verdict ac_bootstrap_hello_judge(const struct ac_bootstrap_hello *h,
                                                   uint64_t secret, char *why, size_t len)
{
    if (h->magic != AC_BOOTSTRAP_HELLO_MAGIC) {
        snprintf(why, len, "not an AnyCCL bootstrap hello (garbage, or another program)");
    } else if (h->version != AC_BOOTSTRAP_VERSION) {
        snprintf(why, len, "bootstrap version %u, this root speaks %u", h->version,
                 AC_BOOTSTRAP_VERSION);
    } else if (h->secret != secret) {
        snprintf(why, len, "wrong secret (a rank of another communicator or job?)");
    } else if (h->nranks <= 0 || h->nranks > AC_BOOTSTRAP_MAX_RANKS || h->rank < 0 ||
               h->rank >= h->nranks) {
        snprintf(why, len,
                 "bootstrap: rank %d joined with nranks=%d (needs 0 <= rank < nranks <= %d)",
                 h->rank, h->nranks, AC_BOOTSTRAP_MAX_RANKS);
        return AC_BOOTSTRAP_REFUSE;
    } else if (!ac_socket_addr_is_valid(&h->listen_addr)) {
        snprintf(why, len, "bootstrap: rank %d sent no valid listen address", h->rank);
        return AC_BOOTSTRAP_REFUSE;
    } else {
        why[0] = '\0';
        return AC_BOOTSTRAP_ADMIT;
    }
    return AC_BOOTSTRAP_DROP;
}

/* A rank of this job whose hello is well formed (refuse_msg empty), or not: admit it, or fail
 * the rendezvous with the reason. */
static void admit(struct root *r, struct pending *p, const char *refuse_msg)
{
    const struct ac_bootstrap_hello *h = &p->hello;
    char msg[AC_BOOTSTRAP_MSG_LEN];
    snprintf(msg, sizeof(msg), "%s", refuse_msg);
    if (msg[0] == '\0') {
        if (r->nranks == 0 && !set_nranks(r, h))
            snprintf(msg, sizeof(msg), "bootstrap: root out of memory for %d ranks", h->nranks);
        else if (h->nranks != r->nranks)
            snprintf(msg, sizeof(msg),
                     "bootstrap: rank %d joined with nranks=%d but rank %d said nranks=%d", h->rank,
                     h->nranks, r->first_rank, r->nranks);
        else if (r->ranks[h->rank].fd >= 0)
            snprintf(msg, sizeof(msg),
                     "bootstrap: rank %d joined twice (from %s and %s): every rank needs its own "
                     "rank number",
                     h->rank, r->ranks[h->rank].addr_str, p->sock.addr_str);
    }
    if (msg[0] != '\0') {
        send_reply(&p->sock, ncclInvalidUsage, msg);
        ac_socket_close(&p->sock);
        r->nfail_replies++;
        if (!r->has_failed)
            fail_all(r, ncclInvalidUsage, msg);
        return;
    }
    AC_INFO(AC_SUB_BOOTSTRAP, "bootstrap root: rank %d/%d arrived from %s", h->rank, h->nranks,
            p->sock.addr_str);
    r->ranks[h->rank] = p->sock;
    r->table[h->rank] = h->listen_addr;
    r->narrived++;
    ac_socket_init(&p->sock);
}

static void on_hello(struct root *r, struct pending *p)
{
    char why[AC_BOOTSTRAP_MSG_LEN];
    enum ac_bootstrap_verdict v = ac_bootstrap_hello_judge(&p->hello, r->secret, why, sizeof(why));
    if (v == AC_BOOTSTRAP_DROP) {
        drop(p, why);
    } else if (r->has_failed) {
        send_reply(&p->sock, r->fail_status, r->fail_msg);
        ac_socket_close(&p->sock);
        r->nfail_replies++;
    } else {
        admit(r, p, why);
    }
}

static void accept_new(struct root *r)
{
    for (;;) {
        struct ac_socket s;
        ac_socket_init(&s);
        if (ac_socket_accept(&r->listener, &s, ac_now_ns(), NULL) != ncclSuccess || s.fd < 0)
            return;
        if (r->npend == r->pend_cap) {
            int cap = r->pend_cap ? 2 * r->pend_cap : 16;
            struct pending *np = realloc(r->pend, (size_t)cap * sizeof(*np));
            if (np == NULL) {
                ac_socket_close(&s);
                return;
            }
            r->pend = np;
            r->pend_cap = cap;
        }
        struct pending *p = &r->pend[r->npend++];
        memset(p, 0, sizeof(*p));
        p->sock = s;
        uint64_t d = ac_now_ns() + HELLO_READ_NS;
        p->deadline_ns = d < r->deadline_ns ? d : r->deadline_ns;
    }
}

static void read_pending(struct root *r, struct pending *p)
{
    int err = ac_socket_recv_some(&p->sock, &p->hello, sizeof(p->hello), &p->got);
    if (err != 0) {
        char why[96];
        snprintf(why, sizeof(why), "%s after %zu of %zu hello bytes",
                 err == AC_SOCKET_CLOSED ? "closed" : strerror(err), p->got, sizeof(p->hello));
        drop(p, why);
    } else if (p->got == sizeof(p->hello)) {
        on_hello(r, p);
    } else if (ac_now_ns() >= p->deadline_ns) {
        drop(p, "no complete hello in time");
    }
}

/* Waits for activity on the listener or a pending connection, then serves it. */
static void serve_once(struct root *r, struct pollfd *fds)
{
    int n = 0;
    fds[n++] = (struct pollfd){.fd = r->listener.fd, .events = POLLIN};
    for (int i = 0; i < r->npend; i++)
        fds[n++] = (struct pollfd){.fd = r->pend[i].sock.fd, .events = POLLIN};
    poll(fds, (nfds_t)n, POLL_SLICE_MS);
    int npend = r->npend;
    for (int i = 0; i < npend; i++)
        read_pending(r, &r->pend[i]);
    if (fds[0].revents & POLLIN)
        accept_new(r);
    int kept = 0;
    for (int i = 0; i < r->npend; i++)
        if (r->pend[i].sock.fd >= 0)
            r->pend[kept++] = r->pend[i];
    r->npend = kept;
}

static void fail_timeout(struct root *r)
{
    char missing[128] = "", msg[AC_BOOTSTRAP_MSG_LEN];
    size_t len = 0;
    int nlisted = 0;
    for (int i = 0; i < r->nranks && len + 16 < sizeof(missing); i++) {
        if (r->ranks[i].fd >= 0)
            continue;
        if (nlisted++ == MISSING_LISTED_MAX) {
            len += (size_t)snprintf(missing + len, sizeof(missing) - len, ", ...");
            break;
        }
        len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%d", len ? ", " : "", i);
    }
    snprintf(msg, sizeof(msg), "bootstrap: only %d of %d ranks arrived within %lld s (missing: %s)",
             r->narrived, r->nranks, (long long)r->timeout_s, missing);
    fail_all(r, ncclRemoteError, msg);
}

static void send_tables(struct root *r)
{
    AC_INFO(AC_SUB_BOOTSTRAP, "bootstrap root %s: all %d ranks arrived", r->listener.addr_str,
            r->nranks);
    for (int i = 0; i < r->nranks; i++) {
        struct ac_bootstrap_reply reply = {.magic = AC_BOOTSTRAP_REPLY_MAGIC};
        uint64_t deadline = ac_now_ns() + REPLY_SEND_NS;
        int err = ac_socket_xfer_quiet(&r->ranks[i], &reply, sizeof(reply), true, deadline, NULL);
        if (err == 0)
            err = ac_socket_xfer_quiet(&r->ranks[i], r->table,
                                       (size_t)r->nranks * sizeof(*r->table), true, deadline, NULL);
        if (err != 0)
            AC_WARN("bootstrap root: sending the address table to rank %d (%s) failed: %s", i,
                    r->ranks[i].addr_str, strerror(err));
        ac_socket_close(&r->ranks[i]);
    }
}

static void root_free(struct root *r)
{
    for (int i = 0; i < r->npend; i++)
        ac_socket_close(&r->pend[i].sock);
    for (int i = 0; i < r->nranks; i++)
        ac_socket_close(&r->ranks[i]);
    ac_socket_close(&r->listener);
    free(r->pend);
    free(r->ranks);
    free(r->table);
    free(r);
}

static void *root_main(void *arg)
{
    struct root *r = arg;
    struct pollfd *fds = NULL;
    int fds_cap = 0;
    for (;;) {
        if (r->nranks > 0 && !r->has_failed && r->narrived == r->nranks) {
            send_tables(r);
            break;
        }
        if (r->has_failed && r->nfail_replies >= r->nranks)
            break;
        if (r->stop_flag != NULL && *r->stop_flag) {
            if (!r->has_failed)
                fail_all(r, ncclRemoteError,
                         "bootstrap: rank 0, which runs the root "
                         "(NCCL_COMM_ID), gave up");
            break;
        }
        if (ac_now_ns() >= r->deadline_ns) {
            if (!r->has_failed && r->nranks > 0)
                fail_timeout(r);
            else if (r->nranks == 0)
                AC_INFO(AC_SUB_BOOTSTRAP, "bootstrap root %s: no rank came within %lld s",
                        r->listener.addr_str, (long long)r->timeout_s);
            break;
        }
        if (fds_cap < r->npend + 1) {
            fds_cap = 2 * (r->npend + 1);
            struct pollfd *nf = realloc(fds, (size_t)fds_cap * sizeof(*nf));
            if (nf == NULL)
                break;
            fds = nf;
        }
        serve_once(r, fds);
    }
    free(fds);
    root_free(r);
    return NULL;
}

ncclResult_t ac_bootstrap_root_start(const struct sockaddr_storage *addr, uint64_t secret,
                                     volatile int *stop_flag, pthread_t *thread_out,
                                     struct sockaddr_storage *bound_out)
{
    ncclResult_t res;
    pthread_t thread;
    pthread_attr_t attr;
    struct root *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return AC_FAIL(ncclSystemError, "bootstrap root: out of memory");
    ac_socket_init(&r->listener);
    r->secret = secret;
    r->stop_flag = stop_flag;
    r->timeout_s = ac_config_setup_timeout_s();
    r->deadline_ns = ac_now_ns() + (uint64_t)r->timeout_s * 1000000000ull;
    AC_CHECK_GOTO(ac_socket_listen(&r->listener, addr), res, fail);
    *bound_out = r->listener.addr;
    AC_INFO(AC_SUB_INIT | AC_SUB_BOOTSTRAP, "bootstrap root listening on %s (timeout %lld s)",
            r->listener.addr_str, (long long)r->timeout_s);
    pthread_attr_init(&attr);
    if (thread_out == NULL)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&thread, &attr, root_main, r);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        res = AC_FAIL(ncclSystemError, "bootstrap root: pthread_create failed: %s", strerror(err));
        goto fail;
    }
    if (thread_out != NULL)
        *thread_out = thread;
    return ncclSuccess;
fail:
    root_free(r);
    return res;
}
