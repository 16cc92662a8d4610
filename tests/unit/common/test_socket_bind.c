/* Binding a connection to a NIC (src/common/socket.c): the address of a named interface, the
 * source chosen for a peer (own NIC on the peer's subnet, else another local interface there,
 * else own), and a connection that really leaves from the chosen source. Loopback only: 127.0.0.1
 * and 127.0.0.2 are both on lo's 127.0.0.0/8. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "common_test_env.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>

static void fresh_env(void)
{
    test_clean_env();
    ac_config_reload();
}

TestSuite(socket_bind, .init = fresh_env, .timeout = 10);

static struct sockaddr_storage v4(const char *text)
{
    struct sockaddr_storage a;
    cr_assert_eq(ac_socket_addr_parse(text, &a), ncclSuccess, "%s", text);
    return a;
}

static uint32_t host_of(const struct sockaddr_storage *a)
{
    return ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr);
}

Test(socket_bind, address_of_an_interface)
{
    struct sockaddr_storage a;
    cr_assert_eq(ac_socket_ifname_addr("lo", &a), ncclSuccess, "%s", ac_last_error());
    cr_expect_eq(a.ss_family, AF_INET);
    cr_expect_eq(host_of(&a), 0x7f000001u);
    cr_expect_eq(ac_socket_addr_port(&a), 0);
    cr_expect_eq(ac_socket_ifname_addr("no-such-if0", &a), ncclSystemError);
    cr_expect(strstr(ac_last_error(), "no-such-if0") != NULL, "%s", ac_last_error());
}

Test(socket_bind, own_address_on_the_peer_subnet)
{
    struct sockaddr_storage peer = v4("127.0.0.9:1234"), own = v4("127.0.0.1:0"), src;
    cr_assert(ac_socket_source_for(&peer, &own, &src));
    cr_expect_eq(host_of(&src), 0x7f000001u);
    cr_expect_eq(ac_socket_addr_port(&src), 0);
}

/* A peer on no local subnet (TEST-NET-2): the rank's own NIC, or the kernel's choice without one.
 * (TEST-NET-1, 192.0.2.0/24, is some test machines' real network.) */
Test(socket_bind, no_subnet_falls_back_to_own)
{
    struct sockaddr_storage peer = v4("198.51.100.7:1234"), own = v4("127.0.0.1:0"), src;
    cr_assert(ac_socket_source_for(&peer, &own, &src));
    cr_expect_eq(host_of(&src), 0x7f000001u);
    cr_expect_not(ac_socket_source_for(&peer, NULL, &src));
}

/* Own address off the peer's subnet: the local interface on it (lo) is taken instead, unless
 * NCCL_SOCKET_IFNAME leaves it out. */
Test(socket_bind, interface_on_the_peer_subnet)
{
    struct sockaddr_storage peer = v4("127.0.0.9:1234"), own = v4("203.0.113.1:0"), src;
    cr_assert(ac_socket_source_for(&peer, &own, &src));
    cr_expect_eq(host_of(&src), 0x7f000001u);
    setenv("NCCL_SOCKET_IFNAME", "^lo", 1);
    ac_config_reload();
    cr_assert(ac_socket_source_for(&peer, &own, &src));
    cr_expect_eq(host_of(&src), 0xcb007101u);
}

Test(socket_bind, connection_leaves_from_the_source)
{
    struct ac_socket l, c, a;
    struct sockaddr_storage lo = v4("127.0.0.1:0"), src = v4("127.0.0.2:0");
    ac_socket_init(&l);
    ac_socket_init(&c);
    ac_socket_init(&a);
    cr_assert_eq(ac_socket_listen(&l, &lo), ncclSuccess, "%s", ac_last_error());
    uint64_t deadline = ac_now_ns() + 5000000000ull;
    cr_assert_eq(ac_socket_connect_from(&c, &l.addr, &src, deadline, NULL), ncclSuccess, "%s",
                 ac_last_error());
    cr_assert_eq(ac_socket_accept(&l, &a, deadline, NULL), ncclSuccess);
    cr_assert_geq(a.fd, 0);
    cr_expect_eq(host_of(&a.addr), 0x7f000002u, "accepted from %s", a.addr_str);
    ac_socket_close(&a);
    ac_socket_close(&c);
    ac_socket_close(&l);
}

/* A source that is not a local address: the connection is made anyway, from the kernel's choice. */
Test(socket_bind, unbindable_source_is_dropped)
{
    struct ac_socket l, c;
    struct sockaddr_storage lo = v4("127.0.0.1:0"), src = v4("203.0.113.1:0");
    ac_socket_init(&l);
    ac_socket_init(&c);
    cr_assert_eq(ac_socket_listen(&l, &lo), ncclSuccess);
    cr_assert_eq(ac_socket_connect_from(&c, &l.addr, &src, ac_now_ns() + 5000000000ull, NULL),
                 ncclSuccess, "%s", ac_last_error());
    ac_socket_close(&c);
    ac_socket_close(&l);
}
