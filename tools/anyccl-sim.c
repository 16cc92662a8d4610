/* anyccl-sim: predicts collective times on a cluster of N nodes like the one a topology file
 * describes, with the library's own schedule builder (src/collectives/graph.c) and cost model
 * (src/collectives/tuner.c). Prints, per size, each algorithm's time, algbw and busbw (nccl-tests'
 * definitions) and the one the tuner picks. */
#include "collectives/tuner.h"
#include "common/check.h"
#include "topology/topo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_NODES 16384

struct options {
    const char *topo_file;
    int nnodes, ppn, nrails;
    enum ac_coll colls[AC_COLL_COUNT];
    int ncolls;
    double min_bytes, max_bytes, factor;
    double nic_gbit, net_gbs, net_hop_us, intra_gbs, intra_hop_us, burst;
    bool is_socket; /* the library's socket transport ceiling */
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: anyccl-sim --nodes N [--topo FILE] [--op OP] (--bytes SIZE | -b MIN -e MAX "
        "[-f FACTOR])\n"
        "  --topo FILE     NCCL-format topology of one node (topologies/dgx-h100.xml);\n"
        "                  default: this machine (NCCL_TOPO_FILE or discovery)\n"
        "  --nodes N       1 to %d nodes\n"
        "  --op OP         allreduce (default), allgather, reducescatter, broadcast, reduce,\n"
        "                  alltoall, gather, scatter, or all\n"
        "  --bytes SIZE    one size, nccl-tests' meaning (allgather: the whole output);\n"
        "                  suffixes K, M, G (powers of 1024)\n"
        "  -b/--min SIZE, -e/--max SIZE, -f/--factor F   a range, as nccl-tests (default f 2)\n"
        "  --ppn N         ranks per node (default: GPUs of the topology, else 1)\n"
        "  --rails N       NICs per node in use (default: min(ppn, NICs of the topology))\n"
        "  --nic-gbit G    NIC line rate in Gb/s (default: the topology's slowest NIC)\n"
        "  --net-gbs G     GB/s per NIC and direction (default: line rate x %.2f)\n"
        "  --hop-us U      per-step latency between nodes; --intra-gbs G, --intra-hop-us U\n"
        "  --socket        cap the network as the library's socket transport (calibrated)\n"
        "  --burst SIZE    the links are tc-capped with this token bucket (tbf burst): a link\n"
        "                  that waited for data passes SIZE at once (the multi-node bed: 256K)\n",
        MAX_NODES, AC_TUNER_NET_EFFICIENCY);
}

static bool parse_size(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (errno || end == s || *end != '\0' || v < 0)
        return false;
    *out = v * mult;
    return true;
}

static const enum ac_coll sim_colls[] = {
    AC_COLL_ALLREDUCE, AC_COLL_ALLGATHER, AC_COLL_REDUCESCATTER, AC_COLL_BROADCAST,
    AC_COLL_REDUCE,    AC_COLL_ALLTOALL,  AC_COLL_GATHER,        AC_COLL_SCATTER};
#define NSIM (int)(sizeof(sim_colls) / sizeof(sim_colls[0]))

static bool parse_op(const char *s, struct options *o)
{
    o->ncolls = 0;
    for (int i = 0; i < NSIM; i++)
        if (strcasecmp(s, "all") == 0 || strcasecmp(s, ac_coll_name(sim_colls[i])) == 0)
            o->colls[o->ncolls++] = sim_colls[i];
    return o->ncolls > 0;
}

static bool parse_double(const char *s, double lo, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < lo)
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, has_value = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--socket") == 0) {
            o->is_socket = true;
            has_value = false;
        } else if (v == NULL) {
            ok = false;
        } else if (strcmp(a, "--topo") == 0) {
            o->topo_file = v;
        } else if (strcmp(a, "--nodes") == 0) {
            o->nnodes = atoi(v);
            ok = o->nnodes >= 1 && o->nnodes <= MAX_NODES;
        } else if (strcmp(a, "--ppn") == 0) {
            o->ppn = atoi(v);
            ok = o->ppn >= 1 && o->ppn <= 64;
        } else if (strcmp(a, "--rails") == 0) {
            o->nrails = atoi(v);
            ok = o->nrails >= 1 && o->nrails <= 64;
        } else if (strcmp(a, "--op") == 0) {
            ok = parse_op(v, o);
        } else if (strcmp(a, "--bytes") == 0) {
            ok = parse_size(v, &o->min_bytes);
            o->max_bytes = o->min_bytes;
        } else if (strcmp(a, "-b") == 0 || strcmp(a, "--min") == 0) {
            ok = parse_size(v, &o->min_bytes);
        } else if (strcmp(a, "-e") == 0 || strcmp(a, "--max") == 0) {
            ok = parse_size(v, &o->max_bytes);
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--factor") == 0) {
            ok = parse_double(v, 1.000001, &o->factor);
        } else if (strcmp(a, "--nic-gbit") == 0) {
            ok = parse_double(v, 1e-6, &o->nic_gbit);
        } else if (strcmp(a, "--net-gbs") == 0) {
            ok = parse_double(v, 1e-9, &o->net_gbs);
        } else if (strcmp(a, "--hop-us") == 0) {
            ok = parse_double(v, 0, &o->net_hop_us);
        } else if (strcmp(a, "--intra-gbs") == 0) {
            ok = parse_double(v, 1e-9, &o->intra_gbs);
        } else if (strcmp(a, "--burst") == 0) {
            ok = parse_size(v, &o->burst);
        } else if (strcmp(a, "--intra-hop-us") == 0) {
            ok = parse_double(v, 0, &o->intra_hop_us);
        } else {
            fprintf(stderr, "anyccl-sim: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "anyccl-sim: bad or missing value for %s%s%s\n", a, v ? ": " : "",
                    v && has_value ? v : "");
            return 2;
        }
        i += has_value;
    }
    if (o->nnodes == 0 || o->min_bytes <= 0 || o->max_bytes < o->min_bytes) {
        fprintf(stderr, "anyccl-sim: --nodes and --bytes (or -b <= -e) are needed\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Defaults from the topology: ranks per node, rails, NIC speed, GPU link bandwidth. */
static int apply_topo(struct options *o, struct ac_tuner_params *p, struct ac_layout *l)
{
    struct ac_topo *t = NULL;
    ncclResult_t res = o->topo_file ? ac_topo_load_file(o->topo_file, &t) : ac_topo_get(&t);
    if (res != ncclSuccess) {
        fprintf(stderr, "anyccl-sim: %s\n", ac_last_error());
        return 1;
    }
    if (o->ppn == 0)
        o->ppn = t->ngpus > 0 ? t->ngpus : 1;
    if (o->nrails == 0)
        o->nrails = t->nnics == 0 ? 1 : t->nnics < o->ppn ? t->nnics : o->ppn;
    double slowest = 0;
    for (int i = 0; i < t->nnics; i++)
        if (slowest == 0 || t->nics[i].speed_gbps < slowest)
            slowest = t->nics[i].speed_gbps;
    if (o->nic_gbit == 0)
        o->nic_gbit = slowest > 0 ? slowest : 10.0;
    double gpu_gbs = 0;
    for (int i = 0; t->ngpus > 0 && i < t->gpus[0].npeers; i++)
        if (gpu_gbs == 0 || t->gpus[0].peers[i].bw_gbs < gpu_gbs)
            gpu_gbs = t->gpus[0].peers[i].bw_gbs;
    l->nic_gbit = o->nic_gbit;
    l->nrails = o->nrails;
    ac_tuner_params_for(l, p); /* calibrated defaults (and the socket ceiling) */
    if (!o->is_socket)
        p->net_gbs = o->nic_gbit / 8.0 * AC_TUNER_NET_EFFICIENCY;
    if (gpu_gbs > 0)
        p->intra_gbs = gpu_gbs;
    printf("# topology %s: %d GPU(s), %d NIC(s), slowest NIC %.0f Gb/s\n", t->source, t->ngpus,
           t->nnics, slowest);
    ac_topo_free(t);
    return 0;
}

static ncclResult_t build_layout(const struct options *o, struct ac_layout *l)
{
    size_t n = (size_t)o->nnodes * (size_t)o->ppn;
    uint64_t *hashes = malloc(n * sizeof(*hashes));
    if (!hashes)
        return AC_FAIL(ncclSystemError, "out of memory for %zu ranks", n);
    for (size_t r = 0; r < n; r++)
        hashes[r] = 0x9e3779b97f4a7c15ull * (r / (size_t)o->ppn + 1);
    ncclResult_t res = ac_layout_build(l, hashes, (int)n);
    free(hashes);
    return res;
}

/* The model's bytes per rank for nccl-tests' size of op on n ranks. */
static size_t model_bytes(enum ac_coll c, double size, int n)
{
    bool per_peer = c == AC_COLL_ALLGATHER || c == AC_COLL_REDUCESCATTER || c == AC_COLL_ALLTOALL ||
                    c == AC_COLL_GATHER || c == AC_COLL_SCATTER;
    return (size_t)(per_peer ? size / n : size);
}

static void print_size(const struct options *o, const struct ac_layout *l,
                       const struct ac_tuner_params *p, enum ac_coll c, double size)
{
    int n = l->nranks;
    size_t bytes = model_bytes(c, size, n);
    double best = -1;
    int pick = -1;
    double t[AC_ALGO_COUNT];
    for (int a = 0; a < AC_ALGO_COUNT; a++) {
        bool is_exchange = c == AC_COLL_ALLTOALL || c == AC_COLL_GATHER || c == AC_COLL_SCATTER;
        t[a] = -1;
        if (!ac_tuner_algo_applies(c, (enum ac_algo)a) && !(is_exchange && a == AC_ALGO_RING))
            continue;
        t[a] = ac_tuner_model_us(c, (enum ac_algo)a, bytes, l, p);
        if (best < 0 || t[a] < best) {
            best = t[a];
            pick = a;
        }
    }
    for (int a = 0; a < AC_ALGO_COUNT; a++) {
        if (t[a] < 0)
            continue;
        bool is_exchange = c == AC_COLL_ALLTOALL || c == AC_COLL_GATHER || c == AC_COLL_SCATTER;
        double algbw = size / (t[a] * 1e3);
        printf("%14.0f %-14s %-8s %14.2f %12.3f %12.3f %s\n", size, ac_coll_name(c),
               is_exchange ? "Pairwise" : ac_algo_name((enum ac_algo)a), t[a], algbw,
               algbw * ac_tuner_busbw_factor(c, n), a == pick ? "<- pick" : "");
    }
    (void)o;
}

int main(int argc, char **argv)
{
    struct options o = {.factor = 2.0};
    struct ac_tuner_params p;
    struct ac_layout l;
    parse_op("allreduce", &o);
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    memset(&l, 0, sizeof(l));
    if (apply_topo(&o, &p, &l))
        return 1;
    if (o.net_gbs > 0)
        p.net_gbs = o.net_gbs;
    if (o.net_hop_us > 0)
        p.net_hop_us = o.net_hop_us;
    if (o.intra_gbs > 0)
        p.intra_gbs = o.intra_gbs;
    if (o.intra_hop_us > 0)
        p.intra_hop_us = o.intra_hop_us;
    p.burst_bytes = o.burst;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (build_layout(&o, &l) != ncclSuccess) {
        fprintf(stderr, "anyccl-sim: %s\n", ac_last_error());
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    l.nrails = o.nrails;
    l.nic_gbit = o.nic_gbit;
    printf("# %d node(s) x %d rank(s) = %d ranks, %d rail(s); layout built in %.1f ms\n", l.nnodes,
           o.ppn, l.nranks, l.nrails,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    printf("# model: net %.3f GB/s per NIC and direction, %.1f us per step; intra-node %.3f GB/s, "
           "%.1f us per step\n",
           p.net_gbs, p.net_hop_us, p.intra_gbs, p.intra_hop_us);
    printf("# %12s %-14s %-8s %14s %12s %12s\n", "size(B)", "op", "algo", "time(us)", "algbw(GB/s)",
           "busbw(GB/s)");
    for (int i = 0; i < o.ncolls; i++)
        for (double s = o.min_bytes; s <= o.max_bytes * 1.000001; s *= o.factor)
            print_size(&o, &l, &p, o.colls[i], s);
    ac_layout_free(&l);
    return 0;
}
