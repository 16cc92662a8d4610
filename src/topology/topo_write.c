/* Writing a topology: the canonical XML (every attribute the reader knows, children in node order,
 * the ports of one PCI function grouped in one <nic>), which the reader turns back into the same
 * graph, and a human-readable summary. */
#include "topology/topo_internal.h"

#include "common/check.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *p;
    size_t len, cap;
    bool failed; /* out of memory: later writes are dropped */
};

static void put(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (int attempt = 0; attempt < 2 && !b->failed; attempt++) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, b->p != NULL ? b->cap - b->len : 0,
                          fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
        } else if (b->p != NULL && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        } else {
            size_t cap = (b->cap + (size_t)n + 1) * 2;
            char *p = realloc(b->p, cap);
            b->failed = p == NULL;
            b->p = p != NULL ? p : b->p;
            b->cap = p != NULL ? cap : b->cap;
        }
    }
}

static void put_attr(struct sbuf *b, const char *name, const char *value)
{
    put(b, " %s=\"", name);
    for (const char *c = value; *c != '\0'; c++) {
        switch (*c) {
        case '&':
            put(b, "&amp;");
            break;
        case '<':
            put(b, "&lt;");
            break;
        case '>':
            put(b, "&gt;");
            break;
        case '"':
            put(b, "&quot;");
            break;
        default:
            put(b, "%c", *c);
        }
    }
    put(b, "\"");
}

static void put_int(struct sbuf *b, const char *name, long long v)
{
    put(b, " %s=\"%lld\"", name, v);
}

static void put_hex(struct sbuf *b, const char *name, uint32_t v, int digits)
{
    put(b, " %s=\"0x%0*x\"", name, digits, v);
}

static void write_gpu(struct sbuf *b, const struct ac_topo_gpu *g, int indent)
{
    put(b, "%*s<gpu", indent, "");
    put_int(b, "dev", g->dev);
    put_int(b, "sm", g->sm);
    if (g->gcn[0] != '\0')
        put_attr(b, "gcn", g->gcn);
    put_int(b, "rank", g->rank);
    put_int(b, "gdr", g->has_gdr);
    put(b, g->nlinks > 0 ? ">\n" : "/>\n");
    for (int i = 0; i < g->nlinks; i++) {
        const struct ac_topo_gpu_link *l = &g->links[i];
        put(b, "%*s<%s", indent + 2, "", l->kind == AC_TOPO_LINK_XGMI ? "xgmi" : "nvlink");
        put_attr(b, "target", l->target);
        put_int(b, "count", l->count);
        put_hex(b, "tclass", l->tclass, 6);
        put(b, "/>\n");
    }
    if (g->nlinks > 0)
        put(b, "%*s</gpu>\n", indent, "");
}

static void write_net(struct sbuf *b, const struct ac_topo_nic *n, int dev, int indent)
{
    put(b, "%*s<net", indent, "");
    put_attr(b, "name", n->name);
    put_int(b, "dev", dev);
    put_int(b, "speed", llround(n->speed_gbps * 1000.0));
    put_int(b, "port", n->port);
    if (n->ifname[0] != '\0')
        put_attr(b, "if", n->ifname);
    put_int(b, "rail", n->rail);
    put_int(b, "rdma", n->is_rdma);
    put_int(b, "gdr", n->has_gdr);
    put(b, " latency=\"%g\"", n->latency_us);
    put(b, "/>\n");
}

static void write_children(struct sbuf *b, const struct ac_topo *t, int parent, int indent);

static void write_pci(struct sbuf *b, const struct ac_topo *t, int i, int indent)
{
    const struct ac_topo_node *n = &t->nodes[i];
    bool has_children = false;
    for (int j = i + 1; j < t->nnodes && !has_children; j++)
        has_children = t->nodes[j].parent == i;
    put(b, "%*s<pci", indent, "");
    put_attr(b, "busid", n->busid);
    put_hex(b, "class", n->pci_class, 6);
    put_hex(b, "vendor", n->pci_vendor, 4);
    put_hex(b, "device", n->pci_device, 4);
    put_attr(b, "link_speed", n->link_speed);
    put_int(b, "link_width", n->link_width);
    put(b, has_children ? ">\n" : "/>\n");
    if (has_children) {
        write_children(b, t, i, indent + 2);
        put(b, "%*s</pci>\n", indent, "");
    }
}

/* All NIC ports under parent, in one <nic>, written where the first one is. */
static void write_nics(struct sbuf *b, const struct ac_topo *t, int parent, int indent)
{
    put(b, "%*s<nic>\n", indent, "");
    for (int j = parent + 1; j < t->nnodes; j++) {
        const struct ac_topo_node *n = &t->nodes[j];
        if (n->parent == parent && n->kind == AC_TOPO_NODE_NIC)
            write_net(b, &t->nics[n->id], n->id, indent + 2);
    }
    put(b, "%*s</nic>\n", indent, "");
}

static void write_children(struct sbuf *b, const struct ac_topo *t, int parent, int indent)
{
    bool nics_done = false;
    for (int j = parent + 1; j < t->nnodes; j++) {
        const struct ac_topo_node *n = &t->nodes[j];
        if (n->parent != parent)
            continue;
        if (n->kind == AC_TOPO_NODE_PCI)
            write_pci(b, t, j, indent);
        else if (n->kind == AC_TOPO_NODE_GPU)
            write_gpu(b, &t->gpus[n->id], indent);
        else if (n->kind == AC_TOPO_NODE_NIC && !nics_done) {
            write_nics(b, t, parent, indent);
            nics_done = true;
        }
    }
}

static void write_cpu(struct sbuf *b, const struct ac_topo *t, int i)
{
    const struct ac_topo_node *n = &t->nodes[i];
    put(b, "  <cpu");
    put_int(b, "numaid", n->id);
    put_int(b, "package", n->package);
    put_attr(b, "affinity", n->affinity);
    put_attr(b, "arch", n->arch);
    put_attr(b, "vendor", n->vendor);
    put_int(b, "cores", n->ncores);
    put(b, ">\n");
    write_children(b, t, i, 4);
    put(b, "  </cpu>\n");
}

ncclResult_t ac_topo_to_xml(const struct ac_topo *t, char **text_out, size_t *len_out)
{
    struct sbuf b = {0};
    if (t == NULL || text_out == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_to_xml: topology or text_out is NULL");
    put(&b, "<system version=\"1\">\n");
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_NUMA)
            write_cpu(&b, t, i);
    }
    put(&b, "</system>\n");
    if (b.failed) {
        free(b.p);
        return AC_FAIL(ncclSystemError, "out of memory writing the topology of %s as XML",
                       t->source);
    }
    *text_out = b.p;
    if (len_out != NULL)
        *len_out = b.len;
    return ncclSuccess;
}

ncclResult_t ac_topo_dump_file(const struct ac_topo *t, const char *path)
{
    char *text;
    size_t len;
    if (path == NULL)
        return AC_FAIL(ncclInvalidArgument, "ac_topo_dump_file: path is NULL");
    AC_CHECK(ac_topo_to_xml(t, &text, &len));
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        ncclResult_t res = AC_FAIL(ncclSystemError,
                                   "cannot create topology dump file %s (NCCL_TOPO_DUMP_FILE): %s",
                                   path, strerror(errno));
        free(text);
        return res;
    }
    size_t written = fwrite(text, 1, len, f);
    int close_res = fclose(f);
    free(text);
    if (written != len || close_res != 0)
        return AC_FAIL(ncclSystemError, "cannot write topology dump file %s: %s", path,
                       strerror(errno));
    AC_INFO(AC_SUB_GRAPH, "topology written to %s", path);
    return ncclSuccess;
}

const char *ac_topo_node_kind_name(enum ac_topo_node_kind kind)
{
    static const char *const names[AC_TOPO_NODE_COUNT] = {"machine", "package", "numa",    "pci",
                                                          "nic",     "gpu",     "nvswitch"};
    return (int)kind >= 0 && kind < AC_TOPO_NODE_COUNT ? names[kind] : "?";
}

const char *ac_topo_link_kind_name(enum ac_topo_link_kind kind)
{
    static const char *const names[AC_TOPO_LINK_COUNT] = {"PCI", "NVLink", "xGMI", "SMP", "NET"};
    return (int)kind >= 0 && kind < AC_TOPO_LINK_COUNT ? names[kind] : "?";
}

static void print_node(const struct ac_topo *t, int i, FILE *out)
{
    const struct ac_topo_node *n = &t->nodes[i];
    fprintf(out, "  %*s%s", 2 * n->depth, "", ac_topo_node_kind_name(n->kind));
    switch (n->kind) {
    case AC_TOPO_NODE_PACKAGE:
        fprintf(out, " %d\n", n->id);
        break;
    case AC_TOPO_NODE_NUMA:
        fprintf(out, " %d: %d cores, cpus %s, %s %s\n", n->id, n->ncores, n->affinity, n->arch,
                n->vendor);
        break;
    case AC_TOPO_NODE_PCI:
        fprintf(out, " %s class 0x%06x, %s x%d (%.1f GB/s)\n", n->busid, n->pci_class,
                n->link_speed[0] ? n->link_speed : "?", n->link_width,
                ac_topo_pcie_bw_gbs(n->link_speed, n->link_width));
        break;
    case AC_TOPO_NODE_NIC: {
        const struct ac_topo_nic *c = &t->nics[n->id];
        fprintf(out, " %d: %s%s%s, %.1f Gb/s, %s, port %d, rail %d\n", n->id, c->name,
                c->ifname[0] ? " if " : "", c->ifname, c->speed_gbps,
                c->is_rdma ? "RDMA" : "sockets", c->port, c->rail);
        break;
    }
    case AC_TOPO_NODE_GPU:
        fprintf(out, " %d: sm %d%s%s\n", n->id, t->gpus[n->id].sm, t->gpus[n->id].gcn[0] ? " " : "",
                t->gpus[n->id].gcn);
        break;
    default:
        fprintf(out, "%s%s\n", n->busid[0] ? " " : "", n->busid);
    }
    for (int j = i + 1; j < t->nnodes; j++) {
        if (t->nodes[j].parent == i)
            print_node(t, j, out);
    }
}

static void print_gpu_peers(const struct ac_topo *t, FILE *out)
{
    for (int i = 0; i < t->ngpus; i++) {
        const struct ac_topo_gpu *g = &t->gpus[i];
        fprintf(out, "  gpu %d (%s, NUMA %d) peers:", i, g->busid, g->numa);
        for (int p = 0; p < g->npeers; p++)
            fprintf(out, " %d:%s x%d %.0f GB/s", g->peers[p].gpu,
                    ac_topo_link_kind_name(g->peers[p].kind), g->peers[p].count,
                    g->peers[p].bw_gbs);
        fprintf(out, "%s\n", g->npeers == 0 ? " none" : "");
    }
}

void ac_topo_print(const struct ac_topo *t, FILE *out)
{
    fprintf(out,
            "topology from %s: %d packages, %d NUMA nodes, %d GPUs, %d NICs, %d nodes, "
            "%d links\n",
            t->source, t->npackages, t->nnuma, t->ngpus, t->nnics, t->nnodes, t->nlinks);
    print_node(t, 0, out);
    for (int i = 1; i < t->nnodes; i++) {
        if (t->nodes[i].parent < 0)
            print_node(t, i, out);
    }
    print_gpu_peers(t, out);
    int counts[AC_TOPO_LINK_COUNT] = {0};
    for (int i = 0; i < t->nlinks; i++)
        counts[t->links[i].kind]++;
    fprintf(out, "  links:");
    for (int k = 0; k < AC_TOPO_LINK_COUNT; k++)
        fprintf(out, " %s %d", ac_topo_link_kind_name(k), counts[k]);
    fprintf(out, "\n");
}
