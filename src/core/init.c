/* Creating and tearing down communicators: unique ids, init (blocking, non-blocking, inside a
 * group, several ranks in one process), finalize, destroy, abort, and the simple queries. */
#include "common/check.h"
#include "common/config.h"
#include "core/api.h"
#include "core/board.h"
#include "core/devreg.h"
#include "core/enqueue.h"
#include "core/netdev.h"
#include "core/stream.h"
#include "core/devpath.h"
#include "device/backend.h"
#include "gin/gin.h"
#include "ras/ras.h"
#include "transport/cma/cma.h"
#include "transport/shm/shm_region.h"
#include "transport/transport.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Hash of a short file or link, for machine and namespace identity; 0 when unreadable. */
static uint64_t hash_of_file(const char *path, bool is_link)
{
    char buf[256];
    ssize_t n;
    if (is_link) {
        n = readlink(path, buf, sizeof(buf));
    } else {
        FILE *f = fopen(path, "r");
        n = f ? (ssize_t)fread(buf, 1, sizeof(buf), f) : -1;
        if (f)
            fclose(f);
    }
    return n > 0 ? fnv1a(0xcbf29ce484222325ull, buf, (size_t)n) : 0;
}

/* Ranks share a "host" (and so /dev/shm and pids) when they share the hostname, the boot and the
 * network namespace: ranks in separate network namespaces are treated as separate nodes, which is
 * how the multi-node test bed runs several nodes on one machine. */
static void fill_self_info(struct ncclComm *comm, struct ac_peer_info *me)
{
    memset(me, 0, sizeof(*me));
    me->rank = comm->rank;
    me->pid = (int)getpid();
    gethostname(me->hostname, sizeof(me->hostname) - 1);
    uint64_t h = fnv1a(0xcbf29ce484222325ull, me->hostname, strlen(me->hostname));
    h ^= hash_of_file("/proc/sys/kernel/random/boot_id", false);
    h = fnv1a(h, "", 1) ^ hash_of_file("/proc/self/ns/net", true);
    const char *hostid = ac_config_get()->hostid;
    if (hostid && *hostid) /* NCCL_HOSTID: the user says which ranks share a node */
        h = fnv1a(0x84222325cbf29ce4ull, hostid, strlen(hostid));
    me->host_hash = h;
    me->pid_ns_hash = hash_of_file("/proc/self/ns/pid", true);
    me->addr = *ac_bootstrap_local_addr(comm->bs);
    ac_cma_probe_word(&me->cma_addr, &me->cma_value);
    me->rdma_caps = ac_transport_rdma_caps();
    /* Known at init so that the choice of the P2P path for GPU buffers needs no exchange when a
     * rank has no GPU: host-buffer ranks never join that exchange (src/core/devpath_pick.c). On a
     * machine without a GPU device node this loads nothing. */
    const struct ac_backend *gpu = ac_backends_have_gpu() ? ac_backend_first_gpu(NULL, 0) : NULL;
    me->gpu_kind = (uint8_t)(gpu ? gpu->kind : AC_MEM_HOST);
}

bool ac_comm_pair_can_map(const struct ncclComm *comm, int peer)
{
    const struct ac_peer_info *me = &comm->peers[comm->rank], *p = &comm->peers[peer];
    return me->can_cma && p->can_cma && ac_peer_shares_host(me, p);
}

bool ac_comm_pair_cma(const struct ncclComm *comm, int peer)
{
    return comm->is_cma_enabled && ac_comm_pair_can_map(comm, peer);
}

/* Single-copy reads need every pair to agree on whether they are possible, and on the size from
 * which they are used: each rank probes its host's peers, and all take rank 0's threshold. The
 * same vote tells whether large allreduces use large chunks (wants_large_chunks, transport.h):
 * where every connector would be of a transport that wants them (the receiving end picks a
 * connector's transport, so each rank answers for what it receives) and every rank shares its
 * core. Over loopback TCP, 4 ranks on 2 cores, alternated launches (medians of 3): allreduce 16
 * MiB 32.7 -> 27.0 ms, 64 MiB 108 -> 100, 117 -> 93, 256 MiB 521 -> 456, 410 -> 366. On 2 ranks
 * with a core each larger chunks were slower (allreduce 256 MiB 89 -> 121 ms): the smaller ones
 * pipeline, and there is no wake-up to save. */
struct cma_vote {
    int64_t min_bytes;
    int64_t large_min_bytes; /* ANYCCL_LARGE_CHUNK_MIN_BYTES */
    uint8_t can_cma;         /* could read every peer of its host */
    uint8_t is_enabled;      /* ANYCCL_CMA_ENABLE */
    uint8_t is_large_chunks; /* every transport it would pick wants_large_chunks */
    uint8_t pad[5];
};

static bool picks_large_chunks(const struct ncclComm *comm)
{
    const struct ac_peer_info *me = &comm->peers[comm->rank];
    for (int r = 0; r < comm->nranks; r++) {
        if (r == comm->rank)
            continue;
        const struct ac_transport *tp = ac_transport_would_pick(me, &comm->peers[r]);
        if (!tp || !tp->wants_large_chunks)
            return false;
    }
    return comm->nranks > 1;
}

static ncclResult_t agree_on_cma(struct ncclComm *comm)
{
    const struct ac_config *cfg = ac_config_get();
    struct ac_peer_info *me = &comm->peers[comm->rank];
    bool can = !cfg->shm_disable;
    for (int r = 0; can && r < comm->nranks; r++) {
        const struct ac_peer_info *p = &comm->peers[r];
        if (r != comm->rank && ac_peer_shares_host(me, p) &&
            !ac_cma_probe(p->pid, p->cma_addr, p->cma_value)) {
            AC_INFO(AC_SUB_INIT | AC_SUB_SHM, "cannot read rank %d (pid %d) by cross-memory "
                    "attach (%s): transfers between local ranks go through shared-memory slots",
                    r, p->pid, strerror(errno));
            can = false;
        }
    }
    struct cma_vote *votes = calloc((size_t)comm->nranks, sizeof(*votes));
    if (!votes)
        return AC_FAIL(ncclSystemError, "out of memory");
    votes[comm->rank] =
        (struct cma_vote){.min_bytes = cfg->cma_min_bytes,
                          .large_min_bytes = cfg->large_chunk_min_bytes,
                          .can_cma = can,
                          .is_enabled = cfg->cma_enable,
                          .is_large_chunks = comm->is_oversubscribed && picks_large_chunks(comm)};
    ncclResult_t res = ac_bootstrap_allgather(comm->bs, votes, sizeof(*votes));
    if (res == ncclSuccess) {
        comm->cma_min_bytes = votes[0].min_bytes < 0 ? 0 : (size_t)votes[0].min_bytes;
        comm->is_cma_enabled = true;
        comm->large_chunk_min_bytes = (size_t)votes[0].large_min_bytes;
        bool is_large_chunks = true;
        for (int r = 0; r < comm->nranks; r++) {
            is_large_chunks &= votes[r].is_large_chunks != 0;
            comm->peers[r].can_cma = votes[r].can_cma;
            comm->is_cma_enabled &= votes[r].is_enabled != 0;
        }
        comm->is_cma_all = comm->is_cma_enabled && comm->layout.nnodes == 1;
        for (int r = 0; r < comm->nranks; r++)
            comm->is_cma_all &= votes[r].can_cma != 0;
        if (is_large_chunks) {
            comm->large_slot_bytes = AC_LARGE_CHUNK_SLOTS * comm->slot_bytes;
            AC_INFO(AC_SUB_INIT,
                    "allreduces of %zu bytes and more move in chunks of %zu bytes "
                    "(every connector a socket, ranks sharing cores)",
                    comm->large_chunk_min_bytes, comm->large_slot_bytes);
        }
    }
    free(votes);
    return res;
}

static void pick_sizes(struct ncclComm *comm, const ncclConfig_t *config)
{
    const struct ac_config *cfg = ac_config_get();
    int nslots = cfg->nslots >= 2 && cfg->nslots <= 64 ? (int)cfg->nslots : 8;
    size_t buff = cfg->buffsize >= 8192 ? (size_t)cfg->buffsize : 4u << 20;
    size_t slot = (buff / (size_t)nslots) & ~(size_t)4095;
    comm->nslots = nslots;
    comm->slot_bytes = slot < 4096 ? 4096 : slot;
    /* Point-to-point connectors exist per peer (n-1 of them for all-to-all): smaller slots keep
     * shared memory within a container's /dev/shm. */
    comm->p2p_slot_bytes = comm->slot_bytes / 4 < 4096 ? 4096 : comm->slot_bytes / 4;
    comm->large_slot_bytes = comm->slot_bytes; /* agree_on_cma may make it larger */
    long nch = cfg->min_nchannels;
    if (config && config->minCTAs != NCCL_CONFIG_UNDEF_INT && config->minCTAs > nch)
        nch = config->minCTAs;
    if (config && config->maxCTAs != NCCL_CONFIG_UNDEF_INT && config->maxCTAs < nch)
        nch = config->maxCTAs;
    if (cfg->max_nchannels > 0 && nch > cfg->max_nchannels)
        nch = cfg->max_nchannels;
    comm->nchannels = nch < 1 ? 1 : nch > AC_MAX_CHANNELS ? AC_MAX_CHANNELS : (int)nch;
}

/* Ranks of all this node's communicators share the cores; this one's count is what we know. */
static void check_oversubscribed(struct ncclComm *comm)
{
    cpu_set_t set;
    int ncpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    int node = comm->layout.node_of[comm->rank];
    int ppn = ac_layout_ppn(&comm->layout, node);
    comm->is_oversubscribed = ppn > ncpus;
    if (comm->is_oversubscribed)
        AC_INFO(AC_SUB_INIT, "%d ranks on this node share %d cores: waiting ranks yield at once",
                ppn, ncpus);
}

static ncclResult_t build_layout(struct ncclComm *comm)
{
    uint64_t *hashes = calloc((size_t)comm->nranks, sizeof(*hashes));
    if (!hashes)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int r = 0; r < comm->nranks; r++)
        hashes[r] = comm->peers[r].host_hash;
    ncclResult_t res = ac_layout_build(&comm->layout, hashes, comm->nranks);
    free(hashes);
    if (res == ncclSuccess && comm->rank == 0 && ac_log_enabled(AC_LOG_INFO, AC_SUB_GRAPH)) {
        char line[256];
        int at = 0;
        for (int i = 0; i < comm->nranks && at < (int)sizeof(line) - 16; i++)
            at += snprintf(line + at, sizeof(line) - (size_t)at, " %d", comm->layout.ring[i]);
        AC_INFO(AC_SUB_GRAPH | AC_SUB_INIT, "%d rank(s) on %d node(s); ring:%s",
                comm->nranks, comm->layout.nnodes, line);
    }
    return res;
}

ncclResult_t ac_comm_init(struct ncclComm *comm, const ncclUniqueId *id, int rank, int nranks,
                          const ncclConfig_t *config)
{
    struct ac_unique_id uid;
    AC_CHECK(ac_unique_id_decode(id, &uid));
    comm->rank = rank;
    comm->nranks = nranks;
    comm->comm_hash = uid.id_hash;
    ac_log_set_rank(rank);
    AC_CHECK(ac_bootstrap_init(id, rank, nranks, &comm->abort_flag, &comm->bs));
    ac_bootstrap_watch_dead(comm->bs, &comm->ras_dead_rank);
    comm->peers = calloc((size_t)nranks, sizeof(*comm->peers));
    size_t nconn = (size_t)AC_NCONN_SETS * (size_t)nranks;
    comm->send_conns = calloc(nconn, sizeof(*comm->send_conns));
    comm->recv_conns = calloc(nconn, sizeof(*comm->recv_conns));
    if (!comm->peers || !comm->send_conns || !comm->recv_conns)
        return AC_FAIL(ncclSystemError, "out of memory for a communicator of %d ranks", nranks);
    fill_self_info(comm, &comm->peers[rank]);
    AC_CHECK(ac_bootstrap_allgather(comm->bs, comm->peers, sizeof(*comm->peers)));
    AC_CHECK(build_layout(comm));
    AC_CHECK(ac_comm_pick_netdev(comm));
    check_oversubscribed(comm);
    pick_sizes(comm, config);
    AC_CHECK(agree_on_cma(comm));
    AC_CHECK(ac_board_setup(comm));
    if (config && config->commName)
        snprintf(comm->name, sizeof(comm->name), "%s", config->commName);
    AC_INFO(AC_SUB_INIT, "comm %p%s%s rank %d nranks %d: %d channel(s), %d slots of %zu bytes",
            (void *)comm, comm->name[0] ? " " : "", comm->name, rank, nranks, comm->nchannels,
            comm->nslots, comm->slot_bytes);
    ac_ras_comm_init(comm);
    return ncclSuccess;
}

struct ncclComm *ac_comm_alloc(void)
{
    struct ncclComm *comm = calloc(1, sizeof(*comm));
    if (!comm)
        return NULL;
    comm->magic = AC_COMM_MAGIC;
    pthread_mutex_init(&comm->reg_lock, NULL);
    comm->is_blocking = true;
    atomic_store(&comm->async_error, (int)ncclSuccess);
    atomic_store(&comm->ras_dead_rank, -1);
    return comm;
}

void ac_comm_free(struct ncclComm *comm)
{
    if (!comm)
        return;
    ac_stream_free(comm);
    ac_devpath_free(comm);
    ac_ras_comm_fini(comm, comm->abort_flag != 0);
    ac_gin_comm_free(comm);
    ac_disconnect_all(comm);
    ac_devreg_free(comm); /* after the transports: they may hold imports */
    if (comm->bs)
        ac_bootstrap_close(comm->bs);
    free(comm->peers);
    ac_layout_free(&comm->layout);
    ac_region_cache_free(comm->region_cache);
    ac_board_free(comm);
    free(comm->plan_memo);
    pthread_mutex_destroy(&comm->reg_lock);
    comm->magic = 0;
    free(comm);
}

ncclResult_t ac_comm_check(const struct ncclComm *comm, const char *what)
{
    if (!comm)
        return AC_FAIL(ncclInvalidArgument, "%s is NULL", what);
    if (comm->magic != AC_COMM_MAGIC)
        return AC_FAIL(ncclInvalidArgument,
                       "%s (%p) is not a communicator: destroyed, or never initialized", what,
                       (const void *)comm);
    return ncclSuccess;
}

ncclResult_t ac_comm_check_usable(struct ncclComm *comm, const char *what)
{
    AC_CHECK(ac_comm_check(comm, what));
    ncclResult_t state = (ncclResult_t)atomic_load(&comm->async_error);
    if (state == ncclInProgress)
        return AC_FAIL(ncclInvalidUsage, "%s is still initializing: wait until "
                       "ncclCommGetAsyncError reports ncclSuccess", what);
    if (state != ncclSuccess)
        return AC_FAIL(state, "%s (rank %d) failed earlier with \"%s\" and cannot be used: "
                       "destroy or abort it", what, comm->rank, ncclGetErrorString(state));
    if (comm->is_revoked)
        return AC_FAIL(ncclInvalidUsage, "%s (rank %d) was revoked: only shrink, destroy or "
                       "abort are allowed", what, comm->rank);
    return ncclSuccess;
}

/* ---- creation ---- */

struct init_job {
    struct ncclComm *comm;
    ncclUniqueId id;
    int rank;
    int nranks;
    ncclConfig_t config;
    bool has_config;
};

static ncclResult_t run_init_job(void *arg)
{
    struct init_job *job = arg;
    ncclResult_t res = ac_comm_init(job->comm, &job->id, job->rank, job->nranks,
                                    job->has_config ? &job->config : NULL);
    atomic_store(&job->comm->async_error, (int)res);
    free(job);
    return res;
}

static void *init_thread_main(void *arg)
{
    run_init_job(arg);
    return NULL;
}

/* A config from an older NCCL may be shorter than ours: read only what the caller has. */
static ncclResult_t read_config(const ncclConfig_t *in, ncclConfig_t *out, bool *has)
{
    ncclConfig_t defaults = NCCL_CONFIG_INITIALIZER;
    *out = defaults;
    *has = in != NULL;
    if (!in)
        return ncclSuccess;
    if (in->magic != 0xcafebeef || in->size < offsetof(ncclConfig_t, cgaClusterSize))
        return AC_FAIL(ncclInvalidArgument, "config was not initialized with "
                       "NCCL_CONFIG_INITIALIZER (bad magic or size)");
    memcpy(out, in, in->size < sizeof(*out) ? in->size : sizeof(*out));
    if (out->blocking != NCCL_CONFIG_UNDEF_INT && out->blocking != 0 && out->blocking != 1)
        return AC_FAIL(ncclInvalidArgument, "config->blocking is %d: use 0 or 1", out->blocking);
    if (out->minCTAs != NCCL_CONFIG_UNDEF_INT && out->minCTAs < 1)
        return AC_FAIL(ncclInvalidArgument, "config->minCTAs is %d: must be >= 1", out->minCTAs);
    if (out->maxCTAs != NCCL_CONFIG_UNDEF_INT && out->maxCTAs < 1)
        return AC_FAIL(ncclInvalidArgument, "config->maxCTAs is %d: must be >= 1", out->maxCTAs);
    return ncclSuccess;
}

ncclResult_t ac_comm_create(ncclComm_t *out, int nranks, const ncclUniqueId *id, int rank,
                            const ncclConfig_t *config)
{
    if (!out)
        return AC_FAIL(ncclInvalidArgument, "comm (the output pointer) is NULL");
    *out = NULL;
    if (nranks < 1)
        return AC_FAIL(ncclInvalidArgument, "nranks is %d: must be >= 1", nranks);
    if (rank < 0 || rank >= nranks)
        return AC_FAIL(ncclInvalidArgument, "rank is %d: must be in [0, %d)", rank, nranks);
    struct init_job *job = calloc(1, sizeof(*job));
    struct ncclComm *comm = ac_comm_alloc();
    if (!job || !comm) {
        free(job);
        free(comm);
        return AC_FAIL(ncclSystemError, "out of memory creating a communicator");
    }
    ncclResult_t res = read_config(config, &job->config, &job->has_config);
    if (res != ncclSuccess) {
        free(job);
        free(comm);
        return res;
    }
    job->comm = comm;
    job->id = *id;
    job->rank = rank;
    job->nranks = nranks;
    comm->is_blocking = job->config.blocking != 0;
    if (ac_group_is_open()) {
        atomic_store(&comm->async_error, (int)ncclInProgress);
        *out = comm;
        return ac_group_defer(run_init_job, job);
    }
    if (!comm->is_blocking) {
        atomic_store(&comm->async_error, (int)ncclInProgress);
        if (pthread_create(&comm->init_thread, NULL, init_thread_main, job) != 0) {
            free(job);
            free(comm);
            return AC_SYSFAIL("pthread_create for non-blocking init");
        }
        comm->has_init_thread = true;
        *out = comm;
        return ncclInProgress;
    }
    res = run_init_job(job);
    if (res != ncclSuccess) {
        ac_comm_free(comm);
        return res;
    }
    *out = comm;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclGetUniqueId, ncclUniqueId *uniqueId);
ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId)
{
    if (!uniqueId)
        return AC_FAIL(ncclInvalidArgument, "uniqueId is NULL");
    return ac_bootstrap_create_root(uniqueId);
}

AC_API(ncclResult_t, ncclCommInitRank, ncclComm_t *comm, int nranks, ncclUniqueId commId,
       int rank);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
{
    return ac_comm_create(comm, nranks, &commId, rank, NULL);
}

AC_API(ncclResult_t, ncclCommInitRankConfig, ncclComm_t *comm, int nranks, ncclUniqueId commId,
       int rank, ncclConfig_t *config);
ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t *config)
{
    return ac_comm_create(comm, nranks, &commId, rank, config);
}

/* NCCL spreads the ranks over several roots; every id here reaches a root that can serve all
 * ranks, so the first one is used by everyone (the others only need to be valid). */
AC_API(ncclResult_t, ncclCommInitRankScalable, ncclComm_t *newcomm, int nranks, int myrank,
       int nId, ncclUniqueId *commIds, ncclConfig_t *config);
ncclResult_t ncclCommInitRankScalable(ncclComm_t *newcomm, int nranks, int myrank, int nId,
                                      ncclUniqueId *commIds, ncclConfig_t *config)
{
    if (nId < 1)
        return AC_FAIL(ncclInvalidArgument, "nId is %d: must be >= 1", nId);
    if (!commIds)
        return AC_FAIL(ncclInvalidArgument, "commIds is NULL");
    struct ac_unique_id uid;
    for (int i = 0; i < nId; i++)
        AC_CHECK(ac_unique_id_decode(&commIds[i], &uid));
    return ac_comm_create(newcomm, nranks, &commIds[0], myrank, config);
}

struct init_all_arg {
    ncclComm_t *slot;
    ncclUniqueId id;
    int rank;
    int nranks;
    ncclResult_t res;
};

static void *init_all_thread(void *p)
{
    struct init_all_arg *a = p;
    a->res = ac_comm_create(a->slot, a->nranks, &a->id, a->rank, NULL);
    return NULL;
}

static void destroy_all(ncclComm_t *comms, int n)
{
    for (int i = 0; i < n; i++) {
        ac_comm_free(comms[i]);
        comms[i] = NULL;
    }
}

/* On the host backend each "device" is a rank of this process; devlist only orders them. */
AC_API(ncclResult_t, ncclCommInitAll, ncclComm_t *comm, int ndev, const int *devlist);
ncclResult_t ncclCommInitAll(ncclComm_t *comm, int ndev, const int *devlist)
{
    if (!comm)
        return AC_FAIL(ncclInvalidArgument, "comm is NULL");
    if (ndev < 1)
        return AC_FAIL(ncclInvalidArgument, "ndev is %d: must be >= 1", ndev);
    ncclUniqueId id;
    AC_CHECK(ac_bootstrap_create_private_root(&id));
    struct init_all_arg *args = calloc((size_t)ndev, sizeof(*args));
    pthread_t *threads = calloc((size_t)ndev, sizeof(*threads));
    ncclResult_t res = ncclSuccess;
    int nstarted = 0;
    if (!args || !threads) {
        res = AC_FAIL(ncclSystemError, "out of memory");
        goto out;
    }
    for (; nstarted < ndev; nstarted++) {
        args[nstarted] = (struct init_all_arg){&comm[nstarted], id, nstarted, ndev, ncclSuccess};
        if (pthread_create(&threads[nstarted], NULL, init_all_thread, &args[nstarted]) != 0) {
            res = AC_SYSFAIL("pthread_create in ncclCommInitAll");
            break;
        }
    }
    for (int i = 0; i < nstarted; i++) {
        pthread_join(threads[i], NULL);
        if (args[i].res != ncclSuccess && res == ncclSuccess)
            res = args[i].res;
    }
    if (res != ncclSuccess)
        destroy_all(comm, nstarted);
    (void)devlist;
out:
    free(args);
    free(threads);
    return res;
}

/* ---- teardown ---- */

static void join_init(struct ncclComm *comm)
{
    if (comm->has_init_thread) {
        pthread_join(comm->init_thread, NULL);
        comm->has_init_thread = false;
    }
}

/* Host collectives complete before their call returns; calls on streams are run by the proxy
 * before this returns (their streams may still be copying results out). */
AC_API(ncclResult_t, ncclCommFinalize, ncclComm_t comm);
ncclResult_t ncclCommFinalize(ncclComm_t comm)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    join_init(comm);
    ac_stream_drain(comm);
    AC_CHECK(ac_devpath_finalize(comm));
    comm->is_finalized = true;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommDestroy, ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess; /* NCCL accepts NULL here */
    AC_CHECK(ac_comm_check(comm, "comm"));
    join_init(comm);
    ac_comm_free(comm);
    return ncclSuccess;
}

/* Ends waits of other threads on this communicator (they return an error), then frees it. */
AC_API(ncclResult_t, ncclCommAbort, ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess;
    AC_CHECK(ac_comm_check(comm, "comm"));
    comm->abort_flag = 1;
    while (atomic_load(&comm->nactive) > 0)
        usleep(1000);
    join_init(comm);
    ac_comm_free(comm);
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommGetAsyncError, ncclComm_t comm, ncclResult_t *asyncError);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!asyncError)
        return AC_FAIL(ncclInvalidArgument, "asyncError is NULL");
    ac_devpath_poll(comm);
    *asyncError = (ncclResult_t)atomic_load(&comm->async_error);
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommCount, const ncclComm_t comm, int *count);
ncclResult_t ncclCommCount(const ncclComm_t comm, int *count)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!count)
        return AC_FAIL(ncclInvalidArgument, "count is NULL");
    *count = comm->nranks;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommUserRank, const ncclComm_t comm, int *rank);
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!rank)
        return AC_FAIL(ncclInvalidArgument, "rank is NULL");
    *rank = comm->rank;
    return ncclSuccess;
}

/* Host ranks have no CUDA device: -1, which cudaSetDevice refuses rather than misusing GPU 0. */
AC_API(ncclResult_t, ncclCommCuDevice, const ncclComm_t comm, int *device);
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!device)
        return AC_FAIL(ncclInvalidArgument, "device is NULL");
    *device = -1;
    return ncclSuccess;
}
