/* The cost model and the choice of algorithm. time = hops on the critical path x per-hop latency
 * + bytes through the busiest link / its bandwidth. Hops and links are counted on the layout
 * (ranks per node, nodes): hops between nodes cost network latency and bandwidth, hops inside a
 * node shared-memory ones. NCCL_ALGO (NCCL's syntax: a list, ^ to exclude) limits the choice. */
#include "collectives/coll.h"
#include "common/config.h"
#include "common/log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct link_model {
    double hop_us;       /* per slot hand-off */
    double gbps;         /* GB/s of one link */
};

static const struct link_model shm_link = {.hop_us = 0.5, .gbps = 6.0};
static const struct link_model net_link = {.hop_us = 15.0, .gbps = 1.2};

/* Bytes each rank sends (as a multiple of the user's bytes) and sequential hops of the ring. */
static void ring_factors(enum ac_coll coll, int n, double *traffic, double *hops)
{
    double dn = n;
    switch (coll) {
    case AC_COLL_ALLREDUCE:
        *traffic = 2.0 * (dn - 1) / dn;
        *hops = 2.0 * (dn - 1);
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
    case AC_COLL_ALLTOALL:
    case AC_COLL_GATHER:
    case AC_COLL_SCATTER:
        *traffic = dn - 1;
        *hops = dn - 1;
        break;
    case AC_COLL_BROADCAST:
    case AC_COLL_REDUCE:
        *traffic = 1.0;
        *hops = dn - 1;
        break;
    default:
        *traffic = 1.0;
        *hops = 1.0;
        break;
    }
}

static bool tree_applies(enum ac_coll coll)
{
    return coll == AC_COLL_ALLREDUCE || coll == AC_COLL_BROADCAST || coll == AC_COLL_REDUCE;
}

double ac_tuner_estimate_us(enum ac_coll coll, enum ac_algo algo, size_t bytes,
                            const struct ac_layout *l)
{
    int n = l->nranks, m = l->nnodes;
    int ppn = (n + m - 1) / m;
    bool is_net = m > 1;
    const struct link_model *bw = is_net ? &net_link : &shm_link;
    if (n <= 1)
        return shm_link.hop_us;
    double s = (double)bytes;
    if (algo == AC_ALGO_TREE && tree_applies(coll)) {
        double net_depth = is_net ? ceil(log2((double)m + 1)) : 0;
        double lat = net_depth * net_link.hop_us + (ppn - 1) * shm_link.hop_us;
        double passes = coll == AC_COLL_ALLREDUCE ? 2.0 : 1.0;
        /* an inner node receives from up to two children: the model charges it twice */
        return passes * lat + passes * 2.0 * s / (bw->gbps * 1e3);
    }
    double traffic, hops;
    ring_factors(coll, n, &traffic, &hops);
    double net_hops = is_net ? (coll == AC_COLL_ALLREDUCE ? 2.0 * m : (double)m) : 0;
    double lat = net_hops * net_link.hop_us + (hops - net_hops) * shm_link.hop_us;
    return lat + traffic * s / (bw->gbps * 1e3);
}

/* Which algorithms NCCL_ALGO allows: "Ring", "Tree", "ring,tree", "^tree". Unknown names warn. */
static unsigned allowed_algos(void)
{
    const char *spec = ac_config_get()->algo;
    if (!spec || !*spec)
        return (1u << AC_ALGO_COUNT) - 1;
    bool is_exclude = spec[0] == '^';
    unsigned named = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", spec + is_exclude);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int a = 0;
        for (; a < AC_ALGO_COUNT; a++)
            if (strcasecmp(tok, ac_algo_name((enum ac_algo)a)) == 0)
                break;
        if (a < AC_ALGO_COUNT)
            named |= 1u << a;
        else
            AC_INFO(AC_SUB_TUNING | AC_SUB_ENV, "NCCL_ALGO: \"%s\" is not an algorithm AnyCCL has "
                    "(Ring, Tree): ignored", tok);
    }
    unsigned all = (1u << AC_ALGO_COUNT) - 1;
    return is_exclude ? all & ~named : named;
}

enum ac_algo ac_tuner_pick(enum ac_coll coll, size_t bytes, const struct ac_layout *l)
{
    unsigned allowed = allowed_algos();
    if (!tree_applies(coll) || !(allowed & (1u << AC_ALGO_TREE)))
        return AC_ALGO_RING;
    if (!(allowed & (1u << AC_ALGO_RING)))
        return AC_ALGO_TREE;
    double ring = ac_tuner_estimate_us(coll, AC_ALGO_RING, bytes, l);
    double tree = ac_tuner_estimate_us(coll, AC_ALGO_TREE, bytes, l);
    enum ac_algo pick = tree < ring ? AC_ALGO_TREE : AC_ALGO_RING;
    AC_INFO(AC_SUB_TUNING, "%s %zu bytes on %d ranks / %d nodes: Ring %.1f us, Tree %.1f us -> %s",
            ac_coll_name(coll), bytes, l->nranks, l->nnodes, ring, tree, ac_algo_name(pick));
    return pick;
}
