/* Connector set-up between a rank and its peers, on first use. The receiver picks the transport
 * (so both ends agree even if their environments differ) and the slot geometry, and sends them
 * with its transport blob over the bootstrap. Three phases, each of which only waits on things
 * the previous phases of the peers have already done: every rank sends all its receive-side blobs
 * before it waits for any, and no sender waits for its receiver to accept. */
#include "common/check.h"
#include "core/comm.h"

#include <stdlib.h>
#include <string.h>

#define AC_TAG_CONN_BASE 0x434f0000u

struct conn_msg {
    uint32_t transport;     /* index in ac_transports_all */
    uint32_t nslots;
    uint64_t slot_bytes;
    struct ac_conn_blob blob;
};

static uint32_t conn_tag(int set) { return AC_TAG_CONN_BASE + (uint32_t)set; }

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
    AC_INFO(AC_SUB_INIT | AC_SUB_P2P, "channel %d: rank %d <- rank %d via %s", c->channel,
            comm->rank, c->peer, c->tp->name);
    return ac_bootstrap_send(comm->bs, c->peer, conn_tag(c->channel), &msg, sizeof(msg));
}

static ncclResult_t setup_send(struct ncclComm *comm, struct ac_conn *c)
{
    struct conn_msg msg;
    AC_CHECK(ac_bootstrap_recv(comm->bs, c->peer, conn_tag(c->channel), &msg, sizeof(msg)));
    if (msg.transport >= (uint32_t)ac_transports_count || msg.nslots == 0 || msg.slot_bytes == 0)
        return AC_FAIL(ncclInternalError, "rank %d: bad connector description from rank %d",
                       comm->rank, c->peer);
    c->tp = ac_transports_all[msg.transport];
    c->nslots = (int)msg.nslots;
    c->slot_bytes = (size_t)msg.slot_bytes;
    return c->tp->send_connect(c, &msg.blob);
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
            AC_CHECK_GOTO(setup_send(comm, conns[i]), res, fail);
    for (int i = 0; i < nneed; i++)
        if (!need[i].is_send)
            AC_CHECK_GOTO(conns[i]->tp->recv_connect(conns[i]), res, fail);
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
