/* The mlx5 direct engine of GIN, device side (IBGDA style): a producer (a GPU thread, or in the
 * host build the calling thread) reserves a slot in a ConnectX RC send queue, writes the WQE
 * itself, updates the doorbell record and rings the doorbell (the UAR's BlueFlame register), then
 * polls the completion queue; no CPU is on the data path. One source for host C, CUDA and HIP.
 * The host side that creates the QP/CQ and fills struct ac_gin_mlx5_dev is src/gin/gin_mlx5_qp.c.
 *
 * Status: compiled (host, nvcc, hipcc) and unit-tested against a fake QP in ordinary memory and a
 * thread that plays the NIC by our reading of the PRM; it has never driven a ConnectX. See
 * docs/gpu-initiated.md.
 *
 * Layout facts used here (rdma-core providers/mlx5/mlx5dv.h, the PRM):
 *   - a WQE is a multiple of 16-byte segments in 64-byte basic blocks (WQEBB); every WQE built
 *     here fits one WQEBB, so a WQE never straddles the end of the send queue;
 *   - ctrl segment: be32 (opmod << 24 | wqe_index << 8 | opcode), be32 (qpn << 8 | ds),
 *     signature, 2 reserved, fm_ce_se, be32 imm;
 *   - the send doorbell record is be32, the low 16 bits of the next free WQE index;
 *   - the doorbell itself is an 8-byte store of the first 8 bytes of the last WQE's ctrl segment
 *     (what libmlx5's post_send writes; NVSHMEM writes the next index instead: either tells the
 *     NIC to fetch up to the doorbell record);
 *   - a 64-byte CQE ends with wqe_counter (be16, byte 60), signature, op_own (opcode << 4 |
 *     owner); software owns the CQE at consumer index ci when the opcode is not INVALID (15) and
 *     the owner bit equals (ci / cqe_cnt) & 1; the CQ doorbell record is be32 (ci & 0xffffff). */
#ifndef AC_DEVICE_KERNELS_GIN_MLX5_H
#define AC_DEVICE_KERNELS_GIN_MLX5_H

#include "device/kernels/gin.h"

#include <stdint.h>
#if !AC_GIN_DEVICE
#include <sched.h>
#endif

#define AC_GIN_MLX5_VERSION 1u
#define AC_GIN_MLX5_WQEBB 64u
#define AC_GIN_MLX5_CQE_BYTES 64u
/* Outstanding WQEs stay below 2^15 so that a 16-bit wqe_counter names one WQE unambiguously. */
#define AC_GIN_MLX5_MAX_WQES 32768u
#define AC_GIN_MLX5_MAX_MSG 0x7fffffffu /* byte_count is 31 bits */

/* mlx5 opcodes and flags (PRM values, same as rdma-core's MLX5_OPCODE_*, MLX5_CQE_*). */
#define AC_MLX5_OPCODE_RDMA_WRITE 0x08u
#define AC_MLX5_OPCODE_RDMA_WRITE_IMM 0x09u
#define AC_MLX5_OPCODE_ATOMIC_FA 0x12u
#define AC_MLX5_CTRL_CQ_UPDATE 0x08u /* fm_ce_se: ask for a CQE */
#define AC_MLX5_CQE_REQ 0x0u
#define AC_MLX5_CQE_REQ_ERR 0xdu
#define AC_MLX5_CQE_RESP_ERR 0xeu
#define AC_MLX5_CQE_INVALID 0xfu
#define AC_MLX5_SYND_LOCAL_LENGTH 0x01u
#define AC_MLX5_SYND_LOCAL_PROT 0x04u
#define AC_MLX5_SYND_WR_FLUSH 0x05u
#define AC_MLX5_SYND_BAD_RESP 0x10u
#define AC_MLX5_SYND_LOCAL_ACCESS 0x11u
#define AC_MLX5_SYND_REMOTE_INVAL_REQ 0x12u
#define AC_MLX5_SYND_REMOTE_ACCESS 0x13u
#define AC_MLX5_SYND_REMOTE_OP 0x14u
#define AC_MLX5_SYND_RETRY_EXC 0x15u
#define AC_MLX5_SYND_RNR_RETRY_EXC 0x16u
#define AC_MLX5_SYND_REMOTE_ABORTED 0x22u

/* One RC QP to one peer, with its own CQ. Addresses are as the producer sees them (device
 * pointers in the GPU's copy, host pointers in the host's). Counters are 64-bit and never wrap
 * in practice; the 16-bit NIC indices are their low bits. */
struct ac_gin_mlx5_qp {
    uint8_t *sq_buf;  /* wqe_cnt WQEBBs */
    uint32_t wqe_cnt; /* power of two, <= AC_GIN_MLX5_MAX_WQES */
    uint32_t qpn;
    uint32_t *sq_dbrec; /* the send doorbell record (mlx5dv_qp.dbrec + MLX5_SND_DBR) */
    uint64_t *bf_reg;   /* the UAR's BlueFlame register: the doorbell (MMIO) */
    uint8_t *cq_buf;    /* cqe_cnt CQEs of 64 bytes */
    uint32_t cqe_cnt;   /* power of two, >= wqe_cnt (every WQE asks for a CQE) */
    uint32_t cqn;
    uint32_t *cq_dbrec; /* the CQ's consumer-index record */
    uint32_t rkey;      /* the peer's window */
    uint64_t raddr;
    uint64_t rbytes;
    uint64_t sig_raddr; /* the peer's signals, AC_GIN_MLX5 signal i at sig_raddr + 8 i */
    uint32_t sig_rkey;
    uint32_t nsig;
    uint64_t resv AC_GIN_LINE;  /* WQE indices claimed by producers (fetch-add) */
    uint64_t ready AC_GIN_LINE; /* WQEs handed to the NIC: producers publish in index order */
    uint64_t done AC_GIN_LINE;  /* WQEs completed (from CQEs), release by the poller */
    uint64_t cq_ci;             /* CQEs consumed; only the poll-lock holder touches it */
    uint32_t cq_lock;           /* one poller at a time: 0 free, 1 held */
};

/* Everything a producer needs, in one plain struct the host fills (src/gin/gin_mlx5_qp.c) and
 * copies where the producer can read it. qps[me] is unused (wqe_cnt 0): no QP to oneself. */
struct ac_gin_mlx5_dev {
    uint32_t version; /* AC_GIN_MLX5_VERSION */
    uint32_t size;    /* sizeof(struct ac_gin_mlx5_dev) */
    uint32_t me, npeers;
    uint64_t laddr; /* this rank's window, as the NIC knows it (registered) */
    uint64_t lbytes;
    uint32_t lkey;
    uint32_t scratch_lkey; /* where fetch-add results land (8 bytes, ignored) */
    uint64_t scratch_addr;
    uint64_t *signals; /* this rank's signals, added to by peers' NICs */
    uint32_t nsignals;
    uint32_t pad;
    struct ac_gin_mlx5_qp *qps; /* [npeers] */
    const volatile int *abort_flag;
    uint64_t
        max_spins; /* a wait gives up with AC_GIN_ERR_TIMEOUT after this many polls; 0: never */
    int32_t error AC_GIN_LINE; /* enum ac_gin_status, first failure wins */
    int32_t error_peer;
    uint32_t error_syndrome; /* the error CQE's syndrome << 8 | vendor syndrome */
};

/* --- memory-ordering primitives for the NIC as the other party ---------------------------------
 * The NIC reads the send queue and the doorbell record by DMA after the doorbell MMIO store, so
 * every fence is system scope (design note rule 2: WQE bytes, fence, doorbell record, fence,
 * doorbell). */
#if defined(__CUDA_ARCH__)
AC_DEVFN void ac_mlx5_fence_sys(void)
{
    asm volatile("fence.acq_rel.sys;" ::: "memory");
}
AC_DEVFN void ac_mlx5_store_dbrec(uint32_t *p, uint32_t v)
{
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
/* MMIO: a volatile (never merged or cached) 8-byte store to the UAR mapped with IOMEMORY. */
AC_DEVFN void ac_mlx5_mmio_store64(uint64_t *p, uint64_t v)
{
    asm volatile("st.volatile.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
AC_DEVFN uint8_t ac_mlx5_load_owner(const uint8_t *p)
{
    return *(const volatile uint8_t *)p;
}
AC_DEVFN int ac_mlx5_trylock(uint32_t *p)
{
    return atomicCAS_system((unsigned int *)p, 0u, 1u) == 0u;
}
AC_DEVFN void ac_mlx5_unlock(uint32_t *p)
{
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(0u) : "memory");
}
AC_DEVFN int32_t ac_mlx5_cas_error(int32_t *p, int32_t v)
{
    return atomicCAS_system((int *)p, 0, v);
}
#elif defined(__HIP_DEVICE_COMPILE__)
AC_DEVFN void ac_mlx5_fence_sys(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* system scope on amdgcn (no scope argument) */
}
AC_DEVFN void ac_mlx5_store_dbrec(uint32_t *p, uint32_t v)
{
    __hip_atomic_store(p, v, __ATOMIC_RELEASE, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN void ac_mlx5_mmio_store64(uint64_t *p, uint64_t v)
{
    *(volatile uint64_t *)p = v;
}
AC_DEVFN uint8_t ac_mlx5_load_owner(const uint8_t *p)
{
    return *(const volatile uint8_t *)p;
}
AC_DEVFN int ac_mlx5_trylock(uint32_t *p)
{
    uint32_t expected = 0;
    return __hip_atomic_compare_exchange_strong(p, &expected, 1u, __ATOMIC_ACQUIRE,
                                                __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN void ac_mlx5_unlock(uint32_t *p)
{
    __hip_atomic_store(p, 0u, __ATOMIC_RELEASE, __HIP_MEMORY_SCOPE_SYSTEM);
}
AC_DEVFN int32_t ac_mlx5_cas_error(int32_t *p, int32_t v)
{
    int32_t expected = 0;
    __hip_atomic_compare_exchange_strong(p, &expected, v, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE,
                                         __HIP_MEMORY_SCOPE_SYSTEM);
    return expected;
}
#else
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the mlx5 WQE builders assume a little-endian host (x86-64, aarch64, ppc64le)"
#endif
/* Host build: what the unit tests run, and what a CPU producer on a real UAR would need (the
 * seq_cst fence is an mfence on x86: it also orders the write-combining UAR store). */
AC_DEVFN void ac_mlx5_fence_sys(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
AC_DEVFN void ac_mlx5_store_dbrec(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
AC_DEVFN void ac_mlx5_mmio_store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n((volatile uint64_t *)p, v, __ATOMIC_RELEASE);
}
AC_DEVFN uint8_t ac_mlx5_load_owner(const uint8_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
AC_DEVFN int ac_mlx5_trylock(uint32_t *p)
{
    uint32_t expected = 0;
    return __atomic_compare_exchange_n(p, &expected, 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
AC_DEVFN void ac_mlx5_unlock(uint32_t *p)
{
    __atomic_store_n(p, 0u, __ATOMIC_RELEASE);
}
AC_DEVFN int32_t ac_mlx5_cas_error(int32_t *p, int32_t v)
{
    int32_t expected = 0;
    __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return expected;
}
#endif

/* --- WQE encoding (no rdma-core: device code cannot include it) ------------------------------- */

/* Big-endian words, built with shifts the compilers turn into one byte-permute instruction. */
AC_DEVFN uint32_t ac_mlx5_be32(uint32_t v)
{
    return (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
}
AC_DEVFN void ac_mlx5_put32(uint8_t *p, uint32_t v)
{
    *(uint32_t *)p = ac_mlx5_be32(v);
}
AC_DEVFN void ac_mlx5_put64(uint8_t *p, uint64_t v)
{
    ac_mlx5_put32(p, (uint32_t)(v >> 32));
    ac_mlx5_put32(p + 4, (uint32_t)v);
}

/* The first 8 bytes of a ctrl segment as one little-endian 64-bit word: the doorbell value,
 * computed in registers so that ringing never reads the send queue back (over PCIe when the
 * queue is in host memory). */
AC_DEVFN uint64_t ac_mlx5_ctrl8(uint16_t idx, uint32_t opcode, uint32_t qpn, uint32_t ds)
{
    return ((uint64_t)ac_mlx5_be32((qpn << 8) | ds) << 32) |
           ac_mlx5_be32(((uint32_t)idx << 8) | opcode);
}

/* ctrl segment (16 bytes). ds: the WQE's size in 16-byte units. */
AC_DEVFN void ac_mlx5_ctrl_seg(uint8_t *w, uint16_t idx, uint32_t opcode, uint32_t qpn, uint32_t ds,
                               uint8_t fm_ce_se, uint32_t imm_be)
{
    *(uint64_t *)w = ac_mlx5_ctrl8(idx, opcode, qpn, ds);
    /* signature 0, two reserved bytes, fm_ce_se: one little-endian word holds them in order */
    *(uint32_t *)(w + 8) = (uint32_t)fm_ce_se << 24;
    *(uint32_t *)(w + 12) = imm_be;
}

AC_DEVFN void ac_mlx5_raddr_seg(uint8_t *w, uint64_t raddr, uint32_t rkey)
{
    ac_mlx5_put64(w, raddr);
    ac_mlx5_put32(w + 8, rkey);
    *(uint32_t *)(w + 12) = 0;
}

AC_DEVFN void ac_mlx5_data_seg(uint8_t *w, uint32_t bytes, uint32_t lkey, uint64_t laddr)
{
    ac_mlx5_put32(w, bytes);
    ac_mlx5_put32(w + 4, lkey);
    ac_mlx5_put64(w + 8, laddr);
}

/* RDMA write (opcode 0x08) or write with immediate (0x09, imm given in host order): ctrl, raddr,
 * data = 3 segments; the rest of the WQEBB is zeroed so a WQE's bytes never depend on the slot's
 * previous lap. */
AC_DEVFN void ac_mlx5_wqe_write(uint8_t *w, uint16_t idx, uint32_t qpn, int has_imm, uint32_t imm,
                                uint64_t raddr, uint32_t rkey, uint64_t laddr, uint32_t lkey,
                                uint32_t bytes, int is_signaled)
{
    ac_mlx5_ctrl_seg(w, idx, has_imm ? AC_MLX5_OPCODE_RDMA_WRITE_IMM : AC_MLX5_OPCODE_RDMA_WRITE,
                     qpn, 3, is_signaled ? AC_MLX5_CTRL_CQ_UPDATE : 0,
                     has_imm ? ac_mlx5_be32(imm) : 0);
    ac_mlx5_raddr_seg(w + 16, raddr, rkey);
    ac_mlx5_data_seg(w + 32, bytes, lkey, laddr);
    *(uint64_t *)(w + 48) = 0;
    *(uint64_t *)(w + 56) = 0;
}

/* Atomic fetch-and-add of 8 bytes (opcode 0x12): ctrl, raddr, atomic (be64 add, be64 compare =
 * 0), data (where the old value lands) = 4 segments, one full WQEBB. */
AC_DEVFN void ac_mlx5_wqe_fetch_add(uint8_t *w, uint16_t idx, uint32_t qpn, uint64_t raddr,
                                    uint32_t rkey, uint64_t add, uint64_t laddr, uint32_t lkey,
                                    int is_signaled)
{
    ac_mlx5_ctrl_seg(w, idx, AC_MLX5_OPCODE_ATOMIC_FA, qpn, 4,
                     is_signaled ? AC_MLX5_CTRL_CQ_UPDATE : 0, 0);
    ac_mlx5_raddr_seg(w + 16, raddr, rkey);
    ac_mlx5_put64(w + 32, add);
    *(uint64_t *)(w + 40) = 0;
    ac_mlx5_data_seg(w + 48, 8, lkey, laddr);
}

/* --- producer side -----------------------------------------------------------------------------
 */

AC_DEVFN void ac_mlx5_fail(struct ac_gin_mlx5_dev *d, int32_t status, uint32_t peer, uint32_t synd)
{
    if (ac_mlx5_cas_error(&d->error, -1) == 0) {
        /* we won: fill the details, then publish the status (readers see them with it) */
        d->error_peer = (int32_t)peer;
        d->error_syndrome = synd;
        ac_mlx5_fence_sys();
        *(volatile int32_t *)&d->error = status;
    }
}

/* The error word; -1 means a failure is being recorded: wait the few instructions until its
 * status is there, so every waiter reports the same one. */
AC_DEVFN int32_t ac_mlx5_error(struct ac_gin_mlx5_dev *d)
{
    int32_t err;
    while ((err = ac_gin_load_error(&d->error)) < 0)
        ac_gin_pause();
    return err;
}

/* What every wait loop does between polls: an error, abort, or the spin limit ends it. */
AC_DEVFN int ac_mlx5_check(struct ac_gin_mlx5_dev *d, uint64_t *spins)
{
    int32_t err = ac_mlx5_error(d);
    if (err != AC_GIN_OK)
        return err;
    if (d->abort_flag && *d->abort_flag)
        return AC_GIN_ERR_ABORT;
    if (++*spins > d->max_spins && d->max_spins)
        return AC_GIN_ERR_TIMEOUT;
#if !AC_GIN_DEVICE
    /* a host producer may wait on another thread (the one publishing before it, or playing the
     * NIC in the tests): give the core up now and then rather than spin it away */
    if ((*spins & 63u) == 0) {
        sched_yield();
        return AC_GIN_OK;
    }
#endif
    ac_gin_pause();
    return AC_GIN_OK;
}

AC_DEVFN int ac_mlx5_synd_status(uint32_t synd)
{
    switch (synd) {
    case AC_MLX5_SYND_LOCAL_LENGTH:
    case AC_MLX5_SYND_LOCAL_PROT:
    case AC_MLX5_SYND_LOCAL_ACCESS:
    case AC_MLX5_SYND_REMOTE_ACCESS:
    case AC_MLX5_SYND_REMOTE_INVAL_REQ:
        return AC_GIN_ERR_ACCESS; /* a bad key or an address outside a registration */
    case AC_MLX5_SYND_RETRY_EXC:
    case AC_MLX5_SYND_RNR_RETRY_EXC:
    case AC_MLX5_SYND_REMOTE_ABORTED:
    case AC_MLX5_SYND_BAD_RESP:
    case AC_MLX5_SYND_REMOTE_OP:
        return AC_GIN_ERR_PEER; /* the peer is gone or its QP is in error */
    default:
        return AC_GIN_ERR_SYSTEM;
    }
}

/* Consumes the CQEs the NIC wrote, advancing qp->done. One poller at a time (a try-lock: a thread
 * that finds it taken just returns, the holder makes the progress). Every WQE asks for a CQE and
 * RC completes in order, so a CQE's wqe_counter says every WQE up to it is done. An error CQE
 * records the failure (the QP is in error: nothing after it will complete). Returns an
 * ac_gin_status. */
AC_DEVFN int ac_gin_mlx5_poll(struct ac_gin_mlx5_dev *d, uint32_t peer)
{
    struct ac_gin_mlx5_qp *q = &d->qps[peer];
    if (!ac_mlx5_trylock(&q->cq_lock))
        return AC_GIN_OK;
    uint64_t ci = q->cq_ci, done = q->done;
    int st = AC_GIN_OK;
    for (;;) {
        const uint8_t *cqe = q->cq_buf + (ci & (q->cqe_cnt - 1)) * AC_GIN_MLX5_CQE_BYTES;
        uint8_t op_own = ac_mlx5_load_owner(cqe + 63);
        uint32_t opcode = op_own >> 4;
        if (opcode == AC_MLX5_CQE_INVALID || (op_own & 1u) != ((ci / q->cqe_cnt) & 1u))
            break;
        ac_mlx5_fence_sys(); /* the rest of the CQE after its owner byte */
        uint16_t wc = (uint16_t)((cqe[60] << 8) | cqe[61]);
        ci++;
        if (opcode == AC_MLX5_CQE_REQ_ERR || opcode == AC_MLX5_CQE_RESP_ERR) {
            uint32_t synd = ((uint32_t)cqe[55] << 8) | cqe[54];
            st = ac_mlx5_synd_status(cqe[55]);
            ac_mlx5_fail(d, st, peer, synd);
            break;
        }
        uint16_t n = (uint16_t)(wc + 1u - (uint16_t)done);
        if (opcode != AC_MLX5_CQE_REQ || n > q->wqe_cnt) {
            st = AC_GIN_ERR_SYSTEM; /* not a send completion of ours: the CQ is not ours alone */
            ac_mlx5_fail(d, st, peer, 0xff00u | opcode);
            break;
        }
        done += n;
    }
    if (ci != q->cq_ci) {
        q->cq_ci = ci;
        ac_mlx5_store_dbrec(q->cq_dbrec, ac_mlx5_be32((uint32_t)ci & 0xffffffu));
        ac_gin_store_release(&q->done, done);
    }
    ac_mlx5_unlock(&q->cq_lock);
    return st;
}

/* Claims WQE index *idx_out on the peer's QP once its slot is free (the NIC completed the WQE
 * that used it a lap ago). Relaxed fetch-add: the index orders nothing by itself, publication in
 * ac_mlx5_submit does. */
AC_DEVFN int ac_mlx5_reserve(struct ac_gin_mlx5_dev *d, uint32_t peer, uint64_t *idx_out)
{
    if (peer >= d->npeers || d->qps[peer].wqe_cnt == 0)
        return AC_GIN_ERR_ACCESS;
    struct ac_gin_mlx5_qp *q = &d->qps[peer];
    int32_t err = ac_mlx5_error(d);
    if (err != AC_GIN_OK)
        return err;
    uint64_t idx = ac_gin_fetch_add(&q->resv, 1);
    uint64_t spins = 0;
    while (idx - ac_gin_load_acquire(&q->done) >= q->wqe_cnt) {
        int st = ac_gin_mlx5_poll(d, peer);
        if (st == AC_GIN_OK)
            st = ac_mlx5_check(d, &spins);
        if (st != AC_GIN_OK)
            return st;
    }
    *idx_out = idx;
    return AC_GIN_OK;
}

AC_DEVFN uint8_t *ac_mlx5_slot(const struct ac_gin_mlx5_qp *q, uint64_t idx)
{
    return q->sq_buf + (idx & (q->wqe_cnt - 1)) * AC_GIN_MLX5_WQEBB;
}

/* Hands WQE idx (already written) to the NIC. Producers publish in index order (design note rule
 * 3): each waits until every earlier WQE was handed over, so the doorbell record only grows and
 * never covers a slot still being written. Then: WQE bytes, fence, doorbell record, fence,
 * doorbell (rule 2); `ready` is released last so the next producer's record comes after ours. */
AC_DEVFN int ac_mlx5_submit(struct ac_gin_mlx5_dev *d, uint32_t peer, uint64_t idx, uint64_t ctrl8)
{
    struct ac_gin_mlx5_qp *q = &d->qps[peer];
    uint64_t spins = 0;
    while (ac_gin_load_acquire(&q->ready) != idx) {
        int st = ac_mlx5_check(d, &spins);
        if (st != AC_GIN_OK)
            return st;
    }
    ac_mlx5_fence_sys();
    ac_mlx5_store_dbrec(q->sq_dbrec, ac_mlx5_be32((uint32_t)(idx + 1) & 0xffffu));
    ac_mlx5_fence_sys();
    ac_mlx5_mmio_store64(q->bf_reg, ctrl8);
    ac_gin_store_release(&q->ready, idx + 1);
    return AC_GIN_OK;
}

/* bytes from this rank's window at src_off to the peer's window at dst_off. *ticket_out: the WQE
 * index, for ac_gin_mlx5_quiet. Bounds are checked here (an out-of-window put would otherwise be a
 * remote access error that puts the QP in error). */
AC_DEVFN int ac_gin_mlx5_put(struct ac_gin_mlx5_dev *d, uint32_t peer, uint64_t src_off,
                             uint64_t dst_off, uint64_t bytes, uint64_t *ticket_out)
{
    if (peer >= d->npeers)
        return AC_GIN_ERR_ACCESS;
    struct ac_gin_mlx5_qp *q = &d->qps[peer];
    if (bytes > AC_GIN_MLX5_MAX_MSG || src_off > d->lbytes || bytes > d->lbytes - src_off ||
        dst_off > q->rbytes || bytes > q->rbytes - dst_off)
        return AC_GIN_ERR_ACCESS;
    uint64_t idx;
    int st = ac_mlx5_reserve(d, peer, &idx);
    if (st != AC_GIN_OK)
        return st;
    ac_mlx5_wqe_write(ac_mlx5_slot(q, idx), (uint16_t)idx, q->qpn, 0, 0, q->raddr + dst_off,
                      q->rkey, d->laddr + src_off, d->lkey, (uint32_t)bytes, 1);
    st = ac_mlx5_submit(d, peer, idx,
                        ac_mlx5_ctrl8((uint16_t)idx, AC_MLX5_OPCODE_RDMA_WRITE, q->qpn, 3));
    if (st == AC_GIN_OK && ticket_out)
        *ticket_out = idx;
    return st;
}

/* The peer's signal `signal_id` += value, by an RDMA atomic fetch-add on its signal array. It
 * follows this QP's earlier writes: RC executes a QP's requests in order at the responder and the
 * signal memory is registered without relaxed ordering (design note rule 5). */
AC_DEVFN int ac_gin_mlx5_signal(struct ac_gin_mlx5_dev *d, uint32_t peer, uint32_t signal_id,
                                uint64_t value, uint64_t *ticket_out)
{
    if (peer >= d->npeers || signal_id >= d->qps[peer].nsig)
        return AC_GIN_ERR_ACCESS;
    struct ac_gin_mlx5_qp *q = &d->qps[peer];
    uint64_t idx;
    int st = ac_mlx5_reserve(d, peer, &idx);
    if (st != AC_GIN_OK)
        return st;
    ac_mlx5_wqe_fetch_add(ac_mlx5_slot(q, idx), (uint16_t)idx, q->qpn,
                          q->sig_raddr + 8ull * signal_id, q->sig_rkey, value, d->scratch_addr,
                          d->scratch_lkey, 1);
    st = ac_mlx5_submit(d, peer, idx,
                        ac_mlx5_ctrl8((uint16_t)idx, AC_MLX5_OPCODE_ATOMIC_FA, q->qpn, 4));
    if (st == AC_GIN_OK && ticket_out)
        *ticket_out = idx;
    return st;
}

/* Until the peer's QP completed every WQE up to and including `ticket` (the source of those puts
 * may be reused). */
AC_DEVFN int ac_gin_mlx5_quiet(struct ac_gin_mlx5_dev *d, uint32_t peer, uint64_t ticket)
{
    if (peer >= d->npeers || d->qps[peer].wqe_cnt == 0)
        return AC_GIN_ERR_ACCESS;
    uint64_t spins = 0;
    while ((int64_t)(ac_gin_load_acquire(&d->qps[peer].done) - (ticket + 1)) < 0) {
        int st = ac_gin_mlx5_poll(d, peer);
        if (st == AC_GIN_OK)
            st = ac_mlx5_check(d, &spins);
        if (st != AC_GIN_OK)
            return st;
    }
    return AC_GIN_OK;
}

/* Every WQE handed to any peer's QP so far has completed. */
AC_DEVFN int ac_gin_mlx5_flush(struct ac_gin_mlx5_dev *d)
{
    for (uint32_t p = 0; p < d->npeers; p++) {
        uint64_t ready = ac_gin_load_acquire(&d->qps[p].ready);
        if (d->qps[p].wqe_cnt == 0 || ready == 0)
            continue;
        int st = ac_gin_mlx5_quiet(d, p, ready - 1);
        if (st != AC_GIN_OK)
            return st;
    }
    return AC_GIN_OK;
}

/* Until this rank's signal `signal_id` is at least `value` (wrap-safe); acquire, so the data of
 * the puts that preceded the signal on the sender's QP is visible (rule 6; with GPUDirect RDMA
 * into GPU memory a flush of the NIC's writes may also be needed, not done here). */
AC_DEVFN int ac_gin_mlx5_wait_signal(struct ac_gin_mlx5_dev *d, uint32_t signal_id, uint64_t value)
{
    if (signal_id >= d->nsignals)
        return AC_GIN_ERR_ACCESS;
    uint64_t spins = 0;
    while ((int64_t)(ac_gin_load_acquire(&d->signals[signal_id]) - value) < 0) {
        int st = ac_mlx5_check(d, &spins);
        if (st != AC_GIN_OK)
            return st;
    }
    return AC_GIN_OK;
}

#endif
