/* The RDMA transports in the registry (src/transport/registry.c, rdma/rdma.h): their place in the
 * order (shm, ib, ofi, socket), ANYCCL_NET keeping one network transport, a forced transport that
 * cannot run failing the choice instead of falling back, and the immediate-data encoding of a
 * slot. Whether ofi can run depends on libfabric being installed: those cases skip without it. */
#include "common/config.h"
#include "transport/rdma/rdma.h"
#include "transport/transport.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(rdma_choice, .timeout = 20);

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

static void set_env(const char *net, const char *prov)
{
    unsetenv("ANYCCL_SHM_DISABLE");
    unsetenv("NCCL_SHM_DISABLE");
    if (net)
        setenv("ANYCCL_NET", net, 1);
    else
        unsetenv("ANYCCL_NET");
    if (prov)
        setenv("ANYCCL_OFI_PROVIDER", prov, 1);
    else
        unsetenv("ANYCCL_OFI_PROVIDER");
    unsetenv("NCCL_IB_HCA");
    unsetenv("ANYCCL_IB_HCA");
    ac_config_reload();
}

static int index_of(const struct ac_transport *tp)
{
    for (int i = 0; i < ac_transports_count; i++)
        if (ac_transports_all[i] == tp)
            return i;
    return -1;
}

static bool has_ofi(void)
{
    char why[256];
    return ac_ofi_transport.pv->is_usable(true, why, sizeof(why));
}

Test(rdma_choice, order_shm_ib_ofi_socket)
{
    int shm = index_of(&ac_shm_transport), ib = index_of(&ac_ib_transport.tp);
    int ofi = index_of(&ac_ofi_transport.tp), sock = index_of(&ac_socket_transport);
    cr_assert(shm >= 0 && ib > shm && ofi > ib && sock > ofi, "%d %d %d %d", shm, ib, ofi, sock);
    cr_assert_str_eq(ac_ib_transport.tp.name, "ib");
    cr_assert_str_eq(ac_ofi_transport.tp.name, "ofi");
}

Test(rdma_choice, net_socket_skips_rdma)
{
    struct ac_peer_info a, b;
    set_env("socket", NULL);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_socket_transport);
}

Test(rdma_choice, net_keeps_shm_within_a_host)
{
    struct ac_peer_info a, b;
    set_env("ofi", NULL);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xabc);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_shm_transport);
}

Test(rdma_choice, net_ofi_picks_ofi)
{
    struct ac_peer_info a, b;
    set_env("ofi", NULL);
    if (!has_ofi())
        cr_skip_test("libfabric with an RDM provider offering RMA is not installed");
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_ofi_transport.tp);
}

Test(rdma_choice, unset_net_keeps_software_ofi_off)
{
    struct ac_peer_info a, b;
    set_env(NULL, NULL);
    if (!has_ofi())
        cr_skip_test("libfabric is not installed");
    char why[256] = "";
    /* Ethernet only here: libfabric's providers are software ones (tcp, sockets) */
    cr_assert(!ac_ofi_transport.pv->is_usable(false, why, sizeof(why)));
    cr_assert(strstr(why, "software provider") != NULL, "%s", why);
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    const struct ac_transport *tp = ac_transport_pick(&a, &b);
    cr_assert(tp == &ac_socket_transport || tp == &ac_ib_transport.tp, "%s", tp->name);
}

Test(rdma_choice, forced_ib_without_device_is_no_transport)
{
    struct ac_peer_info a, b;
    char why[256] = "";
    set_env("ib", NULL);
    if (ac_ib_transport.pv->is_usable(true, why, sizeof(why)))
        cr_skip_test("this machine has a usable RDMA device");
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    cr_assert_null(ac_transport_pick(&a, &b), "a forced network must not fall back to sockets");
    cr_assert(strlen(why) > 0);
}

/* Capabilities advertised at init (ac_peer_info.rdma_caps): the receiver never picks an RDMA
 * transport its sender said it cannot run. */
Test(rdma_choice, local_caps_follow_net)
{
    set_env("socket", NULL);
    cr_assert_eq(ac_transport_rdma_caps(), AC_RDMA_CAP_KNOWN);
    set_env("ofi", NULL);
    if (!has_ofi())
        cr_skip_test("libfabric with an RDM provider offering RMA is not installed");
    cr_assert_eq(ac_transport_rdma_caps(), AC_RDMA_CAP_KNOWN | AC_RDMA_CAP_OFI);
}

Test(rdma_choice, peer_advertising_ofi_gets_ofi)
{
    struct ac_peer_info a, b;
    set_env("ofi", NULL);
    if (!has_ofi())
        cr_skip_test("libfabric with an RDM provider offering RMA is not installed");
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    a.rdma_caps = b.rdma_caps = AC_RDMA_CAP_KNOWN | AC_RDMA_CAP_OFI;
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_ofi_transport.tp);
}

Test(rdma_choice, peer_without_ofi_is_not_given_ofi)
{
    struct ac_peer_info a, b;
    set_env("ofi", NULL);
    if (!has_ofi())
        cr_skip_test("libfabric with an RDM provider offering RMA is not installed");
    make_info(&a, 0, 0xabc);
    make_info(&b, 1, 0xdef);
    a.rdma_caps = AC_RDMA_CAP_KNOWN | AC_RDMA_CAP_OFI;
    b.rdma_caps = AC_RDMA_CAP_KNOWN;
    /* forced: no transport (an error at set-up naming the peer), never sockets */
    cr_assert_null(ac_transport_pick(&a, &b));
    /* allowed but not forced (a provider named): the pair takes sockets, without a failed try */
    set_env(NULL, "tcp");
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_socket_transport);
    b.rdma_caps = AC_RDMA_CAP_KNOWN | AC_RDMA_CAP_OFI;
    cr_assert_eq(ac_transport_pick(&a, &b), &ac_ofi_transport.tp);
}

Test(rdma_choice, imm_encoding)
{
    for (unsigned slot = 0; slot < 64; slot += 7) {
        size_t sizes[] = {0, 1, 4096, 524288, AC_RDMA_MAX_SLOT_BYTES - 1};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            for (unsigned lap = 0; lap < 4; lap++) {
                uint32_t imm = ac_rdma_imm_encode(slot, lap, sizes[i]);
                cr_assert_eq(ac_rdma_imm_slot(imm), slot);
                cr_assert_eq(ac_rdma_imm_lap(imm), lap & 1);
                cr_assert_eq(ac_rdma_imm_bytes(imm), sizes[i]);
            }
        }
    }
    cr_assert_eq(AC_RDMA_MAX_SLOT_BYTES, (size_t)32 << 20);
}
