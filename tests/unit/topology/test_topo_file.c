/* Topology files: the shipped DGX H100 and MI300X models load with the expected counts, links and
 * bandwidths, round-trip (dump -> load -> dump) byte for byte, and give GPU i -> NIC i; the other
 * NIC-choice rules (NUMA, rails, NCCL_SOCKET_IFNAME filter, ties) on small files. Run from the
 * repository root (tests/run.sh does). */
#include "common/check.h"
#include "topology/topo.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DGX "topologies/dgx-h100.xml"
#define MI300X "topologies/mi300x-8.xml"

TestSuite(topo_file, .timeout = 10);

static struct ac_topo *load(const char *path)
{
    struct ac_topo *t = NULL;
    ncclResult_t res = ac_topo_load_file(path, &t);
    cr_assert_eq(res, ncclSuccess, "loading %s: %s", path, ac_last_error());
    return t;
}

static struct ac_topo *load_text(const char *text)
{
    struct ac_topo *t = NULL;
    ncclResult_t res = ac_topo_load_xml(text, strlen(text), "test", &t);
    cr_assert_eq(res, ncclSuccess, "%s", ac_last_error());
    return t;
}

static int count_links(const struct ac_topo *t, enum ac_topo_link_kind kind)
{
    int n = 0;
    for (int i = 0; i < t->nlinks; i++)
        n += t->links[i].kind == kind;
    return n;
}

static int count_nodes(const struct ac_topo *t, enum ac_topo_node_kind kind)
{
    int n = 0;
    for (int i = 0; i < t->nnodes; i++)
        n += t->nodes[i].kind == kind;
    return n;
}

Test(topo_file, dgx_h100_counts)
{
    struct ac_topo *t = load(DGX);
    cr_expect_eq(t->ngpus, 8);
    cr_expect_eq(t->nnics, 8);
    cr_expect_eq(t->nnuma, 2);
    cr_expect_eq(t->npackages, 2);
    /* 4 switches x (root port, upstream, 2 downstream ports, 2 NICs, 2 GPUs) */
    cr_expect_eq(count_nodes(t, AC_TOPO_NODE_PCI), 4 * 8);
    cr_expect_eq(count_nodes(t, AC_TOPO_NODE_NVSWITCH), 1);
    cr_expect_eq(count_links(t, AC_TOPO_LINK_NVLINK), 8); /* each GPU to the switch */
    cr_expect_eq(count_links(t, AC_TOPO_LINK_PCI), 4 * 8);
    cr_expect_eq(count_links(t, AC_TOPO_LINK_NET), 8);
    cr_expect_eq(count_links(t, AC_TOPO_LINK_SMP), 1);
    for (int i = 0; i < 8; i++) {
        const struct ac_topo_gpu *g = &t->gpus[i];
        cr_expect_eq(g->dev, i);
        cr_expect_eq(g->vendor, AC_TOPO_GPU_NVIDIA);
        cr_expect_eq(g->sm, 90);
        cr_expect_eq(g->numa, i / 4);
        cr_expect_eq(g->npeers, 7, "GPU %d reaches the 7 others through the NVSwitch", i);
        for (int p = 0; p < g->npeers; p++) {
            cr_expect_eq(g->peers[p].kind, AC_TOPO_LINK_NVLINK);
            cr_expect_eq(g->peers[p].count, 18);
            cr_expect_float_eq(g->peers[p].bw_gbs, 18 * 25.0, 1e-9);
        }
        const struct ac_topo_nic *n = &t->nics[i];
        cr_expect_float_eq(n->speed_gbps, 400.0, 1e-9);
        cr_expect(n->is_rdma);
        cr_expect_eq(n->numa, i / 4);
        cr_expect_eq(n->rail, i);
    }
    cr_expect_str_eq(t->nics[0].name, "mlx5_0");
    cr_expect_str_eq(t->nics[0].ifname, "ibp24s0");
    cr_expect_str_eq(t->nics[0].busid, "0000:18:00.0");
    cr_expect_str_eq(t->gpus[0].busid, "0000:1b:00.0");
    ac_topo_free(t);
}

Test(topo_file, mi300x_counts)
{
    struct ac_topo *t = load(MI300X);
    cr_expect_eq(t->ngpus, 8);
    cr_expect_eq(t->nnics, 8);
    cr_expect_eq(t->nnuma, 2);
    cr_expect_eq(count_links(t, AC_TOPO_LINK_XGMI), 8 * 7 / 2); /* a full mesh, one per pair */
    cr_expect_eq(count_links(t, AC_TOPO_LINK_NVLINK), 0);
    cr_expect_eq(count_nodes(t, AC_TOPO_NODE_NVSWITCH), 0);
    for (int i = 0; i < 8; i++) {
        const struct ac_topo_gpu *g = &t->gpus[i];
        cr_expect_eq(g->vendor, AC_TOPO_GPU_AMD);
        cr_expect_str_eq(g->gcn, "gfx942");
        cr_expect_eq(g->npeers, 7);
        for (int p = 0; p < g->npeers; p++) {
            cr_expect_eq(g->peers[p].kind, AC_TOPO_LINK_XGMI);
            cr_expect_eq(g->peers[p].count, 1);
            cr_expect_float_eq(g->peers[p].bw_gbs, 64.0, 1e-9);
            cr_expect_neq(g->peers[p].gpu, i);
        }
    }
    ac_topo_free(t);
}

static void expect_gpu_i_nic_i(const char *path)
{
    struct ac_topo *t = load(path);
    for (int i = 0; i < t->ngpus; i++) {
        int nic = -1;
        cr_assert_eq(ac_topo_pick_nic(t, i, t->ngpus, i, -1, NULL, &nic), ncclSuccess);
        cr_expect_eq(nic, i, "%s: GPU %d got NIC %d", path, i, nic);
        /* The rank numbering does not matter, the GPU does. */
        cr_assert_eq(ac_topo_pick_nic(t, 7 - i, 8, i, 0, NULL, &nic), ncclSuccess);
        cr_expect_eq(nic, i);
    }
    ac_topo_free(t);
}

Test(topo_file, dgx_gpu_i_nic_i)
{
    expect_gpu_i_nic_i(DGX);
}
Test(topo_file, mi300x_gpu_i_nic_i)
{
    expect_gpu_i_nic_i(MI300X);
}

static char *dump(const struct ac_topo *t)
{
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(ac_topo_to_xml(t, &text, &len), ncclSuccess);
    cr_assert_eq(strlen(text), len);
    return text;
}

static void expect_round_trip(const char *path)
{
    struct ac_topo *t = load(path), *u = NULL;
    char *first = dump(t);
    cr_assert_eq(ac_topo_load_xml(first, strlen(first), "dump", &u), ncclSuccess, "%s",
                 ac_last_error());
    char *second = dump(u);
    cr_expect_str_eq(first, second);
    cr_expect_eq(u->nnodes, t->nnodes);
    cr_expect_eq(u->nlinks, t->nlinks);
    /* The shipped files are canonical: the dump is the file without its leading comment. */
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char file[1 << 20];
    size_t n = fread(file, 1, sizeof(file) - 1, f);
    fclose(f);
    file[n] = '\0';
    const char *body = strstr(file, "<system");
    cr_assert_not_null(body);
    cr_expect_str_eq(body, first);
    free(first);
    free(second);
    ac_topo_free(t);
    ac_topo_free(u);
}

Test(topo_file, dgx_round_trip)
{
    expect_round_trip(DGX);
}
Test(topo_file, mi300x_round_trip)
{
    expect_round_trip(MI300X);
}

Test(topo_file, dump_file_and_load_file)
{
    char path[] = "/tmp/anyccl-topo-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct ac_topo *t = load(DGX);
    cr_assert_eq(ac_topo_dump_file(t, path), ncclSuccess);
    struct ac_topo *u = load(path);
    char *a = dump(t), *b = dump(u);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
    ac_topo_free(t);
    ac_topo_free(u);
    unlink(path);
}

Test(topo_file, missing_file)
{
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_file("/nonexistent/topo.xml", &t), ncclSystemError);
    cr_expect_null(t);
    cr_expect_neq(strstr(ac_last_error(), "/nonexistent/topo.xml"), NULL, "%s", ac_last_error());
}

Test(topo_file, nic_by_numa_and_rails)
{
    struct ac_topo *t = load(DGX);
    int nic;
    for (int r = 0; r < 4; r++) { /* no GPU, NUMA 1: its NICs 4..7 in rail order */
        cr_assert_eq(ac_topo_pick_nic(t, r, 4, -1, 1, NULL, &nic), ncclSuccess);
        cr_expect_eq(nic, 4 + r % 4);
    }
    for (int r = 0; r < 4; r++) { /* 4 ranks over 8 rails: every other rail */
        cr_assert_eq(ac_topo_pick_nic(t, r, 4, -1, -1, NULL, &nic), ncclSuccess);
        cr_expect_eq(nic, r * 8 / 4);
    }
    for (int r = 0; r < 16; r++) { /* more ranks than rails: round-robin */
        cr_assert_eq(ac_topo_pick_nic(t, r, 16, -1, -1, NULL, &nic), ncclSuccess);
        cr_expect_eq(nic, r % 8);
    }
    /* A NUMA node without NICs falls back to the rails. */
    cr_assert_eq(ac_topo_pick_nic(t, 3, 8, -1, 5, NULL, &nic), ncclSuccess);
    cr_expect_eq(nic, 3);
    ac_topo_free(t);
}

Test(topo_file, nic_filter)
{
    struct ac_topo *t = load(DGX);
    int nic;
    cr_assert_eq(ac_topo_pick_nic(t, 0, 8, 0, -1, "=mlx5_11", &nic), ncclSuccess);
    cr_expect_eq(nic, 7);
    /* Excluding GPU 0's own NIC leaves the one on the same top switch. */
    cr_assert_eq(ac_topo_pick_nic(t, 0, 8, 0, -1, "^mlx5_0", &nic), ncclSuccess);
    cr_expect_eq(nic, 1);
    /* Interface names match too. */
    cr_assert_eq(ac_topo_pick_nic(t, 0, 8, 7, -1, "ibp24s0", &nic), ncclSuccess);
    cr_expect_eq(nic, 0);
    /* Prefixes: mlx5_1 matches mlx5_10 and mlx5_11; GPU 6 sits next to mlx5_10. */
    cr_assert_eq(ac_topo_pick_nic(t, 0, 8, 6, -1, "mlx5_1", &nic), ncclSuccess);
    cr_expect_eq(nic, 6);
    nic = -1;
    cr_expect_eq(ac_topo_pick_nic(t, 0, 8, 0, -1, "=eth9", &nic), ncclInvalidUsage);
    cr_expect_eq(nic, -1);
    cr_expect_neq(strstr(ac_last_error(), "eth9"), NULL, "%s", ac_last_error());
    ac_topo_free(t);
}

Test(topo_file, nic_bad_arguments)
{
    struct ac_topo *t = load(DGX);
    int nic;
    cr_expect_eq(ac_topo_pick_nic(t, 8, 8, 0, -1, NULL, &nic), ncclInvalidArgument);
    cr_expect_eq(ac_topo_pick_nic(t, 0, 0, 0, -1, NULL, &nic), ncclInvalidArgument);
    cr_expect_eq(ac_topo_pick_nic(t, 0, 8, 8, -1, NULL, &nic), ncclInvalidArgument);
    cr_expect_eq(ac_topo_pick_nic(NULL, 0, 8, 0, -1, NULL, &nic), ncclInvalidArgument);
    ac_topo_free(t);
}

/* Two GPUs and two NICs under one switch, equally close: the GPUs take the NICs in turn. */
static const char two_by_two[] =
    "<system version=\"1\">\n"
    "  <cpu numaid=\"0\">\n"
    "    <pci busid=\"0000:01:00.0\" class=\"0x060400\">\n"
    "      <pci busid=\"0000:02:00.0\"><gpu dev=\"0\"/></pci>\n"
    "      <pci busid=\"0000:03:00.0\"><gpu dev=\"1\"/></pci>\n"
    "      <pci busid=\"0000:04:00.0\"><nic><net name=\"eth0\" dev=\"0\" speed=\"100000\"/>"
    "<net name=\"eth1\" dev=\"1\" speed=\"100000\"/></nic></pci>\n"
    "    </pci>\n"
    "  </cpu>\n"
    "</system>\n";

Test(topo_file, nic_ties_shared_in_gpu_order)
{
    struct ac_topo *t = load_text(two_by_two);
    int nic;
    cr_assert_eq(ac_topo_pick_nic(t, 0, 2, 0, -1, NULL, &nic), ncclSuccess);
    cr_expect_eq(nic, 0);
    cr_assert_eq(ac_topo_pick_nic(t, 1, 2, 1, -1, NULL, &nic), ncclSuccess);
    cr_expect_eq(nic, 1);
    /* One PCI function, two ports: both under 0000:04:00.0, 100 Gb/s each = 12.5 GB/s links. */
    cr_expect_str_eq(t->nics[1].busid, "0000:04:00.0");
    cr_expect_float_eq(t->nics[1].speed_gbps, 100.0, 1e-9);
    for (int i = 0; i < t->nlinks; i++) {
        if (t->links[i].kind == AC_TOPO_LINK_NET)
            cr_expect_float_eq(t->links[i].bw_gbs, 100.0 / 8, 1e-9);
    }
    /* Defaults: no rdma attribute and no RDMA driver name: sockets. */
    cr_expect_not(t->nics[0].is_rdma);
    cr_expect_eq(t->gpus[0].rank, -1);
    ac_topo_free(t);
}

Test(topo_file, no_nics)
{
    struct ac_topo *t = load_text("<system version=\"1\"><cpu numaid=\"0\"/></system>");
    int nic;
    cr_expect_eq(t->nnics, 0);
    cr_expect_eq(ac_topo_pick_nic(t, 0, 1, -1, -1, NULL, &nic), ncclSystemError);
    ac_topo_free(t);
}

Test(topo_file, pcie_bandwidth)
{
    cr_expect_float_eq(ac_topo_pcie_bw_gbs("32.0 GT/s PCIe", 16), 32.0 * 16 * 128 / 130 / 8, 1e-9);
    cr_expect_float_eq(ac_topo_pcie_bw_gbs("16 GT/s", 8), 16.0 * 8 * 128 / 130 / 8, 1e-9);
    cr_expect_float_eq(ac_topo_pcie_bw_gbs("5 GT/s", 8), 5.0 * 8 * 0.8 / 8, 1e-9);
    cr_expect_float_eq(ac_topo_pcie_bw_gbs("Unknown", 16), 0.0, 1e-9);
    cr_expect_float_eq(ac_topo_pcie_bw_gbs("8 GT/s", 0), 0.0, 1e-9);
    cr_expect_float_eq(ac_topo_pcie_bw_gbs(NULL, 16), 0.0, 1e-9);
}

/* Files dumped by NCCL carry elements and attributes we do not use: they are skipped. */
Test(topo_file, unknown_elements_skipped)
{
    struct ac_topo *t =
        load_text("<?xml version=\"1.0\"?>\n<!-- from NCCL -->\n<system version=\"1\">\n"
                  "  <cpu numaid=\"0\" familyid=\"6\" modelid=\"143\">\n"
                  "    <pci busid=\"0000:1b:00.0\" subsystem_vendor=\"0x10de\">\n"
                  "      <gpu dev=\"0\" sm=\"90\"><c2c bw=\"1\" count=\"1\"/></gpu>\n"
                  "    </pci>\n"
                  "    <nic><net name=\"mlx5_0\" dev=\"0\" speed=\"200000\" guid=\"0x1\"/></nic>\n"
                  "  </cpu>\n  <nvs/>\n</system>\n");
    cr_expect_eq(t->ngpus, 1);
    cr_expect_eq(t->nnics, 1);
    cr_expect(t->nics[0].is_rdma, "mlx5_* is an RDMA device by default");
    cr_expect_str_eq(t->nics[0].busid, "");
    ac_topo_free(t);
}

/* What NCCL and RCCL dumps look like: float latencies, short classes, unknown link speeds, explicit
 * end tags, nets without dev (numbered in file order), version 2. */
Test(topo_file, nccl_dump_style)
{
    struct ac_topo *t = load_text(
        "<system version=\"2\">\n"
        "  <cpu numaid=\"3\" affinity=\"00000000,ff000000\" arch=\"x86_64\" vendor=\"AMD\">\n"
        "    <pci busid=\"0000:42:00.0\" class=\"0x02\" link_speed=\"Unknown\" link_width=\"0\">\n"
        "      <nic>\n"
        "        <net name=\"mlx5_0\" port=\"1\" guid=\"12345678901234567890\" gdr=\"1\" "
        "latency=\"0.000000\" speed=\"200000\" maxconn=\"131072\"></net>\n"
        "        <net name=\"mlx5_1\" port=\"2\" latency=\"1.500000\" speed=\"200000\"></net>\n"
        "      </nic>\n"
        "    </pci>\n"
        "  </cpu>\n"
        "</system>\n");
    cr_expect_eq(t->nnics, 2);
    cr_expect_str_eq(t->nics[0].name, "mlx5_0");
    cr_expect_str_eq(t->nics[1].name, "mlx5_1");
    cr_expect_eq(t->nics[1].port, 2);
    cr_expect_eq(t->nics[0].numa, 3);
    cr_expect_float_eq(t->nics[1].latency_us, 1.5, 1e-12);
    cr_expect(t->nics[0].has_gdr);
    cr_expect_eq(t->nodes[t->nics[0].node - 0].kind, AC_TOPO_NODE_NIC);
    char *a = dump(t);
    cr_expect_neq(strstr(a, "latency=\"1.5\""), NULL, "%s", a);
    struct ac_topo *u = load_text(a);
    char *b = dump(u);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
    ac_topo_free(t);
    ac_topo_free(u);
}

/* HGX H200 as NCCL dumps it: each GPU reaches 4 NVSwitches (5 + 5 + 4 + 4 links); a virtual
 * machine's NUMA node is -1. Peers count the links both GPUs have to the switches they share. */
static const char four_switches[] =
    "<system version=\"1\">\n"
    "  <cpu numaid=\"-1\" arch=\"x86_64\" vendor=\"GenuineIntel\">\n"
    "    <pci busid=\"0000:05:00.0\" vendor=\"0x10de\"><gpu dev=\"0\" sm=\"90\">\n"
    "      <nvlink target=\"0000:a7:00.0\" count=\"5\" tclass=\"0x068000\"/>\n"
    "      <nvlink target=\"0000:a6:00.0\" count=\"5\" tclass=\"0x068000\"/>\n"
    "      <nvlink target=\"0000:a5:00.0\" count=\"4\" tclass=\"0x068000\"/>\n"
    "      <nvlink target=\"0000:a8:00.0\" count=\"4\" tclass=\"0x068000\"/>\n"
    "    </gpu></pci>\n"
    "    <pci busid=\"0000:06:00.0\" vendor=\"0x10de\"><gpu dev=\"1\" sm=\"90\">\n"
    "      <nvlink target=\"0000:a8:00.0\" count=\"4\" tclass=\"0x068000\"/>\n"
    "      <nvlink target=\"0000:a6:00.0\" count=\"5\" tclass=\"0x068000\"/>\n"
    "      <nvlink target=\"0000:a7:00.0\" count=\"5\" tclass=\"0x068000\"/>\n"
    "    </gpu></pci>\n"
    "  </cpu>\n"
    "</system>\n";

Test(topo_file, several_nvswitches)
{
    struct ac_topo *t = load_text(four_switches);
    cr_expect_eq(count_nodes(t, AC_TOPO_NODE_NVSWITCH), 4);
    cr_expect_eq(count_links(t, AC_TOPO_LINK_NVLINK), 4 + 3);
    cr_assert_eq(t->gpus[0].npeers, 1);
    cr_assert_eq(t->gpus[1].npeers, 1);
    /* GPU 1 lacks the switch a5: shared are 5 + 5 + 4 = 14 links. */
    cr_expect_eq(t->gpus[0].peers[0].count, 14);
    cr_expect_eq(t->gpus[1].peers[0].count, 14);
    cr_expect_float_eq(t->gpus[0].peers[0].bw_gbs, 14 * 25.0, 1e-9);
    cr_expect_eq(t->gpus[0].numa, -1);
    cr_expect_eq(t->nnuma, 1);
    char *a = dump(t);
    struct ac_topo *u = load_text(a);
    char *b = dump(u);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
    ac_topo_free(t);
    ac_topo_free(u);
}

Test(topo_file, cpu_numa)
{
    struct ac_topo *t = load(DGX);
    /* NUMA 0: CPUs 0-55 and their siblings 112-167; NUMA 1: 56-111 and 168-223. */
    static const int cpus[][2] = {{0, 0},   {55, 0},  {56, 1},   {111, 1}, {112, 0},    {167, 0},
                                  {168, 1}, {223, 1}, {224, -1}, {-1, -1}, {100000, -1}};
    for (size_t i = 0; i < sizeof(cpus) / sizeof(cpus[0]); i++)
        cr_expect_eq(ac_topo_cpu_numa(t, cpus[i][0]), cpus[i][1], "CPU %d", cpus[i][0]);
    ac_topo_free(t);
}
