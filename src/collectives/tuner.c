/* The cost model and the choice of algorithm. time = steps on the critical path x per-step latency
 * + bytes through the busiest resource / its bandwidth, where the resources are the NICs (one per
 * rail, each direction) and the paths between ranks of a node. The bytes are counted on the
 * schedules that graph.c builds: the snake ring (local rank i of every node chained across the
 * nodes on rail i, alternating direction) and the double binary trees (channel c on local rank
 * c % ppn, so on rail c % nrails). NCCL_ALGO (NCCL's syntax: a list, ^ to exclude) limits the
 * choice. The protocol (Simple, LL, LL128) is chosen by size alone (ac_tuner_pick_proto), within
 * what NCCL_PROTO allows.
 *
 * The network rate factor (tuner.h) and the both-ways factor below were fitted on the
 * multi-node bed with tc caps (tests/multinode/calib.sh); the latencies and the shared-memory rate
 * are not calibrated. docs/topology.md, "Calibration", has the table. */
#include "collectives/tuner.h"

#include "common/config.h"
#include "common/log.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Defaults (docs/topology.md, "Cost model and tuner"). */
#define NET_HOP_US 60.0  /* per step between nodes: a placeholder, not calibrated */
#define SOCKET_GBS 1.2   /* cap for TCP through one NIC, GB/s per direction */
#define INTRA_HOP_US 0.5 /* per step between ranks of a node (shared memory) */
#define INTRA_GBS 6.0    /* GB/s of one shared-memory path */
#define TREE_NCHANNELS 2 /* as src/core/plan.c: one channel per tree of the pair */
/* A NIC that carries data both ways gives this fraction of its one-way rate: the acknowledgements
 * of the incoming stream queue behind outgoing data. Fitted on the tree allreduce on 2 nodes
 * (median over 10 runs of each size; the ring on 2 nodes uses each NIC one way only). */
#define DUPLEX_EFFICIENCY 0.78

void ac_tuner_params_for(const struct ac_layout *l, struct ac_tuner_params *out)
{
    out->net_hop_us = NET_HOP_US;
    out->net_gbs = SOCKET_GBS;
    out->intra_hop_us = INTRA_HOP_US;
    out->intra_gbs = INTRA_GBS;
    out->burst_bytes = 0;
    /* as src/core/init.c sizes the slots: NCCL_BUFFSIZE over ANYCCL_NSLOTS */
    const struct ac_config *cfg = ac_config_get();
    double nslots = cfg->nslots >= 2 && cfg->nslots <= 64 ? (double)cfg->nslots : 8;
    double buff = cfg->buffsize >= 8192 ? (double)cfg->buffsize : 4 << 20;
    out->chunk_bytes = floor(buff / nslots / 4096) * 4096;
    if (out->chunk_bytes < 4096)
        out->chunk_bytes = 4096;
    double line = l->nic_gbit > 0 ? l->nic_gbit / 8.0 * AC_TUNER_NET_EFFICIENCY : 0;
    if (line > 0 && line < out->net_gbs)
        out->net_gbs = line;
}

bool ac_tuner_algo_applies(enum ac_coll coll, enum ac_algo algo)
{
    if (algo == AC_ALGO_RING)
        return coll == AC_COLL_ALLREDUCE || coll == AC_COLL_ALLGATHER ||
               coll == AC_COLL_REDUCESCATTER || coll == AC_COLL_BROADCAST || coll == AC_COLL_REDUCE;
    return algo == AC_ALGO_TREE &&
           (coll == AC_COLL_ALLREDUCE || coll == AC_COLL_BROADCAST || coll == AC_COLL_REDUCE);
}

double ac_tuner_busbw_factor(enum ac_coll coll, int n)
{
    double dn = n;
    switch (coll) {
    case AC_COLL_ALLREDUCE:
        return 2.0 * (dn - 1) / dn;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
    case AC_COLL_ALLTOALL:
        return (dn - 1) / dn;
    default:
        return 1.0;
    }
}

static int max_ppn(const struct ac_layout *l)
{
    return l->is_uniform ? ac_layout_ppn(l, 0) : (l->nranks + l->nnodes - 1) / l->nnodes;
}

/* The most ring hops that leave one node through one NIC. In the snake, chain i runs forward
 * (node k to k+1) for even i and backward for odd i: the first node sends on the even chains,
 * the last on the odd ones, the others on all; chain i uses rail i % nrails. */
static int ring_hops_per_nic(const struct ac_layout *l)
{
    int p = max_ppn(l), m = l->nnodes, rails = l->nrails > 0 ? l->nrails : 1, worst = 0;
    if (!l->is_uniform || p > 64)
        return (p + rails - 1) / rails;
    for (int kind = 0; kind < 3; kind++) { /* first node, last node, a middle one */
        if (kind == 2 && m < 3)
            break;
        int per_rail[64] = {0};
        for (int i = 0; i < p; i++) {
            bool is_out = kind == 2 || (kind == 0 ? i % 2 == 0 : i % 2 == 1);
            if (p == 1)
                is_out = kind != 1; /* one chain: the natural ring, every node sends once */
            if (is_out && ++per_rail[i % rails] > worst)
                worst = per_rail[i % rails];
        }
    }
    return worst > 0 ? worst : 1;
}

static double ring_us(enum ac_coll coll, double s, const struct ac_layout *l,
                      const struct ac_tuner_params *p)
{
    double n = l->nranks, link, steps;
    switch (coll) {
    case AC_COLL_ALLREDUCE:
        link = 2.0 * (n - 1) / n * s;
        steps = 2.0 * (n - 1);
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
        link = (n - 1) * s;
        steps = n - 1;
        break;
    default: /* broadcast, reduce: a pipelined chain */
        link = s;
        steps = n - 1;
        break;
    }
    double intra = link / (p->intra_gbs * 1e3);
    if (l->nnodes == 1)
        return steps * p->intra_hop_us + intra;
    /* with 3 nodes or more, a middle node's NIC receives a chain and sends it on */
    double eff = l->nnodes >= 3 ? DUPLEX_EFFICIENCY : 1.0;
    double net = ring_hops_per_nic(l) * link / (p->net_gbs * eff * 1e3);
    return steps * p->net_hop_us + (net > intra ? net : intra);
}

static double tree_us(enum ac_coll coll, double s, const struct ac_layout *l,
                      const struct ac_tuner_params *p)
{
    int m = l->nnodes, ppn = max_ppn(l), rails = l->nrails > 0 ? l->nrails : 1;
    double per_ch = s / TREE_NCHANNELS;
    double kids = m >= 3 ? 2 : m == 2 ? 1 : 0; /* children of an inner node's head */
    bool is_split = ppn >= 2 && rails >= 2;    /* the two trees on two different NICs */
    double load;                               /* bytes through the busiest NIC, one way */
    double passes = coll == AC_COLL_ALLREDUCE ? 2.0 : 1.0;
    if (coll == AC_COLL_ALLREDUCE) {
        /* a head that is inner in one tree is a leaf in the other (m >= 3) */
        double inner = m >= 3 ? (1 + kids) * per_ch : per_ch, leaf = per_ch;
        load = is_split ? inner : inner + leaf;
    } else { /* rooted: both channels' trees have the same inner nodes */
        load = is_split ? kids * per_ch : 2 * kids * per_ch;
    }
    double depth = m > 1 ? floor(log2((double)m)) : 0; /* edges from the root to a leaf */
    double lat = passes * (depth * p->net_hop_us + (ppn - 1) * p->intra_hop_us);
    double intra = ppn > 1 ? passes * s / (p->intra_gbs * 1e3) : 0;
    /* Pipeline fill: a slot crosses each level in turn (allreduce: up, then down after the root
     * has reduced it), so the last slot leaves the first level that many slots late. */
    double chunk = per_ch < p->chunk_bytes ? per_ch : p->chunk_bytes;
    double levels = coll == AC_COLL_ALLREDUCE ? 2 * depth : depth;
    /* a capped link that waited for its first slot passes burst_bytes of it at once */
    chunk = chunk > p->burst_bytes ? chunk - p->burst_bytes : 0;
    /* allreduce: up one way, down the other; rooted trees: both ways at inner nodes (m >= 3) */
    bool is_duplex = coll == AC_COLL_ALLREDUCE || m >= 3;
    double gbs = p->net_gbs * (is_duplex ? DUPLEX_EFFICIENCY : 1.0);
    double net = m > 1 ? load / (gbs * 1e3) + (levels - 1) * chunk / (p->net_gbs * 1e3) : 0;
    return lat + (net > intra ? net : intra);
}

/* All-to-all, gather, scatter: transfers between pairs, all at once. A node sends (n - ppn) x
 * ppn blocks (all-to-all) spread over its rails: a block travels on the receiver's rail. */
static double exchange_us(enum ac_coll coll, double s, const struct ac_layout *l,
                          const struct ac_tuner_params *p)
{
    double n = l->nranks, ppn = max_ppn(l), rails = l->nrails > 0 ? l->nrails : 1;
    double remote = n - ppn, net, intra;
    if (coll == AC_COLL_ALLTOALL) {
        net = remote * ppn / (rails < ppn ? rails : ppn) * s;
        intra = (ppn - 1) * s;
    } else { /* the root's NIC carries every remote block */
        net = remote * s;
        intra = (ppn - 1) * s;
    }
    double gbs = p->net_gbs * (coll == AC_COLL_ALLTOALL ? DUPLEX_EFFICIENCY : 1.0);
    double t_net = l->nnodes > 1 ? net / (gbs * 1e3) + p->net_hop_us : 0;
    double t_intra = intra / (p->intra_gbs * 1e3) + p->intra_hop_us;
    return t_net > t_intra ? t_net : t_intra;
}

double ac_tuner_model_us(enum ac_coll coll, enum ac_algo algo, size_t bytes,
                         const struct ac_layout *l, const struct ac_tuner_params *p)
{
    double s = (double)bytes;
    if (l->nranks <= 1)
        return p->intra_hop_us;
    if (coll == AC_COLL_ALLTOALL || coll == AC_COLL_GATHER || coll == AC_COLL_SCATTER)
        return exchange_us(coll, s, l, p);
    if (coll == AC_COLL_SEND || coll == AC_COLL_RECV)
        return (l->nnodes > 1 ? p->net_hop_us + s / (p->net_gbs * 1e3)
                              : p->intra_hop_us + s / (p->intra_gbs * 1e3));
    if (algo == AC_ALGO_TREE && ac_tuner_algo_applies(coll, algo))
        return tree_us(coll, s, l, p);
    return ring_us(coll, s, l, p);
}

double ac_tuner_estimate_us(enum ac_coll coll, enum ac_algo algo, size_t bytes,
                            const struct ac_layout *l)
{
    struct ac_tuner_params p;
    ac_tuner_params_for(l, &p);
    return ac_tuner_model_us(coll, algo, bytes, l, &p);
}

/* Which algorithms NCCL_ALGO allows: "Ring", "Tree", "ring,tree", "^tree". Unknown names are
 * reported once. */
static unsigned allowed_algos(void)
{
    const char *spec = ac_config_get()->algo;
    if (!spec || !*spec)
        return (1u << AC_ALGO_COUNT) - 1;
    bool is_exclude = spec[0] == '^';
    unsigned named = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", spec + is_exclude);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int a = 0;
        for (; a < AC_ALGO_COUNT; a++)
            if (strcasecmp(tok, ac_algo_name((enum ac_algo)a)) == 0)
                break;
        if (a < AC_ALGO_COUNT)
            named |= 1u << a;
        else
            AC_INFO(AC_SUB_TUNING | AC_SUB_ENV,
                    "NCCL_ALGO: \"%s\" is not an algorithm AnyCCL has "
                    "(Ring, Tree): ignored",
                    tok);
    }
    unsigned all = (1u << AC_ALGO_COUNT) - 1;
    return is_exclude ? all & ~named : named;
}

/* Which protocols NCCL_PROTO allows (bit per enum ac_proto): "LL,LL128", "^LL128", "simple".
 * Unknown names are reported; a setting that allows nothing leaves every protocol allowed. */
static unsigned allowed_protos(void)
{
    const char *spec = ac_config_get()->proto;
    unsigned all = (1u << AC_PROTO_COUNT) - 1;
    if (!spec || !*spec)
        return all;
    bool is_exclude = spec[0] == '^';
    unsigned named = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", spec + is_exclude);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int p = 0;
        for (; p < AC_PROTO_COUNT; p++)
            if (strcasecmp(tok, ac_proto_name((enum ac_proto)p)) == 0)
                break;
        if (p < AC_PROTO_COUNT)
            named |= 1u << p;
        else
            AC_INFO(AC_SUB_TUNING | AC_SUB_ENV,
                    "NCCL_PROTO: \"%s\" is not a protocol (Simple, LL, LL128): ignored", tok);
    }
    unsigned mask = is_exclude ? all & ~named : named;
    return mask ? mask : all;
}

enum ac_proto ac_tuner_pick_proto(enum ac_coll coll, size_t bytes)
{
    const struct ac_config *cfg = ac_config_get();
    unsigned allowed = allowed_protos();
    (void)coll;
    if ((allowed & 1u << AC_PROTO_LL) && cfg->ll_threshold >= 0 &&
        bytes <= (uint64_t)cfg->ll_threshold)
        return AC_PROTO_LL;
    if ((allowed & 1u << AC_PROTO_LL128) && cfg->ll128_threshold >= 0 &&
        bytes <= (uint64_t)cfg->ll128_threshold)
        return AC_PROTO_LL128;
    if (allowed & 1u << AC_PROTO_SIMPLE)
        return AC_PROTO_SIMPLE;
    return allowed & 1u << AC_PROTO_LL128 ? AC_PROTO_LL128 : AC_PROTO_LL;
}

size_t ac_proto_chunk_elems(enum ac_proto proto, size_t slot_bytes, size_t type_bytes)
{
    size_t max = proto == AC_PROTO_LL ? AC_LL_MAX_BYTES
                 : proto == AC_PROTO_LL128 ? AC_LL128_MAX_BYTES : slot_bytes;
    if (max > slot_bytes)
        max = slot_bytes;
    return max / type_bytes;
}

enum ac_algo ac_tuner_pick(enum ac_coll coll, size_t bytes, const struct ac_layout *l)
{
    unsigned allowed = allowed_algos();
    enum ac_algo pick = AC_ALGO_RING;
    double best = -1, est[AC_ALGO_COUNT] = {0};
    for (int a = 0; a < AC_ALGO_COUNT; a++) {
        if (!ac_tuner_algo_applies(coll, (enum ac_algo)a) && a != AC_ALGO_RING)
            continue;
        est[a] = ac_tuner_estimate_us(coll, (enum ac_algo)a, bytes, l);
        if ((allowed & (1u << a)) && (best < 0 || est[a] < best)) {
            best = est[a];
            pick = (enum ac_algo)a;
        }
    }
    if (best < 0) /* NCCL_ALGO allows nothing that implements coll */
        pick = AC_ALGO_RING;
    if (!ac_log_enabled(AC_LOG_INFO, AC_SUB_TUNING))
        return pick;
    char tree[32] = "n/a";
    if (ac_tuner_algo_applies(coll, AC_ALGO_TREE))
        snprintf(tree, sizeof(tree), "%.1f us", est[AC_ALGO_TREE]);
    AC_INFO(AC_SUB_TUNING,
            "%s %zu bytes on %d ranks / %d nodes / %d rail(s): Ring %.1f us, Tree "
            "%s -> %s/%s, estimate %.1f us",
            ac_coll_name(coll), bytes, l->nranks, l->nnodes, l->nrails, est[AC_ALGO_RING], tree,
            ac_algo_name(pick), ac_proto_name(ac_tuner_pick_proto(coll, bytes)), est[pick]);
    return pick;
}
