/* Connector set-up between a rank and its peers, on first use. The receiver picks the transport
 * (so both ends agree even if their environments differ) and the slot geometry, and sends them
 * with its transport blob over the bootstrap; the sender connects and says so over the
 * bootstrap, and only then does the receiver wait in its transport. Three phases, each of which
 * only waits on things the previous phases of the peers have already done: every rank sends all
 * its receive-side blobs before it waits for any, and no sender waits for its receiver to
 * accept. Every wait for a peer is a bootstrap receive, during which the rank looks for set-up
 * messages no connector of its own takes: ranks that planned different operations. */
#include "common/check.h"
#include "common/config.h"
#include "common/time.h"
#include "core/board.h"
#include "core/comm.h"
#include "device/kernels/reduce.h"

#include <stdlib.h>
#include <string.h>

#define AC_TAG_CONN_BASE 0x434f0000u     /* + set: a receiver's description of its side */
#define AC_TAG_ATTACHED_BASE 0x434f0100u /* + set: the sender connected to it */

struct conn_msg {
    uint32_t transport;     /* index in ac_transports_all */
    uint32_t nslots;
    uint64_t slot_bytes;
    struct ac_coll_stamp coll; /* collective sets: the receiver's running collective */
    struct ac_conn_blob blob;
};

static uint32_t conn_tag(int set) { return AC_TAG_CONN_BASE + (uint32_t)set; }
static uint32_t attached_tag(int set) { return AC_TAG_ATTACHED_BASE + (uint32_t)set; }

/* Collectives' connectors carry the collective that set them up (ac_connect_check_stray). */
static struct ac_coll_stamp stamp_for(const struct ncclComm *comm, int set)
{
    return ac_set_is_coll(set) ? comm->running_coll : (struct ac_coll_stamp){0};
}

static int transport_index(const struct ac_transport *tp)
{
    for (int i = 0; i < ac_transports_count; i++)
        if (ac_transports_all[i] == tp)
            return i;
    return -1;
}

static ncclResult_t new_conn(struct ncclComm *comm, const struct ac_conn_need *nd,
                             struct ac_conn **out)
{
    struct ac_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return AC_FAIL(ncclSystemError, "out of memory for a connector");
    c->is_send = nd->is_send;
    c->peer = nd->peer;
    c->channel = nd->set;
    c->nslots = comm->nslots;
    c->self_info = &comm->peers[comm->rank];
    c->peer_info = &comm->peers[nd->peer];
    c->comm_hash = comm->comm_hash;
    *out = c;
    return ncclSuccess;
}

/* The receiver sizes a connector's slots once it knows the transport; the sender takes the size
 * from its message. Acknowledgements of single-copy transfers are a few bytes: the smallest slots
 * will do. Point-to-point connectors get smaller slots where they are shared memory (n - 1 of
 * them per rank), not where the transport has_full_p2p_slots. */
static size_t slot_bytes_for(const struct ncclComm *comm, int set, const struct ac_transport *tp)
{
    if (ac_set_is_ack(set))
        return 4096;
    if (set >= AC_P2P_CONN_BASE)
        return tp->has_full_p2p_slots ? comm->slot_bytes : comm->p2p_slot_bytes;
    return comm->large_slot_bytes;
}

static ncclResult_t setup_recv(struct ncclComm *comm, struct ac_conn *c)
{
    struct conn_msg msg;
    memset(&msg, 0, sizeof(msg));
    c->tp = ac_transport_pick(c->self_info, c->peer_info);
    if (!c->tp)
        return AC_FAIL(ncclSystemError, "rank %d: no transport can reach rank %d (%s)",
                       comm->rank, c->peer, c->peer_info->hostname);
    c->slot_bytes = slot_bytes_for(comm, c->channel, c->tp);
    AC_CHECK(c->tp->recv_setup(c, &msg.blob));
    msg.transport = (uint32_t)transport_index(c->tp);
    msg.nslots = (uint32_t)c->nslots;
    msg.slot_bytes = c->slot_bytes;
    msg.coll = stamp_for(comm, c->channel);
    AC_INFO(AC_SUB_INIT | AC_SUB_P2P, "channel %d: rank %d <- rank %d via %s", c->channel,
            comm->rank, c->peer, c->tp->name);
    return ac_bootstrap_send(comm->bs, c->peer, conn_tag(c->channel), &msg, sizeof(msg));
}

/* A peer's set-up message that no connector of this rank takes (need[]: those it is setting
 * up now; every earlier one took its messages when it was set up). */
struct stray {
    const struct ncclComm *comm;
    const struct ac_conn_need *need;
    int nneed;
    int from;
    struct ac_coll_stamp coll;
};

static bool is_stray(void *arg, int from, uint32_t tag, const void *data, size_t bytes)
{
    struct stray *st = arg;
    /* a receiver's description is for this rank's send side, a sender's notice for its receive */
    bool is_for_send = tag < AC_TAG_ATTACHED_BASE;
    int set = (int)(tag - (is_for_send ? AC_TAG_CONN_BASE : AC_TAG_ATTACHED_BASE));
    struct ac_coll_stamp coll;
    if (bytes != (is_for_send ? sizeof(struct conn_msg) : sizeof(coll)) || !ac_set_is_coll(set))
        return false;
    memcpy(&coll, is_for_send ? &((const struct conn_msg *)data)->coll : data, sizeof(coll));
    if (coll.seq == 0 || coll.seq > st->comm->running_coll.seq)
        return false; /* a later collective's: this rank has not got there */
    for (int i = 0; i < st->nneed; i++)
        if (st->need[i].set == set && st->need[i].peer == from &&
            st->need[i].is_send == is_for_send)
            return false;
    st->from = from;
    st->coll = coll;
    return true;
}

static ncclResult_t check_stray(struct ncclComm *comm, const struct ac_conn_need *need, int nneed)
{
    struct stray st = {.comm = comm, .need = need, .nneed = nneed};
    if (comm->running_coll.seq == 0 || !comm->bs ||
        !ac_bootstrap_scan(comm->bs, AC_TAG_CONN_BASE, AC_TAG_ATTACHED_BASE + AC_NCONN_SETS - 1,
                           is_stray, &st))
        return ncclSuccess;
    const struct ac_coll_stamp *mine = &comm->running_coll;
    return AC_FAIL(ncclInvalidUsage,
                   "rank %d: rank %d set up a connection for its collective #%llu (%s of %llu "
                   "elements of %s) that this rank does not use there, and this rank has reached "
                   "collective #%llu (%s of %llu elements of %s): the ranks called different "
                   "collectives, or the same with different counts, types, roots or settings",
                   comm->rank, st.from, (unsigned long long)st.coll.seq,
                   ac_coll_name((enum ac_coll)st.coll.coll), (unsigned long long)st.coll.count,
                   ac_type_name((ncclDataType_t)st.coll.type), (unsigned long long)mine->seq,
                   ac_coll_name((enum ac_coll)mine->coll), (unsigned long long)mine->count,
                   ac_type_name((ncclDataType_t)mine->type));
}

ncclResult_t ac_connect_check_stray(struct ncclComm *comm)
{
    return check_stray(comm, NULL, 0);
}

/* Waits for the peer's set-up message for connector c, looking now and then for one that no
 * connector of this rank takes: the ranks then planned different operations, and each would
 * otherwise wait for the other until the timeout. */
static ncclResult_t wait_setup(struct ncclComm *comm, const struct ac_conn *c, uint32_t tag,
                               void *msg, size_t bytes, const struct ac_conn_need *need, int nneed)
{
    int64_t limit_s = ac_config_setup_timeout_s();
    int slice_ms = ac_config_get()->peer_check_ms;
    uint64_t start = ac_now_ns();
    for (;;) {
        bool got;
        ncclResult_t res =
            ac_bootstrap_recv_for(comm->bs, c->peer, tag, msg, bytes, slice_ms, &got);
        /* a peer that called another operation on the board (board.h) may have seen the
         * difference first and left: its board still says what it was */
        AC_CHECK(ac_board_check_peers(comm));
        if (res != ncclSuccess || got)
            return res;
        AC_CHECK(check_stray(comm, need, nneed));
        const struct ac_peer_info *p = &comm->peers[c->peer];
        if (ac_peer_has_exited(&comm->peers[comm->rank], p))
            return AC_FAIL(ncclRemoteError,
                           "rank %d: rank %d (pid %d on %s) exited before setting up its side of "
                           "channel %d",
                           comm->rank, c->peer, p->pid, p->hostname, c->channel);
        if (ac_now_ns() - start >= (uint64_t)limit_s * 1000000000ull)
            return AC_FAIL(ncclRemoteError,
                           "rank %d: rank %d (%s) did not set up its side of channel %d (%s) "
                           "within %lld s (ANYCCL_INIT_TIMEOUT): is it stuck, gone, or in "
                           "another operation?",
                           comm->rank, c->peer, c->peer_info->hostname, c->channel,
                           c->is_send ? "its receive" : "its send", (long long)limit_s);
    }
}

static ncclResult_t setup_send(struct ncclComm *comm, struct ac_conn *c,
                               const struct ac_conn_need *need, int nneed)
{
    struct conn_msg msg;
    AC_CHECK(wait_setup(comm, c, conn_tag(c->channel), &msg, sizeof(msg), need, nneed));
    if (msg.transport >= (uint32_t)ac_transports_count || msg.nslots == 0 || msg.slot_bytes == 0)
        return AC_FAIL(ncclInternalError, "rank %d: bad connector description from rank %d",
                       comm->rank, c->peer);
    c->tp = ac_transports_all[msg.transport];
    c->nslots = (int)msg.nslots;
    c->slot_bytes = (size_t)msg.slot_bytes;
    AC_CHECK(c->tp->send_connect(c, &msg.blob));
    struct ac_coll_stamp coll = stamp_for(comm, c->channel);
    return ac_bootstrap_send(comm->bs, c->peer, attached_tag(c->channel), &coll, sizeof(coll));
}

/* The transport's wait for its sender starts once the sender says it connected, so that every
 * wait for a peer is one that looks for stray messages. */
static ncclResult_t connect_recv(struct ncclComm *comm, struct ac_conn *c,
                                 const struct ac_conn_need *need, int nneed)
{
    struct ac_coll_stamp coll;
    AC_CHECK(wait_setup(comm, c, attached_tag(c->channel), &coll, sizeof(coll), need, nneed));
    return c->tp->recv_connect(c);
}

static void close_conn(struct ac_conn *c)
{
    if (c && c->tp)
        c->tp->close(c);
    free(c);
}

ncclResult_t ac_connect(struct ncclComm *comm, const struct ac_conn_need *need, int nneed)
{
    ncclResult_t res = ncclSuccess;
    struct ac_conn **conns = calloc((size_t)nneed + 1, sizeof(*conns));
    if (!conns)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int i = 0; i < nneed; i++)
        AC_CHECK_GOTO(new_conn(comm, &need[i], &conns[i]), res, fail);
    for (int i = 0; i < nneed; i++)
        if (!need[i].is_send)
            AC_CHECK_GOTO(setup_recv(comm, conns[i]), res, fail);
    for (int i = 0; i < nneed; i++)
        if (need[i].is_send)
            AC_CHECK_GOTO(setup_send(comm, conns[i], need, nneed), res, fail);
    for (int i = 0; i < nneed; i++)
        if (!need[i].is_send)
            AC_CHECK_GOTO(connect_recv(comm, conns[i], need, nneed), res, fail);
    for (int i = 0; i < nneed; i++)
        *ac_conn_slot(comm, need[i].set, need[i].peer, need[i].is_send) = conns[i];
    free(conns);
    return ncclSuccess;
fail:
    for (int i = 0; i < nneed; i++)
        close_conn(conns[i]);
    free(conns);
    return res;
}

void ac_disconnect_all(struct ncclComm *comm)
{
    size_t n = (size_t)AC_NCONN_SETS * (size_t)comm->nranks;
    for (size_t i = 0; comm->send_conns && i < n; i++)
        close_conn(comm->send_conns[i]);
    for (size_t i = 0; comm->recv_conns && i < n; i++)
        close_conn(comm->recv_conns[i]);
    free(comm->send_conns);
    free(comm->recv_conns);
    comm->send_conns = comm->recv_conns = NULL;
}
