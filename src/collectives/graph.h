/* The layout of a communicator's ranks over nodes, and the rings and trees built on it. */
#ifndef AC_COLLECTIVES_GRAPH_H
#define AC_COLLECTIVES_GRAPH_H

#include "nccl.h"

#include <stdbool.h>
#include <stdint.h>

struct ac_layout {
    int nranks;
    int nnodes;
    bool is_uniform;     /* every node has the same number of ranks */
    int nrails;          /* NICs per node in use (distinct rails of node 0's ranks); >= 1 */
    double nic_gbit;     /* line rate of the slowest NIC in use, Gb/s; 0 unknown */
    int *node_of;        /* [nranks] node index, numbered by first appearance */
    int *local_of;       /* [nranks] rank within its node (by ascending global rank) */
    int *node_first;     /* [nnodes + 1] start of each node's ranks in node_ranks */
    int *node_ranks;     /* ranks of node k: node_ranks[node_first[k] .. node_first[k+1]) */
    int *ring;           /* [nranks] the ring order: ring[i + 1] follows ring[i] */
    int *ring_pos;       /* [nranks] position of each rank in ring */
};

/* Ranks with equal host_hash share a node. */
ncclResult_t ac_layout_build(struct ac_layout *l, const uint64_t *host_hash, int nranks);
void ac_layout_free(struct ac_layout *l);
int ac_layout_ppn(const struct ac_layout *l, int node);

#define AC_TREE_MAX_CHILDREN 3
struct ac_tree_node {
    int parent;                               /* -1 at the root */
    int nchildren;
    int children[AC_TREE_MAX_CHILDREN];
};

/* rank's neighbours in the tree of `channel`; root = -1 for allreduce (the tree's own root),
 * else the tree is rooted at that rank (broadcast, reduce). */
void ac_tree_neighbors(const struct ac_layout *l, int rank, int channel, int root,
                       struct ac_tree_node *out);

/* At INFO (NCCL_DEBUG_SUBSYS GRAPH or INIT): rank's ring neighbours and its place in the
 * allreduce trees of channels 0 .. ntrees-1. */
void ac_layout_log(const struct ac_layout *l, int rank, int ntrees);

#endif
