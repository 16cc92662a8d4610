/* Each rank's network interface, chosen from the topology once the layout (local ranks) is
 * known; see src/core/netdev.c. */
#ifndef AC_CORE_NETDEV_H
#define AC_CORE_NETDEV_H

#include "core/comm.h"

/* Picks this rank's NIC (ac_topo_pick_nic: closest to its NUMA node, else rails round-robin by
 * local rank; NCCL_SOCKET_IFNAME restricts), sets peers[rank].addr to its address and exchanges
 * every rank's address and rail (a bootstrap allgather that every rank makes). A rank without a
 * usable NIC keeps its bootstrap address. Sets layout.nrails for the cost model. */
ncclResult_t ac_comm_pick_netdev(struct ncclComm *comm);

#endif
