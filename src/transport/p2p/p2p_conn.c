/* Peer-to-peer connectors for GPU buffers: each end allocates its part in its own GPU's memory
 * (the receiver: slots and the `posted` counter the sender writes; the sender: the `freed`
 * counter the receiver writes), exports it, and maps the other end's part. Counters start at 0
 * and never reset (devcoll.h), so the memory is zeroed once, here. */
#include "transport/p2p/p2p.h"

#include "common/check.h"
#include "common/log.h"

#include <string.h>
#include <unistd.h>

#define LINE 128

static size_t round_up(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

void ac_p2p_layout(uint32_t nslots, size_t slot_bytes, struct ac_p2p_layout *out)
{
    size_t off;

    memset(out, 0, sizeof *out);
    out->stride[AC_PROTO_SIMPLE] = slot_bytes;
    out->stride[AC_PROTO_LL] = AC_DEV_LL_SLOT_BYTES;
    out->stride[AC_PROTO_LL128] = AC_DEV_LL128_SLOT_BYTES;
    out->posted_off = 0;
    out->sizes_off = LINE;
    off = round_up(LINE + (size_t)nslots * sizeof(uint64_t), LINE);
    for (int p = 0; p < AC_PROTO_COUNT; p++) {
        out->slots_off[p] = off;
        off = round_up(off + (size_t)nslots * out->stride[p], LINE);
    }
    out->bytes = off;
}

static ncclResult_t alloc_zeroed(const struct ac_backend *be, int device, size_t bytes, void **out)
{
    void *p;
    ncclResult_t res;

    AC_CHECK(be->alloc(device, bytes, &p));
    res = be->memset_async(p, 0, bytes, NULL);
    if (res == ncclSuccess)
        res = be->stream_sync(NULL);
    if (res != ncclSuccess) {
        be->free(p);
        return res;
    }
    *out = p;
    return ncclSuccess;
}

ncclResult_t ac_p2p_conn_open(const struct ac_backend *be, int device, bool is_send, int peer,
                              uint32_t nslots, size_t slot_bytes, uint64_t host_hash,
                              struct ac_p2p_conn *c, struct ac_p2p_blob *blob_out)
{
    struct ac_p2p_layout l;
    struct ac_p2p_blob blob;
    ncclResult_t res;

    if (nslots == 0 || slot_bytes == 0 || slot_bytes > UINT32_MAX)
        return AC_FAIL(ncclInternalError, "p2p connector: invalid geometry %u slots of %zu bytes",
                       nslots, slot_bytes);
    ac_p2p_layout(nslots, slot_bytes, &l);
    memset(c, 0, sizeof *c);
    memset(&blob, 0, sizeof blob);
    c->be = be;
    c->is_send = is_send;
    c->peer = peer;
    c->own_bytes = is_send ? LINE : l.bytes;
    AC_CHECK(alloc_zeroed(be, device, c->own_bytes, &c->own));
    res = be->ipc_export(c->own, &blob.handle);
    if (res != ncclSuccess) {
        be->free(c->own);
        c->own = NULL;
        return res;
    }
    blob.magic = AC_P2P_BLOB_MAGIC;
    blob.pid = (int32_t)getpid();
    blob.host_hash = host_hash;
    blob.addr = (uint64_t)(uintptr_t)c->own;
    blob.bytes = c->own_bytes;
    blob.nslots = nslots;
    blob.slot_bytes = (uint32_t)slot_bytes;
    c->dev.nslots = nslots;
    c->dev.slot_bytes = (uint32_t)slot_bytes;
    *blob_out = blob;
    return ncclSuccess;
}

ncclResult_t ac_p2p_conn_connect(struct ac_p2p_conn *c, const struct ac_p2p_blob *peer)
{
    struct ac_p2p_layout l;
    char *recv_side, *send_side;

    if (peer->magic != AC_P2P_BLOB_MAGIC)
        return AC_FAIL(ncclInternalError, "p2p connector with rank %d: malformed blob (magic %#x)",
                       c->peer, peer->magic);
    if (peer->nslots != c->dev.nslots || peer->slot_bytes != c->dev.slot_bytes)
        return AC_FAIL(ncclInvalidUsage,
                       "p2p connector with rank %d: it has %u slots of %u bytes, this rank %u of "
                       "%u: set ANYCCL_NSLOTS and ANYCCL_BUFFSIZE alike on every rank",
                       c->peer, peer->nslots, peer->slot_bytes, c->dev.nslots, c->dev.slot_bytes);
    /* Every rank of a p2p communicator shares this host (src/core/devcoll.c): same pid, same
     * process. */
    if (peer->pid == (int32_t)getpid()) {
        c->remote = (void *)(uintptr_t)peer->addr;
    } else {
        AC_CHECK(c->be->ipc_import(&peer->handle, &c->remote));
        c->is_imported = true;
    }
    ac_p2p_layout(c->dev.nslots, c->dev.slot_bytes, &l);
    recv_side = c->is_send ? c->remote : c->own;
    send_side = c->is_send ? c->own : c->remote;
    for (int p = 0; p < AC_PROTO_COUNT; p++)
        c->dev.slots[p] = (uint64_t)(uintptr_t)(recv_side + l.slots_off[p]);
    c->dev.posted = (uint64_t)(uintptr_t)(recv_side + l.posted_off);
    c->dev.sizes = (uint64_t)(uintptr_t)(recv_side + l.sizes_off);
    c->dev.freed = (uint64_t)(uintptr_t)send_side;
    c->dev.base = 0;
    return ncclSuccess;
}

void ac_p2p_conn_close(struct ac_p2p_conn *c)
{
    if (c->be == NULL)
        return;
    if (c->is_imported && c->remote)
        c->be->ipc_close(c->remote);
    if (c->own)
        c->be->free(c->own);
    memset(c, 0, sizeof *c);
}
