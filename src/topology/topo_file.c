/* Topology files: NCCL's XML topology format (docs/topology.md) read into struct ac_topo. Every
 * attribute is checked (type, range, length) and a bad one is named with its line; elements this
 * reader does not know are skipped, so that files dumped by NCCL load. */
#include "topology/topo_internal.h"
#include "topology/topo_xml.h"

#include "common/check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct reader {
    struct ac_topo *t;
    const struct ac_topo_xml_doc *doc;
    const char *what;
};

#define READ_FAIL(r, e, fmt, ...)                                                                  \
    AC_FAIL(ncclInvalidUsage, "topology file %s, line %d, <%s>: " fmt, (r)->what, (e)->line,       \
            (e)->name, __VA_ARGS__)

static ncclResult_t attr_int(const struct reader *r, const struct ac_topo_xml_elem *e,
                             const char *name, bool required, long long min, long long max,
                             long long def, long long *out)
{
    const char *v = ac_topo_xml_attr(e, name);
    char *end;
    if (v == NULL) {
        if (required)
            return READ_FAIL(r, e, "attribute %s is missing", name);
        *out = def;
        return ncclSuccess;
    }
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0 || x < min || x > max)
        return READ_FAIL(r, e, "%s=\"%s\" is not an integer from %lld to %lld", name, v, min, max);
    *out = x;
    return ncclSuccess;
}

static ncclResult_t attr_bool(const struct reader *r, const struct ac_topo_xml_elem *e,
                              const char *name, bool def, bool *out)
{
    long long x;
    AC_CHECK(attr_int(r, e, name, false, 0, 1, def, &x));
    *out = x != 0;
    return ncclSuccess;
}

static ncclResult_t attr_double(const struct reader *r, const struct ac_topo_xml_elem *e,
                                const char *name, double max, double *out)
{
    const char *v = ac_topo_xml_attr(e, name);
    char *end;
    *out = 0.0;
    if (v == NULL)
        return ncclSuccess;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || !(x >= 0.0 && x <= max))
        return READ_FAIL(r, e, "%s=\"%s\" is not a number from 0 to %g", name, v, max);
    *out = x;
    return ncclSuccess;
}

/* "0x060400" or "060400": at most 8 hex digits. */
static ncclResult_t attr_hex(const struct reader *r, const struct ac_topo_xml_elem *e,
                             const char *name, uint32_t *out)
{
    const char *v = ac_topo_xml_attr(e, name);
    *out = 0;
    if (v == NULL)
        return ncclSuccess;
    const char *p = strncasecmp(v, "0x", 2) == 0 ? v + 2 : v;
    size_t n = strlen(p);
    if (n == 0 || n > 8 || strspn(p, "0123456789abcdefABCDEF") != n)
        return READ_FAIL(r, e, "%s=\"%s\" is not a hexadecimal number of at most 8 digits", name,
                         v);
    *out = (uint32_t)strtoul(p, NULL, 16);
    return ncclSuccess;
}

static ncclResult_t attr_str(const struct reader *r, const struct ac_topo_xml_elem *e,
                             const char *name, bool required, char *buf, size_t cap)
{
    const char *v = ac_topo_xml_attr(e, name);
    buf[0] = '\0';
    if (v == NULL || (required && v[0] == '\0')) {
        if (required)
            return READ_FAIL(r, e, "attribute %s is missing or empty", name);
        return ncclSuccess;
    }
    if (strlen(v) >= cap)
        return READ_FAIL(r, e, "%s=\"%.32s...\" is longer than %zu characters", name, v, cap - 1);
    memcpy(buf, v, strlen(v) + 1);
    return ncclSuccess;
}

static const struct ac_topo_xml_elem *elem(const struct reader *r, int i)
{
    return i >= 0 ? &r->doc->elems[i] : NULL;
}

static void skip_unknown(const struct reader *r, const struct ac_topo_xml_elem *e,
                         const char *inside)
{
    AC_INFO(AC_SUB_GRAPH, "topology file %s, line %d: <%s> inside <%s> is not used; skipped",
            r->what, e->line, e->name, inside);
}

static ncclResult_t read_gpu_link(const struct reader *r, const struct ac_topo_xml_elem *e,
                                  struct ac_topo_gpu *g)
{
    long long count;
    if (g->nlinks == AC_TOPO_MAX_GPU_LINKS)
        return READ_FAIL(r, e, "GPU dev=%d has more than %d link elements", g->dev,
                         AC_TOPO_MAX_GPU_LINKS);
    struct ac_topo_gpu_link *l = &g->links[g->nlinks];
    l->kind = strcmp(e->name, "xgmi") == 0 ? AC_TOPO_LINK_XGMI : AC_TOPO_LINK_NVLINK;
    AC_CHECK(attr_str(r, e, "target", true, l->target, sizeof(l->target)));
    AC_CHECK(attr_int(r, e, "count", false, 1, 64, 1, &count));
    AC_CHECK(attr_hex(r, e, "tclass", &l->tclass));
    l->count = (int)count;
    g->nlinks++;
    return ncclSuccess;
}

static enum ac_topo_gpu_vendor gpu_vendor(const struct ac_topo_node *pci,
                                          const struct ac_topo_gpu *g)
{
    if (pci->pci_vendor == 0x10de)
        return AC_TOPO_GPU_NVIDIA;
    if (pci->pci_vendor == 0x1002 || g->gcn[0] != '\0')
        return AC_TOPO_GPU_AMD;
    if (g->nlinks > 0)
        return g->links[0].kind == AC_TOPO_LINK_XGMI ? AC_TOPO_GPU_AMD : AC_TOPO_GPU_NVIDIA;
    return AC_TOPO_GPU_OTHER;
}

static ncclResult_t read_gpu(const struct reader *r, const struct ac_topo_xml_elem *e, int parent)
{
    struct ac_topo *t = r->t;
    long long dev, sm, rank;
    if (t->nodes[parent].kind != AC_TOPO_NODE_PCI)
        return READ_FAIL(r, e, "%s", "a <gpu> must be inside the <pci> of its device");
    AC_CHECK(attr_int(r, e, "dev", true, 0, AC_TOPO_MAX_GPUS - 1, 0, &dev));
    struct ac_topo_gpu *g = &t->gpus[dev];
    if (g->node >= 0)
        return READ_FAIL(r, e, "GPU dev=%lld appears twice", dev);
    memset(g, 0, sizeof(*g));
    g->dev = (int)dev;
    AC_CHECK(attr_int(r, e, "sm", false, 0, 100000, 0, &sm));
    AC_CHECK(attr_int(r, e, "rank", false, -1, INT32_MAX, -1, &rank));
    AC_CHECK(attr_str(r, e, "gcn", false, g->gcn, sizeof(g->gcn)));
    AC_CHECK(attr_bool(r, e, "gdr", false, &g->has_gdr));
    g->sm = (int)sm;
    g->rank = (int)rank;
    memcpy(g->busid, t->nodes[parent].busid, sizeof(g->busid));
    for (const struct ac_topo_xml_elem *c = elem(r, e->first_child); c;
         c = elem(r, c->next_sibling)) {
        if (strcmp(c->name, "nvlink") == 0 || strcmp(c->name, "xgmi") == 0)
            AC_CHECK(read_gpu_link(r, c, g));
        else
            skip_unknown(r, c, "gpu");
    }
    g->vendor = gpu_vendor(&t->nodes[parent], g);
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_GPU, parent, &g->node));
    t->nodes[g->node].id = (int)dev;
    memcpy(t->nodes[g->node].busid, g->busid, sizeof(g->busid));
    if (dev + 1 > t->ngpus)
        t->ngpus = (int)dev + 1;
    return ncclSuccess;
}

/* Without an rdma attribute: RDMA when the name is not the interface's, or is an RDMA driver's. */
static bool default_rdma(const char *name, const char *ifname)
{
    static const char *const prefixes[] = {"mlx",  "bnxt_re", "irdma", "efa", "ionic", "erdma",
                                           "qedr", "hfi",     "rxe",   "siw", "hns",   "cxgb"};
    if (ifname[0] != '\0')
        return strcmp(name, ifname) != 0;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    }
    return false;
}

/* NCCL numbers ports in file order when dev is absent: the lowest unused number. */
static int next_free_nic(const struct ac_topo *t)
{
    int dev = 0;
    while (dev < AC_TOPO_MAX_NICS && t->nics[dev].node >= 0)
        dev++;
    return dev;
}

static ncclResult_t read_net(const struct reader *r, const struct ac_topo_xml_elem *e, int parent)
{
    struct ac_topo *t = r->t;
    long long dev, speed, port, rail;
    AC_CHECK(attr_int(r, e, "dev", false, 0, AC_TOPO_MAX_NICS - 1, next_free_nic(t), &dev));
    if (dev == AC_TOPO_MAX_NICS)
        return READ_FAIL(r, e, "more than %d NICs", AC_TOPO_MAX_NICS);
    struct ac_topo_nic *n = &t->nics[dev];
    if (n->node >= 0)
        return READ_FAIL(r, e, "NIC dev=%lld appears twice", dev);
    memset(n, 0, sizeof(*n));
    n->node = -1;
    AC_CHECK(attr_str(r, e, "name", true, n->name, sizeof(n->name)));
    AC_CHECK(attr_str(r, e, "if", false, n->ifname, sizeof(n->ifname)));
    AC_CHECK(attr_int(r, e, "speed", false, 0, 100000000, 0, &speed));
    AC_CHECK(attr_int(r, e, "port", false, 0, 255, 1, &port));
    AC_CHECK(attr_int(r, e, "rail", false, -1, AC_TOPO_MAX_NICS - 1, -1, &rail));
    AC_CHECK(attr_double(r, e, "latency", 1e6, &n->latency_us));
    AC_CHECK(attr_bool(r, e, "rdma", default_rdma(n->name, n->ifname), &n->is_rdma));
    AC_CHECK(attr_bool(r, e, "gdr", false, &n->has_gdr));
    n->speed_gbps = (double)speed / 1000.0;
    n->port = (int)port;
    n->rail = (int)rail;
    if (t->nodes[parent].kind == AC_TOPO_NODE_PCI)
        memcpy(n->busid, t->nodes[parent].busid, sizeof(n->busid));
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_NIC, parent, &n->node));
    t->nodes[n->node].id = (int)dev;
    memcpy(t->nodes[n->node].busid, n->busid, sizeof(n->busid));
    AC_CHECK(ac_topo_add_link(t, parent, n->node, AC_TOPO_LINK_NET, 1, n->speed_gbps / 8.0,
                              n->latency_us > 0 ? n->latency_us : AC_TOPO_NET_DEFAULT_LAT_US));
    if (dev + 1 > t->nnics)
        t->nnics = (int)dev + 1;
    return ncclSuccess;
}

static ncclResult_t read_nic(const struct reader *r, const struct ac_topo_xml_elem *e, int parent)
{
    for (const struct ac_topo_xml_elem *c = elem(r, e->first_child); c;
         c = elem(r, c->next_sibling)) {
        if (strcmp(c->name, "net") == 0)
            AC_CHECK(read_net(r, c, parent));
        else
            skip_unknown(r, c, "nic");
    }
    return ncclSuccess;
}

static ncclResult_t read_pci(const struct reader *r, const struct ac_topo_xml_elem *e, int parent)
{
    struct ac_topo *t = r->t;
    char busid[AC_TOPO_BUSID_MAX];
    long long width;
    int i;
    AC_CHECK(attr_str(r, e, "busid", true, busid, sizeof(busid)));
    if (ac_topo_find_pci(t, busid) >= 0)
        return READ_FAIL(r, e, "busid=\"%s\" appears twice", busid);
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_PCI, parent, &i));
    struct ac_topo_node *n = &t->nodes[i];
    memcpy(n->busid, busid, sizeof(busid));
    AC_CHECK(attr_hex(r, e, "class", &n->pci_class));
    AC_CHECK(attr_hex(r, e, "vendor", &n->pci_vendor));
    AC_CHECK(attr_hex(r, e, "device", &n->pci_device));
    AC_CHECK(attr_str(r, e, "link_speed", false, n->link_speed, sizeof(n->link_speed)));
    AC_CHECK(attr_int(r, e, "link_width", false, 0, 64, 0, &width));
    n->link_width = (int)width;
    AC_CHECK(ac_topo_add_link(t, parent, i, AC_TOPO_LINK_PCI, 1,
                              ac_topo_pcie_bw_gbs(n->link_speed, n->link_width),
                              AC_TOPO_PCI_LAT_US));
    for (const struct ac_topo_xml_elem *c = elem(r, e->first_child); c;
         c = elem(r, c->next_sibling)) {
        if (strcmp(c->name, "pci") == 0)
            AC_CHECK(read_pci(r, c, i));
        else if (strcmp(c->name, "gpu") == 0)
            AC_CHECK(read_gpu(r, c, i));
        else if (strcmp(c->name, "nic") == 0)
            AC_CHECK(read_nic(r, c, i));
        else
            skip_unknown(r, c, "pci");
    }
    return ncclSuccess;
}

static ncclResult_t read_cpu(const struct reader *r, const struct ac_topo_xml_elem *e)
{
    struct ac_topo *t = r->t;
    long long numa, package, cores;
    int pkg, i;
    /* NCCL writes numaid="-1" where the kernel does not know (virtual machines). */
    AC_CHECK(attr_int(r, e, "numaid", true, -1, 4095, 0, &numa));
    AC_CHECK(attr_int(r, e, "package", false, -1, 4095, numa, &package));
    AC_CHECK(attr_int(r, e, "cores", false, 0, 1 << 20, 0, &cores));
    if (ac_topo_find_numa(t, (int)numa) >= 0)
        return READ_FAIL(r, e, "numaid=\"%lld\" appears twice", numa);
    AC_CHECK(ac_topo_get_package(t, (int)package, &pkg));
    AC_CHECK(ac_topo_add_node(t, AC_TOPO_NODE_NUMA, pkg, &i));
    struct ac_topo_node *n = &t->nodes[i];
    n->id = (int)numa;
    n->package = (int)package;
    n->ncores = (int)cores;
    AC_CHECK(attr_str(r, e, "affinity", false, n->affinity, sizeof(n->affinity)));
    AC_CHECK(attr_str(r, e, "arch", false, n->arch, sizeof(n->arch)));
    AC_CHECK(attr_str(r, e, "vendor", false, n->vendor, sizeof(n->vendor)));
    for (const struct ac_topo_xml_elem *c = elem(r, e->first_child); c;
         c = elem(r, c->next_sibling)) {
        if (strcmp(c->name, "pci") == 0)
            AC_CHECK(read_pci(r, c, i));
        else if (strcmp(c->name, "nic") == 0)
            AC_CHECK(read_nic(r, c, i));
        else if (strcmp(c->name, "gpu") == 0)
            AC_CHECK(read_gpu(r, c, i)); /* refused with a message: it needs its <pci> */
        else
            skip_unknown(r, c, "cpu");
    }
    return ncclSuccess;
}

static ncclResult_t read_system(const struct reader *r)
{
    const struct ac_topo_xml_elem *root = elem(r, 0);
    long long version;
    if (strcmp(root->name, "system") != 0)
        return READ_FAIL(r, root, "%s", "the top-level element must be <system version=\"1\">");
    AC_CHECK(attr_int(r, root, "version", false, 1, 1000, 1, &version));
    for (const struct ac_topo_xml_elem *c = elem(r, root->first_child); c;
         c = elem(r, c->next_sibling)) {
        if (strcmp(c->name, "cpu") == 0)
            AC_CHECK(read_cpu(r, c));
        else
            skip_unknown(r, c, "system");
    }
    if (r->t->nnodes == 1)
        return READ_FAIL(r, root, "%s",
                         "no <cpu numaid=...> element: a topology needs at least "
                         "one NUMA node");
    return ncclSuccess;
}

ncclResult_t ac_topo_load_xml(const char *text, size_t len, const char *what, struct ac_topo **out)
{
    struct ac_topo_xml_doc doc;
    struct ac_topo *t = NULL;
    ncclResult_t res;
    if (out == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_load_xml: out is NULL");
    what = what != NULL ? what : "(memory)";
    AC_CHECK(ac_topo_xml_parse(text, len, what, &doc));
    AC_CHECK_GOTO(ac_topo_new(what, &t), res, free_doc);
    struct reader r = {.t = t, .doc = &doc, .what = what};
    AC_CHECK_GOTO(read_system(&r), res, free_topo);
    AC_CHECK_GOTO(ac_topo_finish(t, what), res, free_topo);
    ac_topo_xml_free(&doc);
    *out = t;
    return ncclSuccess;
free_topo:
    free(t);
free_doc:
    ac_topo_xml_free(&doc);
    return res;
}

ncclResult_t ac_topo_load_file(const char *path, struct ac_topo **out)
{
    char what[512];
    if (path == NULL || out == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_load_file: path or out is NULL");
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return AC_FAIL(ncclSystemError, "cannot open topology file %s (NCCL_TOPO_FILE): %s", path,
                       strerror(errno));
    char *buf = malloc(AC_TOPO_XML_MAX_BYTES + 1);
    size_t len = buf != NULL ? fread(buf, 1, AC_TOPO_XML_MAX_BYTES + 1, f) : 0;
    bool failed = buf == NULL || ferror(f);
    fclose(f);
    ncclResult_t res;
    if (failed)
        res = AC_FAIL(ncclSystemError, "cannot read topology file %s", path);
    else {
        snprintf(what, sizeof(what), "%s", path);
        res = ac_topo_load_xml(buf, len, what, out);
    }
    free(buf);
    return res;
}

double ac_topo_pcie_bw_gbs(const char *link_speed, int link_width)
{
    char *end;
    if (link_speed == NULL || link_width <= 0)
        return 0.0;
    double gts = strtod(link_speed, &end);
    if (end == link_speed || !(gts > 0.0) || gts > 1000.0)
        return 0.0;
    double encoding = gts >= 8.0 ? 128.0 / 130.0 : 0.8;
    return gts * link_width * encoding / 8.0;
}
