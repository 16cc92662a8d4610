/* The socket connector over loopback: a sender thread and a receiver thread move messages of many
 * sizes through a 4-slot FIFO (wrapping around many times, contents checked), also with payloads
 * sent from outside the slots (send_post_ref) and landed outside them (recv_direct); strangers at
 * the listener are ignored, and a peer that closes is reported as ncclRemoteError naming it. */
#include "common/check.h"
#include "common/socket.h"
#include "common/time.h"
#include "transport/transport.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NSLOTS 4
#define SLOT_BYTES (64 * 1024)
#define NMSGS 1500
#define COMM_HASH 0x1234abcdull

struct pair {
    struct ac_peer_info info[2]; /* rank 0 receives, rank 1 sends */
    struct ac_conn recv, send;
    ncclResult_t send_res, recv_res;
    int bad;
    bool is_zero_copy;           /* every other message by reference, every third landed */
    bool is_expecting;           /* the receiver says each message's size first (recv_expect) */
    unsigned char *ref_bufs;     /* sender: NSLOTS buffers, one per slot a reference stands in */
    unsigned char *land_buf;     /* receiver: where landed messages go */
    int nlanded;
    int hinted_k;                /* the message the receiver hinted before the sender sent it */
    volatile int hint_ready;
};

/* Message HINT_K waits for the receiver's hint, so that one landing does not depend on timing. */
#define HINT_K 777

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
        /* a slot's reference is dropped once the slot is written, before it is handed out again */
        unsigned char *dst = p->is_zero_copy && k % 2 ? p->ref_bufs + (k % NSLOTS) * SLOT_BYTES
                                                      : slot;
        for (size_t i = 0; i < n; i++)
            dst[i] = msg_byte(k, i);
        if (p->is_zero_copy && k == HINT_K)
            while (res == ncclSuccess && !__atomic_load_n(&p->hint_ready, __ATOMIC_ACQUIRE)) {
                res = c->tp->progress(c); /* the receiver needs the messages before it */
                sched_yield();
            }
        if (res == ncclSuccess)
            res = dst == slot ? c->tp->send_post(c, n) : c->tp->send_post_ref(c, dst, n);
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
        if (p->is_expecting) /* as the executor does before each poll of a receive step */
            c->tp->recv_expect(c, msg_bytes(k));
        res = c->tp->progress(c);
        if (res == ncclSuccess)
            res = c->tp->recv_slot(c, &slot, &n);
        if (res == ncclSuccess && slot == NULL && p->is_zero_copy && k % 3 == 0) {
            c->tp->recv_direct(c, p->land_buf, SLOT_BYTES);
            if (k == HINT_K) {
                p->hinted_k = k;
                __atomic_store_n(&p->hint_ready, 1, __ATOMIC_RELEASE);
            }
            continue;
        }
        if (res != ncclSuccess || slot == NULL) {
            ac_backoff_idle(&b);
            continue;
        }
        if (slot == p->land_buf) {
            p->nlanded++;
            if (k % 3 != 0)
                p->bad++; /* landed without being asked to */
        }
        if (k == HINT_K && p->is_zero_copy && slot != p->land_buf)
            p->bad++; /* hinted before a byte of it was sent: must have landed */
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

static void run_pair(bool with_stranger, bool is_zero_copy, bool is_expecting)
{
    struct pair p;
    pthread_t ts, tr;
    setup(&p, with_stranger);
    p.is_zero_copy = is_zero_copy;
    p.is_expecting = is_expecting;
    p.ref_bufs = malloc((size_t)NSLOTS * SLOT_BYTES);
    p.land_buf = malloc(SLOT_BYTES);
    cr_assert(p.ref_bufs && p.land_buf);
    pthread_create(&tr, NULL, receiver, &p);
    pthread_create(&ts, NULL, sender, &p);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    cr_expect_eq(p.send_res, ncclSuccess);
    cr_expect_eq(p.recv_res, ncclSuccess);
    cr_expect_eq(p.bad, 0);
    if (is_zero_copy) {
        cr_expect_eq(p.hinted_k, HINT_K);
        cr_expect_geq(p.nlanded, 1);
    }
    ac_socket_transport.close(&p.send);
    ac_socket_transport.close(&p.recv);
    free(p.ref_bufs);
    free(p.land_buf);
}

Test(socket_conn, fifo_of_many_sizes_wraps_around, .timeout = 20)
{
    run_pair(false, false, false);
}

Test(socket_conn, payloads_by_reference_and_landed_in_place, .timeout = 20)
{
    run_pair(false, true, false);
}

/* Each message's header and payload in one read, into the slot or where it is to land. */
Test(socket_conn, expected_sizes_read_with_their_headers, .timeout = 20)
{
    run_pair(false, false, true);
    run_pair(false, true, true);
}
Test(socket_conn, stranger_at_listener_is_dropped, .timeout = 20)
{
    run_pair(true, false, false);
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

static void send_now(struct pair *p, size_t bytes, unsigned char fill)
{
    void *slot = NULL;
    cr_assert_eq(p->send.tp->send_slot(&p->send, &slot), ncclSuccess);
    cr_assert_not_null(slot);
    memset(slot, fill, bytes);
    cr_assert_eq(p->send.tp->send_post(&p->send, bytes), ncclSuccess);
    while (p->send.tp->is_flushing(&p->send))
        cr_assert_eq(p->send.tp->progress(&p->send), ncclSuccess);
}

/* Polls (saying `expect` first) until a message is there; its size and whether every byte is
 * `fill`. */
static const void *receive(struct pair *p, size_t expect, size_t *n, unsigned char fill)
{
    const void *slot = NULL;
    uint64_t deadline = ac_now_ns() + 5000000000ull;
    while (slot == NULL && ac_now_ns() < deadline) {
        p->recv.tp->recv_expect(&p->recv, expect);
        cr_assert_eq(p->recv.tp->progress(&p->recv), ncclSuccess, "%s", ac_last_error());
        cr_assert_eq(p->recv.tp->recv_slot(&p->recv, &slot, n), ncclSuccess);
    }
    cr_assert_not_null(slot);
    for (size_t i = 0; i < *n; i++)
        cr_assert_eq(((const unsigned char *)slot)[i], fill, "byte %zu", i);
    return slot;
}

/* Ranks that called different operations: a message longer than the receiver expects arrives
 * whole (the executor reports the sizes), and the stream stays in step. */
Test(socket_conn, longer_than_expected_arrives_whole, .timeout = 10)
{
    struct pair p;
    size_t n = 0;
    unsigned char land[1000];
    setup(&p, false);
    send_now(&p, 3000, 5);
    p.recv.tp->recv_direct(&p.recv, land, sizeof(land));
    receive(&p, sizeof(land), &n, 5);
    cr_expect_eq(n, 3000);
    cr_assert_eq(p.recv.tp->recv_release(&p.recv), ncclSuccess);
    send_now(&p, 50, 6);
    receive(&p, 50, &n, 6);
    cr_expect_eq(n, 50);
    cr_assert_eq(p.recv.tp->recv_release(&p.recv), ncclSuccess);
    ac_socket_transport.close(&p.send);
    ac_socket_transport.close(&p.recv);
}

/* A message shorter than expected, with the sender's next one already behind it: the read takes
 * both. The short one is delivered as sent (its size tells the executor); after it the
 * connector fails instead of reading the rest of the stream out of step. */
Test(socket_conn, shorter_than_expected_then_out_of_step, .timeout = 10)
{
    struct pair p;
    size_t n = 0;
    setup(&p, false);
    send_now(&p, 100, 8);
    send_now(&p, 200, 9);
    usleep(100000); /* both in the receiver's socket: one read takes the second's start too */
    receive(&p, 1000, &n, 8);
    cr_expect_eq(n, 100);
    cr_assert_eq(p.recv.tp->recv_release(&p.recv), ncclSuccess);
    p.recv.tp->recv_expect(&p.recv, 200);
    cr_expect_eq(p.recv.tp->progress(&p.recv), ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "out of step") != NULL, "%s", ac_last_error());
    cr_expect(strstr(ac_last_error(), "rank 1") != NULL, "%s", ac_last_error());
    ac_socket_transport.close(&p.send);
    ac_socket_transport.close(&p.recv);
}
