/* The per-process topology (NCCL_TOPO_FILE or discovery, NCCL_TOPO_DUMP_FILE) and the choice of a
 * rank's NIC. */
#include "topology/topo_internal.h"

#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct ac_topo *cached; /* holds one reference of its own */

static ncclResult_t build(struct ac_topo **out)
{
    const struct ac_config *cfg = ac_config_get();
    struct ac_topo *t;
    if (cfg->topo_file != NULL) {
        AC_CHECK(ac_topo_load_file(cfg->topo_file, &t));
        AC_INFO(AC_SUB_GRAPH, "topology loaded from %s (NCCL_TOPO_FILE): %d GPUs, %d NICs",
                cfg->topo_file, t->ngpus, t->nnics);
    } else {
        AC_CHECK(ac_topo_discover(&t));
    }
    if (cfg->topo_dump_file != NULL && ac_topo_dump_file(t, cfg->topo_dump_file) != ncclSuccess)
        AC_WARN("NCCL_TOPO_DUMP_FILE=%s: the topology was not written (%s); continuing",
                cfg->topo_dump_file, ac_last_error());
    *out = t;
    return ncclSuccess;
}

ncclResult_t ac_topo_get(struct ac_topo **out)
{
    ncclResult_t res = ncclSuccess;
    if (out == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_get: out is NULL");
    pthread_mutex_lock(&cache_mutex);
    if (cached == NULL)
        res = build(&cached);
    if (res == ncclSuccess) {
        cached->refs++;
        *out = cached;
    }
    pthread_mutex_unlock(&cache_mutex);
    return res;
}

void ac_topo_free(struct ac_topo *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&cache_mutex);
    bool is_last = --t->refs == 0;
    pthread_mutex_unlock(&cache_mutex);
    if (is_last)
        free(t);
}

void ac_topo_cache_reset(void)
{
    pthread_mutex_lock(&cache_mutex);
    struct ac_topo *t = cached;
    cached = NULL;
    pthread_mutex_unlock(&cache_mutex);
    ac_topo_free(t);
}

/* PCI hops between two nodes through their lowest common ancestor, and whether that ancestor is
 * a PCI node (a switch both hang under). */
static int pci_distance(const struct ac_topo *t, int a, int b, bool *via_switch_out)
{
    int hops = 0;
    while (a != b && a >= 0 && b >= 0) {
        if (t->nodes[a].depth >= t->nodes[b].depth)
            a = t->nodes[a].parent;
        else
            b = t->nodes[b].parent;
        hops++;
    }
    *via_switch_out = a >= 0 && a == b && t->nodes[a].kind == AC_TOPO_NODE_PCI;
    return hops;
}

/* Lower is closer: under a common PCI switch by hops, then same NUMA node, then the rest. */
static int gpu_nic_score(const struct ac_topo *t, int gpu, int nic)
{
    bool via_switch;
    int hops = pci_distance(t, t->gpus[gpu].node, t->nics[nic].node, &via_switch);
    if (via_switch)
        return hops;
    return t->gpus[gpu].numa == t->nics[nic].numa ? 1000 : 2000;
}

/* An include list needs the NIC's name or its interface's to match; an exclude list (^...)
 * rejects the NIC when either is listed. */
static bool nic_allowed(const struct ac_topo_nic *n, const char *filter)
{
    if (filter == NULL || filter[0] == '\0')
        return true;
    bool by_name = ac_socket_ifname_matches(filter, n->name);
    bool by_if = n->ifname[0] != '\0' && ac_socket_ifname_matches(filter, n->ifname);
    if (filter[0] == '^')
        return by_name && (n->ifname[0] == '\0' || by_if);
    return by_name || by_if;
}

/* The allowed NICs closest to gpu into best[]; returns how many. */
static int closest_nics(const struct ac_topo *t, int gpu, const char *filter, int *best)
{
    int nbest = 0, best_score = 0;
    for (int i = 0; i < t->nnics; i++) {
        if (!nic_allowed(&t->nics[i], filter))
            continue;
        int s = gpu_nic_score(t, gpu, i);
        if (nbest == 0 || s < best_score) {
            nbest = 0;
            best_score = s;
        }
        if (s == best_score)
            best[nbest++] = i;
    }
    return nbest;
}

/* GPUs equally close to the same NICs take them in turn, in GPU order. */
static int pick_for_gpu(const struct ac_topo *t, int gpu, const char *filter)
{
    int best[AC_TOPO_MAX_NICS], other[AC_TOPO_MAX_NICS];
    int nbest = closest_nics(t, gpu, filter, best), turn = 0;
    for (int g = 0; g < gpu; g++) {
        int nother = closest_nics(t, g, filter, other);
        turn += nother == nbest && memcmp(other, best, sizeof(best[0]) * (size_t)nbest) == 0;
    }
    return best[turn % nbest];
}

/* Allowed NICs on NUMA node numa (-1: all), in rail order, into list[]; returns how many. */
static int nics_on_numa(const struct ac_topo *t, int numa, const char *filter, int *list)
{
    int n = 0;
    for (int rail = 0; rail < AC_TOPO_MAX_NICS; rail++) {
        for (int i = 0; i < t->nnics; i++) {
            const struct ac_topo_nic *c = &t->nics[i];
            if (c->rail == rail && nic_allowed(c, filter) && (numa < 0 || c->numa == numa))
                list[n++] = i;
        }
    }
    return n;
}

static ncclResult_t check_pick_args(const struct ac_topo *t, int local_rank, int local_nranks,
                                    int gpu, const char *filter)
{
    int list[AC_TOPO_MAX_NICS];
    if (t == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_pick_nic: topology is NULL");
    if (local_nranks < 1 || local_rank < 0 || local_rank >= local_nranks)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_pick_nic: local rank %d of %d is out of range",
                       local_rank, local_nranks);
    if (gpu < -1 || gpu >= t->ngpus)
        return AC_FAIL(ncclInvalidArgument,
                       "ac_topo_pick_nic: GPU %d is not in the topology of %s (%d GPUs)", gpu,
                       t->source, t->ngpus);
    if (t->nnics == 0)
        return AC_FAIL(ncclSystemError,
                       "no network interface found in the topology of %s: check that one is up "
                       "(ip link) or set NCCL_TOPO_FILE",
                       t->source);
    if (nics_on_numa(t, -1, filter, list) == 0)
        return AC_FAIL(ncclInvalidUsage,
                       "NCCL_SOCKET_IFNAME=%s matches none of the %d NICs of %s (first: %s); "
                       "change or unset it",
                       filter, t->nnics, t->source, t->nics[0].name);
    return ncclSuccess;
}

ncclResult_t ac_topo_pick_nic(const struct ac_topo *t, int local_rank, int local_nranks,
                              int gpu_or_minus1, int numa_or_minus1, const char *ifname_filter,
                              int *nic_index_out)
{
    int list[AC_TOPO_MAX_NICS], n, pick;
    AC_CHECK(check_pick_args(t, local_rank, local_nranks, gpu_or_minus1, ifname_filter));
    if (gpu_or_minus1 >= 0) {
        pick = pick_for_gpu(t, gpu_or_minus1, ifname_filter);
        AC_INFO(AC_SUB_NET, "local rank %d, GPU %d: NIC %d (%s), the closest", local_rank,
                gpu_or_minus1, pick, t->nics[pick].name);
    } else if (numa_or_minus1 >= 0 && (n = nics_on_numa(t, numa_or_minus1, ifname_filter, list))) {
        pick = list[local_rank % n];
        AC_INFO(AC_SUB_NET, "local rank %d: NIC %d (%s) on its NUMA node %d", local_rank, pick,
                t->nics[pick].name, numa_or_minus1);
    } else {
        n = nics_on_numa(t, -1, ifname_filter, list);
        /* Fewer ranks than rails: spread them over all rails (both sockets) rather than the
         * first ones. */
        int slot = local_nranks <= n ? local_rank * n / local_nranks : local_rank % n;
        pick = list[slot];
        AC_INFO(AC_SUB_NET, "local rank %d of %d: NIC %d (%s), rail %d of %d", local_rank,
                local_nranks, pick, t->nics[pick].name, t->nics[pick].rail, n);
    }
    *nic_index_out = pick;
    return ncclSuccess;
}

/* Whether bit cpu is set in an affinity mask of hex digits, most significant first; commas
 * between 32-bit words are skipped. */
static bool affinity_has_cpu(const char *mask, int cpu)
{
    int digit = cpu / 4;
    for (const char *p = mask + strlen(mask); p > mask;) {
        char c = *--p;
        if (c == ',')
            continue;
        if (digit-- > 0)
            continue;
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : 0;
        return (v >> (cpu % 4)) & 1;
    }
    return false;
}

int ac_topo_cpu_numa(const struct ac_topo *t, int cpu)
{
    if (t == NULL || cpu < 0)
        return -1;
    for (int i = 0; i < t->nnodes; i++) {
        const struct ac_topo_node *n = &t->nodes[i];
        if (n->kind == AC_TOPO_NODE_NUMA && affinity_has_cpu(n->affinity, cpu))
            return n->id;
    }
    return -1;
}
