/* The device path of calls on streams (devpath.h): collectives on GPU buffers planned as the host
 * path plans them (same algorithm, protocol, channels, tuner), turned into the device engine's
 * tasks (ac_sched_from_task) with their connectors, and launched as one ac_k_coll on the user's
 * stream per call; the call returns once the launch is queued (NCCL's semantics).
 *
 * Choice (src/core/devpath_pick.c): at a communicator's first collective on GPU buffers, every
 * rank of it, in the same call, so that all take the same path.
 *
 * Connectors (src/transport/p2p/) are made when a call first needs them, through the bootstrap,
 * after the stream proxy went idle (it uses the bootstrap for its own connectors). The slots each
 * launch moves on a connector are counted here, so each launch starts from the right counter
 * values (devcoll.h: no state on the device). The launches of one communicator run in call order
 * even on different streams (an event joins them), so that two never share a connector at once.
 *
 * Calls on registered buffers may go direct (devpath_direct.h): the kernel then works on the
 * peers' buffers in place, its connectors carrying only the barriers before and after.
 *
 * Send/recv go this path once a collective turned it on (choosing it takes every rank); those
 * of one group run in one launch. Host buffers with a stream stay on the staged path
 * (src/core/stream.c). */
#include "core/devpath.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"
#include "core/devpath_direct.h"
#include "core/plan.h"
#include "core/stream.h"
#include "device/backend.h"
#include "transport/p2p/p2p.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG_CONN 0x50320100u /* + 2 * set + (message from the receiving end) */
#define NWORK 32             /* launches in flight per communicator before a call waits */
#define STATUS_BYTES 128     /* the status word, alone in its line */
/* How long ncclCommDestroy waits for launches in flight before aborting them, and then before
 * leaving their memory allocated rather than free what a kernel may still use. */
#define DRAIN_WAIT_NS (10ull * 1000000000ull)

/* One launch's pinned memory: its status word, its tasks and their ring orders. */
struct work {
    char *mem;
    size_t bytes;
    void *event;
    void *stream;
    bool is_busy;
    enum ac_coll coll;
    uint64_t nops;
    _Atomic uint64_t launch_ns; /* when launched, for the watcher's timeout; 0 while refilled */
    struct ac_direct_call dcall; /* a direct launch: the peers' buffers it maps, given back when
                                  * it ended */
    void **join_events;          /* one per other stream of the launch's ops (join_streams) */
    int njoin_events;
};

struct ac_devpath {
    struct ncclComm *comm;
    const struct ac_backend *be;
    int device;
    bool is_on;
    struct ac_direct *direct;      /* NULL: calls never go direct (devpath_direct.h) */
    volatile uint32_t *abort_word; /* host_alloc: read by every kernel of this communicator */
    /* Reads at destroy go on a stream of their own (non-blocking): the legacy default stream
     * would also wait for the user's blocking streams. */
    void *copy_stream;
    struct ac_p2p_conn **send, **recv; /* [set * nranks + peer], NULL until needed */
    pthread_mutex_t lock;              /* the work ring: submit, poll and free */
    struct work works[NWORK];
    int next;
    struct work *last;
    uint64_t nlaunches;
    pthread_t watcher;
    bool has_watcher;
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_cond;
    bool is_stopping;
    bool has_warned_abort;
    bool has_logged_p2p;
};

/* ---- connectors ---- */

struct need {
    int set;
    int peer;
    bool is_send;
};

static struct ac_p2p_conn **conn_slot(struct ac_devpath *dp, int set, int peer, bool is_send)
{
    return &(is_send ? dp->send : dp->recv)[(size_t)set * dp->comm->nranks + peer];
}

/* Both ends open their half, send its blob, then read the other's: bootstrap sends never wait
 * for the receiver, so every rank sending first cannot deadlock. */
static ncclResult_t connect_needs(struct ac_devpath *dp, const struct need *needs, int nneeds)
{
    struct ncclComm *comm = dp->comm;
    struct ac_p2p_conn **made = calloc((size_t)nneeds, sizeof *made);
    ncclResult_t res = ncclSuccess;
    int nopen = 0;

    if (!made)
        return AC_FAIL(ncclSystemError, "out of memory for P2P connectors");
    for (; nopen < nneeds; nopen++) {
        const struct need *nd = &needs[nopen];
        struct ac_p2p_blob blob;
        size_t slot_bytes = nd->set < AC_P2P_CONN_BASE ? comm->slot_bytes : comm->p2p_slot_bytes;
        if (!(made[nopen] = calloc(1, sizeof *made[nopen]))) {
            res = AC_FAIL(ncclSystemError, "out of memory for P2P connectors");
            goto fail;
        }
        AC_CHECK_GOTO(ac_p2p_conn_open(dp->be, dp->device, nd->is_send, nd->peer,
                                       (uint32_t)comm->nslots, slot_bytes,
                                       comm->peers[comm->rank].host_hash, made[nopen], &blob),
                      res, fail);
        AC_CHECK_GOTO(ac_bootstrap_send(comm->bs, nd->peer,
                                        TAG_CONN + 2u * (uint32_t)nd->set + !nd->is_send, &blob,
                                        sizeof blob),
                      res, fail);
    }
    for (int i = 0; i < nneeds; i++) {
        struct ac_p2p_blob blob;
        AC_CHECK_GOTO(ac_bootstrap_recv(comm->bs, needs[i].peer,
                                        TAG_CONN + 2u * (uint32_t)needs[i].set + needs[i].is_send,
                                        &blob, sizeof blob),
                      res, fail);
        AC_CHECK_GOTO(ac_p2p_conn_connect(made[i], &blob), res, fail);
    }
    for (int i = 0; i < nneeds; i++)
        *conn_slot(dp, needs[i].set, needs[i].peer, needs[i].is_send) = made[i];
    AC_INFO(AC_SUB_P2P, "P2P: %d connectors made (%d slots of %zu bytes)", nneeds, comm->nslots,
            comm->slot_bytes);
    free(made);
    return ncclSuccess;
fail:
    for (int i = 0; i < nneeds && i <= nopen; i++)
        if (made[i]) {
            ac_p2p_conn_close(made[i]);
            free(made[i]);
        }
    free(made);
    return res;
}

static void add_need(struct need *needs, int *n, int set, int peer, bool is_send)
{
    for (int i = 0; i < *n; i++)
        if (needs[i].set == set && needs[i].peer == peer && needs[i].is_send == is_send)
            return;
    needs[(*n)++] = (struct need){set, peer, is_send};
}

/* ---- per communicator ---- */

static void *watch_main(void *arg);

static ncclResult_t devpath_of(struct ncclComm *comm, const struct ac_backend *be, int device,
                               struct ac_devpath **dp_out)
{
    struct ac_devpath *dp = comm->devpath;
    size_t nconns = (size_t)AC_NCONN_SETS * (size_t)comm->nranks;

    if (dp) {
        *dp_out = dp;
        return ncclSuccess;
    }
    if (!(dp = calloc(1, sizeof *dp)) || !(dp->send = calloc(nconns, sizeof *dp->send)) ||
        !(dp->recv = calloc(nconns, sizeof *dp->recv))) {
        if (dp)
            free(dp->send);
        free(dp);
        return AC_FAIL(ncclSystemError, "out of memory for the P2P path");
    }
    dp->comm = comm;
    dp->be = be;
    dp->device = device;
    pthread_mutex_init(&dp->lock, NULL);
    pthread_mutex_init(&dp->watch_lock, NULL);
    pthread_cond_init(&dp->watch_cond, NULL);
    comm->devpath = dp;
    *dp_out = dp;
    return ncclSuccess;
}

/* Rank peer of the communicator lives in another process that is gone. */
static bool peer_is_gone(const struct ncclComm *comm, int peer)
{
    return ac_peer_has_exited(&comm->peers[comm->rank], &comm->peers[peer]);
}

static void abort_kernels(struct ac_devpath *dp, const char *why)
{
    if (!dp->abort_word || __atomic_load_n(dp->abort_word, __ATOMIC_RELAXED))
        return;
    __atomic_store_n(dp->abort_word, 1u, __ATOMIC_RELEASE);
    if (why && !dp->has_warned_abort) {
        dp->has_warned_abort = true;
        AC_WARN("P2P: rank %d: %s: the device collectives of this communicator stop waiting",
                dp->comm->rank, why);
    }
}

/* A launch still running ANYCCL_TIMEOUT seconds after it was queued (the clock starts at the
 * launch, not when the stream reaches it). Reads the work ring without its lock, which the
 * submitting thread may hold while it waits for that very launch: launch_ns is cleared before an
 * entry is refilled and read again after the event, so a refilled entry is never taken for the
 * old launch. */
static bool has_timed_out(struct ac_devpath *dp, uint64_t timeout_ns)
{
    uint64_t now = ac_now_ns();
    char *saved = strdup(ac_last_error());
    bool timed_out = false;

    for (int i = 0; i < NWORK && !timed_out; i++) {
        struct work *w = &dp->works[i];
        uint64_t t = atomic_load(&w->launch_ns);
        bool done = true;
        if (t == 0 || now - t < timeout_ns || dp->be->event_query(w->event, &done) != ncclSuccess)
            continue;
        timed_out = !done && atomic_load(&w->launch_ns) == t;
    }
    if (saved)
        ac_restore_error(saved);
    free(saved);
    return timed_out;
}

/* Kernels wait on their peers without a clock: this thread tells them to stop when the
 * communicator is revoked, a peer is known dead (RAS, or a process of this host gone), or a
 * launch outlives ANYCCL_TIMEOUT. */
static void *watch_main(void *arg)
{
    struct ac_devpath *dp = arg;
    struct ncclComm *comm = dp->comm;
    int64_t ms = ac_config_get()->peer_check_ms, timeout_s = ac_config_get()->timeout_s;
    char why[128];

    ac_log_set_rank(comm->rank);
    pthread_mutex_lock(&dp->watch_lock);
    while (!dp->is_stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (ms > 0 ? ms : 1000) % 1000 * 1000000;
        ts.tv_sec += (ms > 0 ? ms : 1000) / 1000 + ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&dp->watch_cond, &dp->watch_lock, &ts);
        if (dp->is_stopping)
            break;
        int dead = atomic_load(&comm->ras_dead_rank);
        why[0] = '\0';
        /* abort_flag alone is not looked at: split and shrink raise it for a moment
         * (src/core/split.c); ncclCommAbort stops the kernels itself (ac_devpath_free). */
        if (comm->is_revoked)
            snprintf(why, sizeof why, "ncclCommRevoke");
        else if (dead >= 0)
            snprintf(why, sizeof why, "rank %d is dead or unreachable (RAS)", dead);
        for (int r = 0; r < comm->nranks && !why[0]; r++)
            if (r != comm->rank && peer_is_gone(comm, r))
                snprintf(why, sizeof why, "rank %d (pid %d) exited", r, comm->peers[r].pid);
        if (!why[0] && timeout_s > 0 && has_timed_out(dp, (uint64_t)timeout_s * 1000000000ull))
            snprintf(why, sizeof why,
                     "a collective on the device still waits for its peers after %lld s "
                     "(ANYCCL_TIMEOUT)",
                     (long long)timeout_s);
        if (why[0]) {
            int expected = ncclSuccess;
            if (!comm->is_revoked)
                atomic_compare_exchange_strong(&comm->async_error, &expected, (int)ncclRemoteError);
            abort_kernels(dp, why);
        }
    }
    pthread_mutex_unlock(&dp->watch_lock);
    return NULL;
}

static ncclResult_t start_path(struct ac_devpath *dp)
{
    int err;

    AC_CHECK(dp->be->host_alloc(STATUS_BYTES, (void **)&dp->abort_word));
    AC_CHECK(dp->be->stream_create(&dp->copy_stream));
    for (int i = 0; i < NWORK; i++)
        AC_CHECK(dp->be->event_create(&dp->works[i].event));
    err = pthread_create(&dp->watcher, NULL, watch_main, dp);
    if (err != 0) {
        errno = err;
        return AC_SYSFAIL("pthread_create for the P2P watcher thread");
    }
    dp->has_watcher = true;
    return ncclSuccess;
}

/* ---- work buffers and status ---- */

static void note_status(struct ac_devpath *dp, struct work *w)
{
    uint32_t status = __atomic_load_n((volatile uint32_t *)w->mem, __ATOMIC_ACQUIRE);
    struct ncclComm *comm = dp->comm;
    int expected = ncclSuccess;
    ncclResult_t res = status == AC_DEV_MISMATCH ? ncclInvalidUsage : ncclRemoteError;

    if (status == AC_DEV_OK)
        return;
    atomic_compare_exchange_strong(&comm->async_error, &expected, (int)res);
    if (status == AC_DEV_ABORTED && comm->abort_flag)
        return; /* the user asked for it */
    AC_WARN("P2P: rank %d: %s (call #%llu) on the device failed: %s; its output is undefined "
            "(ncclCommGetAsyncError reports %s)",
            comm->rank, ac_coll_name(w->coll), (unsigned long long)w->nops,
            status == AC_DEV_MISMATCH
                ? "a slot's size or tag differs from this rank's: the ranks called different "
                  "collectives, counts, types, operators or NCCL_PROTO/NCCL_ALGO settings"
            : status == AC_DEV_ABORTED ? "aborted (ncclCommAbort, or a peer died)"
                                       : "unknown status",
            ncclGetErrorString(res));
}

/* Under dp->lock. wait: block until it finished (else only look). */
static ncclResult_t retire(struct ac_devpath *dp, struct work *w, bool wait, bool *done_out)
{
    bool done = !w->is_busy;

    if (!done && wait)
        AC_CHECK(dp->be->event_sync(w->event));
    if (!done)
        AC_CHECK(dp->be->event_query(w->event, &done));
    if (done && w->is_busy) {
        note_status(dp, w);
        ac_direct_release(dp->comm, &w->dcall);
        w->is_busy = false;
    }
    *done_out = done;
    return ncclSuccess;
}

static ncclResult_t take_work(struct ac_devpath *dp, size_t need, struct work **w_out)
{
    struct work *w = &dp->works[dp->next];
    bool done;

    AC_CHECK(retire(dp, w, true, &done));
    if (w->bytes < need) {
        size_t bytes = 4096;
        void *mem;
        while (bytes < need)
            bytes *= 2;
        AC_CHECK(dp->be->host_alloc(bytes, &mem));
        if (w->mem)
            dp->be->host_free(w->mem);
        w->mem = mem;
        w->bytes = bytes;
    }
    memset(w->mem, 0, STATUS_BYTES);
    atomic_store(&w->launch_ns, 0);
    dp->next = (dp->next + 1) % NWORK;
    *w_out = w;
    return ncclSuccess;
}

void ac_devpath_poll(struct ncclComm *comm)
{
    struct ac_devpath *dp = comm->devpath;
    bool done;

    if (!dp || !dp->is_on)
        return;
    char *saved = strdup(ac_last_error());
    pthread_mutex_lock(&dp->lock);
    for (int i = 0; i < NWORK; i++)
        if (dp->works[i].is_busy)
            retire(dp, &dp->works[i], false, &done);
    pthread_mutex_unlock(&dp->lock);
    if (saved)
        ac_restore_error(saved);
    free(saved);
}

uint64_t ac_devpath_launches(const struct ncclComm *comm)
{
    const struct ac_devpath *dp = comm->devpath;
    return dp ? __atomic_load_n(&dp->nlaunches, __ATOMIC_RELAXED) : 0;
}

/* ---- planning and launching ---- */

/* A 32-bit tag of seed and parts (top bit set: never 0). */
static uint32_t mix_tag(uint64_t h, const uint64_t *parts, size_t nparts)
{
    for (size_t i = 0; i < nparts; i++)
        h = (h ^ parts[i]) * 0xbf58476d1ce4e5b9ull ^ (h >> 29);
    return (uint32_t)(h ^ (h >> 32)) | 1u << 31;
}

/* Same on both ends of every connector: what the receiver checks each Simple slot against. */
static uint32_t task_tag(const struct ac_task *t)
{
    /* a user's send meets the peer's recv */
    enum ac_coll coll = t->op_coll == AC_COLL_RECV ? AC_COLL_SEND : t->op_coll;
    uint64_t h = (uint64_t)coll * 0x9e3779b97f4a7c15ull;
    uint64_t parts[] = {t->is_reduction ? (uint64_t)t->op.type : 0,
                        t->is_reduction ? (uint64_t)t->op.kind | (uint64_t)t->op.has_premul << 4 |
                                              (uint64_t)(t->op.postdiv != 0) << 5
                                        : 0,
                        t->is_reduction ? t->count : t->count * t->type_bytes,
                        (uint64_t)(uint32_t)t->root,
                        (uint64_t)t->proto << 8 | (uint64_t)t->algo << 1 | t->is_oneshot};
    return mix_tag(h, parts, sizeof parts / sizeof parts[0]);
}

/* Slots a task moves on each of its incoming and outgoing connectors. */
static void count_slots(const struct ac_task *t, uint64_t *nrecv_out, uint64_t *nsend_out)
{
    uint64_t nr = 0, ns = 0;
    struct ac_step st;

    for (uint64_t k = 0; k < t->nsteps; k++) {
        ac_task_step(t, k, &st);
        nr += (st.flags & AC_STEP_RECV) != 0;
        ns += (st.flags & AC_STEP_SEND) != 0;
    }
    *nrecv_out = nr;
    *nsend_out = ns;
}

static bool is_p2p(const struct ac_op *op)
{
    return op->coll == AC_COLL_SEND || op->coll == AC_COLL_RECV;
}

/* Whether this rank's op can go the device path, and the device of its buffers. */
static bool is_candidate(const struct ac_op *op, int *device_out)
{
    const struct ac_backend *be = op->backend;
    bool is_root = op->comm->rank == op->root;
    bool reads = op->coll != AC_COLL_BROADCAST || is_root;
    bool writes = op->coll != AC_COLL_REDUCE || is_root;
    const void *bufs[2];
    int nbufs = 0, device = -1;

    if (!be || be->kind == AC_MEM_HOST || op->comm->nranks < 2 || op->count == 0)
        return false;
    /* Send/recv only once the path is on: only two ranks make the call, and choosing the path
     * takes all of them. A rank's own transfers stay staged (a copy). */
    if (is_p2p(op) && (!op->comm->devpath || !op->comm->devpath->is_on || op->peer < 0 ||
                       op->peer == op->comm->rank))
        return false;
    reads = reads && op->coll != AC_COLL_RECV;
    writes = writes && op->coll != AC_COLL_SEND;
    reads = reads && (op->coll != AC_COLL_SCATTER || is_root);
    writes = writes && (op->coll != AC_COLL_GATHER || is_root);
    if (reads && op->sendbuff)
        bufs[nbufs++] = op->sendbuff;
    if (writes && op->recvbuff)
        bufs[nbufs++] = op->recvbuff;
    for (int i = 0; i < nbufs; i++) {
        bool is_mine = false;
        struct ac_ptr_info info;
        if (be->classify(bufs[i], &is_mine, &info) != ncclSuccess || !is_mine ||
            info.kind == AC_MEM_HOST || (device >= 0 && info.device != device))
            return false;
        device = info.device;
    }
    *device_out = device;
    return device >= 0;
}

/* One communicator's set-up step (decide, or connect), in a thread of its own when a group spans
 * several communicators driven by one thread: each waits for its peers. */
struct comm_job {
    struct ac_devpath *dp;
    struct need *needs;
    int nneeds;
    ncclResult_t res;
    /* direct candidates of this communicator, in call order, and their exchanges' results */
    int nx;
    struct exchange {
        const struct ac_op *op;
        struct ac_direct_call *call;
    } * xs;
};

static void *decide_thread(void *arg)
{
    struct comm_job *j = arg;
    ac_log_set_rank(j->dp->comm->rank);
    j->res = ac_devpath_pick(j->dp->comm, j->dp->be, j->dp->device, &j->dp->is_on);
    if (j->res == ncclSuccess && j->dp->is_on)
        j->res = ac_direct_setup(j->dp->comm, &j->dp->direct);
    return NULL;
}

static void *exchange_thread(void *arg)
{
    struct comm_job *j = arg;
    ac_log_set_rank(j->dp->comm->rank);
    j->res = ncclSuccess;
    for (int i = 0; i < j->nx && j->res == ncclSuccess; i++)
        j->res = ac_direct_exchange(j->dp->comm, j->dp->direct, j->xs[i].op, j->xs[i].call);
    return NULL;
}

static void *connect_thread(void *arg)
{
    struct comm_job *j = arg;
    ac_log_set_rank(j->dp->comm->rank);
    j->res = j->nneeds ? connect_needs(j->dp, j->needs, j->nneeds) : ncclSuccess;
    return NULL;
}

static ncclResult_t run_jobs(struct comm_job *jobs, int n, void *(*fn)(void *))
{
    pthread_t *threads;
    ncclResult_t res = ncclSuccess;
    int nstarted = 0;

    /* The stream proxy uses the bootstrap for its own connectors: let it go idle first. */
    for (int i = 0; i < n; i++)
        ac_stream_drain(jobs[i].dp->comm);
    if (n <= 1) {
        if (n == 1)
            fn(&jobs[0]);
        return n == 1 ? jobs[0].res : ncclSuccess;
    }
    if (!(threads = calloc((size_t)n, sizeof *threads)))
        return AC_FAIL(ncclSystemError, "out of memory");
    for (; nstarted < n; nstarted++)
        if (pthread_create(&threads[nstarted], NULL, fn, &jobs[nstarted]) != 0) {
            res = AC_SYSFAIL("pthread_create for P2P set-up");
            break;
        }
    for (int i = 0; i < nstarted; i++) {
        pthread_join(threads[i], NULL);
        if (jobs[i].res != ncclSuccess && res == ncclSuccess)
            res = jobs[i].res;
    }
    free(threads);
    return res;
}

/* The rank's own block of all-to-all, gather and scatter (the planner leaves it to the caller on
 * the device path: it is a copy on the stream). */
static ncclResult_t local_block(const struct ac_devpath *dp, const struct ac_op *op)
{
    int me = op->comm->rank;
    size_t blk = op->count * ac_type_size(op->type);
    const char *sb = op->sendbuff;
    char *rb = op->recvbuff;
    const void *src = NULL;
    void *dst = NULL;

    if (op->coll == AC_COLL_ALLTOALL) {
        src = sb + (size_t)me * blk;
        dst = rb + (size_t)me * blk;
    } else if (op->coll == AC_COLL_GATHER && me == op->root) {
        src = sb;
        dst = rb + (size_t)me * blk;
    } else if (op->coll == AC_COLL_SCATTER && me == op->root) {
        src = sb + (size_t)me * blk;
        dst = rb;
    }
    if (!src || src == dst || blk == 0)
        return ncclSuccess;
    return dp->be->memcpy_async(dst, src, blk, op->stream);
}

/* Fills one device task from a planned task; advances its connectors' counts. */
static void fill_task(struct ac_devpath *dp, const struct ac_task *t, struct ac_dev_task *dt,
                      int *ring)
{
    uint64_t nr, ns;

    memset(dt, 0, sizeof *dt);
    ac_sched_from_task(t, &dt->sched);
    if (t->ring)
        memcpy(ring, t->ring, (size_t)dp->comm->nranks * sizeof *ring);
    dt->sched.ring = (uint64_t)(uintptr_t)ring;
    dt->proto = (uint32_t)t->proto;
    dt->tag = task_tag(t);
    count_slots(t, &nr, &ns);
    for (int k = 0; k < t->nrecv; k++) {
        struct ac_p2p_conn *c = *conn_slot(dp, t->conn_index, t->recv_peers[k], false);
        dt->recv[k] = c->dev;
        c->dev.base += nr;
    }
    for (int k = 0; k < t->nsend; k++) {
        struct ac_p2p_conn *c = *conn_slot(dp, t->conn_index, t->send_peers[k], true);
        dt->send[k] = c->dev;
        c->dev.base += ns;
    }
}

/* ---- direct launches (devpath_direct.h) ---- */

/* Blocks of a direct launch: one per DIRECT_BLOCK_BYTES of the rank's count, up to the ring
 * channels there are connectors for (the same on every rank: count and type are). */
#define DIRECT_BLOCK_BYTES (1u << 20)
#define DIRECT_MAX_BLOCKS 16

static int direct_blocks(const struct ac_op *op)
{
    size_t nb = op->count * ac_type_size(op->type) / DIRECT_BLOCK_BYTES;
    size_t max = DIRECT_MAX_BLOCKS < AC_MAX_CHANNELS ? DIRECT_MAX_BLOCKS : AC_MAX_CHANNELS;
    return (int)(nb < 1 ? 1 : nb > max ? max : nb);
}

/* Both ends of every connector: the barrier slots' tag. */
static uint32_t direct_tag(const struct ac_op *op)
{
    uint64_t h = 0x6469726563740000ull ^ (uint64_t)op->coll * 0x9e3779b97f4a7c15ull;
    uint64_t parts[] = {op->count, (uint64_t)op->type,
                        ac_coll_reduces(op->coll) ? (uint64_t)op->redop.kind : 0,
                        (uint64_t)(uint32_t)op->root};
    return mix_tag(h, parts, sizeof parts / sizeof parts[0]);
}

/* A direct launch's block b of nb: the connectors of ring set b to every peer, each moving two
 * empty slots each way (the barriers before and after). */
static void fill_direct_task(struct ac_devpath *dp, const struct ac_op *op,
                             const struct ac_direct_call *dc, int b, int nb, struct ac_dev_task *dt)
{
    struct ncclComm *comm = dp->comm;
    struct ac_sched *s = &dt->sched;
    int k = 0;

    memset(dt, 0, sizeof *dt);
    s->coll = (uint32_t)op->coll;
    s->count = op->count;
    s->type_bytes = ac_type_size(op->type);
    s->nranks = comm->nranks;
    s->rank = comm->rank;
    s->nrecv = s->nsend = comm->nranks - 1;
    ac_sched_set_op(s, ac_coll_reduces(op->coll), &op->redop);
    dt->direct = dc->d;
    dt->direct.block = (uint32_t)b;
    dt->direct.nblocks = (uint32_t)nb;
    dt->proto = AC_PROTO_SIMPLE;
    dt->tag = direct_tag(op);
    for (int p = 0; p < comm->nranks; p++) {
        if (p == comm->rank)
            continue;
        struct ac_p2p_conn *rc = *conn_slot(dp, b, p, false), *sc = *conn_slot(dp, b, p, true);
        dt->recv[k] = rc->dev;
        dt->send[k++] = sc->dev;
        rc->dev.base += 2;
        sc->dev.base += 2;
    }
}

static ncclResult_t grow_needs(struct comm_job *job, int more)
{
    struct need *grown = realloc(job->needs, (size_t)(job->nneeds + more) * sizeof *grown);
    if (!grown)
        return AC_FAIL(ncclSystemError, "out of memory");
    job->needs = grown;
    return ncclSuccess;
}

static ncclResult_t collect_direct_needs(struct ac_devpath *dp, const struct ac_op *op,
                                         struct comm_job *job)
{
    int n = dp->comm->nranks, nb = direct_blocks(op);

    AC_CHECK(grow_needs(job, 2 * n * nb));
    for (int b = 0; b < nb; b++)
        for (int p = 0; p < n; p++) {
            if (p == dp->comm->rank)
                continue;
            if (!*conn_slot(dp, b, p, false))
                add_need(job->needs, &job->nneeds, b, p, false);
            if (!*conn_slot(dp, b, p, true))
                add_need(job->needs, &job->nneeds, b, p, true);
        }
    return ncclSuccess;
}

/* A launch whose ops are on several streams (send/recv of one group) runs on the first one,
 * after the others' work so far, and the others wait for it. Events of the work entry, reused
 * once it retired. Under dp->lock. */
static ncclResult_t join_streams(struct ac_devpath *dp, struct work *w, void *stream,
                                 void *const *joins, int njoins)
{
    if (njoins > w->njoin_events) {
        void **grown = realloc(w->join_events, (size_t)njoins * sizeof *grown);
        if (!grown)
            return AC_FAIL(ncclSystemError, "out of memory");
        w->join_events = grown;
        for (; w->njoin_events < njoins; w->njoin_events++)
            AC_CHECK(dp->be->event_create(&w->join_events[w->njoin_events]));
    }
    for (int i = 0; i < njoins; i++) {
        AC_CHECK(dp->be->event_record(w->join_events[i], joins[i]));
        AC_CHECK(dp->be->stream_wait_event(stream, w->join_events[i]));
    }
    return ncclSuccess;
}

static ncclResult_t launch_op(struct ac_devpath *dp, const struct ac_op *op,
                              const struct ac_run *run, struct ac_direct_call *dc,
                              void *const *joins, int njoins)
{
    struct ncclComm *comm = dp->comm;
    bool is_direct = dc && dc->is_direct;
    int ntasks = is_direct ? direct_blocks(op) : run->ntasks;
    size_t tasks_bytes = (size_t)ntasks * sizeof(struct ac_dev_task);
    /* direct tasks have no ring order */
    size_t need =
        STATUS_BYTES + tasks_bytes + (is_direct ? 0 : (size_t)ntasks * comm->nranks * sizeof(int));
    struct ac_kcoll_args args;
    struct work *w;
    ncclResult_t res = ncclSuccess;

    if (!is_direct)
        AC_CHECK(local_block(dp, op));
    if (ntasks == 0)
        return ncclSuccess;
    pthread_mutex_lock(&dp->lock);
    AC_CHECK_GOTO(take_work(dp, need, &w), res, out);
    struct ac_dev_task *tasks = (struct ac_dev_task *)(w->mem + STATUS_BYTES);
    int *rings = (int *)(w->mem + STATUS_BYTES + tasks_bytes);
    for (int i = 0; i < ntasks; i++) {
        if (is_direct)
            fill_direct_task(dp, op, dc, i, ntasks, &tasks[i]);
        else
            fill_task(dp, &run->tasks[i].t, &tasks[i], rings + (size_t)i * comm->nranks);
    }
    args = (struct ac_kcoll_args){.tasks = (uint64_t)(uintptr_t)tasks,
                                  .abort = (uint64_t)(uintptr_t)dp->abort_word,
                                  .status = (uint64_t)(uintptr_t)w->mem,
                                  .ntasks = (uint32_t)ntasks};
    /* Launches of one communicator never overlap: the previous one may be on another stream. */
    if (dp->last && dp->last->is_busy && dp->last->stream != op->stream)
        AC_CHECK_GOTO(dp->be->stream_wait_event(op->stream, dp->last->event), res, broken);
    AC_CHECK_GOTO(join_streams(dp, w, op->stream, joins, njoins), res, broken);
    AC_CHECK_GOTO(dp->be->launch_coll(&args, (unsigned)ntasks, op->stream), res, broken);
    AC_CHECK_GOTO(dp->be->event_record(w->event, op->stream), res, broken);
    for (int i = 0; i < njoins; i++)
        AC_CHECK_GOTO(dp->be->stream_wait_event(joins[i], w->event), res, broken);
    if (is_direct) {
        w->dcall = *dc; /* its imports are given back when the launch ended */
        dc->nrefs = 0;
    }
    w->is_busy = true;
    atomic_store(&w->launch_ns, ac_now_ns());
    w->stream = op->stream;
    w->coll = op->coll;
    w->nops = comm->nops_issued;
    dp->last = w;
    __atomic_fetch_add(&dp->nlaunches, 1, __ATOMIC_RELAXED);
    if (is_p2p(op) && !dp->has_logged_p2p) {
        dp->has_logged_p2p = true;
        AC_INFO(AC_SUB_P2P, "P2P: send/recv on GPU buffers run on the device: %d transfers of a "
                            "group in one launch",
                ntasks);
    }
    AC_TRACE(AC_SUB_P2P, "P2P: %s of %zu elements: %d %s launched on stream %p",
             ac_coll_name(op->coll), op->count, ntasks,
             is_direct ? "direct blocks (registered buffers in place)" : "tasks", op->stream);
    goto out;
broken:
    /* The connectors' counts moved on for a launch that did not happen: they no longer match the
     * peers'. */
    {
        int expected = ncclSuccess;
        atomic_compare_exchange_strong(&comm->async_error, &expected, (int)res);
    }
out:
    pthread_mutex_unlock(&dp->lock);
    return res;
}

static ncclResult_t collect_needs(struct ac_devpath *dp, const struct ac_run *run,
                                  struct comm_job *job)
{
    for (int i = 0; i < run->ntasks; i++) {
        const struct ac_task *t = &run->tasks[i].t;
        AC_CHECK(grow_needs(job, 2 * AC_TASK_MAX_PEERS));
        for (int k = 0; k < t->nrecv; k++)
            if (!*conn_slot(dp, t->conn_index, t->recv_peers[k], false))
                add_need(job->needs, &job->nneeds, t->conn_index, t->recv_peers[k], false);
        for (int k = 0; k < t->nsend; k++)
            if (!*conn_slot(dp, t->conn_index, t->send_peers[k], true))
                add_need(job->needs, &job->nneeds, t->conn_index, t->send_peers[k], true);
    }
    return ncclSuccess;
}

static int job_of(struct comm_job *jobs, int *njobs, struct ac_devpath *dp)
{
    for (int i = 0; i < *njobs; i++)
        if (jobs[i].dp == dp)
            return i;
    jobs[*njobs] = (struct comm_job){.dp = dp};
    return (*njobs)++;
}

/* Decides the path of every communicator that has not yet, among the candidates. */
static ncclResult_t decide_all(struct ac_op *const *list, const int *devices, int n,
                               struct comm_job *jobs)
{
    int njobs = 0;
    ncclResult_t res = ncclSuccess;

    for (int i = 0; i < n; i++) {
        struct ac_devpath *dp = NULL;
        if (devices[i] < 0 || list[i]->comm->devpath)
            continue;
        AC_CHECK(devpath_of(list[i]->comm, list[i]->backend, devices[i], &dp));
        job_of(jobs, &njobs, dp);
    }
    if (njobs == 0)
        return ncclSuccess;
    AC_CHECK(run_jobs(jobs, njobs, decide_thread));
    for (int i = 0; i < njobs && res == ncclSuccess; i++)
        if (jobs[i].dp->is_on)
            res = start_path(jobs[i].dp);
    return res;
}

static ncclResult_t check_device(const struct ac_devpath *dp, const struct ac_op *op, int device)
{
    if (op->backend != dp->be || device != dp->device)
        return AC_FAIL(ncclInvalidUsage,
                       "rank %d: %s on %s device %d buffers, but this communicator's "
                       "peer-to-peer path was set up on %s device %d at its first call: one "
                       "communicator uses one device (or set NCCL_P2P_DISABLE=1)",
                       op->comm->rank, ac_coll_name(op->coll), op->backend->name, device,
                       dp->be->name, dp->device);
    return ncclSuccess;
}

static ncclResult_t add_exchange(struct comm_job *job, const struct ac_op *op,
                                 struct ac_direct_call *call)
{
    struct exchange *grown = realloc(job->xs, (size_t)(job->nx + 1) * sizeof *grown);

    if (!grown)
        return AC_FAIL(ncclSystemError, "out of memory");
    job->xs = grown;
    job->xs[job->nx++] = (struct exchange){op, call};
    return ncclSuccess;
}

/* lead[i]: the index of the first device send/recv of op i's communicator in the list (the
 * launch that carries them all), or i for a collective. */
static void find_leads(struct ac_op *const *list, const int *devices, int n, int *lead)
{
    for (int i = 0; i < n; i++) {
        lead[i] = i;
        for (int j = 0; j < i && is_p2p(list[i]); j++)
            if (devices[j] >= 0 && is_p2p(list[j]) && list[j]->comm == list[i]->comm) {
                lead[i] = lead[j];
                break;
            }
    }
}

/* The send/recv of one communicator in a group run in one launch, all at once, as the peers'
 * do (sequential launches could each wait for a peer's later one); so one launch must not hold
 * two transfers on one connector: several sends to one peer (or receives from one) in a group
 * are staged, which the peer decides alike from its matching receives (sends). */
static void stage_repeated_p2p(struct ac_op *const *list, int *devices, int n)
{
    for (int i = 0; i < n; i++) {
        if (devices[i] < 0 || !is_p2p(list[i]))
            continue;
        bool is_repeated = false;
        for (int j = 0; j < n && !is_repeated; j++)
            is_repeated = j != i && list[j]->comm == list[i]->comm &&
                          list[j]->coll == list[i]->coll && list[j]->peer == list[i]->peer;
        if (is_repeated)
            devices[i] = -1;
    }
}

/* Plans, connects and launches the ops that go the device path (list[i] with devices[i] >= 0):
 * direct candidates exchange their buffers first (each communicator in a thread of its own when
 * several are driven by this one), then the connectors either kind of launch needs are made.
 * Collectives launch in call order, then each communicator's send/recv in one launch. */
static ncclResult_t run_device_ops(struct ac_op *const *list, const int *devices, int n,
                                   struct comm_job *jobs)
{
    struct ac_run *runs = calloc((size_t)n, sizeof *runs);
    struct ac_direct_call *calls = calloc((size_t)n, sizeof *calls);
    struct ac_op *copies = calloc((size_t)n, sizeof *copies);
    void **joins = calloc((size_t)n, sizeof *joins);
    int *lead = calloc((size_t)n, sizeof *lead);
    int njobs = 0, nx = 0;
    ncclResult_t res = ncclSuccess;

    if (!runs || !calls || !copies || !joins || !lead) {
        free(runs);
        free(calls);
        free(copies);
        free(joins);
        free(lead);
        return AC_FAIL(ncclSystemError, "out of memory");
    }
    for (int i = 0; i < n; i++)
        ac_plan_init(&runs[i]);
    find_leads(list, devices, n, lead);
    for (int i = 0; i < n; i++) {
        if (devices[i] < 0 || lead[i] != i)
            continue;
        struct ac_devpath *dp = list[i]->comm->devpath;
        struct ac_op **tail = &copies[i].next;
        copies[i] = *list[i];
        copies[i].next = NULL;
        for (int j = i + 1; is_p2p(list[i]) && j < n; j++)
            if (devices[j] >= 0 && lead[j] == i) {
                AC_CHECK_GOTO(check_device(dp, list[j], devices[j]), res, out);
                copies[j] = *list[j];
                copies[j].next = NULL;
                *tail = &copies[j];
                tail = &copies[j].next;
            }
        runs[i].is_device = true;
        AC_CHECK_GOTO(check_device(dp, list[i], devices[i]), res, out);
        AC_CHECK_GOTO(ac_plan_build(&runs[i], &copies[i]), res, out);
        if (ac_direct_is_candidate(dp->direct, list[i])) {
            AC_CHECK_GOTO(add_exchange(&jobs[job_of(jobs, &njobs, dp)], list[i], &calls[i]), res,
                          out);
            nx++;
        }
    }
    if (nx > 0)
        AC_CHECK_GOTO(run_jobs(jobs, njobs, exchange_thread), res, out);
    for (int i = 0; i < n; i++) {
        if (devices[i] < 0 || lead[i] != i)
            continue;
        struct ac_devpath *dp = list[i]->comm->devpath;
        struct comm_job *job = &jobs[job_of(jobs, &njobs, dp)];
        if (calls[i].is_direct)
            AC_CHECK_GOTO(collect_direct_needs(dp, list[i], job), res, out);
        else
            AC_CHECK_GOTO(collect_needs(dp, &runs[i], job), res, out);
    }
    for (int i = 0; i < njobs; i++)
        if (jobs[i].nneeds > 0) {
            AC_CHECK_GOTO(run_jobs(jobs, njobs, connect_thread), res, out);
            break;
        }
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            if (devices[i] < 0 || is_p2p(list[i]) != (pass == 1) || lead[i] != i)
                continue;
            int njoins = 0;
            for (struct ac_op *o = copies[i].next; o; o = o->next) {
                bool is_new = o->stream != list[i]->stream;
                for (int k = 0; k < njoins && is_new; k++)
                    is_new = joins[k] != o->stream;
                if (is_new)
                    joins[njoins++] = o->stream;
            }
            AC_CHECK_GOTO(launch_op(list[i]->comm->devpath, list[i], &runs[i], &calls[i], joins,
                                    njoins),
                          res, out);
        }
out:
    for (int i = 0; i < n; i++) {
        ac_plan_free(&runs[i]);
        if (devices[i] >= 0)
            ac_direct_release(list[i]->comm, &calls[i]);
    }
    for (int i = 0; i < njobs; i++) {
        free(jobs[i].needs);
        free(jobs[i].xs);
    }
    free(runs);
    free(calls);
    free(copies);
    free(joins);
    free(lead);
    return res;
}

static ncclResult_t split_rest(struct ac_op *const *list, const int *devices, int n,
                               struct ac_op **rest_out)
{
    struct ac_op *rest = NULL, **tail = &rest;
    int nrest = 0, k = 0;

    for (int i = 0; i < n; i++)
        nrest += devices[i] < 0;
    if (nrest == 0) {
        *rest_out = NULL;
        return ncclSuccess;
    }
    struct ac_op *copies = calloc((size_t)nrest, sizeof *copies);
    if (!copies)
        return AC_FAIL(ncclSystemError, "out of memory");
    for (int i = 0; i < n; i++) {
        if (devices[i] >= 0)
            continue;
        copies[k] = *list[i];
        copies[k].next = NULL;
        *tail = &copies[k];
        tail = &copies[k].next;
        k++;
    }
    *rest_out = rest;
    return ncclSuccess;
}

ncclResult_t ac_devpath_submit(const struct ac_op *ops, struct ac_op **rest_out,
                               bool *has_device_out)
{
    int n = 0, ndev = 0;
    const struct ac_op *op;
    ncclResult_t res = ncclSuccess;

    *rest_out = NULL;
    *has_device_out = false;
    for (op = ops; op; op = op->next)
        n++;
    struct ac_op **list = calloc((size_t)n, sizeof *list);
    int *devices = calloc((size_t)n, sizeof *devices);
    struct comm_job *jobs = calloc((size_t)n, sizeof *jobs);
    if (!list || !devices || !jobs) {
        res = AC_FAIL(ncclSystemError, "out of memory");
        goto out;
    }
    n = 0;
    for (op = ops; op; op = op->next, n++) {
        list[n] = (struct ac_op *)op;
        if (!is_candidate(op, &devices[n]))
            devices[n] = -1;
    }
    AC_CHECK_GOTO(decide_all(list, devices, n, jobs), res, out);
    for (int i = 0; i < n; i++) {
        const struct ac_devpath *dp = list[i]->comm->devpath;
        if (devices[i] >= 0 && !(dp && dp->is_on))
            devices[i] = -1;
    }
    stage_repeated_p2p(list, devices, n);
    for (int i = 0; i < n; i++)
        ndev += devices[i] >= 0;
    if (ndev == 0)
        goto out;
    memset(jobs, 0, (size_t)n * sizeof *jobs);
    AC_CHECK_GOTO(run_device_ops(list, devices, n, jobs), res, out);
    AC_CHECK_GOTO(split_rest(list, devices, n, rest_out), res, out);
    *has_device_out = true;
out:
    free(list);
    free(devices);
    free(jobs);
    return res;
}

/* ---- teardown ---- */

static bool all_retired(struct ac_devpath *dp)
{
    bool done, all = true;
    for (int i = 0; i < NWORK; i++)
        if (dp->works[i].is_busy &&
            (retire(dp, &dp->works[i], false, &done) != ncclSuccess || !done))
            all = false;
    return all;
}

static bool wait_retired(struct ac_devpath *dp, uint64_t wait_ns)
{
    uint64_t deadline = ac_now_ns() + wait_ns;
    struct timespec ts = {0, 1000000};

    while (!all_retired(dp)) {
        if (ac_now_ns() > deadline)
            return false;
        nanosleep(&ts, NULL);
    }
    return true;
}

ncclResult_t ac_devpath_finalize(struct ncclComm *comm)
{
    struct ac_devpath *dp = comm->devpath;

    if (!dp || !dp->is_on)
        return ncclSuccess;
    /* unbounded: a launch that waits for a peer forever is stopped by the watcher (ANYCCL_TIMEOUT,
     * a dead peer, a revoke), and the launch then ends */
    pthread_mutex_lock(&dp->lock);
    while (!wait_retired(dp, 1000000000ull))
        ;
    pthread_mutex_unlock(&dp->lock);
    return ncclSuccess;
}

/* A receiver writes `freed` into this rank's memory after it consumed a slot, possibly after
 * this rank's own kernels finished: wait for the last of those writes before freeing it. */
static void wait_freed(struct ac_devpath *dp)
{
    struct ncclComm *comm = dp->comm;
    size_t nconns = (size_t)AC_NCONN_SETS * (size_t)comm->nranks;
    uint64_t deadline = ac_now_ns() + DRAIN_WAIT_NS;
    struct timespec ts = {0, 1000000};

    for (size_t i = 0; i < nconns; i++) {
        struct ac_p2p_conn *c = dp->send[i];
        uint64_t freed = 0;
        while (c && atomic_load(&comm->async_error) == ncclSuccess && !comm->abort_flag) {
            if (dp->be->memcpy_async(&freed, (void *)(uintptr_t)c->dev.freed, sizeof freed,
                                     dp->copy_stream) != ncclSuccess ||
                dp->be->stream_sync(dp->copy_stream) != ncclSuccess || freed >= c->dev.base)
                break;
            if (ac_now_ns() > deadline) {
                AC_WARN("P2P: rank %d: rank %d has not consumed what this rank sent it (%llu of "
                        "%llu slots) when the communicator is destroyed",
                        comm->rank, c->peer, (unsigned long long)freed,
                        (unsigned long long)c->dev.base);
                return;
            }
            nanosleep(&ts, NULL);
        }
    }
}

/* keep_own: leave this rank's own connector memory allocated (peers' kernels may still write
 * it); the imports of the peers' memory are closed all the same. */
static void close_conns(struct ac_devpath *dp, bool keep_own)
{
    size_t nconns = (size_t)AC_NCONN_SETS * (size_t)dp->comm->nranks;

    /* Imports first: a mapping of a peer's memory never outlives this rank's use of it. */
    for (size_t i = 0; i < 2 * nconns; i++) {
        struct ac_p2p_conn *c = i < nconns ? dp->send[i] : dp->recv[i - nconns];
        if (c && c->is_imported) {
            dp->be->ipc_close(c->remote);
            c->is_imported = false;
            c->remote = NULL;
        }
    }
    for (size_t i = 0; i < 2 * nconns; i++) {
        struct ac_p2p_conn *c = i < nconns ? dp->send[i] : dp->recv[i - nconns];
        if (c && !keep_own)
            ac_p2p_conn_close(c);
        free(c);
    }
}

void ac_devpath_free(struct ncclComm *comm)
{
    struct ac_devpath *dp = comm->devpath;
    bool is_drained = true;

    if (!dp)
        return;
    char *saved = strdup(ac_last_error());
    if (comm->abort_flag)
        abort_kernels(dp, NULL);
    pthread_mutex_lock(&dp->lock);
    if (dp->is_on && !wait_retired(dp, DRAIN_WAIT_NS)) {
        abort_kernels(dp, "ncclCommDestroy waited 10 s for collectives still running on the "
                          "device");
        is_drained = wait_retired(dp, DRAIN_WAIT_NS);
    }
    pthread_mutex_unlock(&dp->lock);
    if (dp->has_watcher) {
        pthread_mutex_lock(&dp->watch_lock);
        dp->is_stopping = true;
        pthread_cond_broadcast(&dp->watch_cond);
        pthread_mutex_unlock(&dp->watch_lock);
        pthread_join(dp->watcher, NULL);
    }
    comm->devpath = NULL;
    if (!is_drained) {
        AC_WARN("P2P: rank %d: device collectives still running after an abort: their "
                "connectors and work memory are left allocated",
                comm->rank);
        goto out;
    }
    if (dp->is_on)
        wait_freed(dp);
    /* After a failure (a mismatch, a dead or stuck peer, a revoke) the peers' kernels may still
     * be running, and one that finds room writes into this rank's slots or counters: that memory
     * is left allocated rather than freed under it (between threads of one process nothing else
     * keeps it alive). Bounded: once per failed communicator. A plain ncclCommAbort of a
     * communicator that did not fail frees it, as before. */
    bool keep_own = atomic_load(&comm->async_error) != ncclSuccess;
    if (keep_own)
        AC_INFO(AC_SUB_P2P,
                "P2P: rank %d: the communicator failed: its connector memory is left allocated, "
                "since a peer's kernel may still write it",
                comm->rank);
    close_conns(dp, keep_own);
    ac_direct_free(dp->direct);
    for (int i = 0; i < NWORK; i++) {
        if (dp->works[i].mem)
            dp->be->host_free(dp->works[i].mem);
        if (dp->works[i].event)
            dp->be->event_destroy(dp->works[i].event);
        for (int k = 0; k < dp->works[i].njoin_events; k++)
            dp->be->event_destroy(dp->works[i].join_events[k]);
        free(dp->works[i].join_events);
    }
    if (dp->abort_word)
        dp->be->host_free((void *)dp->abort_word);
    if (dp->copy_stream)
        dp->be->stream_destroy(dp->copy_stream);
    pthread_mutex_destroy(&dp->lock);
    pthread_mutex_destroy(&dp->watch_lock);
    pthread_cond_destroy(&dp->watch_cond);
    free(dp->send);
    free(dp->recv);
    free(dp);
out:
    if (saved)
        ac_restore_error(saved);
    free(saved);
}
