/* Discovery of this machine: sockets, NUMA nodes and cores from hwloc when built with it
 * (AC_HAVE_HWLOC, mk/topology.mk), else from /sys/devices/system/{node,cpu}; NICs (RDMA ports of
 * /sys/class/infiniband that are ACTIVE, interfaces of /sys/class/net backed by a device and up,
 * or named by NCCL_SOCKET_IFNAME),
 * GPUs (NVIDIA and AMD display/accelerator functions of /sys/bus/pci) and the PCI switches above
 * them from /sys in both cases. Finding nothing is not an error, except no NUMA node at all. */
#include "topology/topo_internal.h"

#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifdef AC_HAVE_HWLOC
#include <hwloc.h>
#endif

#define MAX_CPUS 4096

/* Where sysfs is: "/sys", or a fake tree in tests (ac_topo_set_sysfs_root). */
static char sysfs_root[PATH_MAX] = "/sys";

void ac_topo_set_sysfs_root(const char *root)
{
    snprintf(sysfs_root, sizeof(sysfs_root), "%s", root != NULL ? root : "/sys");
}

/* sysfs_root followed by the formatted rest; returns buf. A path too long stays truncated and
 * simply names nothing. */
static const char *sys_path(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const char *sys_path(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(buf, cap, "%s", sysfs_root);
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < cap)
        vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    return buf;
}

struct cpu_set_list {
    int n;
    int cpus[MAX_CPUS];
};

/* The first line of a small file, without its newline; false when unreadable or empty. */
static bool read_line(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    if (ok)
        buf[strcspn(buf, "\n")] = '\0';
    return ok && buf[0] != '\0';
}

static long read_long(const char *path, long def)
{
    char buf[64], *end;
    if (!read_line(path, buf, sizeof(buf)))
        return def;
    long v = strtol(buf, &end, 0);
    return end == buf ? def : v;
}

/* NCCL's affinity text: 32-bit hex words, most significant first, comma-separated. */
static void format_affinity(const struct cpu_set_list *set, char *buf, size_t cap)
{
    uint32_t words[MAX_CPUS / 32] = {0};
    int top = 0;
    for (int i = 0; i < set->n; i++) {
        words[set->cpus[i] / 32] |= 1u << (set->cpus[i] % 32);
        top = set->cpus[i] / 32 > top ? set->cpus[i] / 32 : top;
    }
    size_t len = 0;
    buf[0] = '\0';
    for (int w = top; w >= 0 && len + 10 < cap; w--)
        len += (size_t)snprintf(buf + len, cap - len, "%s%08x", w == top ? "" : ",", words[w]);
}

static void cpu_vendor(char *buf, size_t cap)
{
    char line[256];
    buf[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "vendor_id", 9) == 0 && colon != NULL) {
            snprintf(buf, cap, "%s", colon + 1 + strspn(colon + 1, " \t"));
            buf[strcspn(buf, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
}

static ncclResult_t add_numa(struct ac_topo *t, int numa_id, int package, int ncores,
                             const struct cpu_set_list *cpus)
{
    int pkg, i;
    struct utsname u;
    AC_CHECK(ac_topo_get_package(t, package, &pkg));
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_NUMA, pkg, &i));
    struct ac_topo_node *n = &t->nodes[i];
    n->id = numa_id;
    n->package = package;
    n->ncores = ncores;
    format_affinity(cpus, n->affinity, sizeof(n->affinity));
    if (uname(&u) == 0)
        snprintf(n->arch, sizeof(n->arch), "%.63s", u.machine);
    cpu_vendor(n->vendor, sizeof(n->vendor));
    return ncclSuccess;
}

#ifdef AC_HAVE_HWLOC
static int hwloc_package_of(hwloc_topology_t topo, hwloc_obj_t numa)
{
    hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_PACKAGE, numa);
    int npkgs = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
    for (int i = 0; pkg == NULL && i < npkgs; i++) {
        hwloc_obj_t p = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PACKAGE, i);
        if (p->cpuset != NULL && numa->cpuset != NULL &&
            hwloc_bitmap_intersects(p->cpuset, numa->cpuset))
            pkg = p;
    }
    return pkg != NULL && pkg->os_index != HWLOC_UNKNOWN_INDEX ? (int)pkg->os_index : 0;
}

/* *is_done_out stays false when hwloc cannot load a topology: /sys is read instead. */
static ncclResult_t discover_cpus_hwloc(struct ac_topo *t, bool *is_done_out)
{
    hwloc_topology_t topo;
    ncclResult_t res = ncclSuccess;
    static struct cpu_set_list cpus; /* 16 KiB: off the stack; guarded by the caller's lock */
    if (hwloc_topology_init(&topo) != 0) {
        AC_INFO(AC_SUB_GRAPH, "hwloc_topology_init failed: reading /sys instead");
        return ncclSuccess;
    }
    if (hwloc_topology_load(topo) != 0) {
        AC_INFO(AC_SUB_GRAPH, "hwloc_topology_load failed: reading /sys instead");
        goto destroy;
    }
    int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n && res == ncclSuccess; i++) {
        hwloc_obj_t numa = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, i);
        cpus.n = 0;
        if (numa->cpuset == NULL)
            continue;
        for (int id = hwloc_bitmap_first(numa->cpuset); id >= 0 && id < MAX_CPUS;
             id = hwloc_bitmap_next(numa->cpuset, id))
            cpus.cpus[cpus.n++] = id;
        int ncores = hwloc_get_nbobjs_inside_cpuset_by_type(topo, numa->cpuset, HWLOC_OBJ_CORE);
        res = add_numa(t, (int)numa->os_index, hwloc_package_of(topo, numa), ncores, &cpus);
    }
    *is_done_out = res == ncclSuccess && n > 0;
    if (*is_done_out)
        snprintf(t->source, sizeof(t->source), "hwloc");
destroy:
    hwloc_topology_destroy(topo);
    return res;
}
#endif

/* "0-3,8,10-11" (sysfs cpulist syntax). */
static void parse_cpulist(const char *text, struct cpu_set_list *out)
{
    const char *p = text;
    out->n = 0;
    while (*p != '\0') {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;
        if (end == p)
            return;
        if (*end == '-')
            hi = strtol(end + 1, &end, 10);
        for (long c = lo; c <= hi && c >= 0 && c < MAX_CPUS && out->n < MAX_CPUS; c++)
            out->cpus[out->n++] = (int)c;
        p = *end == ',' ? end + 1 : end;
        if (*end != ',')
            return;
    }
}

/* Cores: distinct (package, core_id) pairs among the node's CPUs. */
static int count_cores(const struct cpu_set_list *cpus, int *package_out)
{
    static long seen[MAX_CPUS][2];
    int n = 0;
    *package_out = 0;
    for (int i = 0; i < cpus->n; i++) {
        char path[PATH_MAX];
        sys_path(path, sizeof(path), "/devices/system/cpu/cpu%d/topology/physical_package_id",
                 cpus->cpus[i]);
        long pkg = read_long(path, 0);
        sys_path(path, sizeof(path), "/devices/system/cpu/cpu%d/topology/core_id", cpus->cpus[i]);
        long core = read_long(path, cpus->cpus[i]);
        if (i == 0)
            *package_out = (int)pkg;
        bool is_new = true;
        for (int j = 0; j < n && is_new; j++)
            is_new = seen[j][0] != pkg || seen[j][1] != core;
        if (is_new && n < MAX_CPUS) {
            seen[n][0] = pkg;
            seen[n][1] = core;
            n++;
        }
    }
    return n;
}

static ncclResult_t discover_cpus_sysfs(struct ac_topo *t)
{
    static struct cpu_set_list cpus; /* off the stack; guarded by the caller's lock */
    struct dirent **names;
    char path[PATH_MAX], list[8192];
    int package,
        n = scandir(sys_path(path, sizeof(path), "/devices/system/node"), &names, NULL, alphasort);
    ncclResult_t res = ncclSuccess;
    for (int i = 0; i < n; i++) {
        int id;
        char tail;
        if (res == ncclSuccess && sscanf(names[i]->d_name, "node%d%c", &id, &tail) == 1) {
            sys_path(path, sizeof(path), "/devices/system/node/%s/cpulist", names[i]->d_name);
            parse_cpulist(read_line(path, list, sizeof(list)) ? list : "", &cpus);
            int ncores = count_cores(&cpus, &package);
            res = add_numa(t, id, package, ncores, &cpus);
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    AC_CHECK(res);
    if (t->nnodes > 1)
        return ncclSuccess;
    /* No NUMA information (kernel without NUMA, some containers): one node with every CPU. */
    sys_path(path, sizeof(path), "/devices/system/cpu/online");
    parse_cpulist(read_line(path, list, sizeof(list)) ? list : "0", &cpus);
    return add_numa(t, 0, 0, count_cores(&cpus, &package), &cpus);
}

/* hwloc when built with it and reading the real /sys; else /sys parsed here. */
static ncclResult_t discover_cpus(struct ac_topo *t)
{
#ifdef AC_HAVE_HWLOC
    bool is_done = false;
    if (strcmp(sysfs_root, "/sys") == 0)
        AC_CHECK(discover_cpus_hwloc(t, &is_done));
    if (is_done)
        return ncclSuccess;
#endif
    return discover_cpus_sysfs(t);
}

static bool is_busid(const char *s)
{
    /* dddd:bb:dd.f, hex digits */
    static const char shape[] = "xxxx:xx:xx.x";
    if (strlen(s) != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; shape[i] != '\0'; i++) {
        if (shape[i] == 'x' ? strchr("0123456789abcdefABCDEF", s[i]) == NULL : s[i] != shape[i])
            return false;
    }
    return true;
}

static int default_numa(const struct ac_topo *t)
{
    int best = -1;
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_NUMA &&
            (best < 0 || t->nodes[i].id < t->nodes[best].id))
            best = i;
    }
    return best;
}

static void fill_pci_attrs(struct ac_topo_node *n)
{
    char path[PATH_MAX], buf[64];
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/class", n->busid);
    n->pci_class = (uint32_t)read_long(path, 0);
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/vendor", n->busid);
    n->pci_vendor = (uint32_t)read_long(path, 0);
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/device", n->busid);
    n->pci_device = (uint32_t)read_long(path, 0);
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/current_link_speed", n->busid);
    if (read_line(path, buf, sizeof(buf)) && buf[0] >= '0' && buf[0] <= '9')
        snprintf(n->link_speed, sizeof(n->link_speed), "%s", buf);
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/current_link_width", n->busid);
    long width = read_long(path, 0);
    n->link_width = width > 0 && width <= 64 ? (int)width : 0;
}

/* The PCI functions on the way from the root complex to the device at sysfs path dev_path (a
 * link into /sys/devices), created once each; *parent_out is the last one, or the NUMA node of
 * a device that is not on PCI. */
static ncclResult_t add_pci_chain(struct ac_topo *t, const char *dev_path, int *parent_out)
{
    char real[PATH_MAX], path[PATH_MAX], *save = NULL;
    char busids[16][AC_TOPO_BUSID_MAX];
    int nbus = 0;
    if (realpath(dev_path, real) == NULL)
        real[0] = '\0';
    for (char *c = strtok_r(real, "/", &save); c != NULL; c = strtok_r(NULL, "/", &save)) {
        if (is_busid(c) && nbus < 16)
            snprintf(busids[nbus++], AC_TOPO_BUSID_MAX, "%s", c);
    }
    int prev = default_numa(t);
    if (nbus > 0) {
        sys_path(path, sizeof(path), "/bus/pci/devices/%s/numa_node", busids[nbus - 1]);
        int numa = ac_topo_find_numa(t, (int)read_long(path, -1));
        prev = numa >= 0 ? numa : prev;
    }
    for (int i = 0; i < nbus; i++) {
        int idx = ac_topo_find_pci(t, busids[i]);
        if (idx < 0) {
            AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_PCI, prev, &idx));
            memcpy(t->nodes[idx].busid, busids[i], AC_TOPO_BUSID_MAX);
            fill_pci_attrs(&t->nodes[idx]);
            AC_CHECK(ac_topo_add_link(
                t, prev, idx, AC_TOPO_LINK_PCI, 1,
                ac_topo_pcie_bw_gbs(t->nodes[idx].link_speed, t->nodes[idx].link_width),
                AC_TOPO_PCI_LAT_US));
        }
        prev = idx;
    }
    *parent_out = prev;
    return ncclSuccess;
}

struct nic_found {
    const char *name, *ifname, *dev_path;
    double speed_gbps;
    int port;
    bool is_rdma, has_gdr;
};

/* Appends the NIC under its PCI function, with the NET link at the port's speed. */
static ncclResult_t add_nic(struct ac_topo *t, const struct nic_found *f)
{
    int parent, node;
    if (t->nnics == AC_TOPO_MAX_NICS) {
        AC_INFO(AC_SUB_GRAPH, "more than %d NICs: %s is left out", AC_TOPO_MAX_NICS, f->name);
        return ncclSuccess;
    }
    AC_CHECK(add_pci_chain(t, f->dev_path, &parent));
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_NIC, parent, &node));
    AC_CHECK(ac_topo_add_link(t, parent, node, AC_TOPO_LINK_NET, 1, f->speed_gbps / 8.0,
                              AC_TOPO_NET_DEFAULT_LAT_US));
    struct ac_topo_nic *n = &t->nics[t->nnics];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", f->name);
    snprintf(n->ifname, sizeof(n->ifname), "%s", f->ifname);
    if (t->nodes[parent].kind == AC_TOPO_NODE_PCI)
        memcpy(n->busid, t->nodes[parent].busid, sizeof(n->busid));
    n->speed_gbps = f->speed_gbps;
    n->port = f->port;
    n->rail = -1;
    n->is_rdma = f->is_rdma;
    n->has_gdr = f->has_gdr;
    n->node = node;
    t->nodes[node].id = t->nnics++;
    memcpy(t->nodes[node].busid, n->busid, sizeof(n->busid));
    AC_INFO(AC_SUB_GRAPH, "NIC %d: %s%s%s %.1f Gb/s %s on %s", t->nnics - 1, n->name,
            n->ifname[0] ? " if " : "", n->ifname, n->speed_gbps, n->is_rdma ? "RDMA" : "sockets",
            n->busid[0] ? n->busid : "(no PCI)");
    return ncclSuccess;
}

static bool has_gdr(void)
{
    char path[PATH_MAX];
    return access(sys_path(path, sizeof(path), "/kernel/mm/memory_peers/nv_mem/version"), F_OK) ==
               0 ||
           access(sys_path(path, sizeof(path), "/module/nvidia_peermem"), F_OK) == 0;
}

/* The network interface of port `port` of RDMA device dev: the one of its PCI function whose
 * dev_port is port - 1, else the first; "" when none (InfiniBand without IPoIB). */
static void rdma_ifname(const char *dev, int port, char *buf, size_t cap)
{
    char path[PATH_MAX];
    struct dirent **names;
    sys_path(path, sizeof(path), "/class/infiniband/%s/device/net", dev);
    int n = scandir(path, &names, NULL, alphasort);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.') {
            sys_path(path, sizeof(path), "/class/net/%s/dev_port", name);
            if (buf[0] == '\0' || read_long(path, -1) == port - 1)
                snprintf(buf, cap, "%.63s", name);
        }
        free(names[i]);
    }
    if (n >= 0)
        free(names);
}

static ncclResult_t discover_rdma_ports(struct ac_topo *t, const char *dev)
{
    char path[PATH_MAX], state[64], rate[64], ifname[AC_TOPO_NAME_MAX], dev_path[PATH_MAX];
    struct dirent **ports;
    ncclResult_t res = ncclSuccess;
    sys_path(path, sizeof(path), "/class/infiniband/%s/ports", dev);
    int n = scandir(path, &ports, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        int port = atoi(ports[i]->d_name);
        sys_path(path, sizeof(path), "/class/infiniband/%s/ports/%d/state", dev, port);
        bool is_active =
            port > 0 && read_line(path, state, sizeof(state)) && strstr(state, "ACTIVE") != NULL;
        sys_path(path, sizeof(path), "/class/infiniband/%s/ports/%d/rate", dev, port);
        if (is_active && res == ncclSuccess) {
            double gbps = read_line(path, rate, sizeof(rate)) ? strtod(rate, NULL) : 0.0;
            rdma_ifname(dev, port, ifname, sizeof(ifname));
            sys_path(dev_path, sizeof(dev_path), "/class/infiniband/%s/device", dev);
            struct nic_found f = {.name = dev,
                                  .ifname = ifname,
                                  .dev_path = dev_path,
                                  .speed_gbps = gbps > 0 ? gbps : 10.0,
                                  .port = port,
                                  .is_rdma = true,
                                  .has_gdr = has_gdr()};
            res = add_nic(t, &f);
        }
        free(ports[i]);
    }
    if (n >= 0)
        free(ports);
    return res;
}

static bool listed_as_rdma(const struct ac_topo *t, const char *ifname)
{
    for (int i = 0; i < t->nnics; i++) {
        if (t->nics[i].is_rdma && strcmp(t->nics[i].ifname, ifname) == 0)
            return true;
    }
    return false;
}

/* Whether NCCL_SOCKET_IFNAME names ifname (a list of names or prefixes, not an exclusion). */
static bool named_by_user(const char *ifname)
{
    const char *list = ac_config_get()->socket_ifname;
    return list != NULL && list[0] != '\0' && list[0] != '^' &&
           ac_socket_ifname_matches(list, ifname);
}

/* An interface counts when it is up and backed by a device (not lo, bridges, veth, tunnels), or,
 * whatever it is, when NCCL_SOCKET_IFNAME names it (the multi-node test bed's veth rails,
 * containers): such a NIC has no PCI position and hangs under the first NUMA node. */
static ncclResult_t discover_interface(struct ac_topo *t, const char *ifname)
{
    char path[PATH_MAX], dev_path[PATH_MAX], state[32];
    sys_path(dev_path, sizeof(dev_path), "/class/net/%s/device", ifname);
    sys_path(path, sizeof(path), "/class/net/%s/operstate", ifname);
    bool is_named = named_by_user(ifname);
    bool is_up = read_line(path, state, sizeof(state)) &&
                 (strcmp(state, "up") == 0 || (is_named && strcmp(state, "unknown") == 0));
    if (ifname[0] == '.' || (access(dev_path, F_OK) != 0 && !is_named) || !is_up ||
        listed_as_rdma(t, ifname))
        return ncclSuccess;
    sys_path(path, sizeof(path), "/class/net/%s/speed", ifname);
    long mbps = read_long(path, -1);
    if (mbps <= 0)
        AC_INFO(AC_SUB_GRAPH, "interface %s does not report its speed: assuming 10 Gb/s", ifname);
    struct nic_found f = {.name = ifname,
                          .ifname = ifname,
                          .dev_path = dev_path,
                          .speed_gbps = mbps > 0 ? (double)mbps / 1000.0 : 10.0,
                          .port = 1};
    return add_nic(t, &f);
}

static bool is_gpu_function(const char *busid)
{
    char path[PATH_MAX];
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/vendor", busid);
    long vendor = read_long(path, 0);
    sys_path(path, sizeof(path), "/bus/pci/devices/%s/class", busid);
    long cls = read_long(path, 0) >> 8;
    return (vendor == 0x10de || vendor == 0x1002) &&
           (cls == 0x0300 || cls == 0x0302 || cls == 0x1200);
}

static ncclResult_t discover_gpu(struct ac_topo *t, const char *busid)
{
    char dev_path[PATH_MAX];
    int parent, node;
    if (!is_busid(busid) || !is_gpu_function(busid) || t->ngpus == AC_TOPO_MAX_GPUS)
        return ncclSuccess;
    sys_path(dev_path, sizeof(dev_path), "/bus/pci/devices/%s", busid);
    AC_CHECK(add_pci_chain(t, dev_path, &parent));
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_GPU, parent, &node));
    struct ac_topo_gpu *g = &t->gpus[t->ngpus];
    memset(g, 0, sizeof(*g));
    g->dev = t->ngpus;
    g->vendor = t->nodes[parent].pci_vendor == 0x10de ? AC_TOPO_GPU_NVIDIA : AC_TOPO_GPU_AMD;
    memcpy(g->busid, t->nodes[parent].busid, sizeof(g->busid));
    g->rank = -1;
    g->node = node;
    t->nodes[node].id = t->ngpus++;
    memcpy(t->nodes[node].busid, g->busid, sizeof(g->busid));
    return ncclSuccess;
}

/* Calls fn for every entry of dir, in name order. */
static ncclResult_t for_each_entry(struct ac_topo *t, const char *dir,
                                   ncclResult_t (*fn)(struct ac_topo *, const char *))
{
    struct dirent **names;
    ncclResult_t res = ncclSuccess;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (res == ncclSuccess && names[i]->d_name[0] != '.')
            res = fn(t, names[i]->d_name);
        free(names[i]);
    }
    if (n >= 0)
        free(names);
    return res;
}

static ncclResult_t discover_devices(struct ac_topo *t)
{
    char path[PATH_MAX];
    AC_CHECK(
        for_each_entry(t, sys_path(path, sizeof(path), "/class/infiniband"), discover_rdma_ports));
    AC_CHECK(for_each_entry(t, sys_path(path, sizeof(path), "/class/net"), discover_interface));
    return for_each_entry(t, sys_path(path, sizeof(path), "/bus/pci/devices"), discover_gpu);
}

ncclResult_t ac_topo_discover(struct ac_topo **out)
{
    static pthread_mutex_t discover_mutex = PTHREAD_MUTEX_INITIALIZER;
    struct ac_topo *t;
    ncclResult_t res;
    if (out == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_discover: out is NULL");
    AC_CHECK(ac_topo_new("sysfs", &t)); /* "hwloc" once hwloc has read the CPUs */
    pthread_mutex_lock(&discover_mutex);
    res = discover_cpus(t);
    pthread_mutex_unlock(&discover_mutex);
    AC_CHECK_GOTO(res, res, fail);
    if (default_numa(t) < 0) {
        res = AC_FAIL(ncclSystemError,
                      "topology discovery (%s) found no NUMA node: set "
                      "NCCL_TOPO_FILE to describe this machine",
                      t->source);
        goto fail;
    }
    AC_CHECK_GOTO(discover_devices(t), res, fail);
    AC_CHECK_GOTO(ac_topo_finish(t, t->source), res, fail);
    AC_INFO(AC_SUB_GRAPH, "topology discovered (%s): %d packages, %d NUMA nodes, %d GPUs, %d NICs",
            t->source, t->npackages, t->nnuma, t->ngpus, t->nnics);
    *out = t;
    return ncclSuccess;
fail:
    free(t);
    return res;
}
