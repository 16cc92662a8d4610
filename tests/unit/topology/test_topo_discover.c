/* Discovery on this machine against listings made here straight from /sys (NUMA nodes, network
 * interfaces that are up and backed by a device), and the per-process topology: NCCL_TOPO_FILE,
 * NCCL_TOPO_DUMP_FILE, caching and references shared between threads. */
#include "common/check.h"
#include "common/config.h"
#include "topology/topo.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* Drops every NCCL_* and ANYCCL_* variable so the caller's environment cannot change results. */
static void clean_env(void)
{
    char name[256];
    for (int i = 0; environ[i] != NULL;) {
        size_t len = strcspn(environ[i], "=");
        bool ours = strncmp(environ[i], "NCCL_", 5) == 0 || strncmp(environ[i], "ANYCCL_", 7) == 0;
        if (ours && len < sizeof(name)) {
            memcpy(name, environ[i], len);
            name[len] = '\0';
            unsetenv(name);
            i = 0;
            continue;
        }
        i++;
    }
    ac_config_reload();
    ac_topo_cache_reset();
}

TestSuite(topo_discover, .init = clean_env, .timeout = 10);

static bool read_word(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = fscanf(f, "%63s", buf) == 1;
    fclose(f);
    (void)cap;
    return ok;
}

/* Interfaces with a device link whose operstate is "up". */
static int list_up_interfaces(char names[][64], int max)
{
    DIR *d = opendir("/sys/class/net");
    int n = 0;
    if (d == NULL)
        return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL && n < max;) {
        char path[512], state[64];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/net/%s/device", e->d_name);
        if (access(path, F_OK) != 0)
            continue;
        snprintf(path, sizeof(path), "/sys/class/net/%s/operstate", e->d_name);
        if (read_word(path, state, sizeof(state)) && strcmp(state, "up") == 0)
            snprintf(names[n++], 64, "%.63s", e->d_name);
    }
    closedir(d);
    return n;
}

static int count_numa_dirs(void)
{
    DIR *d = opendir("/sys/devices/system/node");
    int n = 0, id;
    char tail;
    if (d == NULL)
        return 1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += sscanf(e->d_name, "node%d%c", &id, &tail) == 1;
    closedir(d);
    return n > 0 ? n : 1;
}

Test(topo_discover, numa_nodes_and_cores)
{
    struct ac_topo *t = NULL;
    cr_assert_eq(ac_topo_discover(&t), ncclSuccess, "%s", ac_last_error());
    cr_expect_geq(t->nnuma, 1);
    /* hwloc leaves out nodes a cgroup forbids: never more than /sys lists. */
    cr_expect_leq(t->nnuma, count_numa_dirs());
    cr_expect_geq(t->npackages, 1);
    int cores = 0;
    for (int i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].kind == AC_TOPO_NODE_NUMA) {
            cores += t->nodes[i].ncores;
            cr_expect_neq(t->nodes[i].affinity[0], '\0');
        }
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cr_expect(cores >= 1 && cores <= online, "%d cores, %ld CPUs online", cores, online);
    ac_topo_free(t);
}

Test(topo_discover, up_interfaces_are_nics)
{
    char up[64][64];
    int nup = list_up_interfaces(up, 64);
    struct ac_topo *t = NULL;
    cr_assert_eq(ac_topo_discover(&t), ncclSuccess, "%s", ac_last_error());
    for (int i = 0; i < nup; i++) {
        bool found = false;
        for (int j = 0; j < t->nnics && !found; j++)
            found = strcmp(t->nics[j].ifname, up[i]) == 0;
        cr_expect(found, "interface %s is up but not among the %d NICs", up[i], t->nnics);
    }
    int nsockets = 0;
    for (int j = 0; j < t->nnics; j++) {
        const struct ac_topo_nic *n = &t->nics[j];
        cr_expect_gt(n->speed_gbps, 0.0);
        cr_expect_eq(n->rail, j);
        bool has_numa = false;
        for (int i = 0; i < t->nnodes; i++)
            has_numa |= t->nodes[i].kind == AC_TOPO_NODE_NUMA && t->nodes[i].id == n->numa;
        cr_expect(has_numa, "NIC %d: NUMA node %d", j, n->numa);
        if (n->is_rdma)
            continue;
        nsockets++;
        bool listed = false;
        for (int i = 0; i < nup && !listed; i++)
            listed = strcmp(up[i], n->ifname) == 0;
        cr_expect(listed, "NIC %s is not an interface that is up", n->ifname);
    }
    cr_expect_leq(nsockets, nup);
    ac_topo_free(t);
}

Test(topo_discover, round_trip)
{
    struct ac_topo *t = NULL, *u = NULL;
    char *a, *b;
    cr_assert_eq(ac_topo_discover(&t), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(ac_topo_to_xml(t, &a, NULL), ncclSuccess);
    cr_assert_eq(ac_topo_load_xml(a, strlen(a), "discovered", &u), ncclSuccess, "%s\n%s",
                 ac_last_error(), a);
    cr_assert_eq(ac_topo_to_xml(u, &b, NULL), ncclSuccess);
    cr_expect_str_eq(a, b);
    cr_expect_eq(u->nnics, t->nnics);
    cr_expect_eq(u->nnuma, t->nnuma);
    free(a);
    free(b);
    ac_topo_free(t);
    ac_topo_free(u);
}

Test(topo_discover, topo_file_and_dump_file)
{
    char dump[] = "/tmp/anyccl-topo-dump-XXXXXX";
    int fd = mkstemp(dump);
    cr_assert_geq(fd, 0);
    close(fd);
    setenv("NCCL_TOPO_FILE", "topologies/mi300x-8.xml", 1);
    setenv("NCCL_TOPO_DUMP_FILE", dump, 1);
    ac_config_reload();
    struct ac_topo *t = NULL, *again = NULL, *fromdump = NULL;
    cr_assert_eq(ac_topo_get(&t), ncclSuccess, "%s", ac_last_error());
    cr_expect_eq(t->ngpus, 8);
    cr_expect_str_eq(t->source, "topologies/mi300x-8.xml");
    cr_assert_eq(ac_topo_get(&again), ncclSuccess);
    cr_expect_eq(again, t, "computed once per process");
    cr_assert_eq(ac_topo_load_file(dump, &fromdump), ncclSuccess, "%s", ac_last_error());
    char *a, *b;
    cr_assert_eq(ac_topo_to_xml(t, &a, NULL), ncclSuccess);
    cr_assert_eq(ac_topo_to_xml(fromdump, &b, NULL), ncclSuccess);
    cr_expect_str_eq(a, b);
    free(a);
    free(b);
    ac_topo_free(fromdump);
    ac_topo_free(again);
    ac_topo_cache_reset();
    cr_expect_eq(t->ngpus, 8, "a reference outlives the cache");
    ac_topo_free(t);
    unlink(dump);
}

Test(topo_discover, topo_file_missing_is_not_cached)
{
    setenv("NCCL_TOPO_FILE", "/nonexistent/anyccl.xml", 1);
    ac_config_reload();
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_get(&t), ncclSystemError);
    cr_expect_neq(strstr(ac_last_error(), "/nonexistent/anyccl.xml"), NULL, "%s", ac_last_error());
    setenv("NCCL_TOPO_FILE", "topologies/dgx-h100.xml", 1);
    ac_config_reload();
    cr_assert_eq(ac_topo_get(&t), ncclSuccess, "%s", ac_last_error());
    cr_expect_eq(t->nnics, 8);
    ac_topo_free(t);
}

static void *get_in_thread(void *arg)
{
    struct ac_topo **slot = arg;
    if (ac_topo_get(slot) != ncclSuccess)
        *slot = NULL;
    return NULL;
}

Test(topo_discover, threads_share_one)
{
    pthread_t th[4];
    struct ac_topo *got[4] = {0};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, get_in_thread, &got[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        cr_expect_not_null(got[i]);
        cr_expect_eq(got[i], got[0]);
    }
    cr_expect_eq(got[0]->refs, 5, "the cache's reference and the 4 threads'");
    for (int i = 0; i < 4; i++)
        ac_topo_free(got[i]);
    cr_expect_eq(got[0]->refs, 1);
}
