/* The GIN descriptor ring (src/device/kernels/gin.h, src/gin/gin_ring.c) with pthreads as
 * producers and a recording backend as the engine: several producers, wrap-around, back-pressure
 * on a full ring, completion order, errors and abort ending waits. */
#include "gin/gin.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RECORDS 200000

struct recorder {
    uint32_t peer[MAX_RECORDS];
    uint64_t value[MAX_RECORDS];
    uint64_t bytes[MAX_RECORDS];
    int n;
    int fail_peer; /* a put or signal to this peer fails with AC_GIN_ERR_PEER; -1: none */
};

static int rec_put(void *ctx, uint32_t peer, uint64_t src_off, uint64_t dst_off, uint64_t bytes,
                   int *peer_out)
{
    struct recorder *rec = ctx;
    (void)src_off;
    (void)dst_off;
    *peer_out = (int)peer;
    if ((int)peer == rec->fail_peer)
        return AC_GIN_ERR_PEER;
    rec->peer[rec->n] = peer;
    rec->value[rec->n] = UINT64_MAX;
    rec->bytes[rec->n++] = bytes;
    return AC_GIN_OK;
}

static int rec_signal(void *ctx, uint32_t peer, uint32_t id, uint64_t value, bool is_add,
                      int *peer_out)
{
    struct recorder *rec = ctx;
    (void)id;
    (void)is_add;
    *peer_out = (int)peer;
    if ((int)peer == rec->fail_peer)
        return AC_GIN_ERR_PEER;
    rec->peer[rec->n] = peer;
    rec->bytes[rec->n] = 0;
    rec->value[rec->n++] = value;
    return AC_GIN_OK;
}

static int rec_poll(void *ctx, int *peer_out)
{
    (void)ctx;
    (void)peer_out;
    return AC_GIN_OK;
}

static const struct ac_gin_backend rec_backend = {sizeof(struct ac_gin_backend), "recorder",
                                                  rec_put, rec_signal, rec_poll};

/* What the engine's host_poll does for waiting host threads, minus progress: give the core up, so
 * that producers spinning on a full ring on a 2-core machine let the consumer run. */
static int yield_poll(void *arg)
{
    (void)arg;
    sched_yield();
    return AC_GIN_OK;
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* A consumer thread that runs until `stop` and the ring is drained. */
struct consumer {
    struct ac_gin_ring *r;
    struct recorder *rec;
    int stop;
    pthread_t th;
};

static void *consumer_main(void *p)
{
    struct consumer *c = p;
    for (;;) {
        int n = ac_gin_consume(c->r, &rec_backend, c->rec, 3); /* small batches: more races */
        if (n == 0 && __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) &&
            __atomic_load_n(&c->r->completed, __ATOMIC_ACQUIRE) ==
                __atomic_load_n(&c->r->head, __ATOMIC_ACQUIRE))
            return NULL;
        if (n == 0 && __atomic_load_n(&c->r->error, __ATOMIC_ACQUIRE))
            return NULL;
        if (n == 0)
            sched_yield();
    }
}

struct producer {
    struct ac_gin_ring *r;
    uint32_t id;
    int count;
    int status;
    uint64_t last;
};

static void *producer_main(void *p)
{
    struct producer *pr = p;
    for (int i = 0; i < pr->count && pr->status == AC_GIN_OK; i++)
        pr->status = ac_gin_signal(pr->r, pr->id, 0, (uint64_t)i, 1, &pr->last);
    if (pr->status == AC_GIN_OK)
        pr->status = ac_gin_quiet(pr->r, pr->last);
    return NULL;
}

Test(gin_ring, rejects_bad_sizes)
{
    cr_expect_null(ac_gin_ring_create(0, NULL, 0, NULL));
    cr_expect_null(ac_gin_ring_create(3, NULL, 0, NULL));
    struct ac_gin_ring *r = ac_gin_ring_create(2, NULL, 0, NULL);
    cr_assert_not_null(r);
    cr_expect_eq(r->version, AC_GIN_RING_VERSION);
    cr_expect_eq(sizeof(struct ac_gin_desc), 64u);
    ac_gin_ring_destroy(r);
}

/* 4 slots, 10,000 descriptors: the ring laps 2,500 times; every descriptor is performed once, in
 * order, with its own payload (a stale slot from the previous lap would repeat a value). */
Test(gin_ring, wrap_around_single_producer)
{
    static struct recorder rec = {.fail_peer = -1};
    struct ac_gin_ring *r = ac_gin_ring_create(4, NULL, 0, NULL);
    r->host_poll = yield_poll;
    struct consumer c = {r, &rec, 0, 0};
    pthread_create(&c.th, NULL, consumer_main, &c);
    uint64_t last = 0;
    for (int i = 0; i < 10000; i++) {
        int st = i % 2 ? ac_gin_signal(r, 1, 0, (uint64_t)i, 1, &last)
                       : ac_gin_put(r, 1, 0, 0, (uint64_t)i, &last);
        cr_assert_eq(st, AC_GIN_OK);
    }
    cr_assert_eq(ac_gin_quiet(r, last), AC_GIN_OK);
    cr_expect_eq(last, 9999u);
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    pthread_join(c.th, NULL);
    cr_assert_eq(rec.n, 10000);
    for (int i = 0; i < 10000; i++)
        cr_assert_eq(i % 2 ? rec.value[i] : rec.bytes[i], (uint64_t)i, "descriptor %d", i);
    cr_expect_eq(r->tail, 10000u);
    cr_expect_eq(r->completed, 10000u);
    ac_gin_ring_destroy(r);
}

/* 6 producers x 4,000 descriptors through 8 slots: nothing lost, nothing duplicated, and each
 * producer's descriptors performed in the order it posted them. */
Test(gin_ring, many_producers_no_loss_no_duplicate, .timeout = 120)
{
    enum { NPROD = 6, PER = 4000 };
    static struct recorder rec = {.fail_peer = -1};
    struct ac_gin_ring *r = ac_gin_ring_create(8, NULL, 0, NULL);
    r->host_poll = yield_poll;
    struct consumer c = {r, &rec, 0, 0};
    struct producer pr[NPROD];
    pthread_t th[NPROD];
    pthread_create(&c.th, NULL, consumer_main, &c);
    for (int i = 0; i < NPROD; i++) {
        pr[i] = (struct producer){r, (uint32_t)i, PER, AC_GIN_OK, 0};
        pthread_create(&th[i], NULL, producer_main, &pr[i]);
    }
    for (int i = 0; i < NPROD; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(pr[i].status, AC_GIN_OK, "producer %d", i);
    }
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    pthread_join(c.th, NULL);
    cr_assert_eq(rec.n, NPROD * PER);
    uint64_t next[NPROD] = {0};
    for (int i = 0; i < rec.n; i++) {
        uint32_t p = rec.peer[i];
        cr_assert_lt(p, (uint32_t)NPROD);
        cr_assert_eq(rec.value[i], next[p], "producer %u: got %llu, expected %llu", p,
                     (unsigned long long)rec.value[i], (unsigned long long)next[p]);
        next[p]++;
    }
    for (int i = 0; i < NPROD; i++)
        cr_expect_eq(next[i], (uint64_t)PER);
    ac_gin_ring_destroy(r);
}

/* A full ring holds the next producer until the consumer frees a slot, and quiet() returns only
 * once everything up to its ticket was performed. */
Test(gin_ring, full_ring_back_pressure_and_quiet)
{
    static struct recorder rec = {.fail_peer = -1};
    struct ac_gin_ring *r = ac_gin_ring_create(4, NULL, 0, NULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ac_gin_signal(r, 0, 0, (uint64_t)i, 1, NULL), AC_GIN_OK);
    struct producer pr = {r, 0, 2, AC_GIN_OK, 0};
    /* Its first descriptor (value 0 again, ticket 4) must wait for a free slot. */
    pthread_t th;
    pthread_create(&th, NULL, producer_main, &pr);
    nap_us(50000);
    cr_expect_eq(__atomic_load_n(&r->head, __ATOMIC_ACQUIRE), 5u, "ticket 4 claimed");
    cr_expect_eq(r->descs[0].seq, 1u, "slot 0 still holds ticket 0: not overwritten");
    cr_expect_eq(r->completed, 0u);
    cr_assert_eq(ac_gin_consume(r, &rec_backend, &rec, 1), 1);
    /* Slot 0 is free: the producer publishes ticket 4 there, then blocks on ticket 5 or quiet. */
    for (int i = 0; i < 1000 && __atomic_load_n(&r->descs[0].seq, __ATOMIC_ACQUIRE) != 5; i++)
        nap_us(1000);
    cr_expect_eq(r->descs[0].seq, 5u);
    while (__atomic_load_n(&r->completed, __ATOMIC_ACQUIRE) < 6)
        ac_gin_consume(r, &rec_backend, &rec, 8);
    pthread_join(th, NULL);
    cr_expect_eq(pr.status, AC_GIN_OK);
    cr_expect_eq(pr.last, 5u);
    cr_assert_eq(rec.n, 6);
    const uint64_t want[6] = {0, 1, 2, 3, 0, 1};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(rec.value[i], want[i], "completion %d", i);
    ac_gin_ring_destroy(r);
}

/* The consumer stops at a ticket whose descriptor is not published yet, even when later ones are:
 * completions stay in ticket order. */
Test(gin_ring, completion_in_ticket_order)
{
    static struct recorder rec = {.fail_peer = -1};
    struct ac_gin_ring *r = ac_gin_ring_create(8, NULL, 0, NULL);
    uint64_t t = ac_gin_fetch_add(&r->head, 1); /* a producer holding ticket 0, still writing */
    cr_assert_eq(t, 0u);
    cr_assert_eq(ac_gin_signal(r, 0, 0, 11, 1, NULL), AC_GIN_OK); /* ticket 1 */
    cr_expect_eq(ac_gin_consume(r, &rec_backend, &rec, 8), 0);
    struct ac_gin_desc d = {0};
    d.op = AC_GIN_OP_SIGNAL;
    d.value = 10;
    r->descs[0] = d;
    ac_gin_store_release(&r->descs[0].seq, 1);
    cr_expect_eq(ac_gin_consume(r, &rec_backend, &rec, 8), 2);
    cr_expect_eq(rec.value[0], 10u);
    cr_expect_eq(rec.value[1], 11u);
    cr_expect_eq(ac_gin_flush(r), AC_GIN_OK);
    ac_gin_ring_destroy(r);
}

/* A failing descriptor sets the error word with the peer; a producer blocked on the full ring and
 * a waiter on a signal both return the error instead of hanging. */
Test(gin_ring, error_ends_waits_and_names_peer)
{
    static struct recorder rec = {.fail_peer = 3};
    uint64_t signals[2] = {0, 0};
    struct ac_gin_ring *r = ac_gin_ring_create(2, signals, 2, NULL);
    cr_assert_eq(ac_gin_put(r, 3, 0, 0, 8, NULL), AC_GIN_OK);
    cr_assert_eq(ac_gin_put(r, 1, 0, 0, 8, NULL), AC_GIN_OK);
    struct producer pr = {r, 1, 1, AC_GIN_OK, 0}; /* blocks: the ring is full */
    pthread_t th;
    pthread_create(&th, NULL, producer_main, &pr);
    nap_us(20000);
    cr_expect_eq(ac_gin_consume(r, &rec_backend, &rec, 8), 0);
    pthread_join(th, NULL);
    cr_expect_eq(pr.status, AC_GIN_ERR_PEER);
    cr_expect_eq(r->error, AC_GIN_ERR_PEER);
    cr_expect_eq(r->error_peer, 3);
    cr_expect_eq(ac_gin_wait_signal(r, 0, 1), AC_GIN_ERR_PEER);
    ac_gin_ring_fail(r, AC_GIN_ERR_TIMEOUT, 0); /* the first error is kept */
    cr_expect_eq(r->error, AC_GIN_ERR_PEER);
    cr_expect_eq(r->error_peer, 3);
    ac_gin_ring_destroy(r);
}

static void *set_after(void *p)
{
    nap_us(20000);
    ac_gin_store_release((uint64_t *)p, 7);
    return NULL;
}

static void *abort_after(void *p)
{
    nap_us(20000);
    __atomic_store_n((int *)p, 1, __ATOMIC_RELEASE);
    return NULL;
}

Test(gin_ring, wait_signal_and_abort)
{
    uint64_t signals[4] = {0};
    static volatile int abort_flag;
    struct ac_gin_ring *r = ac_gin_ring_create(4, signals, 4, &abort_flag);
    pthread_t th;
    pthread_create(&th, NULL, set_after, &signals[2]);
    cr_expect_eq(ac_gin_wait_signal(r, 2, 7), AC_GIN_OK);
    pthread_join(th, NULL);
    cr_expect_eq(ac_gin_wait_signal(r, 2, 5), AC_GIN_OK, ">= is enough");
    cr_expect_eq(ac_gin_wait_signal(r, 4, 1), AC_GIN_ERR_ACCESS, "signal id out of range");
    pthread_create(&th, NULL, abort_after, (void *)&abort_flag);
    cr_expect_eq(ac_gin_wait_signal(r, 1, 1), AC_GIN_ERR_ABORT);
    pthread_join(th, NULL);
    ac_gin_ring_destroy(r);
}
