/* The consumer side of the descriptor ring: what the software engine runs, whichever thread runs
 * it. The ordering rules are those of src/device/kernels/gin.h, seen from the other side. */
#include "gin/gin.h"

#include <stdlib.h>
#include <string.h>

struct ac_gin_ring *ac_gin_ring_create(uint32_t nslots, uint64_t *signals, uint32_t nsignals,
                                       const volatile int *abort_flag)
{
    if (nslots < 2 || (nslots & (nslots - 1)) != 0)
        return NULL;
    struct ac_gin_ring *r = aligned_alloc(64, sizeof(*r));
    struct ac_gin_desc *descs = aligned_alloc(64, (size_t)nslots * sizeof(*descs));
    if (!r || !descs) {
        free(r);
        free(descs);
        return NULL;
    }
    memset(r, 0, sizeof(*r));
    /* seq 0 never equals ticket + 1: fresh slots read as "not published". */
    memset(descs, 0, (size_t)nslots * sizeof(*descs));
    r->version = AC_GIN_RING_VERSION;
    r->nslots = nslots;
    r->mask = nslots - 1;
    r->descs = descs;
    r->signals = signals;
    r->nsignals = nsignals;
    r->abort_flag = abort_flag;
    return r;
}

void ac_gin_ring_destroy(struct ac_gin_ring *r)
{
    if (!r)
        return;
    free(r->descs);
    free(r);
}

void ac_gin_ring_fail(struct ac_gin_ring *r, int status, int peer)
{
    int32_t expected = AC_GIN_OK;
    /* error_peer first, then the error word with release: a producer that sees the error (acquire)
     * reads the right peer. Only the first failure is kept: later ones are consequences. */
    if (__atomic_load_n(&r->error, __ATOMIC_ACQUIRE) != AC_GIN_OK)
        return;
    r->error_peer = peer;
    __atomic_compare_exchange_n(&r->error, &expected, status, false, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
}

int ac_gin_consume(struct ac_gin_ring *r, const struct ac_gin_backend *be, void *ctx, int max)
{
    int done = 0;
    uint64_t t = __atomic_load_n(&r->tail, __ATOMIC_RELAXED); /* only consumers write it */
    while (done < max && __atomic_load_n(&r->error, __ATOMIC_ACQUIRE) == AC_GIN_OK) {
        struct ac_gin_desc *slot = &r->descs[t & r->mask];
        /* Acquire pairs with the producer's release of seq: the fields are complete. A slot with
         * an older seq belongs to a producer that has its ticket but has not finished writing;
         * descriptors are performed in ticket order, so we stop there, not skip it. */
        if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != t + 1)
            break;
        struct ac_gin_desc d = *slot;
        /* Release: our copy is taken before the slot is handed back to producers, so a producer
         * that sees the new tail (acquire) may overwrite it. */
        __atomic_store_n(&r->tail, t + 1, __ATOMIC_RELEASE);
        int peer = (int)d.peer, status;
        if (d.op == AC_GIN_OP_PUT)
            status = be->put(ctx, d.peer, d.src_off, d.dst_off, d.bytes, &peer);
        else if (d.op == AC_GIN_OP_SIGNAL)
            status = be->signal(ctx, d.peer, d.signal_id, d.value,
                                (d.flags & AC_GIN_SIGNAL_ADD) != 0, &peer);
        else
            status = AC_GIN_ERR_ACCESS;
        if (status != AC_GIN_OK) {
            ac_gin_ring_fail(r, status, peer);
            break;
        }
        t++;
        done++;
        /* Release: what the backend did (the data at the peer, the signal) happens before a
         * producer's quiet() returns. */
        __atomic_store_n(&r->completed, t, __ATOMIC_RELEASE);
    }
    return done;
}
