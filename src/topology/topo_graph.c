/* Building the topology graph and deriving what files do not spell out: depths, NUMA of every
 * node, links between GPUs and NVSwitches, GPU peers, SMP links between sockets, rails. */
#include "topology/topo_internal.h"

#include "common/check.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

ncclResult_t ac_topo_new(const char *source, struct ac_topo **out)
{
    struct ac_topo *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return AC_FAIL(ncclSystemError, "out of memory allocating the topology (%zu bytes)",
                       sizeof(*t));
    for (int i = 0; i < AC_TOPO_MAX_NICS; i++)
        t->nics[i].node = -1;
    for (int i = 0; i < AC_TOPO_MAX_GPUS; i++)
        t->gpus[i].node = -1;
    snprintf(t->source, sizeof(t->source), "%s", source);
    t->refs = 1;
    int root;
    ncclResult_t res = ac_topo_add_node(t, AC_TOPO_NODE_MACHINE, -1, &root);
    if (res != ncclSuccess) {
        free(t);
        return res;
    }
    *out = t;
    return ncclSuccess;
}

ncclResult_t ac_topo_add_node(struct ac_topo *t, enum ac_topo_node_kind kind, int parent,
                              int *index_out)
{
    if (t->nnodes == AC_TOPO_MAX_NODES)
        return AC_FAIL(ncclInvalidUsage,
                       "topology %s has more than %d nodes (CPUs, PCI devices, NICs, GPUs)",
                       t->source, AC_TOPO_MAX_NODES);
    struct ac_topo_node *n = &t->nodes[t->nnodes];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->parent = parent;
    n->numa = -1;
    n->id = -1;
    n->package = -1;
    *index_out = t->nnodes++;
    return ncclSuccess;
}

ncclResult_t ac_topo_add_link(struct ac_topo *t, int a, int b, enum ac_topo_link_kind kind,
                              int count, double bw_gbs, double lat_us)
{
    if (t->nlinks == AC_TOPO_MAX_LINKS)
        return AC_FAIL(ncclInvalidUsage, "topology %s has more than %d links", t->source,
                       AC_TOPO_MAX_LINKS);
    t->links[t->nlinks++] = (struct ac_topo_link){
        .a = a, .b = b, .kind = kind, .count = count, .bw_gbs = bw_gbs, .lat_us = lat_us};
    return ncclSuccess;
}

int ac_topo_find_numa(const struct ac_topo *t, int numa_id)
{
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_NUMA && t->nodes[i].id == numa_id)
            return i;
    }
    return -1;
}

ncclResult_t ac_topo_get_package(struct ac_topo *t, int package_id, int *index_out)
{
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_PACKAGE && t->nodes[i].id == package_id) {
            *index_out = i;
            return ncclSuccess;
        }
    }
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_PACKAGE, 0, index_out));
    t->nodes[*index_out].id = package_id;
    t->nodes[*index_out].package = package_id;
    return ncclSuccess;
}

int ac_topo_find_pci(const struct ac_topo *t, const char *busid)
{
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_PCI && strcasecmp(t->nodes[i].busid, busid) == 0)
            return i;
    }
    return -1;
}

static double link_unit_bw(enum ac_topo_link_kind kind, int sm)
{
    if (kind == AC_TOPO_LINK_XGMI)
        return AC_TOPO_XGMI_BW_GBS;
    return sm >= 70 || sm == 0 ? AC_TOPO_NVLINK_BW_GBS : AC_TOPO_NVLINK_OLD_BW_GBS;
}

static int find_gpu_by_busid(const struct ac_topo *t, const char *busid)
{
    for (int i = 0; i < t->ngpus; i++) {
        if (t->gpus[i].busid[0] != '\0' && strcasecmp(t->gpus[i].busid, busid) == 0)
            return i;
    }
    return -1;
}

/* Parallel links from GPU a to target b (a GPU index, or a switch name when b < 0). */
static int links_to(const struct ac_topo_gpu *g, const char *target)
{
    int n = 0;
    for (int i = 0; i < g->nlinks; i++) {
        if (strcasecmp(g->links[i].target, target) == 0)
            n += g->links[i].count;
    }
    return n;
}

static ncclResult_t get_switch(struct ac_topo *t, const char *name, int *index_out)
{
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_NVSWITCH && strcasecmp(t->nodes[i].busid, name) == 0) {
            *index_out = i;
            return ncclSuccess;
        }
    }
    char copy[AC_TOPO_BUSID_MAX]; /* name points into t */
    snprintf(copy, sizeof(copy), "%s", name);
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_NVSWITCH, -1, index_out));
    memcpy(t->nodes[*index_out].busid, copy, sizeof(copy));
    return ncclSuccess;
}

/* Graph links for the <nvlink>/<xgmi> elements of GPU a; a pair listed on both sides gets one
 * link, from the lower index. */
static ncclResult_t link_gpu(struct ac_topo *t, int a, const char *what)
{
    const struct ac_topo_gpu *g = &t->gpus[a];
    for (int i = 0; i < g->nlinks; i++) {
        const struct ac_topo_gpu_link *l = &g->links[i];
        double bw = l->count * link_unit_bw(l->kind, g->sm);
        int b = find_gpu_by_busid(t, l->target), sw;
        if (b == a)
            return AC_FAIL(ncclInvalidUsage, "topology %s: GPU dev=%d has a link to itself (%s)",
                           what, g->dev, l->target);
        if (b >= 0) {
            if (a < b || links_to(&t->gpus[b], g->busid) == 0)
                AC_CHECK(ac_topo_add_link(t, g->node, t->gpus[b].node, l->kind, l->count, bw,
                                          AC_TOPO_NVLINK_LAT_US));
            continue;
        }
        if (l->kind == AC_TOPO_LINK_XGMI)
            return AC_FAIL(ncclInvalidUsage,
                           "topology %s: <xgmi target=\"%s\"> of GPU dev=%d: no GPU has this bus "
                           "id",
                           what, l->target, g->dev);
        AC_CHECK(get_switch(t, l->target, &sw));
        AC_CHECK(ac_topo_add_link(t, g->node, sw, l->kind, l->count, bw, AC_TOPO_NVLINK_LAT_US));
    }
    return ncclSuccess;
}

/* Links GPU a has to b: direct ones, else through switches both reach (the smaller side). */
static void derive_peer(struct ac_topo *t, int a, int b)
{
    struct ac_topo_gpu *g = &t->gpus[a], *h = &t->gpus[b];
    enum ac_topo_link_kind kind = AC_TOPO_LINK_NVLINK;
    int count = 0;
    for (int i = 0; i < g->nlinks; i++) {
        if (strcasecmp(g->links[i].target, h->busid) == 0) {
            count += g->links[i].count;
            kind = g->links[i].kind;
        }
    }
    if (count == 0) { /* listed on b's side only */
        for (int i = 0; i < h->nlinks; i++) {
            if (strcasecmp(h->links[i].target, g->busid) == 0) {
                count += h->links[i].count;
                kind = h->links[i].kind;
            }
        }
    }
    int direct = count;
    for (int i = 0; direct == 0 && i < g->nlinks; i++) {
        const char *target = g->links[i].target;
        if (find_gpu_by_busid(t, target) >= 0)
            continue;
        /* Every link element to this switch is summed once: only at its first mention. */
        bool first = true;
        for (int j = 0; j < i; j++)
            first = first && strcasecmp(g->links[j].target, target) != 0;
        int ca = links_to(g, target), cb = links_to(h, target);
        if (first && cb > 0)
            count += ca < cb ? ca : cb;
    }
    if (count == 0 || g->npeers == AC_TOPO_MAX_GPUS)
        return;
    g->peers[g->npeers++] = (struct ac_topo_gpu_peer){
        .gpu = b, .kind = kind, .count = count, .bw_gbs = count * link_unit_bw(kind, g->sm)};
}

static ncclResult_t check_devs(struct ac_topo *t, const char *what)
{
    for (int i = 0; i < t->ngpus; i++) {
        if (t->gpus[i].node < 0)
            return AC_FAIL(ncclInvalidUsage,
                           "topology %s: GPU dev=%d is missing (GPUs are numbered 0 to %d)", what,
                           i, t->ngpus - 1);
    }
    for (int i = 0; i < t->nnics; i++) {
        if (t->nics[i].node < 0)
            return AC_FAIL(ncclInvalidUsage,
                           "topology %s: <net dev=\"%d\"> is missing (NICs are numbered 0 to %d)",
                           what, i, t->nnics - 1);
    }
    return ncclSuccess;
}

static void fill_depths(struct ac_topo *t)
{
    t->nnuma = t->npackages = 0;
    for (int i = 0; i < t->nnodes; i++) {
        struct ac_topo_node *n = &t->nodes[i];
        const struct ac_topo_node *p = n->parent >= 0 ? &t->nodes[n->parent] : NULL;
        n->depth = p != NULL ? p->depth + 1 : 0;
        n->numa = n->kind == AC_TOPO_NODE_NUMA ? n->id : p != NULL ? p->numa : -1;
        t->nnuma += n->kind == AC_TOPO_NODE_NUMA;
        t->npackages += n->kind == AC_TOPO_NODE_PACKAGE;
    }
    for (int i = 0; i < t->nnics; i++) {
        t->nics[i].numa = t->nodes[t->nics[i].node].numa;
        if (t->nics[i].rail < 0)
            t->nics[i].rail = i;
    }
    for (int i = 0; i < t->ngpus; i++)
        t->gpus[i].numa = t->nodes[t->gpus[i].node].numa;
}

static double smp_bw(const struct ac_topo *t, int package_id)
{
    for (int i = 0; i < t->nnodes; i++) {
        const struct ac_topo_node *n = &t->nodes[i];
        if (n->kind != AC_TOPO_NODE_NUMA || n->package != package_id)
            continue;
        if (strcmp(n->vendor, "GenuineIntel") == 0)
            return AC_TOPO_SMP_INTEL_BW_GBS;
        if (strcmp(n->vendor, "AuthenticAMD") == 0)
            return AC_TOPO_SMP_AMD_BW_GBS;
        break;
    }
    return AC_TOPO_SMP_OTHER_BW_GBS;
}

static ncclResult_t link_packages(struct ac_topo *t)
{
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind != AC_TOPO_NODE_PACKAGE)
            continue;
        for (int j = i + 1; j < t->nnodes; j++) {
            if (t->nodes[j].kind == AC_TOPO_NODE_PACKAGE)
                AC_CHECK(ac_topo_add_link(t, i, j, AC_TOPO_LINK_SMP, 1, smp_bw(t, t->nodes[i].id),
                                          AC_TOPO_SMP_LAT_US));
        }
    }
    return ncclSuccess;
}

ncclResult_t ac_topo_finish(struct ac_topo *t, const char *what)
{
    AC_CHECK(check_devs(t, what));
    fill_depths(t);
    for (int a = 0; a < t->ngpus; a++)
        AC_CHECK(link_gpu(t, a, what));
    for (int a = 0; a < t->ngpus; a++) {
        t->gpus[a].npeers = 0;
        for (int b = 0; b < t->ngpus; b++) {
            if (b != a)
                derive_peer(t, a, b);
        }
    }
    AC_CHECK(link_packages(t));
    return ncclSuccess;
}
