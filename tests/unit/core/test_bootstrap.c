/* Bootstrap: ranks as threads in one process rendezvous through a root, exchange data with
 * allgather and tagged send/recv, survive strangers at the root, and fail in bounded time. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "core/bootstrap.h"
#include "core/bootstrap_wire.h"
#include "../common/common_test_env.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RANKS 8
#define BLOCK 100
#define NTAGS 4

/* No NCCL_COMM_ID, NCCL_SOCKET_* or timeouts from the caller's environment. */
static void fresh_env(void)
{
    test_clean_env();
    ac_config_reload();
}

TestSuite(bootstrap, .init = fresh_env);

struct rank_arg {
    ncclUniqueId id;
    int rank, nranks;
    bool is_exchange; /* run allgather, send/recv, barrier after init */
    size_t p2p_bytes;
    ncclResult_t res;
    char err[512];
    int bad_values;
};

static unsigned char value_at(int rank, size_t i)
{
    return (unsigned char)(rank * 31 + i * 7 + 1);
}

static unsigned char p2p_value(int from, int to, int tag, size_t i)
{
    return (unsigned char)(from * 13 + to * 5 + tag * 3 + i);
}

static ncclResult_t check_allgather(struct ac_bootstrap *bs, struct rank_arg *a)
{
    unsigned char all[MAX_RANKS * BLOCK];
    memset(all, 0xee, sizeof(all));
    for (size_t i = 0; i < BLOCK; i++)
        all[a->rank * BLOCK + i] = value_at(a->rank, i);
    AC_CHECK(ac_bootstrap_allgather(bs, all, BLOCK));
    for (int r = 0; r < a->nranks; r++)
        for (size_t i = 0; i < BLOCK; i++)
            a->bad_values += all[r * BLOCK + i] != value_at(r, i);
    return ncclSuccess;
}

/* Every rank sends NTAGS messages to every rank (itself too) before receiving them, in reverse
 * tag order and starting from a different peer. */
static ncclResult_t check_p2p(struct ac_bootstrap *bs, struct rank_arg *a)
{
    size_t n = a->p2p_bytes;
    unsigned char *buf = malloc(n);
    ncclResult_t res = ncclSuccess;
    for (int p = 0; p < a->nranks && res == ncclSuccess; p++) {
        for (int t = 0; t < NTAGS && res == ncclSuccess; t++) {
            for (size_t i = 0; i < n; i++)
                buf[i] = p2p_value(a->rank, p, t, i);
            res = ac_bootstrap_send(bs, p, 100 + (uint32_t)t, buf, n);
        }
    }
    for (int k = 0; k < a->nranks && res == ncclSuccess; k++) {
        int p = (a->rank + a->nranks - k) % a->nranks;
        for (int t = NTAGS - 1; t >= 0 && res == ncclSuccess; t--) {
            res = ac_bootstrap_recv(bs, p, 100 + (uint32_t)t, buf, n);
            for (size_t i = 0; i < n && res == ncclSuccess; i++)
                a->bad_values += buf[i] != p2p_value(p, a->rank, t, i);
        }
    }
    free(buf);
    return res;
}

static void *rank_main(void *arg)
{
    struct rank_arg *a = arg;
    struct ac_bootstrap *bs = NULL;
    a->res = ac_bootstrap_init(&a->id, a->rank, a->nranks, NULL, &bs);
    if (a->res == ncclSuccess && a->is_exchange) {
        a->res = check_allgather(bs, a);
        if (a->res == ncclSuccess)
            a->res = check_p2p(bs, a);
        if (a->res == ncclSuccess)
            a->res = ac_bootstrap_barrier(bs);
        if (a->res == ncclSuccess)
            a->res = check_allgather(bs, a); /* a second round reuses connections */
    }
    if (a->res != ncclSuccess)
        snprintf(a->err, sizeof(a->err), "%s", ac_last_error());
    ac_bootstrap_close(bs);
    return NULL;
}

/* Runs ranks [0, nstarted) of nranks as threads; each gets the id from get_id(). */
static void run_ranks(struct rank_arg *args, int nstarted, int nranks, const ncclUniqueId *id,
                      size_t p2p_bytes)
{
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < nstarted; r++) {
        memset(&args[r], 0, sizeof(args[r]));
        args[r] = (struct rank_arg){
            .id = *id, .rank = r, .nranks = nranks, .is_exchange = true, .p2p_bytes = p2p_bytes};
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &args[r]), 0);
    }
    for (int r = 0; r < nstarted; r++)
        pthread_join(th[r], NULL);
}

static void expect_all_ok(struct rank_arg *args, int n)
{
    for (int r = 0; r < n; r++) {
        cr_expect_eq(args[r].res, ncclSuccess, "rank %d: %s", r, args[r].err);
        cr_expect_eq(args[r].bad_values, 0, "rank %d", r);
    }
}

static void exchange(int nranks, size_t p2p_bytes)
{
    ncclUniqueId id;
    struct rank_arg args[MAX_RANKS];
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess, "%s", ac_last_error());
    run_ranks(args, nranks, nranks, &id, p2p_bytes);
    expect_all_ok(args, nranks);
}

Test(bootstrap, one_rank, .timeout = 10)
{
    exchange(1, 16);
}
Test(bootstrap, three_ranks, .timeout = 10)
{
    exchange(3, 16);
}
Test(bootstrap, four_ranks, .timeout = 10)
{
    exchange(4, 16);
}
Test(bootstrap, four_ranks_1mib_all_send_first, .timeout = 20)
{
    exchange(4, 1 << 20);
}

Test(bootstrap, two_communicators_at_once, .timeout = 10)
{
    ncclUniqueId id1, id2;
    struct rank_arg a1[MAX_RANKS], a2[MAX_RANKS];
    pthread_t th[6];
    cr_assert_eq(ac_bootstrap_create_root(&id1), ncclSuccess);
    cr_assert_eq(ac_bootstrap_create_root(&id2), ncclSuccess);
    for (int r = 0; r < 3; r++) {
        a1[r] = (struct rank_arg){
            .id = id1, .rank = r, .nranks = 3, .is_exchange = true, .p2p_bytes = 8};
        a2[r] = (struct rank_arg){
            .id = id2, .rank = r, .nranks = 3, .is_exchange = true, .p2p_bytes = 8};
        pthread_create(&th[r], NULL, rank_main, &a1[r]);
        pthread_create(&th[3 + r], NULL, rank_main, &a2[r]);
    }
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    expect_all_ok(a1, 3);
    expect_all_ok(a2, 3);
}

static struct sockaddr_storage root_of(const ncclUniqueId *id)
{
    struct ac_unique_id uid;
    cr_assert_eq(ac_unique_id_decode(id, &uid), ncclSuccess);
    return uid.root;
}

static void connect_and_send(struct ac_socket *s, const struct sockaddr_storage *to,
                             const void *data, size_t len)
{
    ac_socket_init(s);
    cr_assert_eq(ac_socket_connect(s, to, ac_now_ns() + 2000000000ull, NULL), ncclSuccess);
    if (len > 0)
        cr_assert_eq(ac_socket_send_all(s, data, len, ac_now_ns() + 2000000000ull, NULL),
                     ncclSuccess);
}

Test(bootstrap, strangers_do_not_disturb_the_root, .timeout = 15)
{
    ncclUniqueId id;
    struct rank_arg args[MAX_RANKS];
    struct ac_socket silent, garbage, short_garbage, wrong_secret, bad_version;
    char junk[sizeof(struct ac_bootstrap_hello)];
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    struct sockaddr_storage root = root_of(&id);
    struct ac_unique_id uid;
    ac_unique_id_decode(&id, &uid);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 11 + 3);
    struct ac_bootstrap_hello hello = {.magic = AC_BOOTSTRAP_HELLO_MAGIC,
                                       .version = AC_BOOTSTRAP_VERSION,
                                       .secret = uid.secret + 1,
                                       .nranks = 3,
                                       .rank = 0};
    hello.listen_addr = root;
    connect_and_send(&silent, &root, NULL, 0);
    connect_and_send(&short_garbage, &root, "GET / HTTP/1.0\r\n", 16);
    connect_and_send(&garbage, &root, junk, sizeof(junk));
    connect_and_send(&wrong_secret, &root, &hello, sizeof(hello));
    hello.secret = uid.secret;
    hello.version = AC_BOOTSTRAP_VERSION + 7;
    connect_and_send(&bad_version, &root, &hello, sizeof(hello));
    run_ranks(args, 3, 3, &id, 16);
    expect_all_ok(args, 3);
    ac_socket_close(&silent);
    ac_socket_close(&short_garbage);
    ac_socket_close(&garbage);
    ac_socket_close(&wrong_secret);
    ac_socket_close(&bad_version);
}

Test(bootstrap, missing_rank_fails_within_timeout, .timeout = 10)
{
    setenv("ANYCCL_INIT_TIMEOUT", "2", 1);
    ac_config_reload();
    ncclUniqueId id;
    struct rank_arg args[MAX_RANKS];
    pthread_t th[2];
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    uint64_t t0 = ac_now_ns();
    for (int i = 0; i < 2; i++) { /* ranks 0 and 2 of 4 */
        args[i] = (struct rank_arg){.id = id, .rank = 2 * i, .nranks = 4};
        pthread_create(&th[i], NULL, rank_main, &args[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(ac_now_ns() - t0) / 1e9;
    cr_expect(secs < 4.5, "took %.1f s", secs);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(args[i].res, ncclRemoteError);
        cr_expect(strstr(args[i].err, "only 2 of 4 ranks arrived within 2 s (missing: 1, 3)"),
                  "rank %d: '%s'", args[i].rank, args[i].err);
    }
}

Test(bootstrap, nranks_disagreement_fails_everyone, .timeout = 10)
{
    ncclUniqueId id;
    struct rank_arg args[3];
    pthread_t th[3];
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    /* rank 0 (nranks 3) first, so that the message is deterministic */
    args[0] = (struct rank_arg){.id = id, .rank = 0, .nranks = 3};
    pthread_create(&th[0], NULL, rank_main, &args[0]);
    usleep(200000);
    args[1] = (struct rank_arg){.id = id, .rank = 1, .nranks = 3};
    args[2] = (struct rank_arg){.id = id, .rank = 2, .nranks = 4};
    pthread_create(&th[1], NULL, rank_main, &args[1]);
    pthread_create(&th[2], NULL, rank_main, &args[2]);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(args[i].res, ncclInvalidUsage, "rank %d", i);
        cr_expect(strstr(args[i].err, "rank 2 joined with nranks=4 but rank 0 said nranks=3"),
                  "rank %d: '%s'", i, args[i].err);
    }
}

Test(bootstrap, comm_id_rank0_runs_the_root, .timeout = 10)
{
    struct ac_socket probe;
    struct sockaddr_storage lo;
    char env[64];
    ac_socket_init(&probe);
    cr_assert_eq(ac_socket_addr_parse("127.0.0.1:0", &lo), ncclSuccess);
    cr_assert_eq(ac_socket_listen(&probe, &lo), ncclSuccess);
    snprintf(env, sizeof(env), "127.0.0.1:%d", ac_socket_addr_port(&probe.addr));
    ac_socket_close(&probe); /* a free port: SO_REUSEADDR lets the root bind it again */
    setenv("NCCL_COMM_ID", env, 1);
    ac_config_reload();
    ncclUniqueId ids[3];
    for (int r = 0; r < 3; r++) /* every process computes its own id */
        cr_assert_eq(ac_bootstrap_create_root(&ids[r]), ncclSuccess);
    cr_assert_eq(memcmp(&ids[0], &ids[1], sizeof(ids[0])), 0);
    struct rank_arg args[3];
    pthread_t th[4];
    for (int r = 2; r >= 0; r--) { /* rank 0 last: the others retry until the root is up */
        args[r] = (struct rank_arg){
            .id = ids[r], .rank = r, .nranks = 3, .is_exchange = true, .p2p_bytes = 8};
        pthread_create(&th[r], NULL, rank_main, &args[r]);
    }
    for (int r = 0; r < 3; r++)
        pthread_join(th[r], NULL);
    expect_all_ok(args, 3);

    /* ids the library makes for itself (split, shrink) get their own roots */
    for (int r = 0; r < 2; r++)
        cr_assert_eq(ac_bootstrap_create_private_root(&ids[r]), ncclSuccess);
    cr_assert_neq(memcmp(&ids[0], &ids[1], sizeof(ids[0])), 0);
    struct rank_arg a1[2], a2[2];
    for (int r = 0; r < 2; r++) {
        a1[r] = (struct rank_arg){
            .id = ids[0], .rank = r, .nranks = 2, .is_exchange = true, .p2p_bytes = 8};
        a2[r] = (struct rank_arg){
            .id = ids[1], .rank = r, .nranks = 2, .is_exchange = true, .p2p_bytes = 8};
        pthread_create(&th[r], NULL, rank_main, &a1[r]);
        pthread_create(&th[2 + r], NULL, rank_main, &a2[r]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    expect_all_ok(a1, 2);
    expect_all_ok(a2, 2);
}

Test(bootstrap, abort_flag_ends_recv, .timeout = 10)
{
    ncclUniqueId id;
    struct ac_bootstrap *bs = NULL;
    volatile int abort_flag = 0;
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    cr_assert_eq(ac_bootstrap_init(&id, 0, 1, &abort_flag, &bs), ncclSuccess);
    abort_flag = 1;
    char c;
    cr_expect_eq(ac_bootstrap_recv(bs, 0, 5, &c, 1), ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "aborted"), "%s", ac_last_error());
    ac_bootstrap_close(bs);
}

static int count_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

Test(bootstrap, close_leaves_no_fds, .timeout = 10)
{
    int before = count_fds();
    exchange(3, 16);
    /* the detached root thread closes its sockets right after sending the tables */
    uint64_t deadline = ac_now_ns() + 3000000000ull;
    while (count_fds() != before && ac_now_ns() < deadline)
        usleep(10000);
    cr_expect_eq(count_fds(), before);
}

static void *raise_flag_later(void *arg)
{
    usleep(300000);
    *(volatile int *)arg = 1;
    return NULL;
}

/* Rank 0 runs the root (NCCL_COMM_ID): aborting it must not wait for the root's timeout. */
Test(bootstrap, comm_id_rank0_abort_is_prompt, .timeout = 10)
{
    struct ac_socket probe;
    struct sockaddr_storage lo;
    struct ac_bootstrap *bs = NULL;
    volatile int abort_flag = 0;
    char env[64];
    pthread_t th;
    ncclUniqueId id;
    ac_socket_init(&probe);
    ac_socket_addr_parse("127.0.0.1:0", &lo);
    cr_assert_eq(ac_socket_listen(&probe, &lo), ncclSuccess);
    snprintf(env, sizeof(env), "127.0.0.1:%d", ac_socket_addr_port(&probe.addr));
    ac_socket_close(&probe);
    setenv("NCCL_COMM_ID", env, 1);
    setenv("ANYCCL_INIT_TIMEOUT", "60", 1);
    ac_config_reload();
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    pthread_create(&th, NULL, raise_flag_later, (void *)&abort_flag);
    uint64_t t0 = ac_now_ns();
    cr_expect_eq(ac_bootstrap_init(&id, 0, 2, &abort_flag, &bs), ncclRemoteError);
    pthread_join(th, NULL);
    double secs = (double)(ac_now_ns() - t0) / 1e9;
    cr_expect(secs < 3.0, "took %.1f s", secs);
    cr_expect(strstr(ac_last_error(), "aborted") != NULL, "%s", ac_last_error());
}

struct gone_arg {
    ncclUniqueId id;
    int rank;
    ncclResult_t res;
    char err[512];
    double secs;
};

/* Rank 1 sends one message and closes; rank 0 then waits for a second one. */
static void *gone_main(void *arg)
{
    struct gone_arg *a = arg;
    struct ac_bootstrap *bs = NULL;
    int v = 42;
    a->res = ac_bootstrap_init(&a->id, a->rank, 2, NULL, &bs);
    if (a->res == ncclSuccess && a->rank == 1)
        a->res = ac_bootstrap_send(bs, 0, 7, &v, sizeof(v));
    if (a->res == ncclSuccess && a->rank == 0) {
        a->res = ac_bootstrap_recv(bs, 1, 7, &v, sizeof(v));
        uint64_t t0 = ac_now_ns();
        if (a->res == ncclSuccess && v == 42)
            a->res = ac_bootstrap_recv(bs, 1, 8, &v, sizeof(v));
        a->secs = (double)(ac_now_ns() - t0) / 1e9;
        snprintf(a->err, sizeof(a->err), "%s", ac_last_error());
    }
    ac_bootstrap_close(bs);
    return NULL;
}

Test(bootstrap, peer_that_closed_fails_a_recv_at_once, .timeout = 10)
{
    setenv("ANYCCL_INIT_TIMEOUT", "30", 1);
    ac_config_reload();
    struct gone_arg a[2];
    pthread_t th[2];
    ncclUniqueId id;
    cr_assert_eq(ac_bootstrap_create_root(&id), ncclSuccess);
    for (int r = 0; r < 2; r++) {
        a[r] = (struct gone_arg){.id = id, .rank = r};
        pthread_create(&th[r], NULL, gone_main, &a[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    cr_expect_eq(a[1].res, ncclSuccess);
    cr_expect_eq(a[0].res, ncclRemoteError);
    cr_expect(a[0].secs < 3.0, "took %.1f s", a[0].secs);
    cr_expect(strstr(a[0].err, "rank 1") && strstr(a[0].err, "closed its connection"), "%s",
              a[0].err);
}
