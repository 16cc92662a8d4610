/* The socket connector over loopback: a sender thread and a receiver thread move messages of many
 * sizes through a 4-slot FIFO (wrapping around many times, contents checked), strangers at the
 * listener are ignored, and a peer that closes is reported as ncclRemoteError naming it. */
#include "common/check.h"
#include "common/socket.h"
#include "common/time.h"
#include "transport/transport.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define NSLOTS 4
#define SLOT_BYTES (64 * 1024)
#define NMSGS 1500
#define COMM_HASH 0x1234abcdull

struct pair {
    struct ac_peer_info info[2]; /* rank 0 receives, rank 1 sends */
    struct ac_conn recv, send;
    ncclResult_t send_res, recv_res;
    int bad;
};

static size_t msg_bytes(int k)
{
    if (k % 50 == 0)
        return SLOT_BYTES;
    return (size_t)k * 7919u % (SLOT_BYTES + 1);
}

static unsigned char msg_byte(int k, size_t i)
{
    return (unsigned char)(k * 131 + i * 7 + 3);
}

static void init_conn(struct pair *p, struct ac_conn *c, bool is_send)
{
    memset(c, 0, sizeof(*c));
    c->tp = &ac_socket_transport;
    c->is_send = is_send;
    c->peer = is_send ? 0 : 1;
    c->channel = 2;
    c->nslots = NSLOTS;
    c->slot_bytes = SLOT_BYTES;
    c->self_info = &p->info[is_send ? 1 : 0];
    c->peer_info = &p->info[is_send ? 0 : 1];
    c->comm_hash = COMM_HASH;
}

static void setup(struct pair *p, bool with_stranger)
{
    struct ac_conn_blob blob;
    memset(p, 0, sizeof(*p));
    for (int r = 0; r < 2; r++) {
        p->info[r].rank = r;
        snprintf(p->info[r].hostname, AC_HOSTNAME_MAX, "host%d", r);
        cr_assert_eq(ac_socket_addr_parse("127.0.0.1:0", &p->info[r].addr), ncclSuccess);
    }
    init_conn(p, &p->recv, false);
    init_conn(p, &p->send, true);
    cr_assert_eq(ac_socket_transport.recv_setup(&p->recv, &blob), ncclSuccess);
    if (with_stranger) { /* right address, wrong everything else: must be dropped */
        struct ac_conn stranger;
        init_conn(p, &stranger, true);
        stranger.comm_hash = COMM_HASH + 1;
        cr_assert_eq(ac_socket_transport.send_connect(&stranger, &blob), ncclSuccess);
        ac_socket_transport.close(&stranger);
    }
    cr_assert_eq(ac_socket_transport.send_connect(&p->send, &blob), ncclSuccess);
    cr_assert_eq(ac_socket_transport.recv_connect(&p->recv), ncclSuccess, "%s", ac_last_error());
}

static void *sender(void *arg)
{
    struct pair *p = arg;
    struct ac_conn *c = &p->send;
    struct ac_backoff b = {0};
    ncclResult_t res = ncclSuccess;
    for (int k = 0; k < NMSGS && res == ncclSuccess;) {
        void *slot = NULL;
        res = c->tp->progress(c);
        if (res == ncclSuccess)
            res = c->tp->send_slot(c, &slot);
        if (res != ncclSuccess || slot == NULL) {
            ac_backoff_idle(&b);
            continue;
        }
        size_t n = msg_bytes(k);
        for (size_t i = 0; i < n; i++)
            ((unsigned char *)slot)[i] = msg_byte(k, i);
        res = c->tp->send_post(c, n);
        k++;
        ac_backoff_reset(&b);
    }
    while (res == ncclSuccess && c->tp->is_flushing(c))
        res = c->tp->progress(c);
    p->send_res = res;
    return NULL;
}

static void *receiver(void *arg)
{
    struct pair *p = arg;
    struct ac_conn *c = &p->recv;
    struct ac_backoff b = {0};
    ncclResult_t res = ncclSuccess;
    for (int k = 0; k < NMSGS && res == ncclSuccess;) {
        const void *slot = NULL;
        size_t n = 0;
        res = c->tp->progress(c);
        if (res == ncclSuccess)
            res = c->tp->recv_slot(c, &slot, &n);
        if (res != ncclSuccess || slot == NULL) {
            ac_backoff_idle(&b);
            continue;
        }
        if (n != msg_bytes(k))
            p->bad++;
        for (size_t i = 0; i < n && n == msg_bytes(k); i++)
            p->bad += ((const unsigned char *)slot)[i] != msg_byte(k, i);
        res = c->tp->recv_release(c);
        k++;
        ac_backoff_reset(&b);
    }
    p->recv_res = res;
    return NULL;
}

static void run_pair(bool with_stranger)
{
    struct pair p;
    pthread_t ts, tr;
    setup(&p, with_stranger);
    pthread_create(&tr, NULL, receiver, &p);
    pthread_create(&ts, NULL, sender, &p);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    cr_expect_eq(p.send_res, ncclSuccess);
    cr_expect_eq(p.recv_res, ncclSuccess);
    cr_expect_eq(p.bad, 0);
    ac_socket_transport.close(&p.send);
    ac_socket_transport.close(&p.recv);
}

Test(socket_conn, fifo_of_many_sizes_wraps_around, .timeout = 20)
{
    run_pair(false);
}
Test(socket_conn, stranger_at_listener_is_dropped, .timeout = 20)
{
    run_pair(true);
}

Test(socket_conn, can_connect_always, .timeout = 10)
{
    struct ac_peer_info a = {.rank = 0, .host_hash = 1}, b = {.rank = 1, .host_hash = 2};
    cr_expect(ac_socket_transport.can_connect(&a, &b));
}

Test(socket_conn, sender_closing_is_remote_error, .timeout = 10)
{
    struct pair p;
    void *slot;
    const void *rslot = NULL;
    size_t n = 0;
    setup(&p, false);
    cr_assert_eq(p.send.tp->send_slot(&p.send, &slot), ncclSuccess);
    memset(slot, 7, 100);
    cr_assert_eq(p.send.tp->send_post(&p.send, 100), ncclSuccess);
    while (p.send.tp->is_flushing(&p.send))
        cr_assert_eq(p.send.tp->progress(&p.send), ncclSuccess);
    ac_socket_transport.close(&p.send);
    ncclResult_t res = ncclSuccess;
    uint64_t deadline = ac_now_ns() + 5000000000ull;
    while (rslot == NULL && res == ncclSuccess && ac_now_ns() < deadline) {
        res = p.recv.tp->progress(&p.recv);
        p.recv.tp->recv_slot(&p.recv, &rslot, &n);
    }
    cr_assert_not_null(rslot, "the message sent before closing arrives");
    cr_expect_eq(n, 100);
    /* EOF after whole slots is an error only once every delivered slot has been consumed */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(p.recv.tp->progress(&p.recv), ncclSuccess);
    cr_assert_eq(p.recv.tp->recv_release(&p.recv), ncclSuccess);
    while (res == ncclSuccess && ac_now_ns() < deadline)
        res = p.recv.tp->progress(&p.recv);
    cr_expect_eq(res, ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "rank 1 (host host1,") != NULL, "%s", ac_last_error());
    cr_expect(strstr(ac_last_error(), "closed by peer") != NULL, "%s", ac_last_error());
    ac_socket_transport.close(&p.recv);
}

Test(socket_conn, receiver_closing_is_remote_error, .timeout = 10)
{
    struct pair p;
    setup(&p, false);
    ac_socket_transport.close(&p.recv);
    ncclResult_t res = ncclSuccess;
    uint64_t deadline = ac_now_ns() + 5000000000ull;
    while (res == ncclSuccess && ac_now_ns() < deadline) {
        void *slot = NULL;
        res = p.send.tp->send_slot(&p.send, &slot);
        if (res == ncclSuccess && slot != NULL)
            res = p.send.tp->send_post(&p.send, SLOT_BYTES);
        if (res == ncclSuccess)
            res = p.send.tp->progress(&p.send);
    }
    cr_expect_eq(res, ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "rank 0 (host host0,") != NULL, "%s", ac_last_error());
    ac_socket_transport.close(&p.send);
}
