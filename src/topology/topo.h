/* The machine's topology: a graph of nodes (machine, sockets, NUMA nodes, PCI switches and
 * devices, NICs, GPUs, NVSwitches) and links (PCI, NVLink, xGMI, SMP between sockets, NET), plus
 * flat lists of the NICs and GPUs that the core and the schedules use. It is discovered (hwloc when
 * built with it, else /sys) or loaded from an XML file in NCCL's topology format
 * (docs/topology.md), and can be written back to one. Depends only on src/common. */
#ifndef AC_TOPOLOGY_TOPO_H
#define AC_TOPOLOGY_TOPO_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Capacities: a file that needs more is refused with a message, never truncated. */
#define AC_TOPO_MAX_NODES 512
#define AC_TOPO_MAX_LINKS 2048
#define AC_TOPO_MAX_NICS 64
#define AC_TOPO_MAX_GPUS 32
#define AC_TOPO_MAX_GPU_LINKS 32 /* <nvlink>/<xgmi> elements of one GPU */
#define AC_TOPO_NAME_MAX 64
#define AC_TOPO_BUSID_MAX 32
#define AC_TOPO_STR_MAX 64
#define AC_TOPO_AFFINITY_MAX 512

enum ac_topo_node_kind {
    AC_TOPO_NODE_MACHINE,  /* nodes[0], the root */
    AC_TOPO_NODE_PACKAGE,  /* a socket */
    AC_TOPO_NODE_NUMA,     /* a NUMA node: NCCL's <cpu> element */
    AC_TOPO_NODE_PCI,      /* a PCI bridge, switch port or device function: a <pci> element */
    AC_TOPO_NODE_NIC,      /* one network port: a <net> element */
    AC_TOPO_NODE_GPU,      /* a <gpu> element, child of its PCI function */
    AC_TOPO_NODE_NVSWITCH, /* a GPU fabric switch named by <nvlink target=...> */
    AC_TOPO_NODE_COUNT
};

enum ac_topo_link_kind {
    AC_TOPO_LINK_PCI,    /* a node to its PCI parent (or a top bridge to its NUMA node) */
    AC_TOPO_LINK_NVLINK, /* GPU to GPU or to an NVSwitch */
    AC_TOPO_LINK_XGMI,   /* AMD Infinity Fabric between GPUs */
    AC_TOPO_LINK_SMP,    /* between sockets (QPI/UPI, Infinity Fabric) */
    AC_TOPO_LINK_NET,    /* a NIC's PCI function to its port, at the port's speed */
    AC_TOPO_LINK_COUNT
};

enum ac_topo_gpu_vendor { AC_TOPO_GPU_OTHER, AC_TOPO_GPU_NVIDIA, AC_TOPO_GPU_AMD };

struct ac_topo_node {
    enum ac_topo_node_kind kind;
    int parent; /* index in nodes[]; -1 for the machine and NVSwitches */
    int depth;  /* 0 for the machine */
    int numa;   /* NUMA node id this node hangs under; -1 above NUMA level */
    int id;     /* package id, NUMA id, or index in nics[] / gpus[]; -1 otherwise */
    /* NUMA nodes (<cpu>) */
    int package;
    int ncores;
    char affinity[AC_TOPO_AFFINITY_MAX]; /* hex CPU mask as in NCCL: "ffffffff,00000000" */
    char arch[AC_TOPO_STR_MAX];          /* "x86_64" */
    char vendor[AC_TOPO_STR_MAX];        /* "GenuineIntel", "AuthenticAMD" */
    /* PCI nodes */
    char busid[AC_TOPO_BUSID_MAX]; /* "0000:17:00.0"; NVSwitch: its target name */
    uint32_t pci_class;            /* 0x060400 bridge, 0x020000 ethernet, 0x030200 3D, ... */
    uint32_t pci_vendor, pci_device;
    char link_speed[AC_TOPO_STR_MAX]; /* as written: "32.0 GT/s PCIe"; "" unknown */
    int link_width;                   /* lanes; 0 unknown */
};

struct ac_topo_link {
    int a, b; /* node indices; links are symmetric */
    enum ac_topo_link_kind kind;
    int count;     /* parallel links (NVLink, xGMI); 1 otherwise */
    double bw_gbs; /* GB/s per direction, all `count` links together */
    double lat_us;
};

struct ac_topo_nic {
    char name[AC_TOPO_NAME_MAX];   /* RDMA device ("mlx5_0") or interface ("eth0") */
    char ifname[AC_TOPO_NAME_MAX]; /* network interface of the port; "" if none */
    char busid[AC_TOPO_BUSID_MAX]; /* PCI function; "" if not on PCI */
    double speed_gbps;             /* Gb/s (files hold Mb/s, as NCCL's) */
    int numa;                      /* NUMA node id */
    int port;                      /* RDMA port number (1-based); 1 for plain interfaces */
    int rail;                      /* NIC i of every node is rail i */
    bool is_rdma;
    bool has_gdr;      /* GPU Direct RDMA possible */
    double latency_us; /* NCCL's latency attribute; 0 unknown */
    int node;          /* index in nodes[] */
};

/* A <nvlink> or <xgmi> element, kept as written so that files round-trip. */
struct ac_topo_gpu_link {
    enum ac_topo_link_kind kind;    /* AC_TOPO_LINK_NVLINK or AC_TOPO_LINK_XGMI */
    char target[AC_TOPO_BUSID_MAX]; /* a GPU's bus id, or an NVSwitch's name */
    int count;
    uint32_t tclass; /* 0x068000: NVSwitch */
};

/* A GPU's connection to another GPU, derived from the links: direct, or through an NVSwitch both
 * reach (then count is the smaller of the two sides). */
struct ac_topo_gpu_peer {
    int gpu; /* index in gpus[] */
    enum ac_topo_link_kind kind;
    int count;
    double bw_gbs; /* per direction */
};

struct ac_topo_gpu {
    int dev; /* the device ordinal */
    enum ac_topo_gpu_vendor vendor;
    char busid[AC_TOPO_BUSID_MAX];
    int numa;
    int sm;                    /* compute capability x10 (90: H100); AMD files carry 94 etc. */
    char gcn[AC_TOPO_STR_MAX]; /* AMD architecture ("gfx942"); "" otherwise */
    int rank;                  /* as in NCCL's files; -1 unknown */
    bool has_gdr;
    int nlinks;
    struct ac_topo_gpu_link links[AC_TOPO_MAX_GPU_LINKS];
    int npeers;
    struct ac_topo_gpu_peer peers[AC_TOPO_MAX_GPUS];
    int node; /* index in nodes[] */
};

struct ac_topo {
    int nnodes, nlinks, nnics, ngpus;
    int nnuma, npackages;
    struct ac_topo_node nodes[AC_TOPO_MAX_NODES];
    struct ac_topo_link links[AC_TOPO_MAX_LINKS];
    struct ac_topo_nic nics[AC_TOPO_MAX_NICS]; /* in the order of their dev attribute */
    struct ac_topo_gpu gpus[AC_TOPO_MAX_GPUS]; /* in the order of their dev attribute */
    char source[128];                          /* "hwloc", "sysfs" or the file it was loaded from */
    int refs;                                  /* see ac_topo_get / ac_topo_free */
};

/* The topology of this process's machine: the file NCCL_TOPO_FILE names if set, else discovered.
 * When NCCL_TOPO_DUMP_FILE is set, the result is written there. Computed once per process
 * (thread-safe); each successful call takes a reference that ac_topo_free drops. A failure (a
 * malformed file) is not cached: the next call tries again. */
ncclResult_t ac_topo_get(struct ac_topo **out);
/* Drops a reference from ac_topo_get, or frees a topology from the calls below. NULL is ignored. */
void ac_topo_free(struct ac_topo *t);
/* Forgets the cached topology (tests, after changing NCCL_TOPO_FILE and ac_config_reload). */
void ac_topo_cache_reset(void);

/* Uncached building blocks. Each returns a new topology (free with ac_topo_free). */
ncclResult_t ac_topo_discover(struct ac_topo **out);
ncclResult_t ac_topo_load_file(const char *path, struct ac_topo **out);
/* Parses XML text of len bytes (need not be terminated); `what` names it in messages. Malformed
 * input gives ncclInvalidUsage and a message with the line number. */
ncclResult_t ac_topo_load_xml(const char *text, size_t len, const char *what, struct ac_topo **out);
/* Writes the canonical XML; loading it gives the same topology, and writing that the same text. */
ncclResult_t ac_topo_to_xml(const struct ac_topo *t, char **text_out, size_t *len_out);
ncclResult_t ac_topo_dump_file(const struct ac_topo *t, const char *path);
/* Human-readable summary (anyccl-topo, INFO logs). */
void ac_topo_print(const struct ac_topo *t, FILE *out);

/* The NIC a rank should use (index in t->nics). Among the NICs whose name or interface matches
 * ifname_filter (NCCL_SOCKET_IFNAME syntax; NULL: all): with a GPU, the one closest to it (fewest
 * PCI hops under a common switch, then same NUMA node; GPUs equally close to the same NICs share
 * them out in GPU order); else one on the rank's NUMA node; else rails round-robin by local rank,
 * spread over all rails when fewer ranks than rails. gpu_or_minus1 indexes t->gpus;
 * numa_or_minus1 is a NUMA node id (nodes[].id), ignored when no allowed NIC is there. Fails with
 * ncclInvalidArgument for ranks or a GPU out of range, ncclInvalidUsage when no NIC matches the
 * filter, ncclSystemError when the machine has no NIC. */
ncclResult_t ac_topo_pick_nic(const struct ac_topo *t, int local_rank, int local_nranks,
                              int gpu_or_minus1, int numa_or_minus1, const char *ifname_filter,
                              int *nic_index_out);

/* The id of the NUMA node whose affinity holds CPU cpu (as from sched_getcpu), or -1: what a rank
 * without a GPU passes to ac_topo_pick_nic. */
int ac_topo_cpu_numa(const struct ac_topo *t, int cpu);

const char *ac_topo_node_kind_name(enum ac_topo_node_kind kind);
const char *ac_topo_link_kind_name(enum ac_topo_link_kind kind);
/* GB/s per direction of a PCIe link: "32.0 GT/s PCIe" x16 -> 63.0 (128b/130b encoding from
 * 8 GT/s on, 8b/10b below); 0 when unknown. */
double ac_topo_pcie_bw_gbs(const char *link_speed, int link_width);

#endif
