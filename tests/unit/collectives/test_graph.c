/* The layout builder (src/collectives/graph.c): nodes from host hashes, the rail-aware snake ring
 * (a permutation; hops between nodes join equal local ranks) and the double binary trees (every
 * rank once, parents and children agree, one root, depth ~log2(nodes) plus the chain in a node),
 * up to 16,384 nodes x 8 ranks. */
#include "collectives/graph.h"
#include "common/check.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(graph, .timeout = 60);

/* nnodes x ppn ranks; interleaved: rank r on node r % nnodes (else blocks of ppn). */
static void build(struct ac_layout *l, int nnodes, int ppn, bool is_interleaved)
{
    int n = nnodes * ppn;
    uint64_t *h = malloc((size_t)n * sizeof(*h));
    cr_assert_not_null(h);
    for (int r = 0; r < n; r++)
        h[r] = 1000003ull * (uint64_t)(is_interleaved ? r % nnodes : r / ppn) + 7;
    cr_assert_eq(ac_layout_build(l, h, n), ncclSuccess, "%s", ac_last_error());
    free(h);
    cr_assert_eq(l->nnodes, nnodes);
    cr_assert_eq(l->nranks, n);
}

static void check_ring(const struct ac_layout *l)
{
    int n = l->nranks;
    char *seen = calloc((size_t)n, 1);
    cr_assert_not_null(seen);
    for (int i = 0; i < n; i++) {
        int r = l->ring[i];
        cr_assert(r >= 0 && r < n, "ring[%d] = %d", i, r);
        cr_assert_eq(seen[r], 0, "rank %d twice in the ring", r);
        seen[r] = 1;
        cr_assert_eq(l->ring_pos[r], i);
    }
    free(seen);
}

/* Hops of the ring between nodes join ranks of equal local rank (so the same rail). */
static void check_ring_rails(const struct ac_layout *l)
{
    int n = l->nranks, cross = 0;
    for (int i = 0; i < n; i++) {
        int a = l->ring[i], b = l->ring[(i + 1) % n];
        if (l->node_of[a] == l->node_of[b])
            continue;
        cross++;
        cr_assert_eq(l->local_of[a], l->local_of[b],
                     "ring hop %d -> %d changes rails (local %d "
                     "-> %d)",
                     a, b, l->local_of[a], l->local_of[b]);
    }
    cr_assert_geq(cross, l->nnodes > 1 ? 2 : 0);
}

/* Every rank once, parents and children agree, one root (the given root when >= 0); returns the
 * depth (edges on the longest path from the root) and checks that every rank is reached. */
static int check_tree(const struct ac_layout *l, int channel, int root)
{
    int n = l->nranks, nroots = 0, top = -1;
    struct ac_tree_node *t = calloc((size_t)n, sizeof(*t));
    int *depth = malloc((size_t)n * sizeof(int)), *queue = malloc((size_t)n * sizeof(int));
    cr_assert(t && depth && queue);
    for (int r = 0; r < n; r++) {
        ac_tree_neighbors(l, r, channel, root, &t[r]);
        depth[r] = -1;
        if (t[r].parent < 0) {
            nroots++;
            top = r;
        }
    }
    cr_assert_eq(nroots, 1, "channel %d root %d: %d roots", channel, root, nroots);
    if (root >= 0)
        cr_assert_eq(top, root);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < t[r].nchildren; c++) {
            int k = t[r].children[c];
            cr_assert(k >= 0 && k < n);
            cr_assert_eq(t[k].parent, r, "rank %d lists child %d whose parent is %d", r, k,
                         t[k].parent);
        }
    int head = 0, tail = 0, max = 0;
    queue[tail++] = top;
    depth[top] = 0;
    while (head < tail) {
        int r = queue[head++];
        for (int c = 0; c < t[r].nchildren; c++) {
            int k = t[r].children[c];
            cr_assert_eq(depth[k], -1, "rank %d reached twice", k);
            depth[k] = depth[r] + 1;
            max = depth[k] > max ? depth[k] : max;
            queue[tail++] = k;
        }
    }
    cr_assert_eq(tail, n, "channel %d: %d of %d ranks reached from the root", channel, tail, n);
    free(t);
    free(depth);
    free(queue);
    return max;
}

static void check_all(int nnodes, int ppn)
{
    struct ac_layout l;
    build(&l, nnodes, ppn, false);
    check_ring(&l);
    if (ppn % 2 == 0 || ppn == 1)
        check_ring_rails(&l);
    int node_depth = nnodes > 1 ? (int)floor(log2((double)nnodes)) + 1 : 0;
    for (int c = 0; c < 2; c++) {
        int d = check_tree(&l, c, -1);
        cr_assert_leq(d, node_depth + ppn - 1, "%d x %d channel %d: depth %d", nnodes, ppn, c, d);
        check_tree(&l, c, 0);
        check_tree(&l, c, l.nranks - 1);
    }
    ac_layout_free(&l);
}

Test(graph, small_layouts)
{
    static const int shapes[][2] = {{1, 1}, {1, 4}, {2, 1}, {2, 2},  {3, 2}, {4, 2},
                                    {5, 3}, {7, 4}, {8, 8}, {16, 2}, {33, 1}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        check_all(shapes[i][0], shapes[i][1]);
}

Test(graph, interleaved_ranks)
{
    struct ac_layout l;
    build(&l, 4, 3, true);
    for (int r = 0; r < l.nranks; r++) {
        cr_assert_eq(l.node_of[r], r % 4);
        cr_assert_eq(l.local_of[r], r / 4);
    }
    check_ring(&l);
    check_tree(&l, 0, -1);
    check_tree(&l, 1, 5);
    ac_layout_free(&l);
}

Test(graph, uneven_nodes)
{
    uint64_t h[] = {1, 1, 1, 2, 3, 3};
    struct ac_layout l;
    cr_assert_eq(ac_layout_build(&l, h, 6), ncclSuccess);
    cr_assert_eq(l.nnodes, 3);
    cr_assert_not(l.is_uniform);
    check_ring(&l);
    check_tree(&l, 0, -1);
    check_tree(&l, 1, 3);
    ac_layout_free(&l);
}

/* A node's head is an inner node (has children on other nodes) in at most one of the two trees. */
Test(graph, double_tree_inner_once)
{
    struct ac_layout l;
    build(&l, 12, 2, false);
    for (int k = 0; k < 12; k++) {
        int inner = 0;
        for (int c = 0; c < 2; c++) {
            struct ac_tree_node tn;
            int head = l.node_ranks[l.node_first[k] + c % 2];
            ac_tree_neighbors(&l, head, c, -1, &tn);
            for (int i = 0; i < tn.nchildren; i++)
                if (l.node_of[tn.children[i]] != k) {
                    inner++;
                    break;
                }
        }
        cr_assert_leq(inner, 1, "node %d is inner in both trees", k);
    }
    ac_layout_free(&l);
}

/* 16,384 nodes x 8 ranks: linear time and memory; ring and both trees valid, depth ~log2. */
Test(graph, scale_16k_nodes)
{
    struct ac_layout l;
    build(&l, 16384, 8, false);
    check_ring(&l);
    check_ring_rails(&l);
    for (int c = 0; c < 2; c++)
        cr_assert_leq(check_tree(&l, c, -1), 15 + 7);
    ac_layout_free(&l);
}
