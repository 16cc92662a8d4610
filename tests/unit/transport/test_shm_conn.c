/* The shared-memory connector: set-up, a stream of messages through few slots (threads and
 * processes; Simple, or the three protocols taking turns), back-pressure, a receiver waiting in LL
 * for a slot posted in Simple, a Simple receive after an LL one whose counter is still behind,
 * NCCL_SHM_DISABLE, refusal of an oversized segment, no names left in
 * /dev/shm, and a dead peer reported as ncclRemoteError instead of a hang. */
#include "common/check.h"
#include "common/config.h"
#include "device/kernels/ll.h"
#include "transport/shm/shm.h"
#include "transport/transport.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSLOTS 4
#define SLOT_BYTES 1000 /* not a page multiple on purpose */
#define NMSGS 3000

struct pair {
    struct ac_peer_info info[2]; /* rank 0 sends, rank 1 receives */
    struct ac_conn send;
    struct ac_conn recv;
    struct ac_conn_blob blob;
};

static uint64_t unique_hash(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)getpid() << 40) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
}

static void pair_init(struct pair *p, int nslots, size_t slot_bytes)
{
    memset(p, 0, sizeof(*p));
    uint64_t hash = unique_hash();
    for (int r = 0; r < 2; r++) {
        p->info[r].rank = r;
        p->info[r].pid = getpid();
        p->info[r].host_hash = 0x1234;
        p->info[r].pid_ns_hash = 0x5678;
        snprintf(p->info[r].hostname, AC_HOSTNAME_MAX, "testhost");
    }
    struct ac_conn *c[2] = {&p->send, &p->recv};
    for (int r = 0; r < 2; r++) {
        c[r]->tp = &ac_shm_transport;
        c[r]->is_send = r == 0;
        c[r]->peer = 1 - r;
        c[r]->channel = 3;
        c[r]->nslots = nslots;
        c[r]->slot_bytes = slot_bytes;
        c[r]->self_info = &p->info[r];
        c[r]->peer_info = &p->info[1 - r];
        c[r]->comm_hash = hash;
    }
}

/* Entries of dir whose name starts with "anyccl-<hash>-": the naming scheme of shm_conn.c. */
static int count_names(const char *dir, uint64_t hash)
{
    char prefix[64];
    struct dirent *e;
    int n = 0;

    snprintf(prefix, sizeof(prefix), "anyccl-%016" PRIx64 "-", hash);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static size_t msg_bytes(int i)
{
    if (i % 50 == 0)
        return 0;
    if (i % 50 == 1)
        return SLOT_BYTES;
    return (size_t)(i * 7919) % (SLOT_BYTES + 1);
}

static unsigned char msg_byte(int i, size_t j)
{
    return (unsigned char)(i * 31 + j * 7 + 1);
}

/* Streams with mixed protocols: runs of 7 messages in each, so that slots are reused across
 * protocols (NSLOTS is 4); both sides compute the same. */
static bool is_mixed;

static enum ac_proto msg_proto(int i)
{
    return is_mixed ? (enum ac_proto)((i / 7) % AC_PROTO_COUNT) : AC_PROTO_SIMPLE;
}

/* Returns 0, or the 1-based index of the message that failed. */
static int send_all(struct ac_conn *c)
{
    for (int i = 0; i < NMSGS; i++) {
        void *slot = NULL;
        c->proto = msg_proto(i);
        while (slot == NULL) {
            if (c->tp->send_slot(c, &slot) != ncclSuccess)
                return i + 1;
            if (slot == NULL)
                sched_yield();
        }
        if ((uintptr_t)slot % (c->proto == AC_PROTO_SIMPLE ? 4096 : 64) != 0)
            return i + 1;
        for (size_t j = 0; j < msg_bytes(i); j++)
            ((unsigned char *)slot)[j] = msg_byte(i, j);
        c->tx_tag = 0x80000000u | (uint32_t)i;
        if (c->tp->send_post(c, msg_bytes(i)) != ncclSuccess)
            return i + 1;
    }
    return 0;
}

static void recv_all(struct ac_conn *c)
{
    for (int i = 0; i < NMSGS; i++) {
        const void *slot = NULL;
        size_t bytes = 0;
        c->proto = msg_proto(i);
        while (slot == NULL) {
            cr_assert_eq(c->tp->recv_slot(c, &slot, &bytes), ncclSuccess, "message %d: %s", i,
                         ac_last_error());
            if (slot == NULL)
                sched_yield();
        }
        cr_assert_eq(bytes, msg_bytes(i), "message %d: %zu bytes", i, bytes);
        cr_assert_eq(c->rx_tag, 0x80000000u | (uint32_t)i, "message %d: tag %#x", i, c->rx_tag);
        const unsigned char *b = slot;
        for (size_t j = 0; j < bytes; j++)
            if (b[j] != msg_byte(i, j))
                cr_assert_fail("message %d byte %zu: %u != %u", i, j, b[j], msg_byte(i, j));
        cr_assert_eq(c->tp->recv_release(c), ncclSuccess);
    }
}

static void *sender_thread(void *arg)
{
    struct pair *p = arg;

    if (ac_shm_transport.send_connect(&p->send, &p->blob) != ncclSuccess)
        return (void *)(intptr_t)-1;
    return (void *)(intptr_t)send_all(&p->send);
}

Test(shm_conn, threads_stream_in_order, .timeout = 20)
{
    struct pair p;
    pthread_t t;
    void *ret;

    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(pthread_create(&t, NULL, sender_thread, &p), 0);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess, "%s", ac_last_error());
    recv_all(&p.recv);
    pthread_join(t, &ret);
    cr_assert_eq((intptr_t)ret, 0, "sender failed at message %d", (int)(intptr_t)ret);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
    cr_assert_null(p.recv.priv);
}

Test(shm_conn, threads_stream_mixed_protocols, .timeout = 20)
{
    struct pair p;
    pthread_t t;
    void *ret;

    is_mixed = true;
    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(pthread_create(&t, NULL, sender_thread, &p), 0);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess, "%s", ac_last_error());
    recv_all(&p.recv);
    pthread_join(t, &ret);
    cr_assert_eq((intptr_t)ret, 0, "sender failed at message %d", (int)(intptr_t)ret);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
}

/* A receiver in LL whose sender posted in Simple (ranks that disagree on the operation) must get
 * the slot, with the sender's tag, within a bounded number of polls: the executor then reports
 * the difference instead of waiting for an LL header that never comes. */
Test(shm_conn, ll_receiver_sees_a_simple_post, .timeout = 10)
{
    struct pair p;
    void *slot;
    const void *rslot = NULL;
    size_t bytes = 0;

    pair_init(&p, NSLOTS, 4096);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(ac_shm_transport.send_connect(&p.send, &p.blob), ncclSuccess);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess);
    p.send.proto = AC_PROTO_SIMPLE;
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    memset(slot, 7, 64);
    p.send.tx_tag = 0x8abcdef0u;
    cr_assert_eq(ac_shm_transport.send_post(&p.send, 64), ncclSuccess);
    p.recv.proto = AC_PROTO_LL;
    int polls = 0;
    for (; rslot == NULL && polls < 100000; polls++)
        cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert_not_null(rslot, "no slot after %d polls", polls);
    cr_assert_eq(bytes, 64);
    cr_assert_eq(p.recv.rx_tag, 0x8abcdef0u);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
}

/* An LL slot is received from its data, so the receiver may release it before the sender's
 * store of the posted-slots counter lands. A Simple receive right after must then wait, not call
 * the connection corrupt (CI once failed so under load). The test holds a mapping of its own to
 * put the counter back, as a sender stopped between those two stores would leave it. */
Test(shm_conn, simple_after_ll_with_the_counter_behind, .timeout = 10)
{
    struct pair p;
    struct ac_shm_segment seg;
    struct ac_shm_blob blob;
    void *slot;
    const void *rslot = NULL;
    size_t bytes = 0;

    pair_init(&p, NSLOTS, 4096);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    memcpy(&blob, p.blob.bytes, sizeof(blob));
    cr_assert_eq(ac_shm_segment_attach(&p.send, &blob, &seg), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(ac_shm_transport.send_connect(&p.send, &p.blob), ncclSuccess);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess);

    p.send.proto = p.recv.proto = AC_PROTO_LL;
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    memset(slot, 5, 40);
    p.send.tx_tag = 0x80000001u;
    cr_assert_eq(ac_shm_transport.send_post(&p.send, 40), ncclSuccess);
    __atomic_store_n(&seg.ctrl->tail, 0, __ATOMIC_RELEASE); /* not yet visible */
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert(rslot != NULL && bytes == 40 && ((const char *)rslot)[39] == 5);
    cr_assert_eq(ac_shm_transport.recv_release(&p.recv), ncclSuccess);

    p.recv.proto = AC_PROTO_SIMPLE;
    for (int i = 0; i < 3 * 1024; i++) { /* past the idle checks too */
        cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess,
                     "poll %d: %s", i, ac_last_error());
        cr_assert_null(rslot, "poll %d: a slot with nothing posted", i);
    }
    __atomic_store_n(&seg.ctrl->tail, 1, __ATOMIC_RELEASE); /* the late store lands */
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert_null(rslot, "message 0 handed out twice");

    p.send.proto = AC_PROTO_SIMPLE;
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    memset(slot, 6, 4096);
    p.send.tx_tag = 0x80000002u;
    cr_assert_eq(ac_shm_transport.send_post(&p.send, 4096), ncclSuccess);
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess, "%s",
                 ac_last_error());
    cr_assert(rslot != NULL && bytes == 4096 && ((const char *)rslot)[4095] == 6);
    cr_assert_eq(p.recv.rx_tag, 0x80000002u);
    cr_assert_eq(ac_shm_transport.recv_release(&p.recv), ncclSuccess);
    ac_shm_segment_close(&seg);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
}

Test(shm_conn, process_stream_in_order, .timeout = 20)
{
    struct pair p;
    int status;

    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        p.info[0].pid = getpid();
        if (ac_shm_transport.send_connect(&p.send, &p.blob) != ncclSuccess)
            _exit(100);
        int failed_at = send_all(&p.send);
        ac_shm_transport.close(&p.send);
        _exit(failed_at == 0 ? 0 : 1);
    }
    p.info[0].pid = pid;
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess, "%s", ac_last_error());
    recv_all(&p.recv);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "sender status %#x", status);
    ac_shm_transport.close(&p.recv);
}

/* Both sides in one thread: recv_setup and send_connect never wait, recv_connect then succeeds. */
static void connect_in_one_thread(struct pair *p)
{
    cr_assert_eq(ac_shm_transport.recv_setup(&p->recv, &p->blob), ncclSuccess, "%s",
                 ac_last_error());
    cr_assert_eq(ac_shm_transport.send_connect(&p->send, &p->blob), ncclSuccess, "%s",
                 ac_last_error());
    cr_assert_eq(ac_shm_transport.recv_connect(&p->recv), ncclSuccess, "%s", ac_last_error());
}

Test(shm_conn, full_ring_gives_null_slot_until_release, .timeout = 10)
{
    struct pair p;
    void *slot;
    const void *rslot;
    size_t bytes;

    pair_init(&p, NSLOTS, 4096);
    connect_in_one_thread(&p);
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert_null(rslot);
    for (int i = 0; i < NSLOTS; i++) {
        cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
        cr_assert_not_null(slot, "slot %d", i);
        memset(slot, 'a' + i, 4096);
        cr_assert_eq(ac_shm_transport.send_post(&p.send, 100 + i), ncclSuccess);
    }
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    cr_assert_null(slot);
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert_eq(bytes, 100);
    cr_assert_eq(((const char *)rslot)[4095], 'a');
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    cr_assert_null(slot, "slot reusable before its release");
    cr_assert_eq(ac_shm_transport.recv_release(&p.recv), ncclSuccess);
    cr_assert_eq(ac_shm_transport.send_slot(&p.send, &slot), ncclSuccess);
    cr_assert_not_null(slot);
    cr_assert_eq(ac_shm_transport.recv_slot(&p.recv, &rslot, &bytes), ncclSuccess);
    cr_assert_eq(bytes, 101);
    cr_assert_eq(((const char *)rslot)[0], 'b');
    cr_assert_neq(ac_shm_transport.send_post(&p.send, 4097), ncclSuccess, "oversized post");
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
}

Test(shm_conn, shm_disable_turns_can_connect_off, .timeout = 10)
{
    struct pair p;

    pair_init(&p, NSLOTS, SLOT_BYTES);
    unsetenv("NCCL_SHM_DISABLE");
    unsetenv("ANYCCL_SHM_DISABLE");
    ac_config_reload();
    cr_assert(ac_shm_transport.can_connect(&p.info[0], &p.info[1]));
    setenv("NCCL_SHM_DISABLE", "1", 1);
    ac_config_reload();
    cr_assert_not(ac_shm_transport.can_connect(&p.info[0], &p.info[1]));
    unsetenv("NCCL_SHM_DISABLE");
    ac_config_reload();
    p.info[1].host_hash ^= 1;
    cr_assert_not(ac_shm_transport.can_connect(&p.info[0], &p.info[1]), "other host");
    p.info[1].host_hash ^= 1;
    p.info[1].pid_ns_hash ^= 1;
    cr_assert_not(ac_shm_transport.can_connect(&p.info[0], &p.info[1]), "other pid namespace");
}

Test(shm_conn, oversized_segment_is_refused_with_advice, .timeout = 10)
{
    struct pair p;

    pair_init(&p, NSLOTS, (size_t)256 << 30); /* 4 x 256 GiB = 1 TiB */
    ac_clear_error();
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSystemError);
    const char *msg = ac_last_error();
    cr_assert_not_null(strstr(msg, "NCCL_SHM_DISABLE"), "%s", msg);
    cr_assert_not_null(strstr(msg, "NCCL_BUFFSIZE"), "%s", msg);
    cr_assert_not_null(strstr(msg, "--shm-size"), "%s", msg);
    char size[32]; /* 4 slots, one page of control block, LL and LL128 slots, page-rounded */
    size_t ll = (ac_ll_slot_bytes(AC_LL_MAX_BYTES) + 127) / 128 * 128;
    size_t ll128 = ac_ll128_slot_bytes(AC_LL128_MAX_BYTES);
    snprintf(size, sizeof(size), "%zu",
             ((size_t)4 << 38) + 4096 + (4 * (ll + ll128) + 4095) / 4096 * 4096);
    cr_assert_not_null(strstr(msg, size), "segment size %s missing: %s", size, msg);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 0);
    cr_assert_null(p.recv.priv);
}

Test(shm_conn, no_name_left_after_recv_connect, .timeout = 10)
{
    struct pair p;

    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 1);
    cr_assert_eq(ac_shm_transport.send_connect(&p.send, &p.blob), ncclSuccess);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 1);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 0);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
}

Test(shm_conn, close_before_connect_removes_name, .timeout = 10)
{
    struct pair p;

    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 1);
    ac_shm_transport.close(&p.recv);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 0);
}

Test(shm_conn, shm_dir_holds_a_file_until_connect, .timeout = 20)
{
    char dir[] = "/tmp/anyccl-shm-test-XXXXXX";
    struct pair p;
    pthread_t t;
    void *ret;

    cr_assert_not_null(mkdtemp(dir));
    setenv("ANYCCL_SHM_DIR", dir, 1);
    ac_config_reload();
    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(count_names(dir, p.recv.comm_hash), 1);
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 0);
    cr_assert_eq(pthread_create(&t, NULL, sender_thread, &p), 0);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(count_names(dir, p.recv.comm_hash), 0);
    recv_all(&p.recv);
    pthread_join(t, &ret);
    cr_assert_eq((intptr_t)ret, 0);
    ac_shm_transport.close(&p.send);
    ac_shm_transport.close(&p.recv);
    rmdir(dir);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The sender process exits without attaching; reaped first, or left a zombie. */
static void check_dead_sender_detected(bool reap_first)
{
    struct pair p;
    struct timespec t0;
    int status;

    setenv("ANYCCL_INIT_TIMEOUT", "8", 1);
    ac_config_reload();
    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(0);
    p.info[0].pid = pid;
    if (reap_first)
        cr_assert_eq(waitpid(pid, &status, 0), pid);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclRemoteError);
    cr_assert_lt(seconds_since(&t0), 2.0, "dead peer took %.2f s to notice", seconds_since(&t0));
    cr_assert_not_null(strstr(ac_last_error(), "rank 0"), "%s", ac_last_error());
    cr_assert_not_null(strstr(ac_last_error(), "testhost"), "%s", ac_last_error());
    cr_assert_eq(count_names("/dev/shm", p.recv.comm_hash), 0);
    if (!reap_first)
        waitpid(pid, &status, 0);
    ac_shm_transport.close(&p.recv);
}

Test(shm_conn, dead_sender_fails_recv_connect, .timeout = 10)
{
    check_dead_sender_detected(true);
}

Test(shm_conn, zombie_sender_fails_recv_connect, .timeout = 10)
{
    check_dead_sender_detected(false);
}

Test(shm_conn, sender_dying_mid_stream_is_an_error, .timeout = 10)
{
    struct pair p;
    const void *slot = NULL;
    size_t bytes;
    int status;
    ncclResult_t res;

    setenv("ANYCCL_PEER_CHECK_MS", "50", 1);
    ac_config_reload();
    pair_init(&p, NSLOTS, SLOT_BYTES);
    cr_assert_eq(ac_shm_transport.recv_setup(&p.recv, &p.blob), ncclSuccess);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(ac_shm_transport.send_connect(&p.send, &p.blob) == ncclSuccess ? 0 : 1);
    p.info[0].pid = pid;
    cr_assert_eq(ac_shm_transport.recv_connect(&p.recv), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert_eq(status, 0);
    do {
        res = ac_shm_transport.recv_slot(&p.recv, &slot, &bytes);
        cr_assert_null(slot);
        if (res == ncclSuccess)
            sched_yield();
    } while (res == ncclSuccess);
    cr_assert_eq(res, ncclRemoteError, "%s", ac_last_error());
    cr_assert_not_null(strstr(ac_last_error(), "rank 0"), "%s", ac_last_error());
    ac_shm_transport.close(&p.recv);
}

/* A receiver killed between recv_setup and recv_connect leaves its name; the next process that
 * creates a segment removes it, since its creator no longer exists. */
Test(shm_conn, name_of_dead_creator_is_removed, .timeout = 10)
{
    struct pair dead, alive;
    int status;

    pair_init(&dead, NSLOTS, SLOT_BYTES);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        bool is_ok = ac_shm_transport.recv_setup(&dead.recv, &dead.blob) == ncclSuccess &&
                     count_names("/dev/shm", dead.recv.comm_hash) == 1;
        _exit(is_ok ? 0 : 1); /* no close: the name stays behind */
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert_eq(status, 0, "child could not create its segment");
    pair_init(&alive, NSLOTS, SLOT_BYTES);
    cr_assert_neq(alive.recv.comm_hash, dead.recv.comm_hash);
    cr_assert_eq(ac_shm_transport.recv_setup(&alive.recv, &alive.blob), ncclSuccess);
    cr_assert_eq(count_names("/dev/shm", dead.recv.comm_hash), 0);
    cr_assert_eq(count_names("/dev/shm", alive.recv.comm_hash), 1, "own segment removed");
    ac_shm_transport.close(&alive.recv);
}
