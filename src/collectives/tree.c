/* Tree schedules (allreduce, broadcast, reduce): every step moves one chunk of the channel's
 * region; all steps of a task have the same shape (tree_flags), only the chunk changes. Up: receive
 * the children's partial results, reduce them with the local input, send to the parent (the root
 * stores the final value). Down: receive from the parent, store, pass on to the children. The
 * steps are device/kernels/sched.h's (ac_sched_tree_step). */
#include "collectives/coll.h"

static size_t div_up(size_t a, size_t b) { return (a + b - 1) / b; }

static void set_peers(int *dst, int *n, const int *src, int count)
{
    *n = count;
    for (int i = 0; i < count; i++)
        dst[i] = src[i];
}

bool ac_tree_plan(struct ac_task *t, const struct ac_layout *l, int rank, int root, int channel,
                  enum ac_tree_part part)
{
    struct ac_tree_node tn;
    ac_tree_neighbors(l, rank, channel, root, &tn);
    bool is_root = tn.parent < 0;
    bool is_allreduce = t->coll == AC_COLL_ALLREDUCE;
    t->algo = AC_ALGO_TREE;
    t->nsteps = div_up(t->region_count, t->chunk_elems);
    t->nrecv = t->nsend = 0;
    if (part == AC_TREE_UP) {
        set_peers(t->recv_peers, &t->nrecv, tn.children, tn.nchildren);
        t->tree_flags = t->nrecv ? AC_STEP_RECV | AC_STEP_REDUCE : 0;
        if (!is_root) {
            set_peers(t->send_peers, &t->nsend, &tn.parent, 1);
            t->tree_flags |= AC_STEP_SEND;
        } else {
            t->tree_flags |= AC_STEP_DST | AC_STEP_FINAL;
            if (is_allreduce && tn.nchildren > 0) { /* the root turns the data around */
                set_peers(t->send_peers, &t->nsend, tn.children, tn.nchildren);
                t->tree_flags |= AC_STEP_SEND;
            }
        }
        return true;
    }
    if (is_root && is_allreduce)
        return false; /* its up task sends down */
    set_peers(t->send_peers, &t->nsend, tn.children, tn.nchildren);
    t->tree_flags = (t->nsend ? AC_STEP_SEND : 0) | AC_STEP_DST;
    if (!is_root) {
        set_peers(t->recv_peers, &t->nrecv, &tn.parent, 1);
        t->tree_flags |= AC_STEP_RECV;
    } else if (t->sendbuff == t->recvbuff) {
        t->tree_flags &= ~(unsigned)AC_STEP_DST; /* in-place broadcast root: nothing to store */
    }
    return true;
}
