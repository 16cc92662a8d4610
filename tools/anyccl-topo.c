/* anyccl-topo: prints the topology AnyCCL sees (discovered, or read with --file), optionally writes
 * it as XML (--dump), and shows which NIC each local rank would use (--ranks N). */
#include "common/check.h"
#include "topology/topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: anyccl-topo [--file FILE] [--dump FILE] [--ranks N] [--quiet]\n"
            "  --file FILE  read an XML topology (NCCL's format) instead of discovering\n"
            "  --dump FILE  write the topology as XML to FILE ('-': standard output)\n"
            "  --ranks N    show the NIC each of N local ranks would use (GPU i for rank i when\n"
            "               the topology has GPUs)\n"
            "  --quiet      do not print the topology\n"
            "NCCL_TOPO_FILE and NCCL_TOPO_DUMP_FILE are not read: use --file and --dump.\n");
}

struct options {
    const char *file, *dump;
    int nranks;
    bool is_quiet;
};

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--file") == 0 && has_value) {
            o->file = argv[++i];
        } else if (strcmp(a, "--dump") == 0 && has_value) {
            o->dump = argv[++i];
        } else if (strcmp(a, "--ranks") == 0 && has_value) {
            o->nranks = atoi(argv[++i]);
            if (o->nranks < 1 || o->nranks > 1024) {
                fprintf(stderr, "anyccl-topo: --ranks takes 1 to 1024\n");
                return 2;
            }
        } else if (strcmp(a, "--quiet") == 0) {
            o->is_quiet = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "anyccl-topo: unknown or incomplete argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

static int dump(const struct ac_topo *t, const char *path)
{
    if (strcmp(path, "-") != 0)
        return ac_topo_dump_file(t, path) == ncclSuccess ? 0 : 1;
    char *text;
    size_t len;
    if (ac_topo_to_xml(t, &text, &len) != ncclSuccess)
        return 1;
    fwrite(text, 1, len, stdout);
    free(text);
    return 0;
}

static int show_nics(const struct ac_topo *t, int nranks)
{
    for (int r = 0; r < nranks; r++) {
        int gpu = r < t->ngpus ? r : -1, nic;
        char gpu_text[32] = "";
        if (ac_topo_pick_nic(t, r, nranks, gpu, -1, NULL, &nic) != ncclSuccess)
            return 1;
        if (gpu >= 0)
            snprintf(gpu_text, sizeof(gpu_text), ", GPU %d", gpu);
        printf("local rank %d%s: NIC %d %s (rail %d, NUMA %d)\n", r, gpu_text, nic,
               t->nics[nic].name, t->nics[nic].rail, t->nics[nic].numa);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct ac_topo *t;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    ncclResult_t res = o.file != NULL ? ac_topo_load_file(o.file, &t) : ac_topo_discover(&t);
    if (res != ncclSuccess) {
        fprintf(stderr, "anyccl-topo: %s\n", ac_last_error());
        return 1;
    }
    if (!o.is_quiet)
        ac_topo_print(t, stdout);
    if (o.nranks > 0)
        rc = show_nics(t, o.nranks);
    if (rc == 0 && o.dump != NULL)
        rc = dump(t, o.dump);
    if (rc != 0)
        fprintf(stderr, "anyccl-topo: %s\n", ac_last_error());
    ac_topo_free(t);
    return rc;
}
