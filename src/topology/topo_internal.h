/* Shared by the files of src/topology: building the graph (used by the file reader and by
 * discovery alike, so both give the same derived links), and constants of the link model. */
#ifndef AC_TOPOLOGY_TOPO_INTERNAL_H
#define AC_TOPOLOGY_TOPO_INTERNAL_H

#include "topology/topo.h"

/* Per-direction bandwidth of one link, GB/s, and latencies, microseconds (docs/topology.md). */
#define AC_TOPO_NVLINK_BW_GBS 25.0 /* NVLink 2-4 (sm >= 70); 20 before */
#define AC_TOPO_NVLINK_OLD_BW_GBS 20.0
#define AC_TOPO_XGMI_BW_GBS 64.0      /* MI300X Infinity Fabric link */
#define AC_TOPO_SMP_INTEL_BW_GBS 10.0 /* NCCL's values */
#define AC_TOPO_SMP_AMD_BW_GBS 16.0
#define AC_TOPO_SMP_OTHER_BW_GBS 6.0
#define AC_TOPO_PCI_LAT_US 0.5
#define AC_TOPO_NVLINK_LAT_US 0.5
#define AC_TOPO_SMP_LAT_US 0.5
#define AC_TOPO_NET_DEFAULT_LAT_US 2.0
#define AC_TOPO_NVSWITCH_TCLASS 0x068000u

/* A new topology holding only the machine node. */
ncclResult_t ac_topo_new(const char *source, struct ac_topo **out);
/* Appends a node under parent (-1: none); fails with a message naming the capacity. */
ncclResult_t ac_topo_add_node(struct ac_topo *t, enum ac_topo_node_kind kind, int parent,
                              int *index_out);
ncclResult_t ac_topo_add_link(struct ac_topo *t, int a, int b, enum ac_topo_link_kind kind,
                              int count, double bw_gbs, double lat_us);
/* The NUMA node of that id, or -1. */
int ac_topo_find_numa(const struct ac_topo *t, int numa_id);
/* The package node of that id, created under the machine when missing. */
ncclResult_t ac_topo_get_package(struct ac_topo *t, int package_id, int *index_out);
/* A PCI node with that bus id (case-insensitive), or -1. */
int ac_topo_find_pci(const struct ac_topo *t, const char *busid);
/* Called once nodes, nics[] and gpus[] are filled: checks devs are 0..n-1, fills depth and numa
 * of every node, the NUMA of NICs and GPUs, default rails, links between GPUs and to NVSwitches,
 * GPU peers, SMP links between packages and the NUMA and package counts. `what` names the
 * source in messages. */
ncclResult_t ac_topo_finish(struct ac_topo *t, const char *what);

/* Tests only: discovery reads the sysfs tree under root instead of /sys (NULL: /sys again), and
 * then parses the CPUs from it too rather than asking hwloc. Not thread-safe. */
void ac_topo_set_sysfs_root(const char *root);

#endif
