/* The device collective engine, written once: one block runs one task (struct ac_dev_task of
 * devcoll.h: one channel of one operation on one rank) step by step, the steps being sched.h's,
 * the very schedule the host executor runs. Compiled three ways: nvcc and hipcc (kernel ac_k_coll
 * of kernels.cuh) and the host C++ build (host.h; the emulated driver and the CPU unit tests run
 * it with one thread per block, each block in a thread of its own).
 *
 * A step, in three phases separated by block barriers:
 *   1. thread 0 waits for every incoming slot the step receives (Simple: the `posted` counter,
 *      then the slot's size word; LL/LL128: the slot's header, ll.h) and checks its size and tag
 *      against the schedule, then waits for room in every outgoing connector (`freed`);
 *   2. every thread computes its share of the step's elements, with the element functions of
 *      ops.h (through simple.cuh's ac_dev_ops_<t>, the same the host backend runs), reading the
 *      received slots (LL/LL128: polling each word's or line's flag) and writing the user's buffer
 *      and the outgoing slots in the receivers' memory;
 *   3. after a system-scope fence, thread 0 posts the outgoing slots (size word, LL header,
 *      `posted`) and frees the incoming ones (`freed`).
 * Several incoming slots (tree, one-shot) are reduced in the host executor's order (exec.c:
 * move_data_multi, oneshot_fold), so that results are bitwise those of the host engine.
 * While waiting, *abort (non-zero: AC_DEV_ABORTED) and the launch's status (another block failed)
 * are read every AC_ENG_CHECK_POLLS polls. A failure writes the launch's status (first block only)
 * and ends the block; the connectors are then unusable (the host marks the communicator failed). */
#ifndef AC_DEVICE_KERNELS_ENGINE_H
#define AC_DEVICE_KERNELS_ENGINE_H

#include "device/kernels/devcoll.h"
#include "device/kernels/ll.h"
#include "device/kernels/sched.h"
#include "device/kernels/simple.cuh"
#include "device/kernels/sync.cuh"

#include <stdint.h>
#include <string.h>

/* GPU builds: a block's threads share the step's phases through a barrier and shared memory.
 * Host build: one thread per block (the emulator runs each block in a thread of its own), so
 * the barrier is nothing and "shared" variables are the thread's own. */
#if defined(__CUDACC__) || defined(__HIPCC__)
#define AC_ENG_BARRIER() __syncthreads()
#define AC_ENG_SHARED __shared__
#define AC_ENG_FENCE() __threadfence_system()
#define AC_ENG_LOAD64(p) (*(const volatile uint64_t *)(p))
#define AC_ENG_LOAD32(p) (*(const volatile uint32_t *)(p))
/* The fence after the load keeps later reads of the data behind it. */
#define AC_ENG_LOAD64_ACQ(p) ac_eng_load64_acq(p)
#define AC_ENG_STORE64(p, v) (*(volatile uint64_t *)(p) = (v))
#define AC_ENG_STORE64_REL(p, v) (__threadfence_system(), *(volatile uint64_t *)(p) = (v))
#define AC_ENG_FAIL(p, v) atomicCAS((unsigned int *)(p), 0u, (unsigned int)(v))
__device__ inline uint64_t ac_eng_load64_acq(const uint64_t *p)
{
    uint64_t v = *(const volatile uint64_t *)p;
    __threadfence_system();
    return v;
}
#else
#define AC_ENG_BARRIER() ((void)0)
#define AC_ENG_SHARED
#define AC_ENG_FENCE() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define AC_ENG_LOAD64(p) __atomic_load_n((const uint64_t *)(p), __ATOMIC_RELAXED)
#define AC_ENG_LOAD32(p) __atomic_load_n((const uint32_t *)(p), __ATOMIC_RELAXED)
#define AC_ENG_LOAD64_ACQ(p) __atomic_load_n((const uint64_t *)(p), __ATOMIC_ACQUIRE)
#define AC_ENG_STORE64(p, v) __atomic_store_n((uint64_t *)(p), (uint64_t)(v), __ATOMIC_RELAXED)
#define AC_ENG_STORE64_REL(p, v)                                                                   \
    __atomic_store_n((uint64_t *)(p), (uint64_t)(v), __ATOMIC_RELEASE)
#define AC_ENG_FAIL(p, v)                                                                          \
    do {                                                                                           \
        uint32_t ac_eng_zero_ = 0;                                                                 \
        __atomic_compare_exchange_n((uint32_t *)(p), &ac_eng_zero_, (uint32_t)(v), false,          \
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                           \
    } while (0)
#endif

/* Reading *abort and the status costs a PCIe round trip on a GPU: only every so many polls. */
#define AC_ENG_CHECK_POLLS 64u
/* An LL receiver looks at `posted` every so many polls without a header: a slot posted without
 * one was sent in another protocol (the ranks disagree), which would otherwise never arrive. */
#define AC_ENG_PROTO_CHECK_POLLS 1024u
/* Internal: this block stops because another one already failed (status already written). */
#define AC_ENG_STOPPED 0xffu

/* One block's view of its launch. The counters are kept by every thread alike. */
struct ac_eng {
    const struct ac_dev_task *t;
    const volatile uint32_t *abort;
    uint32_t *status;
    uint64_t rcnt[AC_DEV_MAX_PEERS]; /* slots received (post count) on each recv connector */
    uint64_t scnt[AC_DEV_MAX_PEERS]; /* slots sent on each send connector */
    uint32_t tid, nthreads;
    uint32_t polls;
};

__device__ inline uint32_t ac_eng_poll_check(struct ac_eng *e)
{
    if (++e->polls % AC_ENG_CHECK_POLLS != 0) {
        AC_DEV_SPIN_PAUSE();
        return 0;
    }
    if (e->abort && AC_ENG_LOAD32(e->abort) != 0)
        return AC_DEV_ABORTED;
    if (e->status && AC_ENG_LOAD32(e->status) != 0)
        return AC_ENG_STOPPED;
    AC_DEV_SPIN_PAUSE();
    return 0;
}

__device__ inline uint64_t *ac_eng_slot(const struct ac_dev_conn *c, uint32_t proto, uint64_t cnt)
{
    uint64_t stride = proto == AC_PROTO_LL      ? AC_DEV_LL_SLOT_BYTES
                      : proto == AC_PROTO_LL128 ? AC_DEV_LL128_SLOT_BYTES
                                                : c->slot_bytes;
    return (uint64_t *)(uintptr_t)(c->slots[proto] + (cnt % c->nslots) * stride);
}

__device__ inline uint64_t ac_eng_proto_max(const struct ac_dev_conn *c, uint32_t proto)
{
    uint64_t max = proto == AC_PROTO_LL ? AC_LL_MAX_BYTES
                   : proto == AC_PROTO_LL128 ? AC_LL128_MAX_BYTES : c->slot_bytes;
    return max < c->slot_bytes ? max : c->slot_bytes;
}

/* Phase 1 of a step, thread 0: every incoming slot there and as expected, every outgoing slot
 * free. Returns 0 or a status. */
__device__ inline uint32_t ac_eng_wait(struct ac_eng *e, unsigned flags, uint64_t bytes)
{
    const struct ac_dev_task *t = e->t;
    uint32_t proto = t->proto;
    for (int k = 0; (flags & AC_STEP_RECV) && k < t->sched.nrecv; k++) {
        const struct ac_dev_conn *c = &t->recv[k];
        uint64_t cnt = e->rcnt[k];
        uint32_t got = 0, tag = 0;
        uint32_t miss = 0;
        for (;;) {
            if (proto == AC_PROTO_LL &&
                ac_ll_header(ac_eng_slot(c, proto, cnt), (uint32_t)(cnt + 1), &got, &tag))
                break;
            if (proto == AC_PROTO_LL128 &&
                ac_ll128_header(ac_eng_slot(c, proto, cnt), cnt + 1, &got, &tag))
                break;
            if (proto == AC_PROTO_SIMPLE || ++miss % AC_ENG_PROTO_CHECK_POLLS == 0) {
                uint64_t posted = AC_ENG_LOAD64_ACQ((const uint64_t *)(uintptr_t)c->posted);
                if ((int64_t)(posted - cnt) > 0) {
                    /* posted: the header, if this protocol's, is visible now (it was stored
                     * before `posted`); looked at again, since it may have come after the
                     * first look */
                    if (proto == AC_PROTO_LL &&
                        ac_ll_header(ac_eng_slot(c, proto, cnt), (uint32_t)(cnt + 1), &got, &tag))
                        break;
                    if (proto == AC_PROTO_LL128 &&
                        ac_ll128_header(ac_eng_slot(c, proto, cnt), cnt + 1, &got, &tag))
                        break;
                    if (proto != AC_PROTO_SIMPLE)
                        return AC_DEV_MISMATCH; /* posted, but not in this protocol */
                    uint64_t w = AC_ENG_LOAD64((const uint64_t *)(uintptr_t)c->sizes +
                                               cnt % c->nslots);
                    got = (uint32_t)w;
                    tag = (uint32_t)(w >> 32);
                    break;
                }
            }
            uint32_t r = ac_eng_poll_check(e);
            if (r)
                return r;
        }
        if (got != bytes || tag != t->tag || got > ac_eng_proto_max(c, proto))
            return AC_DEV_MISMATCH;
    }
    for (int k = 0; (flags & AC_STEP_SEND) && k < t->sched.nsend; k++) {
        const struct ac_dev_conn *c = &t->send[k];
        while (e->scnt[k] - AC_ENG_LOAD64_ACQ((const uint64_t *)(uintptr_t)c->freed) >=
               c->nslots) {
            uint32_t r = ac_eng_poll_check(e);
            if (r)
                return r;
        }
    }
    return 0;
}

/* The value of one element of a step. v: what was received from peer k (element i); x: the local
 * input. Host order (exec.c): in0 OP pre(x), then OP in1, in2, ...; one-shot: ranks in order. */
template <class O>
__device__ inline typename O::type ac_eng_pre(const struct ac_sched &s, typename O::type x)
{
    typedef typename O::type T;
    if (!s.red_has_premul)
        return x;
    T sc;
    memcpy(&sc, &s.red_scalar, sizeof sc); /* the low bytes: little-endian everywhere */
    return O::prod(x, sc);
}

template <class O>
__device__ inline typename O::type ac_eng_in(const char *const *in, int k, uint32_t i)
{
    typename O::type v;
    memcpy(&v, in[k] + (size_t)i * sizeof v, sizeof v);
    return v;
}

/* out[0, n) from the inputs' bytes [0, n) (n a multiple of the element size). */
template <class O>
__device__ inline void ac_eng_elems(const struct ac_sched &s, unsigned flags, int nin,
                                    const char *const *in, const char *src, char *out, uint32_t n)
{
    typedef typename O::type T;
    uint32_t cnt = n / (uint32_t)sizeof(T);
    uint32_t kind = s.red_kind;
    bool has_div = (flags & AC_STEP_FINAL) && s.red_postdiv > 1;
    for (uint32_t i = 0; i < cnt; i++) {
        T x, v;
        memcpy(&x, src + (size_t)i * sizeof x, sizeof x);
        if (s.is_oneshot) {
            int self = s.rank, nr = s.nranks;
            if (self == 0) /* rank order, as the host's oneshot_fold: x0 op x1 on every rank */
                v = O::apply(kind, ac_eng_pre<O>(s, x), ac_eng_in<O>(in, 0, i));
            else if (self == 1)
                v = O::apply(kind, ac_eng_in<O>(in, 0, i), ac_eng_pre<O>(s, x));
            else
                v = O::apply(kind, ac_eng_in<O>(in, 0, i), ac_eng_in<O>(in, 1, i));
            for (int j = 2; j < nr; j++)
                v = O::apply(kind, v,
                             j == self ? ac_eng_pre<O>(s, x)
                                       : ac_eng_in<O>(in, j < self ? j : j - 1, i));
        } else {
            v = O::apply(kind, ac_eng_in<O>(in, 0, i), ac_eng_pre<O>(s, x));
            for (int k = 1; k < nin; k++)
                v = O::apply(kind, v, ac_eng_in<O>(in, k, i));
        }
        if (has_div)
            v = O::div(v, s.red_postdiv);
        memcpy(out + (size_t)i * sizeof v, &v, sizeof v);
    }
}

template <class O>
__device__ inline void ac_eng_compute(const struct ac_sched &s, unsigned flags, int nin,
                                      const char *const *in, const char *src, char *out,
                                      uint32_t n)
{
    if ((flags & AC_STEP_RECV) && !(flags & AC_STEP_REDUCE)) {
        memcpy(out, in[0], n);
    } else if (flags & AC_STEP_RECV) {
        ac_eng_elems<O>(s, flags, nin, in, src, out, n);
    } else if (s.is_reduction) {
        typedef typename O::type T;
        bool has_div = (flags & AC_STEP_FINAL) && s.red_postdiv > 1;
        for (uint32_t i = 0; i < n / (uint32_t)sizeof(T); i++) {
            T v;
            memcpy(&v, src + (size_t)i * sizeof v, sizeof v);
            v = ac_eng_pre<O>(s, v);
            if (has_div)
                v = O::div(v, s.red_postdiv);
            memcpy(out + (size_t)i * sizeof v, &v, sizeof v);
        }
    } else {
        memcpy(out, src, n);
    }
}

/* LL: payload word w of a slot, when it has arrived. */
__device__ inline uint32_t ac_eng_ll_word(struct ac_eng *e, const uint64_t *slot, uint32_t w,
                                          uint32_t flag, uint32_t *word)
{
    for (;;) {
        uint64_t v = AC_LL_LOAD(&slot[AC_LL_HEADER_WORDS + w]);
        if ((uint32_t)(v >> 32) == flag) {
            *word = (uint32_t)v;
            return 0;
        }
        uint32_t r = ac_eng_poll_check(e);
        if (r)
            return r;
    }
}

/* Simple and LL: units of 8 bytes (whole elements of every type, two LL words). */
#define AC_ENG_UNIT 8u

template <class O>
__device__ inline uint32_t ac_eng_move_units(struct ac_eng *e, const struct ac_step &st,
                                             unsigned flags, int nin, int nout, uint64_t bytes)
{
    const struct ac_dev_task *t = e->t;
    const struct ac_sched &s = t->sched;
    uint32_t proto = t->proto;
    bool is_ll = proto == AC_PROTO_LL;
    uint64_t nunits = (bytes + AC_ENG_UNIT - 1) / AC_ENG_UNIT;
    const char *rslot[AC_DEV_MAX_PEERS];
    char *sslot[AC_DEV_MAX_PEERS];
    for (int k = 0; k < nin; k++)
        rslot[k] = (const char *)ac_eng_slot(&t->recv[k], proto, e->rcnt[k]);
    for (int k = 0; k < nout; k++)
        sslot[k] = (char *)ac_eng_slot(&t->send[k], proto, e->scnt[k]);
    for (uint64_t u = e->tid; u < nunits; u += e->nthreads) {
        uint64_t off = u * AC_ENG_UNIT;
        uint32_t n = bytes - off < AC_ENG_UNIT ? (uint32_t)(bytes - off) : AC_ENG_UNIT;
        uint32_t w0 = (uint32_t)(off / 4), nw = (n + 3) / 4;
        uint64_t inbuf[AC_DEV_MAX_PEERS];
        const char *in[AC_DEV_MAX_PEERS];
        uint64_t out = 0, local = 0;
        for (int k = 0; k < nin; k++) {
            if (!is_ll) {
                in[k] = rslot[k] + off;
                continue;
            }
            uint32_t flag = (uint32_t)(e->rcnt[k] + 1), lo = 0, hi = 0, r;
            r = ac_eng_ll_word(e, (const uint64_t *)rslot[k], w0, flag, &lo);
            if (!r && nw > 1)
                r = ac_eng_ll_word(e, (const uint64_t *)rslot[k], w0 + 1, flag, &hi);
            if (r)
                return r;
            inbuf[k] = (uint64_t)lo | (uint64_t)hi << 32;
            in[k] = (const char *)&inbuf[k];
        }
        const char *src = (const char *)st.src + off;
        if (!(flags & AC_STEP_RECV) || (flags & AC_STEP_REDUCE)) {
            memcpy(&local, src, n); /* the user's buffer may end mid-unit */
            src = (const char *)&local;
        }
        ac_eng_compute<O>(s, flags, nin, in, src, (char *)&out, n);
        if (flags & AC_STEP_DST)
            memcpy((char *)st.dst + off, &out, n);
        for (int k = 0; k < nout; k++) {
            if (!is_ll) {
                memcpy(sslot[k] + off, &out, n);
                continue;
            }
            uint64_t *slot = (uint64_t *)sslot[k];
            uint32_t flag = (uint32_t)(e->scnt[k] + 1);
            AC_LL_STORE(&slot[AC_LL_HEADER_WORDS + w0], ac_ll_word((uint32_t)out, flag));
            if (nw > 1)
                AC_LL_STORE(&slot[AC_LL_HEADER_WORDS + w0 + 1],
                            ac_ll_word((uint32_t)(out >> 32), flag));
        }
    }
    return 0;
}

/* LL128: one line per thread (its flag follows its data); the received lines are read in
 * place once their flags are there. */
template <class O>
__device__ inline uint32_t ac_eng_move_ll128(struct ac_eng *e, const struct ac_step &st,
                                             unsigned flags, int nin, int nout, uint64_t bytes)
{
    const struct ac_dev_task *t = e->t;
    const struct ac_sched &s = t->sched;
    uint32_t lines = ac_ll128_lines((uint32_t)bytes);
    for (uint32_t l = e->tid; l < lines; l += e->nthreads) {
        uint32_t off = ac_ll128_line_off(l), w0 = l == 0 ? 1u : 0u;
        uint32_t room = (AC_LL128_DATA_WORDS - w0) * 8u;
        uint32_t n = off >= bytes ? 0 : bytes - off < room ? (uint32_t)(bytes - off) : room;
        const char *in[AC_DEV_MAX_PEERS];
        uint64_t out[AC_LL128_DATA_WORDS], local[AC_LL128_DATA_WORDS];
        for (int k = 0; k < nin; k++) {
            const uint64_t *line =
                ac_eng_slot(&t->recv[k], AC_PROTO_LL128, e->rcnt[k]) +
                (size_t)l * AC_LL128_LINE_WORDS;
            while (AC_LL_LOAD_ACQUIRE(&line[AC_LL128_DATA_WORDS]) != e->rcnt[k] + 1) {
                uint32_t r = ac_eng_poll_check(e);
                if (r)
                    return r;
            }
            in[k] = (const char *)(line + w0);
        }
        const char *src = (const char *)st.src + off;
        if (n > 0 && (!(flags & AC_STEP_RECV) || (flags & AC_STEP_REDUCE))) {
            memcpy(local, src, n);
            src = (const char *)local;
        }
        if (n > 0)
            ac_eng_compute<O>(s, flags, nin, in, src, (char *)out, n);
        if ((flags & AC_STEP_DST) && n > 0)
            memcpy((char *)st.dst + off, out, n);
        for (int k = 0; k < nout; k++) {
            uint64_t *line = ac_eng_slot(&t->send[k], AC_PROTO_LL128, e->scnt[k]) +
                             (size_t)l * AC_LL128_LINE_WORDS;
            if (l == 0)
                line[0] = bytes | (uint64_t)t->tag << 32;
            if (n > 0)
                memcpy(&line[w0], out, n);
            AC_LL_STORE_RELEASE(&line[AC_LL128_DATA_WORDS], e->scnt[k] + 1);
        }
    }
    return 0;
}

template <class O>
__device__ inline uint32_t ac_eng_move(struct ac_eng *e, const struct ac_step &st, unsigned flags,
                                       int nin, int nout, uint64_t bytes)
{
    if (e->t->proto == AC_PROTO_LL128)
        return ac_eng_move_ll128<O>(e, st, flags, nin, nout, bytes);
    return ac_eng_move_units<O>(e, st, flags, nin, nout, bytes);
}

/* Calls fn.template run<O>() with the element functions of the task's type: the element type
 * decides only reductions; everything else moves bytes. */
template <class Fn> __device__ inline uint32_t ac_eng_by_type(const struct ac_sched &s, Fn &fn)
{
    if (!s.is_reduction)
        return fn.template run<ac_dev_ops_u8>();
    switch (s.red_type) {
    case ncclInt8:
        return fn.template run<ac_dev_ops_i8>();
    case ncclUint8:
        return fn.template run<ac_dev_ops_u8>();
    case ncclInt32:
        return fn.template run<ac_dev_ops_i32>();
    case ncclUint32:
        return fn.template run<ac_dev_ops_u32>();
    case ncclInt64:
        return fn.template run<ac_dev_ops_i64>();
    case ncclUint64:
        return fn.template run<ac_dev_ops_u64>();
    case ncclFloat16:
        return fn.template run<ac_dev_ops_f16>();
    case ncclFloat32:
        return fn.template run<ac_dev_ops_f32>();
    case ncclFloat64:
        return fn.template run<ac_dev_ops_f64>();
    case ncclBfloat16:
        return fn.template run<ac_dev_ops_bf16>();
    case ncclFloat8e4m3:
        return fn.template run<ac_dev_ops_e4m3>();
    case ncclFloat8e5m2:
        return fn.template run<ac_dev_ops_e5m2>();
    default:
        return AC_DEV_MISMATCH; /* the host validates types: a corrupt task */
    }
}

struct ac_eng_move_fn {
    struct ac_eng *e;
    const struct ac_step *st;
    unsigned flags;
    int nin, nout;
    uint64_t bytes;
    template <class O> __device__ uint32_t run()
    {
        return ac_eng_move<O>(e, *st, flags, nin, nout, bytes);
    }
};

__device__ inline uint32_t ac_eng_move_any(struct ac_eng *e, const struct ac_step &st,
                                           unsigned flags, int nin, int nout, uint64_t bytes)
{
    struct ac_eng_move_fn fn = {e, &st, flags, nin, nout, bytes};
    return ac_eng_by_type(e->t->sched, fn);
}

/* Phase 3, thread 0: the outgoing slots posted (after the block's writes), the incoming freed. */
__device__ inline void ac_eng_post(struct ac_eng *e, unsigned flags, int nin, int nout,
                                   uint64_t bytes)
{
    const struct ac_dev_task *t = e->t;
    AC_ENG_FENCE();
    for (int k = 0; k < nout; k++) {
        const struct ac_dev_conn *c = &t->send[k];
        uint64_t cnt = e->scnt[k];
        if (t->proto == AC_PROTO_LL) {
            uint64_t *slot = ac_eng_slot(c, AC_PROTO_LL, cnt);
            uint32_t flag = (uint32_t)(cnt + 1);
            AC_LL_STORE(&slot[1], ac_ll_word(t->tag, flag));
            AC_LL_STORE(&slot[0], ac_ll_word((uint32_t)bytes, flag));
        }
        /* every protocol: the size word and the counter (an LL receiver facing another
         * protocol finds the slot through them) */
        AC_ENG_STORE64((uint64_t *)(uintptr_t)c->sizes + cnt % c->nslots,
                       bytes | (uint64_t)t->tag << 32);
        AC_ENG_STORE64_REL((uint64_t *)(uintptr_t)c->posted, cnt + 1);
    }
    for (int k = 0; k < nin; k++)
        AC_ENG_STORE64_REL((uint64_t *)(uintptr_t)t->recv[k].freed, e->rcnt[k] + 1);
    (void)flags;
}

/* ---- direct tasks (devcoll.h: struct ac_dev_direct) ---- */

/* Share k of nk of [0, n): [*lo, *lo + *cnt), the first n % nk shares one larger. */
__device__ inline void ac_eng_share(uint64_t n, uint32_t k, uint32_t nk, uint64_t *lo,
                                    uint64_t *cnt)
{
    uint64_t q = n / nk, rem = n % nk;
    *lo = k * q + (k < rem ? k : rem);
    *cnt = q + (k < rem);
}

/* Share k of nk of n bytes, in 16-byte units so that the shares of aligned buffers stay aligned. */
__device__ inline void ac_eng_share_bytes(uint64_t n, uint32_t k, uint32_t nk, uint64_t *lo,
                                          uint64_t *cnt)
{
    uint64_t ulo, ucnt;
    ac_eng_share((n + 15) / 16, k, nk, &ulo, &ucnt);
    *lo = ulo * 16 < n ? ulo * 16 : n;
    *cnt = (ulo + ucnt) * 16 < n ? (ulo + ucnt) * 16 - *lo : n - *lo;
}

__device__ inline void ac_eng_dcopy(char *dst, const char *src, uint64_t n, uint32_t tid,
                                    uint32_t nthreads)
{
    uint64_t done = 0;
    if (dst == src || n == 0)
        return;
    if ((((uintptr_t)dst | (uintptr_t)src) & 15u) == 0) {
        uint64_t n16 = n / 16;
        for (uint64_t i = tid; i < n16; i += nthreads) {
#if defined(__CUDACC__) || defined(__HIPCC__)
            ((uint4 *)dst)[i] = ((const uint4 *)src)[i];
#else
            uint64_t v[2];
            memcpy(v, src + i * 16, 16);
            memcpy(dst + i * 16, v, 16);
#endif
        }
        done = n16 * 16;
    }
    for (uint64_t i = done + tid; i < n; i += nthreads)
        dst[i] = src[i];
}

/* Element i of rank j's sendbuff, premultiplied with its scalar. */
template <class O>
__device__ inline typename O::type ac_eng_dinput(const struct ac_dev_task *t, int j, uint64_t i)
{
    typename O::type x, sc;
    memcpy(&x, (const char *)(uintptr_t)t->direct.send[j] + i * sizeof x, sizeof x);
    if (!t->sched.red_has_premul)
        return x;
    memcpy(&sc, &t->direct.scalar[j], sizeof sc);
    return O::prod(x, sc);
}

/* Elements [0, cnt): the reduction over every rank's sendbuff at src_elem + i, in rank order
 * (each input with its rank's premultiplier, as the one-shot folds them), stored at dst_elem + i
 * of each of the ndst buffers. */
template <class O>
__device__ inline void ac_eng_dreduce(const struct ac_dev_task *t, uint64_t src_elem,
                                      uint64_t dst_elem, uint64_t cnt, const uint64_t *dsts,
                                      int ndst, uint32_t tid, uint32_t nthreads)
{
    typedef typename O::type T;
    const struct ac_sched &s = t->sched;
    for (uint64_t i = tid; i < cnt; i += nthreads) {
        T v = ac_eng_dinput<O>(t, 0, src_elem + i);
        for (int j = 1; j < s.nranks; j++)
            v = O::apply(s.red_kind, v, ac_eng_dinput<O>(t, j, src_elem + i));
        if (s.red_postdiv > 1)
            v = O::div(v, s.red_postdiv);
        for (int k = 0; k < ndst; k++)
            memcpy((char *)(uintptr_t)dsts[k] + (dst_elem + i) * sizeof v, &v, sizeof v);
    }
}

/* The block's share of the operation, by every thread. Copies go to the peers (pushed) except
 * broadcast's, which every rank pulls from the root, so that the work spreads over all ranks. */
struct ac_eng_direct_fn {
    const struct ac_dev_task *t;
    uint32_t tid, nthreads;
    template <class O> __device__ uint32_t run()
    {
        const struct ac_sched &s = t->sched;
        const struct ac_dev_direct &d = t->direct;
        int n = s.nranks, me = s.rank;
        uint64_t ts = s.type_bytes, nbytes = s.count * ts, lo, cnt, slo, scnt;
        uint64_t dsts[AC_DEV_MAX_RANKS];
        switch (s.coll) {
        case AC_COLL_ALLREDUCE:
        case AC_COLL_REDUCE:
            ac_eng_share(s.count, (uint32_t)me, (uint32_t)n, &slo, &scnt);
            ac_eng_share(scnt, d.block, d.nblocks, &lo, &cnt);
            for (int j = 0; j < n; j++)
                dsts[j] = s.coll == AC_COLL_REDUCE ? d.recv[d.root] : d.recv[j];
            ac_eng_dreduce<O>(t, slo + lo, slo + lo, cnt, dsts, s.coll == AC_COLL_REDUCE ? 1 : n,
                              tid, nthreads);
            return 0;
        case AC_COLL_REDUCESCATTER:
            ac_eng_share(s.count, d.block, d.nblocks, &lo, &cnt);
            dsts[0] = d.recv[me];
            ac_eng_dreduce<O>(t, (uint64_t)me * s.count + lo, lo, cnt, dsts, 1, tid, nthreads);
            return 0;
        case AC_COLL_BROADCAST:
            ac_eng_share_bytes(nbytes, d.block, d.nblocks, &lo, &cnt);
            ac_eng_dcopy((char *)(uintptr_t)d.recv[me] + lo,
                         (const char *)(uintptr_t)d.send[d.root] + lo, cnt, tid, nthreads);
            return 0;
        case AC_COLL_ALLGATHER:
        case AC_COLL_ALLTOALL:
            ac_eng_share_bytes(nbytes, d.block, d.nblocks, &lo, &cnt);
            for (int k = 0; k < n; k++) {
                int j = (me + k) % n; /* ranks start at different peers */
                uint64_t from = s.coll == AC_COLL_ALLTOALL ? (uint64_t)j * nbytes : 0;
                ac_eng_dcopy((char *)(uintptr_t)d.recv[j] + (uint64_t)me * nbytes + lo,
                             (const char *)(uintptr_t)d.send[me] + from + lo, cnt, tid, nthreads);
            }
            return 0;
        default:
            return AC_DEV_MISMATCH; /* the host makes direct tasks of these only */
        }
    }
};

/* Thread 0: one empty slot to every peer, then one from every peer. */
__device__ inline uint32_t ac_eng_direct_barrier(struct ac_eng *e)
{
    const struct ac_sched &s = e->t->sched;
    uint32_t r = ac_eng_wait(e, AC_STEP_SEND, 0);
    if (r)
        return r;
    ac_eng_post(e, AC_STEP_SEND, 0, s.nsend, 0);
    for (int k = 0; k < s.nsend; k++)
        e->scnt[k]++;
    if ((r = ac_eng_wait(e, AC_STEP_RECV, 0)) != 0)
        return r;
    ac_eng_post(e, AC_STEP_RECV, s.nrecv, 0, 0);
    for (int k = 0; k < s.nrecv; k++)
        e->rcnt[k]++;
    return 0;
}

__device__ inline uint32_t ac_eng_run_direct(struct ac_eng *e)
{
    AC_ENG_SHARED uint32_t stop;
    uint32_t r;
    if (e->tid == 0)
        stop = ac_eng_direct_barrier(e);
    AC_ENG_BARRIER();
    if ((r = stop) != 0)
        return r;
    struct ac_eng_direct_fn fn = {e->t, e->tid, e->nthreads};
    r = ac_eng_by_type(e->t->sched, fn); /* the same for every thread */
    AC_ENG_FENCE();
    AC_ENG_BARRIER();
    if (r)
        return r;
    if (e->tid == 0)
        stop = ac_eng_direct_barrier(e);
    AC_ENG_BARRIER();
    return stop;
}

/* Runs task `t` with the block's threads tid of nthreads. Returns 0 or the status it stopped
 * with (written to *status unless another block failed first). */
__device__ inline uint32_t ac_eng_run(const struct ac_dev_task *t, const volatile uint32_t *abort,
                                      uint32_t *status, uint32_t tid, uint32_t nthreads)
{
    /* Two flags and a barrier at the end of each step, so that no thread writes a flag while
     * another may still read it for the previous phase: wait_stop is written by thread 0 before
     * barrier A (read after it), move_stop by any thread between A and B (read after B), and
     * the next step's writes come after barrier C. */
    AC_ENG_SHARED uint32_t wait_stop, move_stop;
    struct ac_eng e;
    e.t = t;
    e.abort = abort;
    e.status = status;
    e.tid = tid;
    e.nthreads = nthreads;
    e.polls = 0;
    for (int k = 0; k < AC_DEV_MAX_PEERS; k++) {
        e.rcnt[k] = t->recv[k].base;
        e.scnt[k] = t->send[k].base;
    }
    if (tid == 0)
        wait_stop = move_stop = 0;
    AC_ENG_BARRIER();
    uint32_t r = 0;
    /* a direct task runs no schedule steps */
    uint64_t nsteps = t->direct.is_on ? 0 : t->sched.nsteps;
    if (t->direct.is_on)
        r = ac_eng_run_direct(&e);
    for (uint64_t k = 0; k < nsteps; k++) {
        struct ac_step st;
        ac_sched_step(&t->sched, k, &st);
        unsigned flags = st.flags;
        int nin = (flags & AC_STEP_RECV) ? t->sched.nrecv : 0;
        int nout = (flags & AC_STEP_SEND) ? t->sched.nsend : 0;
        uint64_t bytes = (uint64_t)st.count * t->sched.type_bytes;
        if (tid == 0) {
            uint32_t w = ac_eng_wait(&e, flags, bytes);
            if (w)
                wait_stop = w;
        }
        AC_ENG_BARRIER(); /* A */
        r = wait_stop;
        if (r)
            break;
        if (nout > 0 || (flags & AC_STEP_DST)) {
            uint32_t m = ac_eng_move_any(&e, st, flags, nin, nout, bytes);
            if (m)
                move_stop = m; /* any thread's abort ends the block */
        }
        AC_ENG_FENCE();
        AC_ENG_BARRIER(); /* B */
        r = move_stop;
        if (r)
            break;
        if (tid == 0)
            ac_eng_post(&e, flags, nin, nout, bytes);
        for (int i = 0; i < nin; i++)
            e.rcnt[i]++;
        for (int i = 0; i < nout; i++)
            e.scnt[i]++;
        AC_ENG_BARRIER(); /* C */
    }
    if (tid == 0 && r && r != AC_ENG_STOPPED && status)
        AC_ENG_FAIL(status, r);
    return r == AC_ENG_STOPPED ? 0 : r;
}

/* Block `block` of ac_k_coll: copies its task close to the threads (GPU: shared memory; the
 * tasks lie in pinned host memory), then runs it. The host build runs one thread per block. */
__device__ inline void ac_eng_block(const struct ac_kcoll_args &a, uint32_t block, uint32_t tid,
                                    uint32_t nthreads)
{
#if !defined(__CUDACC__) && !defined(__HIPCC__)
    if (tid != 0)
        return; /* a launcher that ran several threads: the first one does the block's work */
    nthreads = 1;
#endif
    if (block >= a.ntasks)
        return;
    AC_ENG_SHARED struct ac_dev_task task;
    const uint64_t *from = (const uint64_t *)(uintptr_t)(a.tasks + (uint64_t)block *
                                                                      sizeof(struct ac_dev_task));
#if defined(__CUDACC__) || defined(__HIPCC__)
    for (uint32_t i = tid; i < sizeof(task) / 8; i += nthreads)
        ((uint64_t *)&task)[i] = from[i];
#else
    memcpy(&task, from, sizeof task); /* one thread; and gcc sees the whole task initialized */
#endif
    AC_ENG_BARRIER();
    ac_eng_run(&task, (const volatile uint32_t *)(uintptr_t)a.abort,
               (uint32_t *)(uintptr_t)a.status, tid, nthreads);
}

#endif
