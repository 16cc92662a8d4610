/* GPU-initiated networking (GIN), the producer side: the descriptor ring a kernel (or, in the host
 * backend, the calling thread) writes work into, and the device interface built on it: put, signal,
 * wait on a signal, quiet. One source for host C, CUDA and HIP; the consumer (an engine: the
 * software progress thread of src/gin/, or one day a NIC) lives elsewhere.
 *
 * Ring v1: a power-of-two array of 64-byte descriptors in memory both sides can read (host memory
 * for the software engine; pinned and mapped into the GPU for a kernel producer).
 *   head       tickets claimed by producers (fetch-add): only producers read it.
 *   doorbell   descriptors published: the consumer sleeps on it when idle, producers bump it.
 *   tail       slots the consumer has read and freed: the only credit path back to producers.
 *   completed  descriptors performed, in ticket order: what quiet() waits for.
 *   error      set once by the engine (a dead peer, a remote access error): every wait checks it.
 * A descriptor is published by its `seq` word, written last: seq = ticket + 1. Because the value
 * differs on every lap of the ring, slots never need clearing and a stale descriptor from the
 * previous lap can never be taken for a new one.
 *
 * Every index is a 64-bit counter that never wraps in practice (2^64 descriptors); slot = ticket &
 * mask. Comparisons are differences, so they would stay right across a wrap anyway. */
#ifndef AC_DEVICE_KERNELS_GIN_H
#define AC_DEVICE_KERNELS_GIN_H

#include "device/kernels/compat.h"

#include <stdint.h>

#define AC_GIN_RING_VERSION 1u

enum ac_gin_op {
    AC_GIN_OP_PUT = 1,    /* bytes from the local window to the peer's window */
    AC_GIN_OP_SIGNAL = 2, /* the peer's signal `signal_id` += value (or = value) */
};

enum ac_gin_status {
    AC_GIN_OK = 0,
    AC_GIN_ERR_PEER = 1,    /* a peer died or its connection failed: error_peer names it */
    AC_GIN_ERR_ACCESS = 2,  /* a put outside the remote or local window */
    AC_GIN_ERR_ABORT = 3,   /* the communicator was aborted */
    AC_GIN_ERR_TIMEOUT = 4, /* ANYCCL_TIMEOUT passed */
    AC_GIN_ERR_SYSTEM = 5,  /* a system call of the engine failed */
};

#define AC_GIN_SIGNAL_ADD 1u /* flags: add rather than set */

/* 64 bytes: one cache line, so that a descriptor is never split across lines the consumer reads
 * at different times. Fields are plain data; only `seq` is an atomic publication word. */
struct ac_gin_desc {
    uint32_t op;
    uint32_t peer;
    uint64_t bytes;
    uint64_t src_off; /* in the local window */
    uint64_t dst_off; /* in the peer's window */
    uint64_t value;   /* signal: the operand */
    uint32_t signal_id;
    uint32_t flags;
    uint64_t rsvd;
    uint64_t seq; /* ticket + 1 when published; written last, with release */
};

#define AC_GIN_LINE __attribute__((aligned(64)))

/* The shared control block. Each counter sits on its own cache line: producers hammer head and
 * doorbell, the consumer tail and completed; sharing a line would make every fetch-add bounce the
 * consumer's line too. */
struct ac_gin_ring {
    uint32_t version;
    uint32_t nslots; /* power of two */
    uint64_t mask;
    struct ac_gin_desc *descs;
    uint64_t *signals; /* this rank's signals, written by peers' engines */
    uint32_t nsignals;
    const volatile int *abort_flag; /* the communicator's: non-zero ends every wait */
    uint64_t head AC_GIN_LINE;
    uint64_t doorbell AC_GIN_LINE;
    uint64_t tail AC_GIN_LINE;
    uint64_t completed AC_GIN_LINE;
    int32_t error AC_GIN_LINE; /* enum ac_gin_status; AC_GIN_OK while healthy */
    int32_t error_peer;
    /* Host producers only (device code never calls it): lets a waiting thread run the engine
     * itself and check peers' liveness and the time limit; returns an ac_gin_status. */
    int (*host_poll)(void *arg);
    void *host_poll_arg;
};

/* Memory-ordering primitives at system scope: the consumer is another CPU thread, or a CPU or NIC
 * reading over PCIe, so GPU-scope fences (__threadfence) would not order our stores for it. */
#if defined(__CUDA_ARCH__)
#define AC_GIN_DEVICE 1
AC_DEVFN uint64_t ac_gin_load_acquire(const uint64_t *p)
{
    uint64_t v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
AC_DEVFN void ac_gin_store_release(uint64_t *p, uint64_t v)
{
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
AC_DEVFN uint64_t ac_gin_fetch_add(uint64_t *p, uint64_t v)
{
    return (uint64_t)atomicAdd_system((unsigned long long *)p, (unsigned long long)v);
}
AC_DEVFN int32_t ac_gin_load_error(const int32_t *p)
{
    return *(const volatile int32_t *)p;
}
AC_DEVFN void ac_gin_pause(void)
{
    __nanosleep(64);
}
#elif defined(__HIP_DEVICE_COMPILE__)
#define AC_GIN_DEVICE 1
AC_DEVFN uint64_t ac_gin_load_acquire(const uint64_t *p)
{
    return __hip_atomic_load(p, __ATOMIC_ACQUIRE, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN void ac_gin_store_release(uint64_t *p, uint64_t v)
{
    __hip_atomic_store(p, v, __ATOMIC_RELEASE, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN uint64_t ac_gin_fetch_add(uint64_t *p, uint64_t v)
{
    return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN int32_t ac_gin_load_error(const int32_t *p)
{
    return *(const volatile int32_t *)p;
}
AC_DEVFN void ac_gin_pause(void)
{
    __builtin_amdgcn_s_sleep(1);
}
#else
#define AC_GIN_DEVICE 0
AC_DEVFN uint64_t ac_gin_load_acquire(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
AC_DEVFN void ac_gin_store_release(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
AC_DEVFN uint64_t ac_gin_fetch_add(uint64_t *p, uint64_t v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
AC_DEVFN int32_t ac_gin_load_error(const int32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
AC_DEVFN void ac_gin_pause(void)
{
    __builtin_ia32_pause();
}
#endif

/* What every wait loop does between polls: a set error or abort ends it. A host producer instead
 * of pausing runs the engine's poll (progress, liveness, time limit, and the back-off that yields
 * the core when ranks outnumber cores), so that a fault becomes an error instead of a hang and a
 * waiter never spins on a core the rank it waits for needs. */
AC_DEVFN int ac_gin_check(struct ac_gin_ring *r, unsigned *spins)
{
    int32_t err = ac_gin_load_error(&r->error);
    if (err != AC_GIN_OK)
        return err;
    if (r->abort_flag && *r->abort_flag)
        return AC_GIN_ERR_ABORT;
    ++*spins;
#if !AC_GIN_DEVICE
    if (r->host_poll)
        return r->host_poll(r->host_poll_arg);
#endif
    ac_gin_pause();
    return AC_GIN_OK;
}

/* Reserves a slot and publishes d in it. Multi-producer safe: the ticket from the fetch-add is this
 * producer's alone; relaxed is enough there because the ticket orders nothing by itself, the seq
 * store below does. Back-pressure: the slot is reused only once the consumer's tail (read with
 * acquire, pairing with its release after it copied the old descriptor out) shows it is free. */
AC_DEVFN int ac_gin_post(struct ac_gin_ring *r, const struct ac_gin_desc *d, uint64_t *ticket_out)
{
    uint64_t t = ac_gin_fetch_add(&r->head, 1);
    unsigned spins = 0;
    while (t - ac_gin_load_acquire(&r->tail) >= r->nslots) {
        int err = ac_gin_check(r, &spins);
        if (err != AC_GIN_OK)
            return err;
    }
    struct ac_gin_desc *slot = &r->descs[t & r->mask];
    slot->op = d->op;
    slot->peer = d->peer;
    slot->bytes = d->bytes;
    slot->src_off = d->src_off;
    slot->dst_off = d->dst_off;
    slot->value = d->value;
    slot->signal_id = d->signal_id;
    slot->flags = d->flags;
    /* Release: every field above is visible to a consumer that reads seq == t + 1 with acquire.
     * This is the design note's rule 1 (data, then a system-scope release, then the flag). */
    ac_gin_store_release(&slot->seq, t + 1);
    /* The doorbell only wakes a sleeping consumer; it carries no data, so its order relative to
     * other producers' publications does not matter (the consumer goes by seq). */
    ac_gin_fetch_add(&r->doorbell, 1);
    if (ticket_out)
        *ticket_out = t;
    return AC_GIN_OK;
}

AC_DEVFN int ac_gin_put(struct ac_gin_ring *r, uint32_t peer, uint64_t src_off, uint64_t dst_off,
                        uint64_t bytes, uint64_t *ticket_out)
{
    struct ac_gin_desc d = {0};
    d.op = AC_GIN_OP_PUT;
    d.peer = peer;
    d.bytes = bytes;
    d.src_off = src_off;
    d.dst_off = dst_off;
    return ac_gin_post(r, &d, ticket_out);
}

/* The engine performs one ring's descriptors in ticket order and a put completes before any later
 * descriptor starts, so a signal posted after puts to the same peer arrives after their data:
 * put-then-signal is the ordering a receiver relies on. */
AC_DEVFN int ac_gin_signal(struct ac_gin_ring *r, uint32_t peer, uint32_t signal_id, uint64_t value,
                           int is_add, uint64_t *ticket_out)
{
    struct ac_gin_desc d = {0};
    d.op = AC_GIN_OP_SIGNAL;
    d.peer = peer;
    d.signal_id = signal_id;
    d.value = value;
    d.flags = is_add ? AC_GIN_SIGNAL_ADD : 0;
    return ac_gin_post(r, &d, ticket_out);
}

/* Waits until this rank's signal `signal_id` is at least `value`. Acquire: the data of the puts
 * that preceded the signal on the sender's ring is visible once the signal is (rule 6). */
AC_DEVFN int ac_gin_wait_signal(struct ac_gin_ring *r, uint32_t signal_id, uint64_t value)
{
    unsigned spins = 0;
    if (signal_id >= r->nsignals)
        return AC_GIN_ERR_ACCESS;
    while ((int64_t)(ac_gin_load_acquire(&r->signals[signal_id]) - value) < 0) {
        int err = ac_gin_check(r, &spins);
        if (err != AC_GIN_OK)
            return err;
    }
    return AC_GIN_OK;
}

/* Waits until every descriptor up to and including `ticket` was performed (for this producer:
 * its own last ticket). Completion is counted in ticket order, so one counter covers all
 * producers; the acquire pairs with the engine's release after it performed them. */
AC_DEVFN int ac_gin_quiet(struct ac_gin_ring *r, uint64_t ticket)
{
    unsigned spins = 0;
    while ((int64_t)(ac_gin_load_acquire(&r->completed) - (ticket + 1)) < 0) {
        int err = ac_gin_check(r, &spins);
        if (err != AC_GIN_OK)
            return err;
    }
    return AC_GIN_OK;
}

/* flush: every descriptor posted so far by anyone has been performed (the local source buffers
 * may be reused). */
AC_DEVFN int ac_gin_flush(struct ac_gin_ring *r)
{
    uint64_t head = ac_gin_load_acquire(&r->head);
    return head == 0 ? AC_GIN_OK : ac_gin_quiet(r, head - 1);
}

#endif
