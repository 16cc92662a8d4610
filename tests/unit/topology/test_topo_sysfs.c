/* Discovery from a fake sysfs tree with what this machine lacks: two NUMA nodes in two sockets, an
 * RDMA port next to a GPU under a PCI switch, an Ethernet interface without NUMA information,
 * interfaces that must be left out (down, virtual, owned by the RDMA port) and an NVIDIA function
 * that is not a GPU. */
#include "common/check.h"
#include "common/config.h"
#include "topology/topo.h"
#include "topology/topo_internal.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

#define SW "devices/pci0000:10/0000:10:01.0/0000:11:00.0"
#define GPU_DIR SW "/0000:12:00.0"
#define NIC_DIR SW "/0000:13:00.0"
#define ETH_DIR "devices/pci0000:00/0000:00:03.0"
#define NVS_DIR "devices/pci0000:20/0000:20:00.0"

static void mkdirs(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    mkdir(path, 0755);
}

static void put(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(const char *rel, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdirs(path + strlen(root) + 1);
    *slash = '/';
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

/* rel_link -> root/target, written as a relative link as sysfs does. */
static void link_to(const char *rel_link, const char *target)
{
    char path[512], up[256] = "";
    snprintf(path, sizeof(path), "%s/%s", root, rel_link);
    for (const char *p = strchr(rel_link, '/'); p != NULL; p = strchr(p + 1, '/'))
        strcat(up, "../");
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdirs(path + strlen(root) + 1);
    *slash = '/';
    char dest[512];
    snprintf(dest, sizeof(dest), "%s%s", up, target);
    cr_assert_eq(symlink(dest, path), 0, "symlink %s -> %s", path, dest);
}

static void pci_function(const char *dir, const char *cls, const char *vendor, int numa)
{
    char rel[256];
    const char *busid = strrchr(dir, '/') + 1;
    snprintf(rel, sizeof(rel), "%s/class", dir);
    put(rel, "%s\n", cls);
    snprintf(rel, sizeof(rel), "%s/vendor", dir);
    put(rel, "%s\n", vendor);
    snprintf(rel, sizeof(rel), "%s/device", dir);
    put(rel, "0x1234\n");
    snprintf(rel, sizeof(rel), "%s/numa_node", dir);
    put(rel, "%d\n", numa);
    snprintf(rel, sizeof(rel), "%s/current_link_speed", dir);
    put(rel, "32.0 GT/s PCIe\n");
    snprintf(rel, sizeof(rel), "%s/current_link_width", dir);
    put(rel, "16\n");
    snprintf(rel, sizeof(rel), "bus/pci/devices/%s", busid);
    link_to(rel, dir);
}

static void interface(const char *name, const char *device, const char *state, int mbps)
{
    char rel[256];
    if (device != NULL) {
        snprintf(rel, sizeof(rel), "class/net/%s/device", name);
        link_to(rel, device);
    }
    snprintf(rel, sizeof(rel), "class/net/%s/operstate", name);
    put(rel, "%s\n", state);
    snprintf(rel, sizeof(rel), "class/net/%s/speed", name);
    put(rel, "%d\n", mbps);
    snprintf(rel, sizeof(rel), "class/net/%s/dev_port", name);
    put(rel, "0\n");
}

static void build_tree(void)
{
    put("devices/system/node/node0/cpulist", "0-3\n");
    put("devices/system/node/node1/cpulist", "4-7\n");
    put("devices/system/node/possible", "0-1\n");
    for (int c = 0; c < 8; c++) { /* 2 sockets x 2 cores x 2 threads */
        char rel[128];
        snprintf(rel, sizeof(rel), "devices/system/cpu/cpu%d/topology/physical_package_id", c);
        put(rel, "%d\n", c / 4);
        snprintf(rel, sizeof(rel), "devices/system/cpu/cpu%d/topology/core_id", c);
        put(rel, "%d\n", (c % 4) / 2);
    }
    pci_function("devices/pci0000:10/0000:10:01.0", "0x060400", "0x8086", 1);
    pci_function(SW, "0x060400", "0x1000", 1);
    pci_function(GPU_DIR, "0x030200", "0x10de", 1);
    pci_function(NIC_DIR, "0x020700", "0x15b3", 1);
    pci_function(ETH_DIR, "0x020000", "0x1af4", -1);
    pci_function(NVS_DIR, "0x068000", "0x10de", 0); /* an NVSwitch: not a GPU */
    mkdirs(NIC_DIR "/net/ibp19s0");
    mkdirs(ETH_DIR "/virtio2");
    link_to("class/infiniband/mlx5_0/device", NIC_DIR);
    put("class/infiniband/mlx5_0/ports/1/state", "4: ACTIVE\n");
    put("class/infiniband/mlx5_0/ports/1/rate", "400 Gb/sec (4X NDR)\n");
    put("class/infiniband/mlx5_0/ports/2/state", "1: DOWN\n");
    put("class/infiniband/mlx5_0/ports/2/rate", "400 Gb/sec (4X NDR)\n");
    interface("ibp19s0", NIC_DIR, "up", 400000); /* the RDMA port's: listed once, as mlx5_0 */
    interface("eth0", ETH_DIR "/virtio2", "up", 25000);
    interface("eth1", ETH_DIR "/virtio2", "down", 25000);
    interface("lo", NULL, "unknown", 0);
    interface("docker0", NULL, "up", 10000);
}

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/anyccl-sysfs-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    build_tree();
    ac_topo_set_sysfs_root(root);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void teardown(void)
{
    ac_topo_set_sysfs_root(NULL);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(topo_sysfs, .init = setup, .fini = teardown, .timeout = 10);

static struct ac_topo *discover(void)
{
    struct ac_topo *t = NULL;
    cr_assert_eq(ac_topo_discover(&t), ncclSuccess, "%s", ac_last_error());
    return t;
}

Test(topo_sysfs, cpus)
{
    struct ac_topo *t = discover();
    cr_expect_str_eq(t->source, "sysfs");
    cr_expect_eq(t->nnuma, 2);
    cr_expect_eq(t->npackages, 2);
    int numa0 = ac_topo_find_numa(t, 0), numa1 = ac_topo_find_numa(t, 1);
    cr_assert(numa0 > 0 && numa1 > 0);
    cr_expect_eq(t->nodes[numa0].ncores, 2);
    cr_expect_eq(t->nodes[numa1].package, 1);
    cr_expect_str_eq(t->nodes[numa0].affinity, "0000000f");
    cr_expect_str_eq(t->nodes[numa1].affinity, "000000f0");
    int smp = 0;
    for (int i = 0; i < t->nlinks; i++)
        smp += t->links[i].kind == AC_TOPO_LINK_SMP;
    cr_expect_eq(smp, 1);
    ac_topo_free(t);
}

Test(topo_sysfs, nics)
{
    struct ac_topo *t = discover();
    cr_assert_eq(t->nnics, 2, "mlx5_0 port 1 and eth0 only");
    const struct ac_topo_nic *ib = &t->nics[0], *eth = &t->nics[1];
    cr_expect_str_eq(ib->name, "mlx5_0");
    cr_expect_str_eq(ib->ifname, "ibp19s0");
    cr_expect(ib->is_rdma);
    cr_expect_eq(ib->port, 1);
    cr_expect_float_eq(ib->speed_gbps, 400.0, 1e-9);
    cr_expect_str_eq(ib->busid, "0000:13:00.0");
    cr_expect_eq(ib->numa, 1);
    cr_expect_str_eq(eth->name, "eth0");
    cr_expect_not(eth->is_rdma);
    cr_expect_float_eq(eth->speed_gbps, 25.0, 1e-9);
    cr_expect_str_eq(eth->busid, "0000:00:03.0");
    cr_expect_eq(eth->numa, 0, "numa_node -1: the lowest NUMA node");
    ac_topo_free(t);
}

Test(topo_sysfs, gpu_and_pci_path)
{
    struct ac_topo *t = discover();
    cr_assert_eq(t->ngpus, 1, "the NVSwitch function is not a GPU");
    cr_expect_str_eq(t->gpus[0].busid, "0000:12:00.0");
    cr_expect_eq(t->gpus[0].vendor, AC_TOPO_GPU_NVIDIA);
    cr_expect_eq(t->gpus[0].numa, 1);
    int sw = ac_topo_find_pci(t, "0000:11:00.0"), top = ac_topo_find_pci(t, "0000:10:01.0");
    cr_assert(sw > 0 && top > 0);
    cr_expect_eq(t->nodes[sw].parent, top);
    cr_expect_eq(t->nodes[top].parent, ac_topo_find_numa(t, 1));
    cr_expect_eq(t->nodes[sw].pci_class, 0x060400u);
    cr_expect_eq(t->nodes[t->nodes[t->gpus[0].node].parent].parent, sw);
    cr_expect_eq(ac_topo_find_pci(t, "0000:20:00.0"), -1);
    for (int i = 0; i < t->nlinks; i++) {
        if (t->links[i].kind == AC_TOPO_LINK_PCI && t->links[i].b == top)
            cr_expect_float_eq(t->links[i].bw_gbs, 32.0 * 16 * 128 / 130 / 8, 1e-9);
    }
    int nic;
    cr_assert_eq(ac_topo_pick_nic(t, 0, 2, 0, -1, NULL, &nic), ncclSuccess);
    cr_expect_eq(nic, 0, "the GPU's neighbour under the switch");
    cr_assert_eq(ac_topo_pick_nic(t, 1, 2, -1, 0, NULL, &nic), ncclSuccess);
    cr_expect_eq(nic, 1, "the NIC of NUMA node 0");
    ac_topo_free(t);
}

Test(topo_sysfs, round_trip)
{
    struct ac_topo *t = discover(), *u = NULL;
    char *a, *b;
    cr_assert_eq(ac_topo_to_xml(t, &a, NULL), ncclSuccess);
    cr_assert_eq(ac_topo_load_xml(a, strlen(a), "dump", &u), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(ac_topo_to_xml(u, &b, NULL), ncclSuccess);
    cr_expect_str_eq(a, b);
    cr_expect_eq(u->nnodes, t->nnodes);
    free(a);
    free(b);
    ac_topo_free(t);
    ac_topo_free(u);
}

/* Interfaces without a device (docker0, lo) count when NCCL_SOCKET_IFNAME names them (veth rails
 * of the multi-node bed, containers): no PCI position, the first NUMA node, 10 Gb/s when the
 * speed is unknown. An exclusion list does not add them. */
Test(topo_sysfs, virtual_interfaces_named_by_the_user)
{
    setenv("NCCL_SOCKET_IFNAME", "docker,lo", 1);
    ac_config_reload();
    struct ac_topo *t = discover();
    cr_assert_eq(t->nnics, 4, "mlx5_0, docker0, eth0, lo; got %d", t->nnics);
    cr_expect_str_eq(t->nics[1].name, "docker0");
    cr_expect_str_eq(t->nics[1].busid, "");
    cr_expect_eq(t->nics[1].numa, 0);
    cr_expect_float_eq(t->nics[1].speed_gbps, 10.0, 1e-9);
    cr_expect_str_eq(t->nics[3].name, "lo");
    ac_topo_free(t);
    setenv("NCCL_SOCKET_IFNAME", "^eth", 1);
    ac_config_reload();
    t = discover();
    cr_expect_eq(t->nnics, 2, "an exclusion adds nothing");
    ac_topo_free(t);
    unsetenv("NCCL_SOCKET_IFNAME");
    ac_config_reload();
}
