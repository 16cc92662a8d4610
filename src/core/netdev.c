/* The NIC of each rank. Bootstrap runs on one interface (NCCL_SOCKET_IFNAME, or the route to the
 * root), which every rank can reach; data between nodes runs on the NIC that the topology gives
 * the rank, so that local rank i of every node sits on rail i. The receiving side of a socket
 * connector listens on that NIC and the sending side connects from the node's NIC on the
 * receiver's subnet (src/transport/socket/), so rails need not be routable from each other. */
#include "core/netdev.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "topology/topo.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct netdev_info {
    struct sockaddr_storage addr;
    int32_t rail; /* -1: the bootstrap address */
    int32_t pad;
    double gbit; /* line rate of the NIC; 0 unknown */
};

/* A NIC from the topology for this rank; false (with an INFO line saying why) to keep the
 * bootstrap address. */
static bool pick_new(const struct ncclComm *comm, struct netdev_info *out)
{
    const struct ac_config *cfg = ac_config_get();
    const struct ac_layout *l = &comm->layout;
    struct ac_topo *t = NULL;
    int node = l->node_of[comm->rank], nic = -1, cpu = sched_getcpu();
    bool ok = false;
    if (ac_topo_get(&t) != ncclSuccess) {
        if (cfg->topo_file != NULL) /* the user's file: they must fix it */
            AC_WARN("NCCL_TOPO_FILE=%s: %s; data between nodes uses the bootstrap interface",
                    cfg->topo_file, ac_last_error());
        else
            AC_INFO(AC_SUB_NET | AC_SUB_INIT, "no topology (%s): data uses the bootstrap interface",
                    ac_last_error());
        return false;
    }
    if (t->nnics == 0) {
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "the topology (%s) has no NIC: data uses the bootstrap interface", t->source);
    } else if (ac_topo_pick_nic(t, l->local_of[comm->rank], ac_layout_ppn(l, node), -1,
                                cpu >= 0 ? ac_topo_cpu_numa(t, cpu) : -1, cfg->socket_ifname,
                                &nic) != ncclSuccess) {
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "no NIC for this rank (%s): data uses the bootstrap interface", ac_last_error());
    } else if (t->nics[nic].ifname[0] == '\0' ||
               ac_socket_ifname_addr(t->nics[nic].ifname, &out->addr) != ncclSuccess) {
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "NIC %s has no IP address: data uses the bootstrap interface", t->nics[nic].name);
    } else {
        char str[AC_SOCKADDR_STRLEN];
        out->rail = t->nics[nic].rail;
        out->gbit = t->nics[nic].speed_gbps;
        AC_INFO(AC_SUB_NET | AC_SUB_INIT, "local rank %d of %d: NIC %s (%s), rail %d",
                l->local_of[comm->rank], ac_layout_ppn(l, node), t->nics[nic].name,
                ac_socket_addr_str(&out->addr, str, sizeof(str)), out->rail);
        ok = true;
    }
    /* An RDMA NIC is this rank's rail for the RDMA transports too, whether or not it has an IP
     * address for sockets. */
    if (nic >= 0 && t->nics[nic].is_rdma)
        ac_transport_rdma_prefer(t->nics[nic].name, t->nics[nic].port);
    ac_topo_free(t);
    return ok;
}

/* The NIC that this thread's communicator with the most ranks on this node got: a communicator
 * with fewer (ncclCommSplit by local rank, one rank per node) keeps it, so that the rank stays on
 * the rail of its local rank in the whole job rather than becoming local rank 0 of its part. */
static __thread struct {
    int ppn; /* 0: none yet */
    struct netdev_info info;
} widest;

static bool pick(const struct ncclComm *comm, struct netdev_info *out)
{
    const struct ac_layout *l = &comm->layout;
    int ppn = ac_layout_ppn(l, l->node_of[comm->rank]);
    if (ppn < widest.ppn) {
        char str[AC_SOCKADDR_STRLEN];
        *out = widest.info;
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "%d rank(s) on this node, fewer than the %d of an earlier communicator: keeping "
                "its NIC (%s), rail %d",
                ppn, widest.ppn, ac_socket_addr_str(&out->addr, str, sizeof(str)), out->rail);
        return true;
    }
    if (!pick_new(comm, out))
        return false;
    widest.ppn = ppn;
    widest.info = *out;
    return true;
}

/* Rails in use: distinct rails among the ranks of node 0 (the same answer on every rank). */
static int count_rails(const struct ac_layout *l, const struct netdev_info *all)
{
    int n = 0, seen[64];
    for (int i = l->node_first[0]; i < l->node_first[1]; i++) {
        int r = all[l->node_ranks[i]].rail, k = 0;
        while (k < n && seen[k] != r)
            k++;
        if (k == n && n < 64)
            seen[n++] = r;
    }
    return n > 0 ? n : 1;
}

ncclResult_t ac_comm_pick_netdev(struct ncclComm *comm)
{
    if (comm->layout.nnodes == 1) { /* shared memory only: no NIC to choose */
        ac_layout_log(&comm->layout, comm->rank, 2);
        return ncclSuccess;
    }
    struct netdev_info *all = calloc((size_t)comm->nranks, sizeof(*all));
    if (all == NULL)
        return AC_FAIL(ncclSystemError, "out of memory for %d ranks' NICs", comm->nranks);
    struct netdev_info *me = &all[comm->rank];
    if (!pick(comm, me)) {
        me->addr = comm->peers[comm->rank].addr;
        me->rail = -1;
    }
    ncclResult_t res = ac_bootstrap_allgather(comm->bs, all, sizeof(*all));
    if (res == ncclSuccess) {
        for (int r = 0; r < comm->nranks; r++)
            comm->peers[r].addr = all[r].addr;
        comm->layout.nrails = count_rails(&comm->layout, all);
        comm->layout.nic_gbit = all[0].gbit;
        for (int r = 1; r < comm->nranks; r++)
            if (all[r].gbit < comm->layout.nic_gbit)
                comm->layout.nic_gbit = all[r].gbit;
    }
    free(all);
    if (res == ncclSuccess)
        ac_layout_log(&comm->layout, comm->rank, 2);
    return res;
}
