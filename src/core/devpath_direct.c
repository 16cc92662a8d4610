/* Direct collectives on registered GPU buffers: candidates, the per-call exchange through
 * shared-memory mailboxes, and the peers' buffers mapped (devpath_direct.h).
 *
 * Each rank owns one page made with memfd_create, which every other rank of the host maps (the
 * fd copied with pidfd_getfd; between threads of one process the fd itself). A page holds two
 * records, used by alternate calls: a rank can be at most one call ahead of any peer (a call's
 * second phase waits for every peer's first), so the record a peer reads is never the one being
 * rewritten. A call has two phases: 1. each rank writes where its buffers are and whether it can
 * go direct, then `seq`; 2. after mapping its peers' buffers, whether that worked, in `ack`. The
 * call is direct when every rank's phase 2 says so, which every rank reads alike. */
#include "core/devpath_direct.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/procfd.h"
#include "common/time.h"
#include "core/bootstrap.h"
#include "core/comm.h"
#include "core/devreg.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE_BYTES 4096

/* What a rank says about one call. */
struct record {
    _Atomic uint64_t seq; /* phase 1: the call's number once the rest is written */
    _Atomic uint64_t ack; /* phase 2: number << 1 | mapped-everything-fine */
    uint32_t can;         /* phase 1: this rank's buffers can go direct */
    int32_t pid;
    uint64_t send_ptr, recv_ptr; /* as this rank addresses them */
    uint64_t send_off, recv_off; /* from their allocation's base (the handle's) */
    uint64_t scalar;
    uint32_t has_send, has_recv; /* the peers need (and get) this buffer */
    struct ac_ipc_handle send_h, recv_h;
};

struct page {
    struct record rec[2];
};

struct ac_direct {
    int nranks, rank;
    int fd;
    struct page **pages; /* by rank, this rank's own included */
    uint64_t seq;        /* calls exchanged */
    size_t min_bytes;
    bool has_logged_direct, has_logged_slots;
};

/* What each rank sends at setup. */
struct setup_entry {
    int32_t pid, fd;
    int64_t min_bytes;
    uint32_t is_enabled;
    uint32_t is_mapped;
};

_Static_assert(sizeof(struct page) <= PAGE_BYTES, "a mailbox page holds two records");

void ac_direct_free(struct ac_direct *st)
{
    if (!st)
        return;
    for (int r = 0; st->pages && r < st->nranks; r++)
        if (st->pages[r])
            munmap(st->pages[r], PAGE_BYTES);
    free(st->pages);
    if (st->fd >= 0)
        close(st->fd);
    free(st);
}

static bool map_peer(struct ac_direct *st, int peer, const struct setup_entry *e)
{
    bool is_mine = e->pid == (int32_t)getpid();
    int fd = is_mine ? e->fd : ac_fd_of_process(e->pid, e->fd);
    void *p;

    if (fd < 0) {
        AC_INFO(AC_SUB_P2P,
                "P2P direct: cannot take rank %d's mailbox (fd %d of process %d): "
                "%s; registered buffers go through the slots",
                peer, (int)e->fd, (int)e->pid, strerror(errno));
        return false;
    }
    p = mmap(NULL, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (!is_mine)
        close(fd);
    if (p == MAP_FAILED) {
        AC_INFO(AC_SUB_P2P, "P2P direct: mapping rank %d's mailbox: %s", peer, strerror(errno));
        return false;
    }
    st->pages[peer] = p;
    return true;
}

ncclResult_t ac_direct_setup(struct ncclComm *comm, struct ac_direct **st_out)
{
    const struct ac_config *cfg = ac_config_get();
    struct setup_entry *all = calloc((size_t)comm->nranks, sizeof *all);
    struct setup_entry *me;
    struct ac_direct *st = calloc(1, sizeof *st);
    ncclResult_t res = ncclSuccess;
    bool is_on = true;

    *st_out = NULL;
    if (!all || !st || !(st->pages = calloc((size_t)comm->nranks, sizeof *st->pages))) {
        res = AC_FAIL(ncclSystemError, "out of memory for the P2P direct mailboxes");
        goto out;
    }
    st->nranks = comm->nranks;
    st->rank = comm->rank;
    st->fd = memfd_create("anyccl-direct", MFD_CLOEXEC);
    me = &all[comm->rank];
    *me =
        (struct setup_entry){.pid = (int32_t)getpid(),
                             .fd = st->fd,
                             .min_bytes = cfg->p2p_direct_min_bytes,
                             .is_enabled = cfg->local_register && comm->nranks <= AC_DEV_MAX_RANKS};
    if (st->fd < 0 || ftruncate(st->fd, PAGE_BYTES) != 0) {
        AC_INFO(AC_SUB_P2P, "P2P direct: no mailbox (memfd: %s)", strerror(errno));
        me->is_enabled = 0;
    }
    AC_CHECK_GOTO(ac_bootstrap_allgather(comm->bs, all, sizeof *all), res, out);
    for (int r = 0; r < comm->nranks; r++)
        is_on = is_on && all[r].is_enabled;
    /* A second round: whether every rank mapped every mailbox. */
    me->is_mapped = is_on;
    for (int r = 0; is_on && r < comm->nranks && me->is_mapped; r++)
        me->is_mapped = map_peer(st, r, &all[r]);
    AC_CHECK_GOTO(ac_bootstrap_allgather(comm->bs, all, sizeof *all), res, out);
    for (int r = 0; r < comm->nranks; r++)
        is_on = is_on && all[r].is_mapped;
    if (!is_on)
        goto out;
    st->min_bytes = all[0].min_bytes < 0 ? 0 : (size_t)all[0].min_bytes;
    AC_INFO(AC_SUB_P2P,
            "P2P direct: registered buffers of calls of at least %zu bytes are read and written "
            "in place by the peers",
            st->min_bytes);
    *st_out = st;
    st = NULL;
out:
    ac_direct_free(st);
    free(all);
    return res;
}

bool ac_direct_is_candidate(const struct ac_direct *st, const struct ac_op *op)
{
    size_t ts = ac_type_size(op->type);

    if (!st)
        return false;
    switch (op->coll) {
    case AC_COLL_ALLREDUCE:
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
    case AC_COLL_BROADCAST:
    case AC_COLL_REDUCE:
    case AC_COLL_ALLTOALL:
        break;
    default:
        return false;
    }
    return op->count > 0 && op->count * ts >= st->min_bytes;
}

/* The buffers op's peers reach on this rank: *send / *recv set when they need it, with its
 * extent in bytes. */
static void peers_reach(const struct ac_op *op, size_t *send_bytes, size_t *recv_bytes)
{
    size_t b = op->count * ac_type_size(op->type);
    int n = op->comm->nranks, me = op->comm->rank;

    *send_bytes = *recv_bytes = 0;
    switch (op->coll) {
    case AC_COLL_ALLREDUCE:
        *send_bytes = *recv_bytes = b;
        break;
    case AC_COLL_REDUCE:
        *send_bytes = b;
        *recv_bytes = me == op->root ? b : 0;
        break;
    case AC_COLL_REDUCESCATTER:
        *send_bytes = b * (size_t)n;
        break;
    case AC_COLL_BROADCAST:
        *send_bytes = me == op->root ? b : 0;
        break;
    case AC_COLL_ALLGATHER:
        *recv_bytes = b * (size_t)n;
        break;
    case AC_COLL_ALLTOALL:
        *recv_bytes = b * (size_t)n;
        break;
    default:
        break;
    }
}

static void fill_record(struct ncclComm *comm, const struct ac_op *op, struct record *rec)
{
    size_t sb, rb, nb = op->count * ac_type_size(op->type) * (size_t)comm->nranks;
    size_t off;

    peers_reach(op, &sb, &rb);
    rec->pid = (int32_t)getpid();
    rec->send_ptr = (uint64_t)(uintptr_t)op->sendbuff;
    rec->recv_ptr = (uint64_t)(uintptr_t)op->recvbuff;
    rec->scalar = op->redop.scalar;
    rec->has_send = sb > 0;
    rec->has_recv = rb > 0;
    rec->can = 1;
    /* all-to-all in place: a peer would overwrite a block this rank has not pushed yet */
    if (op->coll == AC_COLL_ALLTOALL && ac_buffers_overlap(op->sendbuff, nb, op->recvbuff, nb))
        rec->can = 0;
    if (sb && ac_devreg_lookup(comm, op->sendbuff, sb, &rec->send_h, &off) == ncclSuccess)
        rec->send_off = off;
    else if (sb)
        rec->can = 0;
    if (rb && ac_devreg_lookup(comm, op->recvbuff, rb, &rec->recv_h, &off) == ncclSuccess)
        rec->recv_off = off;
    else if (rb)
        rec->can = 0;
}

/* Waits until every peer's record of this call has *field at least at the call (phase 1: seq ==
 * want; phase 2: ack >> 1 == want). */
static ncclResult_t wait_peers(struct ncclComm *comm, struct ac_direct *st, uint64_t want,
                               bool is_ack)
{
    int64_t timeout_s = ac_config_get()->timeout_s;
    uint64_t start = 0;
    unsigned spins = 0;

    for (int r = 0; r < st->nranks; r++) {
        struct record *rec = &st->pages[r]->rec[want & 1];
        for (;;) {
            uint64_t v = atomic_load_explicit(is_ack ? &rec->ack : &rec->seq, memory_order_acquire);
            if ((is_ack ? v >> 1 : v) == want)
                break;
            if (++spins % 1024 != 0) {
                if (spins % 64 == 0)
                    sched_yield();
                continue;
            }
            if (comm->abort_flag || comm->is_revoked)
                return AC_FAIL(ncclRemoteError,
                               "rank %d: the communicator was aborted while "
                               "waiting for rank %d's buffers",
                               comm->rank, r);
            if (ac_peer_has_exited(&comm->peers[comm->rank], &comm->peers[r]))
                return AC_FAIL(ncclRemoteError,
                               "rank %d: rank %d (pid %d) exited before it "
                               "said where its buffers are",
                               comm->rank, r, comm->peers[r].pid);
            if (start == 0)
                start = ac_now_ns();
            else if (timeout_s > 0 && ac_now_ns() - start > (uint64_t)timeout_s * 1000000000ull)
                return AC_FAIL(ncclRemoteError,
                               "rank %d: rank %d did not reach this collective in %lld s "
                               "(ANYCCL_TIMEOUT): the ranks called different collectives, or "
                               "one is stuck",
                               comm->rank, r, (long long)timeout_s);
        }
    }
    return ncclSuccess;
}

/* Peer's buffer (ptr, handle h + off) as this rank addresses it; takes an import reference. */
static bool map_buffer(struct ncclComm *comm, int peer, const struct record *rec, uint64_t ptr,
                       const struct ac_ipc_handle *h, uint64_t off, struct ac_direct_call *c,
                       uint64_t *addr_out)
{
    void *base;

    if (rec->pid == (int32_t)getpid()) {
        *addr_out = ptr;
        return true;
    }
    if (ac_devreg_import(comm, peer, h, &base) != ncclSuccess) {
        AC_INFO(AC_SUB_P2P,
                "P2P direct: mapping rank %d's registered buffer failed (%s): this "
                "call goes through the slots",
                peer, ac_last_error());
        ac_clear_error();
        return false;
    }
    c->refs[c->nrefs].peer = peer;
    c->refs[c->nrefs++].base = base;
    *addr_out = (uint64_t)(uintptr_t)base + off;
    return true;
}

ncclResult_t ac_direct_exchange(struct ncclComm *comm, struct ac_direct *st, const struct ac_op *op,
                                struct ac_direct_call *out)
{
    uint64_t want = ++st->seq;
    struct record *mine = &st->pages[st->rank]->rec[want & 1];
    bool is_fine = true;

    memset(out, 0, sizeof *out);
    fill_record(comm, op, mine);
    atomic_store_explicit(&mine->seq, want, memory_order_release);
    AC_CHECK(wait_peers(comm, st, want, false));
    int refused_by = -1;
    for (int r = 0; r < st->nranks; r++) {
        const struct record *rec = &st->pages[r]->rec[want & 1];
        if (!rec->can && refused_by < 0)
            refused_by = r;
        out->d.scalar[r] = rec->scalar;
    }
    is_fine = refused_by < 0;
    for (int r = 0; r < st->nranks && is_fine; r++) {
        const struct record *rec = &st->pages[r]->rec[want & 1];
        out->d.send[r] = r == st->rank ? rec->send_ptr : 0;
        out->d.recv[r] = r == st->rank ? rec->recv_ptr : 0;
        if (r == st->rank)
            continue;
        if (rec->has_send)
            is_fine = map_buffer(comm, r, rec, rec->send_ptr, &rec->send_h, rec->send_off, out,
                                 &out->d.send[r]);
        if (is_fine && rec->has_recv)
            is_fine = map_buffer(comm, r, rec, rec->recv_ptr, &rec->recv_h, rec->recv_off, out,
                                 &out->d.recv[r]);
    }
    atomic_store_explicit(&mine->ack, want << 1 | is_fine, memory_order_release);
    AC_CHECK(wait_peers(comm, st, want, true));
    for (int r = 0; r < st->nranks; r++)
        is_fine =
            is_fine &&
            (atomic_load_explicit(&st->pages[r]->rec[want & 1].ack, memory_order_acquire) & 1u);
    if (!is_fine) {
        ac_direct_release(comm, out);
        if (!st->has_logged_slots && refused_by >= 0) {
            st->has_logged_slots = true;
            AC_INFO(AC_SUB_P2P,
                    "P2P direct: %s of %zu elements goes through the slots: rank %d's buffers "
                    "are not registered (ncclCommRegister%s)",
                    ac_coll_name(op->coll), op->count, refused_by,
                    op->coll == AC_COLL_ALLTOALL ? ", or in place" : "");
        }
        return ncclSuccess;
    }
    if (!st->has_logged_direct) {
        st->has_logged_direct = true;
        AC_INFO(AC_SUB_P2P,
                "P2P direct: %s of %zu elements works on the registered buffers in "
                "place",
                ac_coll_name(op->coll), op->count);
    }
    out->is_direct = true;
    out->d.is_on = 1;
    out->d.root = op->root;
    return ncclSuccess;
}

void ac_direct_release(struct ncclComm *comm, struct ac_direct_call *c)
{
    for (int i = 0; i < c->nrefs; i++)
        if (ac_devreg_release(comm, c->refs[i].peer, c->refs[i].base) != ncclSuccess)
            ac_clear_error();
    c->nrefs = 0;
}
