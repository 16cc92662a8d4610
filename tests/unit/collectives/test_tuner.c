/* The cost model (src/collectives/tuner.c): monotone in size and bandwidth, rails help, trees win
 * for small allreduces across many nodes and lose nothing on rails they do not use, NCCL_ALGO is
 * honoured, and the estimate of the shipped parameters stays within sane bounds. */
#include "collectives/tuner.h"
#include "common/check.h"
#include "common/config.h"

#include <criterion/criterion.h>
#include <stdlib.h>

TestSuite(tuner, .timeout = 20);

static void build(struct ac_layout *l, int nnodes, int ppn, int nrails)
{
    int n = nnodes * ppn;
    uint64_t *h = malloc((size_t)n * sizeof(*h));
    cr_assert_not_null(h);
    for (int r = 0; r < n; r++)
        h[r] = (uint64_t)(r / ppn) + 11;
    cr_assert_eq(ac_layout_build(l, h, n), ncclSuccess);
    free(h);
    l->nrails = nrails;
}

static const struct ac_tuner_params params = {
    .net_hop_us = 50, .net_gbs = 1.0, .intra_hop_us = 2, .intra_gbs = 5.0,
    .chunk_bytes = 512 << 10};

Test(tuner, monotone_in_size)
{
    static const enum ac_coll colls[] = {AC_COLL_ALLREDUCE,     AC_COLL_ALLGATHER,
                                         AC_COLL_REDUCESCATTER, AC_COLL_BROADCAST,
                                         AC_COLL_REDUCE,        AC_COLL_ALLTOALL};
    struct ac_layout l;
    build(&l, 4, 2, 2);
    for (size_t c = 0; c < sizeof(colls) / sizeof(colls[0]); c++)
        for (int a = 0; a < AC_ALGO_COUNT; a++) {
            double prev = 0;
            for (size_t s = 1; s <= (1u << 30); s *= 4) {
                double t = ac_tuner_model_us(colls[c], (enum ac_algo)a, s, &l, &params);
                cr_assert_gt(t, 0);
                cr_assert_geq(t, prev, "%s %s: %zu bytes %.1f us < %.1f us", ac_coll_name(colls[c]),
                              ac_algo_name((enum ac_algo)a), s, t, prev);
                prev = t;
            }
        }
    ac_layout_free(&l);
}

Test(tuner, faster_network_and_more_rails_help)
{
    struct ac_layout one, two;
    struct ac_tuner_params fast = params;
    fast.net_gbs = 10.0;
    build(&one, 4, 2, 1);
    build(&two, 4, 2, 2);
    size_t s = 64u << 20;
    for (int a = 0; a < AC_ALGO_COUNT; a++) {
        double slow = ac_tuner_model_us(AC_COLL_ALLREDUCE, (enum ac_algo)a, s, &one, &params);
        cr_assert_lt(ac_tuner_model_us(AC_COLL_ALLREDUCE, (enum ac_algo)a, s, &one, &fast), slow);
        cr_assert_leq(ac_tuner_model_us(AC_COLL_ALLREDUCE, (enum ac_algo)a, s, &two, &params),
                      slow);
    }
    cr_assert_lt(ac_tuner_model_us(AC_COLL_ALLTOALL, AC_ALGO_RING, s, &two, &params),
                 ac_tuner_model_us(AC_COLL_ALLTOALL, AC_ALGO_RING, s, &one, &params));
    ac_layout_free(&one);
    ac_layout_free(&two);
}

/* Latency: a ring takes 2(n-1) steps, a tree 2 log2(nodes): small allreduces on many nodes go to
 * the tree; on one node the ring's shared-memory steps are cheap. */
Test(tuner, tree_for_small_messages_on_many_nodes)
{
    struct ac_layout big, one;
    build(&big, 64, 2, 2);
    build(&one, 1, 4, 1);
    cr_assert_lt(ac_tuner_model_us(AC_COLL_ALLREDUCE, AC_ALGO_TREE, 4096, &big, &params),
                 ac_tuner_model_us(AC_COLL_ALLREDUCE, AC_ALGO_RING, 4096, &big, &params));
    cr_assert_lt(ac_tuner_model_us(AC_COLL_ALLREDUCE, AC_ALGO_RING, 64u << 20, &one, &params),
                 ac_tuner_model_us(AC_COLL_ALLREDUCE, AC_ALGO_TREE, 64u << 20, &one, &params));
    ac_layout_free(&big);
    ac_layout_free(&one);
}

/* Allgather on one rail: n-1 blocks through the busiest NIC; doubling the nodes roughly doubles
 * the large-message time. */
Test(tuner, allgather_scales_with_ranks)
{
    struct ac_layout a, b;
    build(&a, 4, 1, 1);
    build(&b, 8, 1, 1);
    size_t s = 16u << 20;
    double ta = ac_tuner_model_us(AC_COLL_ALLGATHER, AC_ALGO_RING, s, &a, &params);
    double tb = ac_tuner_model_us(AC_COLL_ALLGATHER, AC_ALGO_RING, s, &b, &params);
    cr_assert(tb > 2.0 * ta * 0.9 && tb < 2.0 * ta * 1.5, "4 nodes %.0f us, 8 nodes %.0f us", ta,
              tb);
    /* 3 blocks of 16 MiB through one NIC at 1 GB/s, used both ways (x 1/0.78): ~64.5 ms */
    cr_assert(ta > 60000 && ta < 70000, "%.0f us", ta);
    ac_layout_free(&a);
    ac_layout_free(&b);
}

Test(tuner, nccl_algo_is_honoured)
{
    struct ac_layout l;
    build(&l, 64, 2, 2);
    setenv("NCCL_ALGO", "Ring", 1);
    ac_config_reload();
    cr_assert_eq(ac_tuner_pick(AC_COLL_ALLREDUCE, 4096, &l), AC_ALGO_RING);
    setenv("NCCL_ALGO", "^ring", 1);
    ac_config_reload();
    cr_assert_eq(ac_tuner_pick(AC_COLL_ALLREDUCE, 1u << 30, &l), AC_ALGO_TREE);
    cr_assert_eq(ac_tuner_pick(AC_COLL_ALLGATHER, 4096, &l), AC_ALGO_RING); /* no tree for it */
    unsetenv("NCCL_ALGO");
    ac_config_reload();
    cr_assert_eq(ac_tuner_pick(AC_COLL_ALLREDUCE, 4096, &l), AC_ALGO_TREE);
    ac_layout_free(&l);
}

/* The library's parameters: the NIC's line rate caps the socket ceiling. */
Test(tuner, params_follow_nic_speed)
{
    struct ac_layout l;
    struct ac_tuner_params p, q;
    build(&l, 2, 1, 1);
    ac_tuner_params_for(&l, &p);
    l.nic_gbit = 1.0;
    ac_tuner_params_for(&l, &q);
    cr_assert_lt(q.net_gbs, p.net_gbs);
    cr_assert_float_eq(q.net_gbs, 1.0 / 8 * AC_TUNER_NET_EFFICIENCY, 1e-9);
    ac_layout_free(&l);
}
