/* The transport registry: shared memory first for ranks on one host, sockets otherwise or when
 * NCCL_SHM_DISABLE is set. */
#include "common/config.h"
#include "transport/transport.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void make_info(struct ac_peer_info *info, int rank, uint64_t host_hash)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&info->addr;

    memset(info, 0, sizeof(*info));
    info->rank = rank;
    info->pid = getpid();
    info->host_hash = host_hash;
    info->pid_ns_hash = 77;
    snprintf(info->hostname, AC_HOSTNAME_MAX, "host%llx", (unsigned long long)host_hash);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void enable_shm(bool is_enabled)
{
    unsetenv("ANYCCL_SHM_DISABLE");
    if (is_enabled)
        unsetenv("NCCL_SHM_DISABLE");
    else
        setenv("NCCL_SHM_DISABLE", "1", 1);
    ac_config_reload();
}

static int index_of(const struct ac_transport *tp)
{
    for (int i = 0; i < ac_transports_count; i++)
        if (ac_transports_all[i] == tp)
            return i;
    return -1;
}

Test(registry, lists_shm_before_socket, .timeout = 10)
{
    cr_assert_geq(ac_transports_count, 2);
    cr_assert_geq(index_of(&ac_shm_transport), 0);
    cr_assert_gt(index_of(&ac_socket_transport), index_of(&ac_shm_transport));
    for (int i = 0; i < ac_transports_count; i++) {
        cr_assert_not_null(ac_transports_all[i]->name);
        cr_assert_not_null(ac_transports_all[i]->can_connect);
    }
}

Test(registry, same_host_picks_shm, .timeout = 10)
{
    struct ac_peer_info a, b;

    enable_shm(true);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xabc);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_shm_transport);
    cr_assert_eq(ac_transport_pick(&b, &a), &ac_shm_transport);
}

Test(registry, other_host_picks_socket, .timeout = 10)
{
    struct ac_peer_info a, b;

    enable_shm(true);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_socket_transport);
}

Test(registry, other_pid_namespace_picks_socket, .timeout = 10)
{
    struct ac_peer_info a, b;

    enable_shm(true);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xabc);
    b.pid_ns_hash = 78;
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_socket_transport);
}

Test(registry, shm_disabled_picks_socket, .timeout = 10)
{
    struct ac_peer_info a, b;

    enable_shm(false);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xabc);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_socket_transport);
    enable_shm(true);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_shm_transport);
}
