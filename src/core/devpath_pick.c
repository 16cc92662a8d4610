/* The choice of the P2P device path (devpath.h), once per communicator, at its first collective
 * on GPU buffers: every rank tells the others, in one bootstrap allgather, whether it can run the
 * path (ANYCCL_P2P_DISABLE unset, a GPU backend whose kernels have ac_k_coll), its backend,
 * device, host and which devices it reaches; a second allgather carries each rank's verdict on
 * every peer (same backend and host; the same device or peer access both ways; a peer in another
 * process: its probe word read back through an IPC import), so that every rank takes the same
 * path. All ranks make that first call (they call the same collectives), as NCCL's lazy
 * connection set-up also requires. */
#include "core/devpath.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"
#include "device/backend.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WHY_BYTES 160
#define PROBE_BYTES 128

/* What the choice works on. */
struct pick {
    struct ncclComm *comm;
    const struct ac_backend *be;
    int device;
    bool is_on;
};

struct pick_info {
    uint32_t magic;
    int32_t pid;
    int32_t device;
    uint32_t kind; /* enum ac_mem_kind */
    uint32_t can;  /* this rank can run the device path */
    uint32_t pad;
    uint64_t host_hash;
    uint64_t pid_ns_hash;
    uint64_t peer_mask;
    uint64_t probe_addr;
    uint64_t probe_cookie;
    struct ac_ipc_handle probe_handle;
    char why[WHY_BYTES];
};

struct pick_verdict {
    uint32_t ok;
    int32_t blame; /* the rank it could not use, -1 */
    char why[WHY_BYTES];
};

#define PICK_MAGIC 0x50325049u

/* Reads the probe word a peer in another process wrote in its GPU memory, through an IPC import:
 * what the connectors will rely on. */
static bool probe_peer(const struct ac_backend *be, const struct pick_info *p, char *why,
                       size_t why_len)
{
    void *remote = NULL;
    uint64_t got = 0;
    bool is_mine = false;
    struct ac_ptr_info info;
    char *saved = strdup(ac_last_error());
    bool ok = false;

    if (be->ipc_import(&p->probe_handle, &remote) != ncclSuccess) {
        snprintf(why, why_len, "IPC import of its memory failed: %s", ac_last_error());
        goto out;
    }
    if (be->classify(remote, &is_mine, &info) != ncclSuccess || !is_mine) {
        snprintf(why, why_len, "its IPC handle maps to memory this process does not know");
        goto close;
    }
    if (be->memcpy_async(&got, remote, sizeof got, NULL) != ncclSuccess ||
        be->stream_sync(NULL) != ncclSuccess) {
        snprintf(why, why_len, "reading its memory through IPC failed: %s", ac_last_error());
        goto close;
    }
    if (got != p->probe_cookie) {
        snprintf(why, why_len, "its memory read through IPC holds %#llx, not %#llx",
                 (unsigned long long)got, (unsigned long long)p->probe_cookie);
        goto close;
    }
    ok = true;
close:
    be->ipc_close(remote);
out:
    if (saved)
        ac_restore_error(saved);
    free(saved);
    return ok;
}

/* This rank's verdict on every peer. */
static void judge(const struct pick *dp, const struct pick_info *all, struct pick_verdict *v)
{
    const struct ncclComm *comm = dp->comm;
    const struct pick_info *me = &all[comm->rank];

    v->ok = 1;
    v->blame = -1;
    for (int r = 0; r < comm->nranks && v->ok; r++) {
        const struct pick_info *p = &all[r];
        v->blame = r;
        v->ok = 0;
        if (p->magic != PICK_MAGIC)
            snprintf(v->why, sizeof v->why, "malformed information");
        else if (!p->can)
            snprintf(v->why, sizeof v->why, "%s", p->why);
        else if (r == comm->rank)
            v->ok = 1;
        else if (p->kind != me->kind)
            snprintf(v->why, sizeof v->why, "its buffers are memory of another GPU backend");
        else if (p->host_hash != me->host_hash || p->pid_ns_hash != me->pid_ns_hash)
            snprintf(v->why, sizeof v->why, "it runs on another host (or pid namespace)");
        else if (p->device != me->device &&
                 (p->device >= 64 || me->device >= 64 || !(me->peer_mask >> p->device & 1) ||
                  !(p->peer_mask >> me->device & 1)))
            snprintf(v->why, sizeof v->why, "devices %d and %d have no peer access", me->device,
                     p->device);
        else if (p->pid != me->pid && !probe_peer(dp->be, p, v->why, sizeof v->why))
            ;
        else
            v->ok = 1;
    }
    if (v->ok)
        v->blame = -1;
}

/* What this rank can do, and a probe word for peers in other processes to read. */
static void describe_self(struct pick *dp, struct pick_info *me, void **probe_out)
{
    const struct ac_backend *be = dp->be;
    const struct ac_peer_info *pi = &dp->comm->peers[dp->comm->rank];
    char *saved = strdup(ac_last_error());
    void *probe = NULL;

    memset(me, 0, sizeof *me);
    me->magic = PICK_MAGIC;
    me->pid = (int32_t)getpid();
    me->device = dp->device;
    me->kind = (uint32_t)be->kind;
    me->host_hash = pi->host_hash;
    me->pid_ns_hash = pi->pid_ns_hash;
    me->probe_cookie = (uint64_t)getpid() << 32 ^ (uint64_t)ac_now_ns() ^ 0x5032503250325032ull;
    /* The allocation comes first: it makes the device's context current (as cudaSetDevice),
     * which the kernel lookup and the peer access calls then use. */
    if (ac_config_get()->p2p_disable)
        snprintf(me->why, sizeof me->why, "NCCL_P2P_DISABLE=1 is set");
    else if (be->launch_coll == NULL || be->peer_mask == NULL || be->ipc_export == NULL)
        snprintf(me->why, sizeof me->why, "the %s backend has no device collective engine",
                 be->name);
    else if (be->alloc(dp->device, PROBE_BYTES, &probe) != ncclSuccess ||
             be->memcpy_async(probe, &me->probe_cookie, sizeof me->probe_cookie, NULL) !=
                 ncclSuccess ||
             be->stream_sync(NULL) != ncclSuccess ||
             be->ipc_export(probe, &me->probe_handle) != ncclSuccess)
        snprintf(me->why, sizeof me->why, "its probe word: %s", ac_last_error());
    else if (be->launch_coll(NULL, 0, NULL) != ncclSuccess)
        snprintf(me->why, sizeof me->why, "%s", ac_last_error());
    else if (be->peer_mask(dp->device, &me->peer_mask) != ncclSuccess)
        snprintf(me->why, sizeof me->why, "%s", ac_last_error());
    else
        me->can = 1;
    me->probe_addr = (uint64_t)(uintptr_t)probe;
    *probe_out = probe;
    if (saved)
        ac_restore_error(saved);
    free(saved);
}

static ncclResult_t decide(struct pick *dp)
{
    struct ncclComm *comm = dp->comm;
    int n = comm->nranks;
    struct pick_info *all = calloc((size_t)n, sizeof *all);
    struct pick_verdict *verdicts = calloc((size_t)n, sizeof *verdicts);
    void *probe = NULL;
    ncclResult_t res = ncclSuccess;
    int blamer = -1;

    if (!all || !verdicts) {
        res = AC_FAIL(ncclSystemError, "out of memory choosing the P2P path");
        goto out;
    }
    describe_self(dp, &all[comm->rank], &probe);
    /* A peer that is gone (or aborted) fails the agreement: the staged path then runs the call
     * and reports that peer's failure as it does for any call, asynchronously. */
    if (ac_bootstrap_allgather(comm->bs, all, sizeof *all) != ncclSuccess)
        goto broken;
    judge(dp, all, &verdicts[comm->rank]);
    /* Peers import the probe word before this allgather ends; it is freed only after it. */
    if (ac_bootstrap_allgather(comm->bs, verdicts, sizeof *verdicts) != ncclSuccess)
        goto broken;
    dp->is_on = true;
    for (int r = 0; r < n; r++)
        if (!verdicts[r].ok) {
            dp->is_on = false;
            blamer = r;
            break;
        }
    if (dp->is_on)
        AC_INFO(AC_SUB_P2P | AC_SUB_INIT,
                "P2P: on: %d ranks of this host on %s devices (this rank: device %d), "
                "collectives on GPU buffers run ac_k_coll over peer-to-peer connectors",
                n, dp->be->name, dp->device);
    else if (verdicts[blamer].blame == blamer || verdicts[blamer].blame < 0)
        AC_INFO(AC_SUB_P2P | AC_SUB_INIT,
                "P2P: off: rank %d: %s; collectives on GPU buffers are staged through host "
                "memory",
                blamer, verdicts[blamer].why);
    else
        AC_INFO(AC_SUB_P2P | AC_SUB_INIT,
                "P2P: off: rank %d cannot use rank %d: %s; collectives on GPU buffers are "
                "staged through host memory",
                blamer, verdicts[blamer].blame, verdicts[blamer].why);
    goto out;
broken:
    AC_INFO(AC_SUB_P2P | AC_SUB_INIT, "P2P: off: the ranks could not agree (%s)", ac_last_error());
    dp->is_on = false;
out:
    if (probe)
        dp->be->free(probe);
    free(all);
    free(verdicts);
    return res;
}

/* The rank, if any, that the peer information of init already rules out: no usable GPU backend,
 * another backend, another host. Every rank reads the same table, so all of them skip the
 * exchange together; a rank without a GPU (a host-buffer rank of a mixed communicator) never
 * makes it, and the GPU ranks must not wait for it. */
static int ruled_out_at_init(const struct ncclComm *comm, const char **why)
{
    const struct ac_peer_info *first = &comm->peers[0];
    for (int r = 0; r < comm->nranks; r++) {
        const struct ac_peer_info *p = &comm->peers[r];
        *why = p->gpu_kind == AC_MEM_HOST    ? "it has no usable GPU backend"
               : p->gpu_kind != first->gpu_kind ? "its GPU backend differs from rank 0's"
               : !ac_peer_shares_host(first, p) ? "it runs on another host than rank 0"
                                                : NULL;
        if (*why)
            return r;
    }
    return -1;
}

ncclResult_t ac_devpath_pick(struct ncclComm *comm, const struct ac_backend *be, int device,
                             bool *is_on_out)
{
    struct pick dp = {comm, be, device, false};
    const char *why;
    int r = ruled_out_at_init(comm, &why);

    if (r >= 0) {
        AC_INFO(AC_SUB_P2P | AC_SUB_INIT,
                "P2P: off: rank %d: %s; collectives on GPU buffers are staged through host "
                "memory", r, why);
        *is_on_out = false;
        return ncclSuccess;
    }
    AC_CHECK(decide(&dp));
    *is_on_out = dp.is_on;
    return ncclSuccess;
}
