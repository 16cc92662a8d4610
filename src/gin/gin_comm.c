/* The per-communicator GIN engine and the all-to-all that uses it (ANYCCL_GPU_INITIATED=1).
 *
 * Two backends, chosen identically on every rank from the peer table:
 * - "cma", when all ranks share a host and can write each other's memory: each rank owns a small
 *   shared-memory segment (posted receive window: address, size, epoch; one 64-bit signal per
 *   peer), mapped by its peers at set-up (lazily, in the first all-to-all, which all ranks call).
 *   A put is process_vm_writev into the peer's posted window and a signal an atomic add into the
 *   peer's segment; the syscall has completed before the add, so a peer that sees the signal
 *   sees the data.
 * - "rdma" when every rank can run an RDMA transport (src/gin/gin_rdma.c): ib, or ofi with a
 *   hardware provider, or the one ANYCCL_NET names (ANYCCL_NET=ofi: libfabric's software
 *   providers too);
 * - "socket" otherwise (src/gin/gin_sock.c).
 * The choice follows the transports' rules (src/transport/registry.c): cma is the shared-memory
 * path (off with NCCL_SHM_DISABLE=1), ANYCCL_NET keeps only the network it names, with no
 * fallback. Unlike the transports (chosen per pair by the receiver), one backend serves every
 * pair, so the ranks allgather what each can run and take the first that all can.
 *
 * Who consumes the ring: a progress thread per communicator (what a GPU producer relies on), and
 * any host thread waiting on the ring (host_poll), whichever gets the consumer lock first. */
#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"
#include "core/comm.h"
#include "core/enqueue.h"
#include "gin/gin_internal.h"
#include "gin/gin_mlx5_dev.h"
#include "transport/rdma/rdma.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define GIN_NSLOTS 256
#define GIN_LIVENESS_NS 2000000ull /* how often a waiter checks that peers are alive */

static const struct ac_gin_backend cma_backend;

static size_t type_bytes(ncclDataType_t t)
{
    static const unsigned char sizes[ncclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
    return sizes[t];
}

/* --- the cma backend --------------------------------------------------------------------- */

static int cma_put(void *ctx, uint32_t peer, uint64_t src_off, uint64_t dst_off, uint64_t bytes,
                   int *peer_out)
{
    struct ac_gin *g = ctx;
    struct ncclComm *comm = g->comm;
    *peer_out = (int)peer;
    if (peer >= (uint32_t)comm->nranks || src_off > g->local_bytes ||
        bytes > g->local_bytes - src_off)
        return AC_GIN_ERR_ACCESS;
    const struct gin_seg *s = g->segs[peer];
    uint64_t win = __atomic_load_n(&s->win_addr, __ATOMIC_RELAXED);
    uint64_t win_bytes = __atomic_load_n(&s->win_bytes, __ATOMIC_RELAXED);
    if (dst_off > win_bytes || bytes > win_bytes - dst_off)
        return AC_GIN_ERR_ACCESS;
    uint64_t done = 0;
    while (done < bytes) {
        struct iovec local = {(void *)(g->local_base + src_off + done), bytes - done};
        struct iovec remote = {(void *)(uintptr_t)(win + dst_off + done), bytes - done};
        ssize_t n = process_vm_writev(comm->peers[peer].pid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return errno == ESRCH || n == 0 ? AC_GIN_ERR_PEER : AC_GIN_ERR_SYSTEM;
        done += (uint64_t)n;
    }
    return AC_GIN_OK;
}

static int cma_signal(void *ctx, uint32_t peer, uint32_t signal_id, uint64_t value, bool is_add,
                      int *peer_out)
{
    struct ac_gin *g = ctx;
    *peer_out = (int)peer;
    if (peer >= (uint32_t)g->comm->nranks || signal_id >= (uint32_t)g->comm->nranks)
        return AC_GIN_ERR_ACCESS;
    uint64_t *sig = &g->segs[peer]->signals[signal_id];
    /* Release: the puts before this descriptor (completed syscalls) are ordered before the
     * signal a peer acquires. */
    if (is_add)
        __atomic_fetch_add(sig, value, __ATOMIC_RELEASE);
    else
        __atomic_store_n(sig, value, __ATOMIC_RELEASE);
    return AC_GIN_OK;
}

/* A peer of this host is dead when its pid is gone or a zombie (killed, not yet reaped). */
static bool pid_is_dead(int pid)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

static int cma_poll(void *ctx, int *peer_out)
{
    struct ac_gin *g = ctx;
    struct ncclComm *comm = g->comm;
    int dead = atomic_load(&comm->ras_dead_rank);
    if (dead >= 0) {
        *peer_out = dead;
        return AC_GIN_ERR_PEER;
    }
    for (int p = 0; p < comm->nranks; p++) {
        if (p != comm->rank && pid_is_dead(comm->peers[p].pid)) {
            *peer_out = p;
            return AC_GIN_ERR_PEER;
        }
    }
    return AC_GIN_OK;
}

static int cma_post_window(void *ctx, void *addr, uint64_t bytes, uint64_t epoch, int *peer_out)
{
    struct ac_gin *g = ctx;
    struct gin_seg *mine = g->segs[g->comm->rank];
    (void)peer_out;
    mine->win_addr = (uint64_t)(uintptr_t)addr;
    mine->win_bytes = bytes;
    /* Release: peers that read the epoch (acquire) read this window's address and size. */
    __atomic_store_n(&mine->win_epoch, epoch, __ATOMIC_RELEASE);
    return AC_GIN_OK;
}

static bool cma_window_ready(void *ctx, uint32_t peer, uint64_t epoch)
{
    struct ac_gin *g = ctx;
    return __atomic_load_n(&g->segs[peer]->win_epoch, __ATOMIC_ACQUIRE) == epoch;
}

static const struct ac_gin_backend cma_backend = {
    .size = sizeof(struct ac_gin_backend),
    .name = "cma",
    .put = cma_put,
    .signal = cma_signal,
    .poll = cma_poll,
    .post_window = cma_post_window,
    .window_ready = cma_window_ready,
};

/* --- progress ------------------------------------------------------------------------------ */

static int host_poll(void *arg)
{
    struct ac_gin *g = arg;
    int n = 0;
    if (pthread_mutex_trylock(&g->consume_lock) == 0) {
        n = ac_gin_consume(g->ring, g->be, g, GIN_NSLOTS);
        pthread_mutex_unlock(&g->consume_lock);
    }
    if (g->sock || g->rdma) {
        /* What a waiter waits for (windows, signals) comes as frames: read them on every poll,
         * not only at the liveness period (that made every call wait up to 2 ms). */
        int peer = -1;
        int st = g->sock ? ac_gin_sock_drain(g, &peer) : ac_gin_rdma_drain(g, &peer);
        if (st != AC_GIN_OK)
            ac_gin_ring_fail(g->ring, st, peer);
    }
    if (n > 0)
        ac_backoff_reset(&g->backoff);
    else
        ac_backoff_idle(&g->backoff);
    uint64_t now = ac_now_ns();
    if (now < g->next_liveness_ns)
        return AC_GIN_OK;
    g->next_liveness_ns = now + GIN_LIVENESS_NS;
    int peer = -1, status = g->be->poll(g, &peer);
    if (status == AC_GIN_OK && g->deadline_ns && now > g->deadline_ns)
        status = AC_GIN_ERR_TIMEOUT;
    if (status != AC_GIN_OK)
        ac_gin_ring_fail(g->ring, status, peer);
    return __atomic_load_n(&g->ring->error, __ATOMIC_ACQUIRE);
}

/* The engine thread. A GPU producer cannot consume, so something else must, and a GPU cannot wake
 * a thread: the thread polls the doorbell. Host producers consume the ring themselves while they
 * wait (host_poll), which is faster than handing over to another thread on a loaded machine, and
 * a thread descheduled while holding the consumer lock would stall them. So the thread consumes
 * only work that has waited a whole nap without anyone else consuming it; it is the engine for
 * producers that cannot run it themselves, and costs host calls nothing but its naps. */
static void *progress_main(void *arg)
{
    struct ac_gin *g = arg;
    uint64_t last_completed = 0;
    while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
        uint64_t bell = __atomic_load_n(&g->ring->doorbell, __ATOMIC_ACQUIRE);
        uint64_t completed = __atomic_load_n(&g->ring->completed, __ATOMIC_ACQUIRE);
        bool is_stalled = completed != bell && completed == last_completed;
        last_completed = completed;
        if (is_stalled && pthread_mutex_trylock(&g->consume_lock) == 0) {
            int n = ac_gin_consume(g->ring, g->be, g, GIN_NSLOTS);
            pthread_mutex_unlock(&g->consume_lock);
            if (n > 0)
                continue;
        }
        if (g->sock || g->rdma) {
            int peer = -1;
            int st = g->sock ? ac_gin_sock_drain(g, &peer) : ac_gin_rdma_drain(g, &peer);
            if (st != AC_GIN_OK)
                ac_gin_ring_fail(g->ring, st, peer);
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* --- set-up -------------------------------------------------------------------------------- */

static void seg_path(const struct ncclComm *comm, int rank, char *out, size_t n)
{
    snprintf(out, n, "%s/anyccl-gin-%016llx-%d", ac_config_get()->shm_dir,
             (unsigned long long)comm->comm_hash, rank);
}

static ncclResult_t map_seg(struct ac_gin *g, int rank, bool create)
{
    char path[512];
    seg_path(g->comm, rank, path, sizeof(path));
    int fd = open(path, create ? O_RDWR | O_CREAT | O_EXCL : O_RDWR, 0600);
    if (fd < 0)
        return AC_FAIL(ncclSystemError,
                       "GIN: cannot %s %s: %s (ANYCCL_SHM_DIR must be a tmpfs "
                       "shared by the ranks of this host)",
                       create ? "create" : "open", path, strerror(errno));
    if (create && ftruncate(fd, (off_t)g->seg_bytes) != 0) {
        close(fd);
        unlink(path);
        return AC_SYSFAIL("GIN: ftruncate of the signal segment");
    }
    void *p = mmap(NULL, g->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return AC_SYSFAIL("GIN: mmap of a signal segment");
    g->segs[rank] = p;
    return ncclSuccess;
}

static void gin_free(struct ac_gin *g)
{
    if (!g)
        return;
    if (g->has_thread) {
        __atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
        pthread_join(g->thread, NULL);
    }
    ac_gin_sock_free(g);
    ac_gin_rdma_free(g);
    for (int r = 0; g->segs && r < g->comm->nranks; r++)
        if (g->segs[r])
            munmap(g->segs[r], g->seg_bytes);
    free(g->segs);
    ac_gin_ring_destroy(g->ring);
    pthread_mutex_destroy(&g->consume_lock);
    free(g);
}

/* Collective: every rank creates its segment, then maps its peers' once all exist, then removes
 * its file once all have mapped it (nothing is left in /dev/shm, even if a rank dies later). */
/* Whether every pair of ranks can use the cma backend: decided from the peer table, which every
 * rank holds identically, so that all ranks pick the same backend. */
static bool all_pairs_can_map(const struct ncclComm *comm)
{
    const struct ac_peer_info *pi = comm->peers;
    for (int i = 0; i < comm->nranks; i++)
        if (!pi[i].can_cma || !ac_peer_shares_host(&pi[i], &pi[0]))
            return false;
    return true;
}

static ncclResult_t cma_setup(struct ac_gin *g)
{
    struct ncclComm *comm = g->comm;
    char path[512];
    g->seg_bytes = sizeof(struct gin_seg) + (size_t)comm->nranks * sizeof(uint64_t);
    g->segs = calloc((size_t)comm->nranks, sizeof(*g->segs));
    if (!g->segs)
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    AC_CHECK(map_seg(g, comm->rank, true));
    seg_path(comm, comm->rank, path, sizeof(path));
    ncclResult_t res = ac_bootstrap_barrier(comm->bs);
    for (int r = 0; res == ncclSuccess && r < comm->nranks; r++)
        if (r != comm->rank)
            res = map_seg(g, r, false);
    if (res == ncclSuccess)
        res = ac_bootstrap_barrier(comm->bs);
    unlink(path);
    g->signals = NULL;
    return res;
}

enum { CAN_CMA = 1, CAN_IB = 2, CAN_OFI = 4, CAN_SOCKET = 8 };

static const char *const cap_names[] = {"cma", "ib", "ofi", "socket"};

/* What this rank can run, under the transports' rules. */
static uint32_t local_caps(const struct ncclComm *comm)
{
    const struct ac_config *cfg = ac_config_get();
    const char *net = cfg->net;
    if (net && strcmp(net, "ib") != 0 && strcmp(net, "ofi") != 0 && strcmp(net, "socket") != 0)
        net = NULL; /* the registry warns about it and ignores it */
    uint32_t caps = 0;
    if (!cfg->shm_disable && all_pairs_can_map(comm))
        return CAN_CMA; /* every rank computes it alike, and it comes first: no probing */
    const struct ac_rdma_transport *rts[] = {&ac_ib_transport, &ac_ofi_transport};
    for (int i = 0; i < 2; i++) {
        bool is_forced = net && strcmp(net, rts[i]->tp.name) == 0;
        char why[256] = "";
        if ((!net || is_forced) && rts[i]->pv->is_usable(is_forced, why, sizeof(why)))
            caps |= i == 0 ? CAN_IB : CAN_OFI;
        else if (is_forced)
            AC_WARN("GIN: ANYCCL_NET=%s, but this rank cannot use it: %s", net, why);
    }
    if (!net || strcmp(net, "socket") == 0)
        caps |= CAN_SOCKET;
    return caps;
}

/* Collective: the first backend (cma, ib, ofi, socket) that every rank can run. */
static ncclResult_t pick_backend(struct ncclComm *comm, int *cap_out)
{
    uint32_t *all = calloc((size_t)comm->nranks, sizeof(*all));
    if (!all)
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    all[comm->rank] = local_caps(comm);
    ncclResult_t res = ac_bootstrap_allgather(comm->bs, all, sizeof(*all));
    uint32_t common = ~0u;
    int lacking = -1;
    for (int r = 0; res == ncclSuccess && r < comm->nranks; r++) {
        if ((all[r] & ~CAN_CMA) == 0 && lacking < 0)
            lacking = r;
        common &= all[r];
    }
    free(all);
    AC_CHECK(res);
    for (int i = 0; i < 4; i++) {
        if (common & (1u << i)) {
            *cap_out = i;
            return ncclSuccess;
        }
    }
    const char *net = ac_config_get()->net;
    return AC_FAIL(ncclSystemError,
                   "GIN: rank %d: no backend every rank can run%s%s%s (rank %d has no network "
                   "backend it may use; see its log)",
                   comm->rank, net ? " with ANYCCL_NET=" : "", net ? net : "",
                   net ? ", which allows no fallback" : "", lacking);
}

static ncclResult_t gin_setup(struct ncclComm *comm, struct ac_gin **out)
{
    ncclResult_t res = ncclSuccess;
    struct ac_gin *g = calloc(1, sizeof(*g));
    if (!g)
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    g->comm = comm;
    pthread_mutex_init(&g->consume_lock, NULL);
    int cap = -1;
    char engine_line[400];
    AC_CHECK_GOTO(ac_gin_engine_for_host_alltoall(engine_line, sizeof(engine_line)), res, fail);
    AC_CHECK_GOTO(pick_backend(comm, &cap), res, fail);
    if (cap == 0) {
        g->be = &cma_backend;
        AC_CHECK_GOTO(cma_setup(g), res, fail);
    } else if (cap == 1 || cap == 2) {
        g->be = &ac_gin_rdma_backend;
        AC_CHECK_GOTO(ac_gin_rdma_setup(g, cap == 1 ? &ac_ib_transport : &ac_ofi_transport), res,
                      fail);
    } else {
        g->be = &ac_gin_sock_backend;
        AC_CHECK_GOTO(ac_gin_sock_setup(g), res, fail);
    }
    uint64_t *signals = g->segs ? g->segs[comm->rank]->signals : g->signals;
    g->ring = ac_gin_ring_create(GIN_NSLOTS, signals, (uint32_t)comm->nranks, &comm->abort_flag);
    if (!g->ring) {
        res = AC_FAIL(ncclSystemError, "GIN: out of memory for the descriptor ring");
        goto fail;
    }
    g->ring->host_poll = host_poll;
    g->ring->host_poll_arg = g;
    if (pthread_create(&g->thread, NULL, progress_main, g) != 0) {
        res = AC_SYSFAIL("GIN: pthread_create of the progress thread");
        goto fail;
    }
    g->has_thread = true;
    AC_INFO(AC_SUB_NET | AC_SUB_COLL,
            "GIN: engine=sw backend=%s via=%s ring=%u slots, %d ranks (%s)", g->be->name,
            cap_names[cap], GIN_NSLOTS, comm->nranks, engine_line);
    *out = g;
    return ncclSuccess;
fail:
    gin_free(g);
    return res;
}

/* --- all-to-all -------------------------------------------------------------------------- */

static ncclResult_t status_error(struct ac_gin *g, int status)
{
    struct ncclComm *comm = g->comm;
    int peer = g->ring->error_peer;
    g->is_broken = true;
    switch (status) {
    case AC_GIN_ERR_ABORT:
        return AC_FAIL(ncclRemoteError, "alltoall (GPU-initiated path): the communicator was "
                                        "aborted");
    case AC_GIN_ERR_TIMEOUT:
        return AC_FAIL(ncclRemoteError,
                       "alltoall (GPU-initiated path): rank %d: no progress "
                       "within ANYCCL_TIMEOUT=%lld s",
                       comm->rank, (long long)ac_config_get()->timeout_s);
    case AC_GIN_ERR_PEER:
        return AC_FAIL(ncclRemoteError,
                       "alltoall (GPU-initiated path, %s backend): rank %d: peer rank %d "
                       "(pid %d on %s) died or is unreachable%s%s",
                       g->be->name, comm->rank, peer,
                       peer >= 0 && peer < comm->nranks ? comm->peers[peer].pid : -1,
                       peer >= 0 && peer < comm->nranks ? comm->peers[peer].hostname : "?",
                       g->has_why ? ": " : "", g->has_why ? g->why : "");
    case AC_GIN_ERR_ACCESS:
        return AC_FAIL(ncclInternalError,
                       "alltoall (GPU-initiated path): rank %d: a put to "
                       "rank %d fell outside a window",
                       comm->rank, peer);
    default:
        return AC_FAIL(ncclSystemError,
                       "alltoall (GPU-initiated path): rank %d: the %s backend "
                       "failed writing to rank %d%s%s",
                       comm->rank, g->be->name, peer, g->has_why ? ": " : "",
                       g->has_why ? g->why : "");
    }
}

/* Each rank posts its receive buffer as its window, then for every peer whose window for this
 * call is posted: put its block, signal it. Then quiet (our send buffer is free), then wait for
 * every peer's signal (our receive buffer is complete). A peer posts the next call's window only
 * after every signal of this one arrived, so a window is never written for the wrong call. */
static ncclResult_t gin_alltoall(struct ac_gin *g, const struct ac_op *op)
{
    struct ncclComm *comm = g->comm;
    struct ac_gin_ring *r = g->ring;
    int n = comm->nranks, me = comm->rank;
    size_t blk = op->count * type_bytes(op->type);
    uint64_t epoch = ++g->epoch;
    int64_t timeout_s = ac_config_get()->timeout_s;
    g->backoff.is_oversubscribed = comm->is_oversubscribed;
    ac_backoff_reset(&g->backoff);
    g->deadline_ns = timeout_s > 0 ? ac_now_ns() + (uint64_t)timeout_s * 1000000000ull : 0;
    int peer = -1, status = g->be->post_window(g, op->recvbuff, (uint64_t)n * blk, epoch, &peer);
    if (status != AC_GIN_OK) {
        ac_gin_ring_fail(r, status, peer);
        return status_error(g, status);
    }
    g->local_base = op->sendbuff;
    g->local_bytes = (uint64_t)n * blk;
    memcpy((char *)op->recvbuff + (size_t)me * blk, (const char *)op->sendbuff + (size_t)me * blk,
           blk);
    uint64_t last = 0;
    int sent = 1;
    unsigned spins = 0;
    bool *done = calloc((size_t)n, sizeof(*done));
    if (!done)
        return AC_FAIL(ncclSystemError, "GIN: out of memory");
    done[me] = true;
    while (sent < n && status == AC_GIN_OK) {
        bool progressed = false;
        for (int i = 1; i < n && status == AC_GIN_OK; i++) {
            int p = (me + i) % n;
            if (done[p] || !g->be->window_ready(g, (uint32_t)p, epoch))
                continue;
            status = ac_gin_put(r, (uint32_t)p, (uint64_t)p * blk, (uint64_t)me * blk, blk, NULL);
            if (status == AC_GIN_OK)
                status = ac_gin_signal(r, (uint32_t)p, (uint32_t)me, 1, 1, &last);
            done[p] = true;
            sent++;
            progressed = true;
        }
        if (!progressed && status == AC_GIN_OK)
            status = ac_gin_check(r, &spins);
    }
    free(done);
    if (status == AC_GIN_OK)
        status = ac_gin_quiet(r, last);
    for (int i = 1; i < n && status == AC_GIN_OK; i++)
        status = ac_gin_wait_signal(r, (uint32_t)((me + n - i) % n), epoch);
    if (status != AC_GIN_OK)
        return status_error(g, status);
    return ncclSuccess;
}

static bool gin_wanted(struct ac_op *op)
{
    struct ncclComm *comm = op->comm;
    if (!ac_config_get()->gpu_initiated || op->coll != AC_COLL_ALLTOALL || comm->nranks < 2 ||
        op->count == 0)
        return false;
    size_t bytes = op->count * type_bytes(op->type) * (size_t)comm->nranks;
    /* in place or overlapping: peers would overwrite what we still send */
    return !ac_buffers_overlap(op->sendbuff, bytes, op->recvbuff, bytes);
}

ncclResult_t ac_gin_try_op(struct ac_op *op, bool *handled_out)
{
    struct ncclComm *comm = op->comm;
    *handled_out = false;
    if (op->coll != AC_COLL_ALLTOALL) /* every other call: one compare */
        return ncclSuccess;
    if (!gin_wanted(op)) {
        if (ac_config_get()->gpu_initiated && !comm->gin)
            AC_INFO(AC_SUB_COLL, "GIN: this alltoall takes the normal path (in a group, in "
                                 "place, or empty)");
        return ncclSuccess;
    }
    *handled_out = true;
    if (!comm->gin)
        AC_CHECK(gin_setup(comm, &comm->gin));
    if (comm->gin->is_broken)
        return AC_FAIL(ncclRemoteError,
                       "alltoall (GPU-initiated path): rank %d: the engine "
                       "failed in an earlier call (rank %d); destroy or abort the communicator",
                       comm->rank, comm->gin->ring->error_peer);
    return gin_alltoall(comm->gin, op);
}

void ac_gin_comm_free(struct ncclComm *comm)
{
    gin_free(comm->gin);
    comm->gin = NULL;
}
