/* Sockets: address parsing and printing, NCCL_SOCKET_IFNAME matching, interface choice, and
 * connect/recv bounded by deadlines and the abort flag. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "common_test_env.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <unistd.h>

static void fresh_env(void)
{
    test_clean_env();
    ac_config_reload();
}

TestSuite(socket, .init = fresh_env, .timeout = 10);

static const char *print(const struct sockaddr_storage *a)
{
    static char buf[AC_SOCKADDR_STRLEN];
    return ac_socket_addr_str(a, buf, sizeof(buf));
}

Test(socket, parse_ipv4)
{
    struct sockaddr_storage a;
    cr_assert_eq(ac_socket_addr_parse("10.1.2.3:29500", &a), ncclSuccess);
    cr_expect_eq(a.ss_family, AF_INET);
    cr_expect_eq(ac_socket_addr_port(&a), 29500);
    cr_expect_eq(((struct sockaddr_in *)&a)->sin_addr.s_addr, htonl(0x0a010203));
    cr_expect_str_eq(print(&a), "10.1.2.3:29500");
}

Test(socket, parse_ipv6_forms)
{
    struct sockaddr_storage a, b;
    cr_assert_eq(ac_socket_addr_parse("[fd00::1]:80", &a), ncclSuccess);
    cr_expect_eq(a.ss_family, AF_INET6);
    cr_expect_str_eq(print(&a), "[fd00::1]:80");
    cr_assert_eq(ac_socket_addr_parse("fd00::1:80", &b), ncclSuccess); /* last colon: port */
    cr_expect(ac_socket_addr_equal(&a, &b));
    ac_socket_addr_set_port(&b, 81);
    cr_expect_not(ac_socket_addr_equal(&a, &b));
}

Test(socket, parse_rejects_malformed)
{
    static const char *const bad[] = {"nocolon", "1.2.3.4:", "1.2.3.4:70000", "1.2.3.4:-1",
                                      "[::1]80", ":80",      "1.2.3.4:8x",    "[::1"};
    struct sockaddr_storage a;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(ac_socket_addr_parse(bad[i], &a), ncclInvalidArgument, "%s", bad[i]);
}

Test(socket, ifname_lists)
{
    cr_expect(ac_socket_ifname_matches("eth", "eth0"));
    cr_expect_not(ac_socket_ifname_matches("eth", "ib0"));
    cr_expect(ac_socket_ifname_matches("eth,ib", "ib0"));
    cr_expect_not(ac_socket_ifname_matches("^docker,lo", "docker0"));
    cr_expect_not(ac_socket_ifname_matches("^docker,lo", "lo"));
    cr_expect(ac_socket_ifname_matches("^docker,lo", "eth0"));
    cr_expect(ac_socket_ifname_matches("=eth0", "eth0"));
    cr_expect_not(ac_socket_ifname_matches("=eth0", "eth01"));
    cr_expect(ac_socket_ifname_matches("^=eth0", "eth01"));
    cr_expect_not(ac_socket_ifname_matches("^=eth0", "eth0"));
}

Test(socket, pick_by_ifname_and_family)
{
    struct sockaddr_storage a;
    char name[AC_IFNAME_MAX];
    setenv("NCCL_SOCKET_IFNAME", "=lo", 1);
    ac_config_reload();
    cr_assert_eq(ac_socket_pick_addr(NULL, &a, name, sizeof(name)), ncclSuccess);
    cr_expect_str_eq(name, "lo");
    cr_expect_str_eq(print(&a), "127.0.0.1:0");
    setenv("NCCL_SOCKET_FAMILY", "AF_INET6", 1);
    ac_config_reload();
    if (ac_socket_pick_addr(NULL, &a, name, sizeof(name)) == ncclSuccess) /* if ::1 exists */
        cr_expect_str_eq(print(&a), "[::1]:0");
    setenv("NCCL_SOCKET_IFNAME", "=no_such_if0", 1);
    ac_config_reload();
    cr_expect_eq(ac_socket_pick_addr(NULL, &a, name, sizeof(name)), ncclSystemError);
}

Test(socket, pick_toward_the_root)
{
    struct sockaddr_storage root, a;
    char name[AC_IFNAME_MAX];
    ac_socket_addr_parse("127.0.0.1:5000", &root);
    cr_assert_eq(ac_socket_pick_addr(&root, &a, name, sizeof(name)), ncclSuccess);
    cr_expect_str_eq(name, "lo");
    cr_expect_str_eq(print(&a), "127.0.0.1:0");
}

Test(socket, default_pick_prefers_a_real_interface)
{
    struct sockaddr_storage a;
    char name[AC_IFNAME_MAX];
    cr_assert_eq(ac_socket_pick_addr(NULL, &a, name, sizeof(name)), ncclSuccess);
    cr_expect(ac_socket_ifname_matches("^docker,lo,virbr,veth", name) ||
                  ac_socket_ifname_matches("docker,virbr,veth,lo", name),
              "%s", name);
}

static int free_port(void)
{
    struct ac_socket s;
    struct sockaddr_storage lo;
    ac_socket_init(&s);
    ac_socket_addr_parse("127.0.0.1:0", &lo);
    cr_assert_eq(ac_socket_listen(&s, &lo), ncclSuccess);
    int port = ac_socket_addr_port(&s.addr);
    ac_socket_close(&s);
    return port;
}

Test(socket, connect_refused_until_deadline)
{
    struct sockaddr_storage to;
    struct ac_socket s;
    char text[32];
    snprintf(text, sizeof(text), "127.0.0.1:%d", free_port());
    ac_socket_addr_parse(text, &to);
    ac_socket_init(&s);
    uint64_t t0 = ac_now_ns();
    cr_expect_eq(ac_socket_connect(&s, &to, t0 + 300000000ull, NULL), ncclRemoteError);
    uint64_t ms = (ac_now_ns() - t0) / 1000000;
    cr_expect(ms >= 300 && ms < 2000, "%llu ms", (unsigned long long)ms);
    cr_expect(strstr(ac_last_error(), text) != NULL, "%s", ac_last_error());
}

/* A connect from the port it connects to is TCP's simultaneous open with itself: it "succeeds".
 * That is what a rank's retried connect to the root's port can become before the root listens
 * (the port is in the ephemeral range); it must stay a refusal and leave the port free. */
Test(socket, a_connection_to_itself_is_refused)
{
    struct sockaddr_storage to;
    struct ac_socket s, l;
    char text[32];
    snprintf(text, sizeof(text), "127.0.0.1:%d", free_port());
    ac_socket_addr_parse(text, &to);
    ac_socket_init(&s);
    cr_expect_eq(ac_socket_connect_from(&s, &to, &to, ac_now_ns() + 200000000ull, NULL),
                 ncclRemoteError);
    cr_expect_lt(s.fd, 0);
    ac_socket_init(&l);
    cr_expect_eq(ac_socket_listen(&l, &to), ncclSuccess, "%s", ac_last_error());
    ac_socket_close(&l);
    ac_socket_close(&s);
}

static void *close_later(void *arg)
{
    usleep(200000);
    ac_socket_close(arg);
    return NULL;
}

/* A port held for a moment (by a connect that got it as its source) is waited for, briefly. */
Test(socket, listen_waits_out_a_port_held_briefly)
{
    struct sockaddr_storage at;
    struct ac_socket holder, l;
    char text[32];
    pthread_t th;
    snprintf(text, sizeof(text), "127.0.0.1:%d", free_port());
    ac_socket_addr_parse(text, &at);
    ac_socket_init(&holder);
    cr_assert_eq(ac_socket_listen(&holder, &at), ncclSuccess);
    pthread_create(&th, NULL, close_later, &holder);
    ac_socket_init(&l);
    cr_expect_eq(ac_socket_listen(&l, &at), ncclSuccess, "%s", ac_last_error());
    pthread_join(th, NULL);
    ac_socket_close(&l);
    /* held for good: an error naming the address, after the short wait */
    cr_assert_eq(ac_socket_listen(&holder, &at), ncclSuccess);
    uint64_t t0 = ac_now_ns();
    cr_expect_eq(ac_socket_listen(&l, &at), ncclSystemError);
    cr_expect(strstr(ac_last_error(), text) != NULL, "%s", ac_last_error());
    cr_expect_lt(ac_now_ns() - t0, 5000000000ull);
    ac_socket_close(&holder);
}

struct late_listener {
    struct sockaddr_storage addr;
    struct ac_socket listener, accepted;
};

static void *listen_late(void *arg)
{
    struct late_listener *l = arg;
    usleep(200000);
    ac_socket_init(&l->listener);
    if (ac_socket_listen(&l->listener, &l->addr) == ncclSuccess)
        ac_socket_accept(&l->listener, &l->accepted, ac_now_ns() + 3000000000ull, NULL);
    return NULL;
}

Test(socket, connect_retries_until_the_peer_listens)
{
    struct late_listener l;
    struct ac_socket s;
    char text[32];
    pthread_t th;
    snprintf(text, sizeof(text), "127.0.0.1:%d", free_port());
    ac_socket_addr_parse(text, &l.addr);
    ac_socket_init(&l.accepted);
    pthread_create(&th, NULL, listen_late, &l);
    ac_socket_init(&s);
    cr_expect_eq(ac_socket_connect(&s, &l.addr, ac_now_ns() + 3000000000ull, NULL), ncclSuccess);
    pthread_join(th, NULL);
    cr_assert_geq(l.accepted.fd, 0);
    cr_expect_eq(ac_socket_send_all(&s, "hello", 5, ac_now_ns() + 1000000000ull, NULL),
                 ncclSuccess);
    char buf[5];
    cr_expect_eq(ac_socket_recv_all(&l.accepted, buf, 5, ac_now_ns() + 1000000000ull, NULL),
                 ncclSuccess);
    cr_expect_eq(memcmp(buf, "hello", 5), 0);
    /* nothing more comes: a bounded receive times out, an aborted one ends at once */
    cr_expect_eq(ac_socket_recv_all(&l.accepted, buf, 1, ac_now_ns() + 100000000ull, NULL),
                 ncclRemoteError);
    volatile int abort_flag = 1;
    cr_expect_eq(ac_socket_recv_all(&l.accepted, buf, 1, 0, &abort_flag), ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "aborted") != NULL, "%s", ac_last_error());
    ac_socket_close(&s);
    cr_expect_eq(ac_socket_recv_all(&l.accepted, buf, 1, ac_now_ns() + 1000000000ull, NULL),
                 ncclRemoteError);
    cr_expect(strstr(ac_last_error(), "closed by peer") != NULL, "%s", ac_last_error());
    ac_socket_close(&l.accepted);
    ac_socket_close(&l.listener);
}

Test(socket, accept_deadline_is_not_an_error)
{
    struct ac_socket l, s;
    struct sockaddr_storage lo;
    ac_socket_init(&l);
    ac_socket_addr_parse("127.0.0.1:0", &lo);
    cr_assert_eq(ac_socket_listen(&l, &lo), ncclSuccess);
    cr_expect_eq(ac_socket_accept(&l, &s, ac_now_ns() + 50000000ull, NULL), ncclSuccess);
    cr_expect_eq(s.fd, -1);
    ac_socket_close(&l);
}
