/* The verbs provider's pure selection logic (src/transport/ib/ib_select.c): NCCL_IB_HCA parsing
 * and matching with NCCL's syntax, sysfs words, the RoCE GID choice from tables of fake GIDs, and
 * the registration cache over a fake register/deregister pair. */
#include "common/check.h"
#include "transport/ib/ib_select.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

TestSuite(ib_select, .timeout = 10);

static struct ac_ib_hca_filter parse_ok(const char *spec)
{
    struct ac_ib_hca_filter f;
    cr_assert_eq(ac_ib_hca_parse(spec, &f), ncclSuccess, "%s: %s", spec, ac_last_error());
    return f;
}

Test(ib_select, hca_unset_matches_everything)
{
    struct ac_ib_hca_filter f = parse_ok(NULL);
    cr_assert_eq(f.n, 0);
    cr_assert(ac_ib_hca_match(&f, "mlx5_0", 1));
    cr_assert(ac_ib_hca_match(&f, "rxe0", 2));
    f = parse_ok("");
    cr_assert(ac_ib_hca_match(&f, "mlx5_0", 1));
}

Test(ib_select, hca_prefix)
{
    struct ac_ib_hca_filter f = parse_ok("mlx5");
    cr_assert_eq(f.n, 1);
    cr_assert(!f.is_exact && !f.is_exclude);
    cr_assert(ac_ib_hca_match(&f, "mlx5_0", 1));
    cr_assert(ac_ib_hca_match(&f, "mlx5_12", 2));
    cr_assert(!ac_ib_hca_match(&f, "mlx4_0", 1));
    cr_assert(!ac_ib_hca_match(&f, "bnxt_re0", 1));
}

Test(ib_select, hca_exact)
{
    struct ac_ib_hca_filter f = parse_ok("=mlx5_1,mlx5_3");
    cr_assert(f.is_exact);
    cr_assert_eq(f.n, 2);
    cr_assert(ac_ib_hca_match(&f, "mlx5_1", 1));
    cr_assert(ac_ib_hca_match(&f, "mlx5_3", 1));
    cr_assert(!ac_ib_hca_match(&f, "mlx5_10", 1), "= must not prefix-match");
    cr_assert(!ac_ib_hca_match(&f, "mlx5_0", 1));
}

Test(ib_select, hca_ports)
{
    struct ac_ib_hca_filter f = parse_ok("mlx5_0:1,mlx5_1:2");
    cr_assert_eq(f.items[0].port, 1);
    cr_assert_eq(f.items[1].port, 2);
    cr_assert(ac_ib_hca_match(&f, "mlx5_0", 1));
    cr_assert(!ac_ib_hca_match(&f, "mlx5_0", 2));
    cr_assert(ac_ib_hca_match(&f, "mlx5_1", 2));
    cr_assert(!ac_ib_hca_match(&f, "mlx5_1", 1));
}

Test(ib_select, hca_exclude)
{
    struct ac_ib_hca_filter f = parse_ok("^mlx5_0,mlx5_1:2");
    cr_assert(f.is_exclude);
    cr_assert(!ac_ib_hca_match(&f, "mlx5_0", 1));
    cr_assert(!ac_ib_hca_match(&f, "mlx5_0", 2));
    cr_assert(!ac_ib_hca_match(&f, "mlx5_1", 2));
    cr_assert(ac_ib_hca_match(&f, "mlx5_1", 1));
    cr_assert(ac_ib_hca_match(&f, "mlx4_0", 1));
    /* "mlx5_0" is a prefix of "mlx5_01" too, as in NCCL */
    cr_assert(!ac_ib_hca_match(&f, "mlx5_01", 1));
}

Test(ib_select, hca_exclude_exact)
{
    struct ac_ib_hca_filter f = parse_ok("^=mlx5_1");
    cr_assert(f.is_exclude && f.is_exact);
    cr_assert(!ac_ib_hca_match(&f, "mlx5_1", 1));
    cr_assert(ac_ib_hca_match(&f, "mlx5_10", 1));
}

Test(ib_select, hca_malformed)
{
    struct ac_ib_hca_filter f;
    cr_assert_eq(ac_ib_hca_parse("mlx5_0:x", &f), ncclInvalidUsage);
    cr_assert(strstr(ac_last_error(), "mlx5_0:x") != NULL, "%s", ac_last_error());
    cr_assert_eq(ac_ib_hca_parse("mlx5_0:0", &f), ncclInvalidUsage);
    cr_assert_eq(ac_ib_hca_parse("mlx5_0:1x", &f), ncclInvalidUsage);
    cr_assert_eq(ac_ib_hca_parse(":1", &f), ncclInvalidUsage);
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(ac_ib_hca_parse(longname, &f), ncclInvalidUsage);
}

Test(ib_select, sysfs_words)
{
    cr_assert_eq(ac_ib_link_parse("InfiniBand\n"), AC_IB_LINK_IB);
    cr_assert_eq(ac_ib_link_parse("Ethernet\n"), AC_IB_LINK_ETH);
    cr_assert_eq(ac_ib_link_parse("Unknown"), AC_IB_LINK_UNKNOWN);
    cr_assert_eq(ac_ib_gid_type_parse("RoCE v2\n"), AC_IB_GID_ROCE_V2);
    cr_assert_eq(ac_ib_gid_type_parse("IB/RoCE v1\n"), AC_IB_GID_IB_ROCE_V1);
    cr_assert_eq(ac_ib_gid_type_parse(""), AC_IB_GID_UNKNOWN);
}

/* ---- GIDs ---- */

static struct ac_ib_gid link_local(enum ac_ib_gid_type t)
{
    struct ac_ib_gid g = {.raw = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0xfc, 0, 0xff, 0xfe, 0, 0, 1},
                          .type = t};
    return g;
}

static struct ac_ib_gid v4_mapped(enum ac_ib_gid_type t, uint8_t last)
{
    struct ac_ib_gid g = {.raw = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, last},
                          .type = t};
    return g;
}

static struct ac_ib_gid global6(enum ac_ib_gid_type t)
{
    struct ac_ib_gid g = {.raw = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7},
                          .type = t};
    return g;
}

Test(ib_select, gid_typical_roce_table_prefers_v2_ipv4)
{
    /* mlx5 on RoCE: 0/1 link-local v1/v2, 2/3 IPv4-mapped v1/v2, 4/5 global IPv6 v1/v2 */
    struct ac_ib_gid t[6] = {link_local(AC_IB_GID_IB_ROCE_V1),   link_local(AC_IB_GID_ROCE_V2),
                             v4_mapped(AC_IB_GID_IB_ROCE_V1, 5), v4_mapped(AC_IB_GID_ROCE_V2, 5),
                             global6(AC_IB_GID_IB_ROCE_V1),      global6(AC_IB_GID_ROCE_V2)};
    cr_assert_eq(ac_ib_gid_pick(t, 6, AC_IB_LINK_ETH, -1), 3);
}

Test(ib_select, gid_v2_global_ipv6_when_no_ipv4)
{
    struct ac_ib_gid t[4] = {link_local(AC_IB_GID_IB_ROCE_V1), link_local(AC_IB_GID_ROCE_V2),
                             global6(AC_IB_GID_IB_ROCE_V1), global6(AC_IB_GID_ROCE_V2)};
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, -1), 3);
}

Test(ib_select, gid_v1_only_and_empty_slots)
{
    struct ac_ib_gid t[4] = {0};
    t[1] = link_local(AC_IB_GID_IB_ROCE_V1);
    t[2] = v4_mapped(AC_IB_GID_IB_ROCE_V1, 9);
    /* zero entries (unpopulated) are skipped; no v2 at all: the first v1 */
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, -1), 1);
    memset(t, 0, sizeof(t));
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, -1), -1);
    /* a v2 link-local only is not routable: falls back to v1 */
    t[0] = link_local(AC_IB_GID_ROCE_V2);
    t[3] = link_local(AC_IB_GID_IB_ROCE_V1);
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, -1), 3);
}

Test(ib_select, gid_override)
{
    struct ac_ib_gid t[4] = {link_local(AC_IB_GID_IB_ROCE_V1), link_local(AC_IB_GID_ROCE_V2),
                             v4_mapped(AC_IB_GID_IB_ROCE_V1, 5), v4_mapped(AC_IB_GID_ROCE_V2, 5)};
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, 1), 1);
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, 2), 2);
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, 7), -1, "past the table");
    memset(&t[0], 0, sizeof(t[0]));
    cr_assert_eq(ac_ib_gid_pick(t, 4, AC_IB_LINK_ETH, 0), -1, "an empty entry");
}

Test(ib_select, gid_infiniband_uses_index_0)
{
    struct ac_ib_gid t[2] = {link_local(AC_IB_GID_IB_ROCE_V1), global6(AC_IB_GID_IB_ROCE_V1)};
    cr_assert_eq(ac_ib_gid_pick(t, 2, AC_IB_LINK_IB, -1), 0);
    cr_assert_eq(ac_ib_gid_pick(t, 2, AC_IB_LINK_IB, 1), 1);
    cr_assert_eq(ac_ib_gid_pick(t, 0, AC_IB_LINK_IB, -1), -1);
}

Test(ib_select, gid_predicates)
{
    struct ac_ib_gid a = v4_mapped(AC_IB_GID_ROCE_V2, 1), b = global6(AC_IB_GID_ROCE_V2);
    uint8_t zero[16] = {0};
    cr_assert(ac_ib_gid_is_ipv4_mapped(a.raw));
    cr_assert(!ac_ib_gid_is_ipv4_mapped(b.raw));
    cr_assert(ac_ib_gid_is_zero(zero));
    cr_assert(!ac_ib_gid_is_zero(a.raw));
}

/* ---- registration cache ---- */

struct fake_nic {
    int nregs, nderegs, live;
    uintptr_t last_start;
    size_t last_len;
    bool is_failing;
};

static ncclResult_t fake_reg(void *ctx, void *addr, size_t len, void **handle_out)
{
    struct fake_nic *n = ctx;
    if (n->is_failing)
        return AC_FAIL(ncclSystemError, "fake registration failure");
    n->nregs++;
    n->live++;
    n->last_start = (uintptr_t)addr;
    n->last_len = len;
    *handle_out = (void *)(uintptr_t)(0x1000 + n->nregs);
    return ncclSuccess;
}

static void fake_dereg(void *ctx, void *handle)
{
    struct fake_nic *n = ctx;
    n->nderegs++;
    n->live--;
}

Test(ib_select, mrcache_page_aligned_and_reused)
{
    struct fake_nic nic = {0};
    struct ac_ib_mrcache c;
    void *h1, *h2, *h3;
    ac_ib_mrcache_init(&c, fake_reg, fake_dereg, &nic, 4);
    char *base = (char *)(uintptr_t)0x100000;
    cr_assert_eq(ac_ib_mrcache_get(&c, base + 100, 5000, &h1), ncclSuccess);
    cr_assert_eq(nic.nregs, 1);
    cr_assert_eq(nic.last_start, 0x100000);
    cr_assert_eq(nic.last_len, 8192, "[100, 5100) covers two pages");
    /* inside the same pages: a hit, same handle */
    cr_assert_eq(ac_ib_mrcache_get(&c, base + 4096, 4096, &h2), ncclSuccess);
    cr_assert_eq(h2, h1);
    cr_assert_eq(nic.nregs, 1);
    cr_assert_eq(c.hits, 1);
    /* crossing past the registration: a new one */
    cr_assert_eq(ac_ib_mrcache_get(&c, base + 4096, 8192, &h3), ncclSuccess);
    cr_assert_neq(h3, h1);
    cr_assert_eq(nic.nregs, 2);
    ac_ib_mrcache_put(&c, h1);
    ac_ib_mrcache_put(&c, h2);
    ac_ib_mrcache_put(&c, h3);
    cr_assert_eq(nic.nderegs, 0, "idle entries stay cached up to max_unused");
    ac_ib_mrcache_clear(&c);
    cr_assert_eq(nic.live, 0);
}

Test(ib_select, mrcache_evicts_oldest_idle)
{
    struct fake_nic nic = {0};
    struct ac_ib_mrcache c;
    void *h[5];
    ac_ib_mrcache_init(&c, fake_reg, fake_dereg, &nic, 2);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ac_ib_mrcache_get(&c, (void *)(uintptr_t)(0x100000 * (i + 1)), 64, &h[i]),
                     ncclSuccess);
    cr_assert_eq(nic.live, 5);
    for (int i = 0; i < 4; i++) /* h[4] stays referenced */
        ac_ib_mrcache_put(&c, h[i]);
    cr_assert_eq(nic.live, 3, "4 idle, 2 kept");
    /* the two most recently released (h[2], h[3]) are the ones kept */
    void *again;
    cr_assert_eq(ac_ib_mrcache_get(&c, (void *)(uintptr_t)0x400000, 64, &again), ncclSuccess);
    cr_assert_eq(again, h[3]);
    cr_assert_eq(ac_ib_mrcache_get(&c, (void *)(uintptr_t)0x100000, 64, &again), ncclSuccess);
    cr_assert_eq(nic.nregs, 6, "h[0] was evicted, so registered again");
    ac_ib_mrcache_clear(&c);
    cr_assert_eq(nic.live, 0);
}

Test(ib_select, mrcache_failure_propagates)
{
    struct fake_nic nic = {.is_failing = true};
    struct ac_ib_mrcache c;
    void *h = NULL;
    ac_ib_mrcache_init(&c, fake_reg, fake_dereg, &nic, 2);
    cr_assert_eq(ac_ib_mrcache_get(&c, (void *)(uintptr_t)0x100000, 64, &h), ncclSystemError);
    cr_assert_null(h);
    cr_assert_eq(c.n, 0);
    ac_ib_mrcache_clear(&c);
}

/* The rank's rail NIC (chosen by the topology) is tried first, the others keep their order. */
Test(ib_select, rail_device_first)
{
    const char *names[] = {"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"};
    int order[4];
    ac_ib_device_order(names, 4, "mlx5_2", order);
    cr_assert(order[0] == 2 && order[1] == 0 && order[2] == 1 && order[3] == 3, "%d %d %d %d",
              order[0], order[1], order[2], order[3]);
    ac_ib_device_order(names, 4, "mlx5_0", order);
    cr_assert(order[0] == 0 && order[1] == 1 && order[2] == 2 && order[3] == 3);
    /* no preference, or one the machine does not have: list order */
    ac_ib_device_order(names, 4, NULL, order);
    cr_assert(order[0] == 0 && order[3] == 3);
    ac_ib_device_order(names, 4, "", order);
    cr_assert(order[0] == 0 && order[1] == 1 && order[2] == 2 && order[3] == 3);
    ac_ib_device_order(names, 4, "bnxt_re0", order);
    cr_assert(order[0] == 0 && order[1] == 1 && order[2] == 2 && order[3] == 3);
}
