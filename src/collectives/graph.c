/* Where ranks are (nodes, local ranks) and the rings and trees built on that.
 *
 * Ring: a "snake" across nodes. Local rank i of every node forms a chain across the nodes on rail
 * i, alternating direction with i, so every hop between nodes joins equal local ranks (and so the
 * same rail), and hops inside a node close the loop. With an odd number of ranks per node (>1)
 * one hop must change rails; with one rank per node the ring is the natural one.
 *
 * Trees (allreduce, broadcast, reduce): double binary trees across nodes (NCCL's idea; heap-shaped
 * here), with a chain
 * through the node's ranks inside each node. Channel c uses tree c % 2 and enters each node at
 * local rank c % ppn, so the hops between nodes of one channel stay on one rail. */
#include "collectives/graph.h"

#include "common/check.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ac_layout_free(struct ac_layout *l)
{
    free(l->node_of);
    free(l->local_of);
    free(l->node_first);
    free(l->node_ranks);
    free(l->ring);
    free(l->ring_pos);
    memset(l, 0, sizeof(*l));
}

/* Node of every rank by host hash, numbered by first appearance: an open-addressing table of
 * (hash, node) pairs, so that 16k nodes x 8 ranks take linear time and memory. */
static ncclResult_t number_nodes(struct ac_layout *l, const uint64_t *host_hash)
{
    size_t cap = 1;
    while (cap < 2 * (size_t)l->nranks)
        cap *= 2;
    uint64_t *keys = malloc(cap * sizeof(*keys));
    int *vals = malloc(cap * sizeof(*vals));
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return AC_FAIL(ncclSystemError, "out of memory for the layout of %d ranks", l->nranks);
    }
    for (size_t i = 0; i < cap; i++)
        vals[i] = -1;
    l->nnodes = 0;
    for (int r = 0; r < l->nranks; r++) {
        uint64_t h = host_hash[r];
        size_t i = (size_t)((h ^ (h >> 29)) * 0x9e3779b97f4a7c15ull) & (cap - 1);
        while (vals[i] >= 0 && keys[i] != h)
            i = (i + 1) & (cap - 1);
        if (vals[i] < 0) {
            keys[i] = h;
            vals[i] = l->nnodes++;
        }
        l->node_of[r] = vals[i];
    }
    free(keys);
    free(vals);
    return ncclSuccess;
}

static ncclResult_t assign_nodes(struct ac_layout *l, const uint64_t *host_hash)
{
    int n = l->nranks;
    AC_CHECK(number_nodes(l, host_hash));
    /* node_ranks: the ranks of node k, ascending, at node_first[k] .. node_first[k+1]-1 */
    int *count = calloc((size_t)l->nnodes + 1, sizeof(int));
    if (!count)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int r = 0; r < n; r++)
        count[l->node_of[r] + 1]++;
    for (int k = 0; k < l->nnodes; k++)
        count[k + 1] += count[k];
    memcpy(l->node_first, count, ((size_t)l->nnodes + 1) * sizeof(int));
    for (int r = 0; r < n; r++) {
        int k = l->node_of[r];
        l->local_of[r] = count[k] - l->node_first[k];
        l->node_ranks[count[k]++] = r;
    }
    free(count);
    l->is_uniform = true;
    for (int k = 1; k < l->nnodes; k++)
        if (ac_layout_ppn(l, k) != ac_layout_ppn(l, 0))
            l->is_uniform = false;
    return ncclSuccess;
}

/* Local rank i goes forward across the nodes when i is even, backward when odd. */
static void build_snake(struct ac_layout *l)
{
    int ppn = ac_layout_ppn(l, 0), at = 0;
    for (int i = 0; i < ppn; i++)
        for (int j = 0; j < l->nnodes; j++) {
            int k = i % 2 == 0 ? j : l->nnodes - 1 - j;
            l->ring[at++] = l->node_ranks[l->node_first[k] + i];
        }
}

ncclResult_t ac_layout_build(struct ac_layout *l, const uint64_t *host_hash, int nranks)
{
    memset(l, 0, sizeof(*l));
    l->nranks = nranks;
    l->nrails = 1;
    l->node_of = calloc((size_t)nranks, sizeof(int));
    l->local_of = calloc((size_t)nranks, sizeof(int));
    l->node_first = calloc((size_t)nranks + 1, sizeof(int));
    l->node_ranks = calloc((size_t)nranks, sizeof(int));
    l->ring = calloc((size_t)nranks, sizeof(int));
    l->ring_pos = calloc((size_t)nranks, sizeof(int));
    if (!l->node_of || !l->local_of || !l->node_first || !l->node_ranks || !l->ring ||
        !l->ring_pos) {
        ac_layout_free(l);
        return AC_FAIL(ncclSystemError, "out of memory for the layout of %d ranks", nranks);
    }
    ncclResult_t res = assign_nodes(l, host_hash);
    if (res != ncclSuccess) {
        ac_layout_free(l);
        return res;
    }
    if (l->nnodes > 1 && l->is_uniform)
        build_snake(l);
    else
        for (int r = 0; r < nranks; r++)
            l->ring[r] = r;
    for (int i = 0; i < nranks; i++)
        l->ring_pos[l->ring[i]] = i;
    return ncclSuccess;
}

int ac_layout_ppn(const struct ac_layout *l, int node)
{
    return l->node_first[node + 1] - l->node_first[node];
}

/* One binary tree over m nodes numbered 0..m-1 in heap order, rooted at 0: the leaves are the
 * upper half of the numbers, so the mirrored tree makes them inner nodes. */
static void btree(int i, int m, int *parent, int child[2])
{
    *parent = i == 0 ? -1 : (i - 1) / 2;
    child[0] = 2 * i + 1 < m ? 2 * i + 1 : -1;
    child[1] = 2 * i + 2 < m ? 2 * i + 2 : -1;
}

/* Tree t (0 or 1) over m nodes in "virtual" numbering v: tree 1 mirrors tree 0 (m even) or
 * shifts it by one (m odd), so that a node is an inner node in at most one of the two. */
static int to_tree(int v, int t, int m)
{
    return t == 0 ? v : (m % 2 == 0 ? m - 1 - v : (v + 1) % m);
}
static int from_tree(int u, int t, int m)
{
    return t == 0 ? u : (m % 2 == 0 ? m - 1 - u : (u - 1 + m) % m);
}

void ac_tree_neighbors(const struct ac_layout *l, int rank, int channel, int root,
                       struct ac_tree_node *out)
{
    int m = l->nnodes, node = l->node_of[rank];
    int root_node = root >= 0 ? l->node_of[root] : 0;
    int ppn = ac_layout_ppn(l, node);
    /* Inside a node: a chain starting at the head (the root itself on the root's node). */
    int head_local = root >= 0 && node == root_node ? l->local_of[root] : channel % ppn;
    int idx = (l->local_of[rank] - head_local + ppn) % ppn;
    const int *mine = &l->node_ranks[l->node_first[node]];
    memset(out, 0, sizeof(*out));
    out->parent = idx > 0 ? mine[(head_local + idx - 1) % ppn] : -1;
    if (idx + 1 < ppn)
        out->children[out->nchildren++] = mine[(head_local + idx + 1) % ppn];
    if (idx > 0 || m == 1)
        return;
    /* The head: tree neighbours are the heads of other nodes, on this channel's rail. */
    int t = channel % 2;
    int v = (node - root_node + m) % m;
    int u = root >= 0 ? v : to_tree(v, t, m);
    int up, child[2];
    btree(u, m, &up, child);
    for (int k = 0; k < 2; k++) {
        if (child[k] < 0)
            continue;
        int cv = root >= 0 ? child[k] : from_tree(child[k], t, m);
        int cn = (cv + root_node) % m;
        int cl = channel % ac_layout_ppn(l, cn); /* that node's head on this channel */
        out->children[out->nchildren++] = l->node_ranks[l->node_first[cn] + cl];
    }
    if (up >= 0) {
        int pv = root >= 0 ? up : from_tree(up, t, m);
        int pn = (pv + root_node) % m;
        int pl = pn == root_node && root >= 0 ? l->local_of[root] : channel % ac_layout_ppn(l, pn);
        out->parent = l->node_ranks[l->node_first[pn] + pl];
    }
}

/* "p -> me -> c1 c2": a tree neighbourhood as NCCL prints it (-1 for none). */
static void tree_str(const struct ac_layout *l, int rank, int channel, char *buf, size_t len)
{
    struct ac_tree_node tn;
    ac_tree_neighbors(l, rank, channel, -1, &tn);
    int at = snprintf(buf, len, "%d -> %d ->", tn.parent, rank);
    for (int i = 0; i < tn.nchildren && at > 0 && (size_t)at < len; i++)
        at += snprintf(buf + at, len - (size_t)at, " %d", tn.children[i]);
    if (tn.nchildren == 0 && at > 0 && (size_t)at < len)
        snprintf(buf + at, len - (size_t)at, " -1");
}

void ac_layout_log(const struct ac_layout *l, int rank, int ntrees)
{
    if (!ac_log_enabled(AC_LOG_INFO, AC_SUB_GRAPH) || l->nranks <= 1)
        return;
    int n = l->nranks, pos = l->ring_pos[rank];
    AC_INFO(AC_SUB_GRAPH | AC_SUB_INIT,
            "Ring (every channel): %d -> %d -> %d (node %d, local rank "
            "%d, %d rail(s))",
            l->ring[(pos - 1 + n) % n], rank, l->ring[(pos + 1) % n], l->node_of[rank],
            l->local_of[rank], l->nrails);
    for (int c = 0; c < ntrees; c++) {
        char buf[96];
        tree_str(l, rank, c, buf, sizeof(buf));
        AC_INFO(AC_SUB_GRAPH | AC_SUB_INIT, "Tree channel %d (double binary tree %d): %s", c, c % 2,
                buf);
    }
}
