/* The mlx5 direct engine's producer logic (src/device/kernels/gin_mlx5.h, host build) against a
 * fake QP in ordinary memory: WQE bytes (golden from rdma-core's inline builders where
 * infiniband/mlx5dv.h exists), send-queue and 16-bit index wrap-around, doorbell-record and
 * doorbell values, CQ polling across owner-bit laps, error CQEs, bounds; then several producer
 * threads against a thread that plays the NIC (our reading of the PRM: it checks consistency,
 * not the PRM itself). Also the engine choice and the mlx5dv checks of src/gin/gin_mlx5_qp.c.
 * Nothing here talks to a ConnectX or a GPU. */
#include "common/check.h"
#include "device/kernels/gin_mlx5.h"
#include "gin/gin_mlx5_dev.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<infiniband/mlx5dv.h>)
#define HAS_MLX5DV 1
#include <infiniband/mlx5dv.h>
#else
#define HAS_MLX5DV 0
#endif

#define NPEERS 3
#define ME 0
#define WIN_BYTES 65536
#define NSIG 8
#define LKEY 0x1111u
#define RKEY 0x2200u     /* + peer */
#define SIG_RKEY 0x3300u /* + peer */
#define SCRATCH_LKEY 0x4444u

/* The fake: one rank's dev struct and QPs, the peers' windows and signals in this process, and
 * the NIC's own state per QP. */
struct fake {
    struct ac_gin_mlx5_dev dev;
    struct ac_gin_mlx5_qp qps[NPEERS];
    uint32_t dbrec[NPEERS][2] AC_GIN_LINE;
    uint64_t bf[NPEERS];
    uint8_t *sq[NPEERS], *cq[NPEERS];
    uint32_t cq_dbrec[NPEERS];
    uint8_t win[WIN_BYTES];
    uint64_t signals[NSIG];
    uint64_t scratch;
    uint8_t remote[NPEERS][WIN_BYTES];
    uint64_t remote_sig[NPEERS][NSIG];
    /* NIC side */
    uint64_t nic_sq_ci[NPEERS]; /* next WQE the NIC executes */
    uint64_t nic_cq_pi[NPEERS]; /* next CQE it writes */
    int fail_next[NPEERS];      /* error syndrome for the next WQE; 0: none */
};

static struct fake *fake_new(uint32_t wqe_cnt, uint32_t cqe_cnt)
{
    struct fake *f = aligned_alloc(64, (sizeof(struct fake) + 63) & ~(size_t)63);
    cr_assert_not_null(f);
    memset(f, 0, sizeof(*f));
    struct ac_gin_mlx5_dev *d = &f->dev;
    d->version = AC_GIN_MLX5_VERSION;
    d->size = sizeof(*d);
    d->me = ME;
    d->npeers = NPEERS;
    d->laddr = (uint64_t)(uintptr_t)f->win;
    d->lbytes = WIN_BYTES;
    d->lkey = LKEY;
    d->scratch_addr = (uint64_t)(uintptr_t)&f->scratch;
    d->scratch_lkey = SCRATCH_LKEY;
    d->signals = f->signals;
    d->nsignals = NSIG;
    d->qps = f->qps;
    for (int p = 0; p < NPEERS; p++) {
        if (p == ME)
            continue;
        struct ac_gin_mlx5_qp *q = &f->qps[p];
        f->sq[p] = aligned_alloc(64, wqe_cnt * 64);
        f->cq[p] = aligned_alloc(64, cqe_cnt * 64);
        memset(f->sq[p], 0xee, wqe_cnt * 64);
        memset(f->cq[p], 0, cqe_cnt * 64);
        for (uint32_t i = 0; i < cqe_cnt; i++) /* as libmlx5 leaves a new CQ */
            f->cq[p][i * 64 + 63] = AC_MLX5_CQE_INVALID << 4;
        q->sq_buf = f->sq[p];
        q->wqe_cnt = wqe_cnt;
        q->qpn = 0x100 + (uint32_t)p;
        q->sq_dbrec = &f->dbrec[p][1];
        q->bf_reg = &f->bf[p];
        q->cq_buf = f->cq[p];
        q->cqe_cnt = cqe_cnt;
        q->cq_dbrec = &f->cq_dbrec[p];
        q->raddr = (uint64_t)(uintptr_t)f->remote[p];
        q->rbytes = WIN_BYTES;
        q->rkey = RKEY + (uint32_t)p;
        q->sig_raddr = (uint64_t)(uintptr_t)f->remote_sig[p];
        q->sig_rkey = SIG_RKEY + (uint32_t)p;
        q->nsig = NSIG;
    }
    return f;
}

static void fake_free(struct fake *f)
{
    for (int p = 0; p < NPEERS; p++) {
        free(f->sq[p]);
        free(f->cq[p]);
    }
    free(f);
}

/* Starts every counter at `start` (a QP that already carried that many WQEs and CQEs). */
static void fake_start_at(struct fake *f, uint64_t start)
{
    for (int p = 0; p < NPEERS; p++) {
        f->qps[p].resv = f->qps[p].ready = f->qps[p].done = f->qps[p].cq_ci = start;
        f->nic_sq_ci[p] = f->nic_cq_pi[p] = start;
        /* the CQ's previous lap left CQEs the owner bit must reject */
        uint64_t n = p == ME ? 0 : f->qps[p].cqe_cnt;
        for (uint64_t s = 0; s < n; s++) {
            uint64_t old = start - 1 - ((start - 1 - s) % n); /* the last CQE written there */
            f->cq[p][s * 64 + 63] = (uint8_t)((AC_MLX5_CQE_REQ << 4) | ((old / n) & 1));
        }
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void write_cqe(struct fake *f, int p, uint16_t wqe_counter, uint32_t opcode, uint8_t synd)
{
    struct ac_gin_mlx5_qp *q = &f->qps[p];
    uint64_t pi = f->nic_cq_pi[p]++;
    uint8_t *c = f->cq[p] + (pi & (q->cqe_cnt - 1)) * 64;
    memset(c, 0, 63);
    c[54] = 0x42; /* vendor syndrome */
    c[55] = synd;
    c[60] = (uint8_t)(wqe_counter >> 8);
    c[61] = (uint8_t)wqe_counter;
    __atomic_store_n(&c[63], (uint8_t)((opcode << 4) | ((pi / q->cqe_cnt) & 1)), __ATOMIC_RELEASE);
}

/* The NIC for QP p: executes every WQE the doorbell record covers, in order, checking what a
 * ConnectX would (keys, bounds, the WQE index, the QP number) and writes a CQE for each one that
 * asks. Returns how many it executed. */
static int nic_step(struct fake *f, int p)
{
    struct ac_gin_mlx5_qp *q = &f->qps[p];
    uint16_t db = (uint16_t)ac_mlx5_be32(__atomic_load_n(q->sq_dbrec, __ATOMIC_ACQUIRE));
    int n = 0;
    while ((uint16_t)f->nic_sq_ci[p] != db) {
        uint64_t i = f->nic_sq_ci[p]++;
        const uint8_t *w = q->sq_buf + (i & (q->wqe_cnt - 1)) * 64;
        uint32_t op = get32(w) & 0xff, idx = (get32(w) >> 8) & 0xffff;
        uint32_t qpn = get32(w + 4) >> 8, ds = get32(w + 4) & 0x3f;
        cr_assert_eq(idx, (uint16_t)i, "WQE %llu carries index %u", (unsigned long long)i, idx);
        cr_assert_eq(qpn, q->qpn);
        uint8_t *raddr = (uint8_t *)(uintptr_t)get64(w + 16);
        uint32_t rkey = get32(w + 24);
        uint8_t synd = 0;
        if (f->fail_next[p]) {
            synd = (uint8_t)f->fail_next[p];
            f->fail_next[p] = 0;
        } else if (op == AC_MLX5_OPCODE_RDMA_WRITE) {
            cr_assert_eq(ds, 3u);
            uint32_t len = get32(w + 32), lkey = get32(w + 36);
            uint8_t *laddr = (uint8_t *)(uintptr_t)get64(w + 40);
            if (rkey != RKEY + (uint32_t)p || lkey != LKEY || raddr < f->remote[p] ||
                raddr + len > f->remote[p] + WIN_BYTES || laddr < f->win ||
                laddr + len > f->win + WIN_BYTES)
                synd = AC_MLX5_SYND_REMOTE_ACCESS;
            else
                memcpy(raddr, laddr, len);
        } else if (op == AC_MLX5_OPCODE_ATOMIC_FA) {
            cr_assert_eq(ds, 4u);
            uint64_t add = get64(w + 32);
            uint64_t *res = (uint64_t *)(uintptr_t)get64(w + 56);
            if (rkey != SIG_RKEY + (uint32_t)p || get32(w + 52) != SCRATCH_LKEY ||
                get32(w + 48) != 8)
                synd = AC_MLX5_SYND_REMOTE_ACCESS;
            else
                *res = __atomic_fetch_add((uint64_t *)raddr, add, __ATOMIC_RELEASE);
        } else {
            cr_assert_fail("unexpected opcode %#x", op);
        }
        n++;
        if (synd) {
            write_cqe(f, p, (uint16_t)i, AC_MLX5_CQE_REQ_ERR, synd);
            break;
        }
        if (w[11] & AC_MLX5_CTRL_CQ_UPDATE)
            write_cqe(f, p, (uint16_t)i, AC_MLX5_CQE_REQ, 0);
    }
    return n;
}

#if HAS_MLX5DV
Test(gin_mlx5_engine, wqe_bytes_match_rdma_core, .timeout = 10)
{
    struct fake *f = fake_new(8, 8);
    uint64_t t = 0;
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 128, 4096, 1000, &t), AC_GIN_OK);
    cr_assert_eq(ac_gin_mlx5_signal(&f->dev, 1, 5, 0x123456789ull, &t), AC_GIN_OK);
    cr_assert_eq(t, 1u);
    uint8_t g[2][64];
    memset(g, 0, sizeof(g));
    struct mlx5_wqe_ctrl_seg *c = (void *)g[0];
    struct mlx5_wqe_raddr_seg *ra = (void *)(g[0] + 16);
    mlx5dv_set_ctrl_seg(c, 0, MLX5_OPCODE_RDMA_WRITE, 0, 0x101, MLX5_WQE_CTRL_CQ_UPDATE, 3, 0, 0);
    ra->raddr = htobe64((uintptr_t)f->remote[1] + 4096);
    ra->rkey = htobe32(RKEY + 1);
    mlx5dv_set_data_seg((void *)(g[0] + 32), 1000, LKEY, (uintptr_t)f->win + 128);
    c = (void *)g[1];
    ra = (void *)(g[1] + 16);
    struct mlx5_wqe_atomic_seg *at = (void *)(g[1] + 32);
    mlx5dv_set_ctrl_seg(c, 1, MLX5_OPCODE_ATOMIC_FA, 0, 0x101, MLX5_WQE_CTRL_CQ_UPDATE, 4, 0, 0);
    ra->raddr = htobe64((uintptr_t)&f->remote_sig[1][5]);
    ra->rkey = htobe32(SIG_RKEY + 1);
    at->swap_add = htobe64(0x123456789ull);
    at->compare = 0;
    mlx5dv_set_data_seg((void *)(g[1] + 48), 8, SCRATCH_LKEY, (uintptr_t)&f->scratch);
    for (int w = 0; w < 2; w++)
        for (int b = 0; b < 64; b++)
            cr_assert_eq(f->sq[1][w * 64 + b], g[w][b], "WQE %d byte %d is %#x, rdma-core %#x", w,
                         b, f->sq[1][w * 64 + b], g[w][b]);
    /* write with immediate: the encoder only (no producer call posts it: the QPs have no
     * receive queue to take the immediate) */
    uint8_t ours[64], theirs[64] = {0};
    ac_mlx5_wqe_write(ours, 0xfffe, 0xabcde, 1, 0xcafef00d, 0x7f0012345678ull, 0xdeadbeef,
                      0x5500aa00bb00ull, 0x1234567, 65536, 0);
    mlx5dv_set_ctrl_seg((void *)theirs, 0xfffe, MLX5_OPCODE_RDMA_WRITE_IMM, 0, 0xabcde, 0, 3, 0,
                        htobe32(0xcafef00d));
    ((struct mlx5_wqe_raddr_seg *)(theirs + 16))->raddr = htobe64(0x7f0012345678ull);
    ((struct mlx5_wqe_raddr_seg *)(theirs + 16))->rkey = htobe32(0xdeadbeef);
    mlx5dv_set_data_seg((void *)(theirs + 32), 65536, 0x1234567, 0x5500aa00bb00ull);
    cr_assert_arr_eq(ours, theirs, 64);
    fake_free(f);
}

Test(gin_mlx5_engine, fill_qp_checks_what_the_device_assumes, .timeout = 10)
{
    static uint8_t sq[64 * 64], cq[64 * 64];
    static __be32 dbrec[2], cqdb[1];
    static uint64_t bf;
    struct mlx5dv_qp dq = {.dbrec = dbrec, .sq = {sq, 64, 64}, .bf = {&bf, 256}};
    struct mlx5dv_cq dc = {.buf = cq, .dbrec = cqdb, .cqe_cnt = 64, .cqe_size = 64, .cqn = 9};
    struct ac_gin_mlx5_qp q;
    char why[200];
    cr_assert_eq(ac_gin_mlx5_fill_qp(&q, &dq, &dc, 0x77, why, sizeof(why)), ncclSuccess);
    cr_assert_eq(q.sq_buf, sq);
    cr_assert_eq(q.sq_dbrec, (uint32_t *)&dbrec[MLX5_SND_DBR]);
    cr_assert_eq(q.bf_reg, &bf);
    cr_assert_eq(q.cq_dbrec, (uint32_t *)cqdb);
    cr_assert_eq(q.wqe_cnt, 64u);
    cr_assert_eq(q.cqe_cnt, 64u);
    cr_assert_eq(q.qpn, 0x77u);
    cr_assert_eq(q.cqn, 9u);
    dq.sq.stride = 128;
    cr_assert_eq(ac_gin_mlx5_fill_qp(&q, &dq, &dc, 0x77, why, sizeof(why)), ncclInvalidUsage);
    cr_assert(strstr(why, "stride is not 64 bytes"), "%s", why);
    dq.sq.stride = 64;
    dc.cqe_cnt = 32;
    cr_assert_eq(ac_gin_mlx5_fill_qp(&q, &dq, &dc, 0x77, why, sizeof(why)), ncclInvalidUsage);
    cr_assert(strstr(why, "CQ depth"), "%s", why);
    dc.cqe_cnt = 64;
    dc.cqe_size = 128;
    cr_assert_eq(ac_gin_mlx5_fill_qp(&q, &dq, &dc, 0x77, why, sizeof(why)), ncclInvalidUsage);
    dc.cqe_size = 64;
    dq.bf.reg = NULL;
    cr_assert_eq(ac_gin_mlx5_fill_qp(&q, &dq, &dc, 0x77, why, sizeof(why)), ncclInvalidUsage);
    cr_assert(strstr(why, "BlueFlame"), "%s", why);
}
#else
Test(gin_mlx5_engine, wqe_bytes_match_rdma_core)
{
    cr_skip_test("infiniband/mlx5dv.h not installed (apt-get install libibverbs-dev)");
}
#endif

/* Each put: the WQE index in its ctrl segment, the doorbell record = be32 of the next index's low
 * 16 bits, the doorbell = the first 8 bytes of that WQE's ctrl segment; across the send queue's
 * end (4 slots) and the 16-bit index's wrap (counters started at 0xfffd). */
Test(gin_mlx5_engine, doorbell_record_and_doorbell_across_wraps, .timeout = 10)
{
    struct fake *f = fake_new(4, 4);
    fake_start_at(f, 0xfffd);
    for (uint64_t i = 0xfffd; i < 0xfffd + 13; i++) {
        uint64_t t = 0;
        uint32_t off = (uint32_t)(i % 16) * 256;
        memset(f->win + off, (int)(i & 0xff), 256);
        cr_assert_eq(ac_gin_mlx5_put(&f->dev, 2, off, off, 256, &t), AC_GIN_OK);
        cr_assert_eq(t, i);
        const uint8_t *w = f->sq[2] + (i & 3) * 64;
        cr_assert_eq(get32(w), ((uint32_t)(uint16_t)i << 8) | AC_MLX5_OPCODE_RDMA_WRITE);
        cr_assert_eq(get32(w + 4), (0x102u << 8) | 3u);
        cr_assert_eq(f->dbrec[2][1], ac_mlx5_be32((uint32_t)(i + 1) & 0xffff),
                     "dbrec %#x after WQE %#llx", ac_mlx5_be32(f->dbrec[2][1]),
                     (unsigned long long)i);
        cr_assert_eq(f->dbrec[2][0], 0u, "the receive record is not ours");
        uint64_t first8;
        memcpy(&first8, w, 8);
        cr_assert_eq(f->bf[2], first8);
        cr_assert_eq(nic_step(f, 2), 1);
        cr_assert_eq(ac_gin_mlx5_quiet(&f->dev, 2, t), AC_GIN_OK);
        cr_assert_eq(f->qps[2].done, i + 1);
        cr_assert_eq(f->cq_dbrec[2], ac_mlx5_be32((uint32_t)(i + 1) & 0xffffff));
        cr_assert_eq(f->remote[2][off], (uint8_t)i);
        cr_assert_eq(f->remote[2][off + 255], (uint8_t)i);
    }
    cr_assert_eq(f->qps[1].resv, 0xfffdu, "the other QP untouched");
    fake_free(f);
}

/* A full send queue waits for completions: with none coming, the 5th WQE on 4 slots times out
 * and the slot it would reuse still holds WQE 0. */
Test(gin_mlx5_engine, full_send_queue_waits_for_completions, .timeout = 10)
{
    struct fake *f = fake_new(4, 4);
    f->dev.max_spins = 1000;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, 8, NULL), AC_GIN_OK);
    uint8_t before[64];
    memcpy(before, f->sq[1], 64);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, 8, NULL), AC_GIN_ERR_TIMEOUT);
    cr_assert_arr_eq(f->sq[1], before, 64);
    cr_assert_eq(ac_mlx5_be32(f->dbrec[1][1]), 4u);
    fake_free(f);
}

/* Completions one CQE at a time for three laps of a 4-entry CQ: the owner bit flips each lap; a
 * CQE left from the previous lap is not taken; done follows wqe_counter; the CQ record follows
 * the consumer index. A CQE may also cover several WQEs (RC completes in order). */
Test(gin_mlx5_engine, cq_owner_bit_laps, .timeout = 10)
{
    struct fake *f = fake_new(8, 8);
    f->qps[1].cqe_cnt = 4; /* a CQ as deep as needed for the test, shallower than the SQ */
    for (uint32_t i = 0; i < 4; i++)
        f->cq[1][i * 64 + 63] = AC_MLX5_CQE_INVALID << 4;
    uint64_t wqe = 0;
    for (int lap = 0; lap < 3; lap++) {
        for (int k = 0; k < 4; k++) {
            cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, 8, NULL), AC_GIN_OK);
            cr_assert_eq(ac_gin_mlx5_poll(&f->dev, 1), AC_GIN_OK);
            cr_assert_eq(f->qps[1].done, wqe, "lap %d: a stale CQE was taken", lap);
            write_cqe(f, 1, (uint16_t)wqe, AC_MLX5_CQE_REQ, 0);
            f->nic_sq_ci[1]++;
            cr_assert_eq(ac_gin_mlx5_poll(&f->dev, 1), AC_GIN_OK);
            wqe++;
            cr_assert_eq(f->qps[1].done, wqe);
            cr_assert_eq(f->qps[1].cq_ci, wqe);
            cr_assert_eq(f->cq_dbrec[1], ac_mlx5_be32((uint32_t)wqe));
            cr_assert_eq(f->cq[1][((wqe - 1) & 3) * 64 + 63] & 1, (uint8_t)(lap & 1));
        }
    }
    /* one CQE for three WQEs */
    for (int k = 0; k < 3; k++)
        cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, 8, NULL), AC_GIN_OK);
    write_cqe(f, 1, (uint16_t)(wqe + 2), AC_MLX5_CQE_REQ, 0);
    cr_assert_eq(ac_gin_mlx5_poll(&f->dev, 1), AC_GIN_OK);
    cr_assert_eq(f->qps[1].done, wqe + 3);
    cr_assert_eq(f->qps[1].cq_ci, 13u);
    fake_free(f);
}

/* An error CQE: the status from its syndrome, the peer and syndrome recorded once, every later
 * call fails at once with the same status. */
Test(gin_mlx5_engine, error_cqe_becomes_the_engine_error, .timeout = 10)
{
    struct fake *f = fake_new(8, 8);
    uint64_t t;
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 2, 0, 0, 64, &t), AC_GIN_OK);
    f->fail_next[2] = AC_MLX5_SYND_REMOTE_ACCESS;
    cr_assert_eq(nic_step(f, 2), 1);
    cr_assert_eq(ac_gin_mlx5_quiet(&f->dev, 2, t), AC_GIN_ERR_ACCESS);
    cr_assert_eq(f->dev.error, AC_GIN_ERR_ACCESS);
    cr_assert_eq(f->dev.error_peer, 2);
    cr_assert_eq(f->dev.error_syndrome, (AC_MLX5_SYND_REMOTE_ACCESS << 8) | 0x42u);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, 64, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_signal(&f->dev, 1, 0, 1, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_wait_signal(&f->dev, 0, 1), AC_GIN_ERR_ACCESS);
    cr_assert_eq(f->qps[1].resv, 0u, "nothing reserved after the error");
    fake_free(f);

    f = fake_new(8, 8);
    cr_assert_eq(ac_gin_mlx5_signal(&f->dev, 1, 3, 1, &t), AC_GIN_OK);
    f->fail_next[1] = AC_MLX5_SYND_RETRY_EXC;
    cr_assert_eq(nic_step(f, 1), 1);
    cr_assert_eq(ac_gin_mlx5_flush(&f->dev), AC_GIN_ERR_PEER);
    cr_assert_eq(f->dev.error_peer, 1);
    fake_free(f);
}

Test(gin_mlx5_engine, bounds_and_abort, .timeout = 10)
{
    struct fake *f = fake_new(4, 4);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, ME, 0, 0, 8, NULL), AC_GIN_ERR_ACCESS, "no QP to self");
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, NPEERS, 0, 0, 8, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, WIN_BYTES - 8, 0, 9, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, WIN_BYTES, 1, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 1, UINT64_MAX, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_signal(&f->dev, 1, NSIG, 1, NULL), AC_GIN_ERR_ACCESS);
    cr_assert_eq(ac_gin_mlx5_wait_signal(&f->dev, NSIG, 1), AC_GIN_ERR_ACCESS);
    cr_assert_eq(f->qps[1].resv, 0u);
    cr_assert_eq(f->dbrec[1][1], 0u);
    cr_assert_eq(ac_gin_mlx5_put(&f->dev, 1, 0, 0, WIN_BYTES, NULL), AC_GIN_OK, "the whole window");
    volatile int abort_flag = 1;
    f->dev.abort_flag = &abort_flag;
    cr_assert_eq(ac_gin_mlx5_wait_signal(&f->dev, 0, 1), AC_GIN_ERR_ABORT);
    cr_assert_eq(ac_gin_mlx5_quiet(&f->dev, 1, 0), AC_GIN_ERR_ABORT);
    fake_free(f);
}

/* Four producer threads share two QPs (puts to distinct offsets, each followed by a signal) while
 * a thread plays the NIC; 8 slots, so producers wrap the send queue hundreds of times and wait for
 * completions; then every byte and every signal count is checked. */
#define PRODUCERS 4
#define ROUNDS 200
#define CHUNK 32

struct run {
    struct fake *f;
    int id;
    int status;
    volatile int stop;
};

static void *producer(void *arg)
{
    struct run *r = arg;
    for (int i = 0; i < ROUNDS && r->status == AC_GIN_OK; i++) {
        uint32_t peer = 1 + (uint32_t)((i + r->id) % 2);
        uint64_t off = ((uint64_t)r->id * ROUNDS + (uint64_t)i) * CHUNK;
        r->status = ac_gin_mlx5_put(&r->f->dev, peer, off, off, CHUNK, NULL);
        if (r->status == AC_GIN_OK)
            r->status = ac_gin_mlx5_signal(&r->f->dev, peer, (uint32_t)r->id, 1, NULL);
    }
    return NULL;
}

static void *nic(void *arg)
{
    struct run *r = arg;
    while (!r->stop)
        if (nic_step(r->f, 1) + nic_step(r->f, 2) == 0)
            sched_yield();
    return NULL;
}

Test(gin_mlx5_engine, producers_against_a_nic_thread, .timeout = 60)
{
    struct fake *f = fake_new(8, 8);
    for (size_t i = 0; i < PRODUCERS * ROUNDS * CHUNK; i++)
        f->win[i] = (uint8_t)(i * 7 + 3);
    struct run runs[PRODUCERS], nic_run = {.f = f};
    pthread_t th[PRODUCERS], nic_th;
    cr_assert_eq(pthread_create(&nic_th, NULL, nic, &nic_run), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        runs[i] = (struct run){.f = f, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, producer, &runs[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(runs[i].status, AC_GIN_OK, "producer %d: status %d", i, runs[i].status);
    }
    cr_assert_eq(ac_gin_mlx5_flush(&f->dev), AC_GIN_OK);
    nic_run.stop = 1;
    pthread_join(nic_th, NULL);
    for (int id = 0; id < PRODUCERS; id++) {
        for (int i = 0; i < ROUNDS; i++) {
            int peer = 1 + (i + id) % 2;
            size_t off = ((size_t)id * ROUNDS + (size_t)i) * CHUNK;
            cr_assert_arr_eq(f->remote[peer] + off, f->win + off, CHUNK, "producer %d round %d", id,
                             i);
        }
        cr_assert_eq(f->remote_sig[1][id] + f->remote_sig[2][id], (uint64_t)ROUNDS);
        cr_assert_eq(f->remote_sig[1][id], (uint64_t)ROUNDS / 2);
    }
    for (int p = 1; p < NPEERS; p++) {
        cr_assert_eq(f->qps[p].done, f->qps[p].resv);
        cr_assert_eq(f->qps[p].ready, (uint64_t)PRODUCERS * ROUNDS);
        cr_assert_eq(ac_mlx5_be32(f->dbrec[p][1]), (uint32_t)(PRODUCERS * ROUNDS) & 0xffff);
    }
    fake_free(f);
}

/* ANYCCL_GIN_ENGINE: the decision and its log line; forcing mlx5 where it cannot run is an error,
 * not a fallback. */
Test(gin_mlx5_engine, engine_choice, .timeout = 10)
{
    enum ac_gin_engine e = AC_GIN_ENGINE_COUNT;
    char line[300];
    const char *why = "no mlx5 device (/sys/class/infiniband absent)";
    cr_assert_eq(ac_gin_engine_decide(NULL, false, why, &e, line, sizeof(line)), ncclSuccess);
    cr_assert_eq(e, AC_GIN_ENGINE_SW);
    cr_assert_str_eq(line, "engine=sw; engine=mlx5 ran=no: no mlx5 device (/sys/class/infiniband "
                           "absent)");
    cr_assert_eq(ac_gin_engine_decide("auto", true, "", &e, line, sizeof(line)), ncclSuccess);
    cr_assert_eq(e, AC_GIN_ENGINE_MLX5);
    cr_assert_str_eq(line, "engine=mlx5 ran=yes (ANYCCL_GIN_ENGINE=auto)");
    cr_assert_eq(ac_gin_engine_decide("sw", true, "", &e, line, sizeof(line)), ncclSuccess);
    cr_assert_eq(e, AC_GIN_ENGINE_SW);
    cr_assert_eq(ac_gin_engine_decide("MLX5", true, "", &e, line, sizeof(line)), ncclSuccess);
    cr_assert_eq(e, AC_GIN_ENGINE_MLX5);
    e = AC_GIN_ENGINE_COUNT;
    cr_assert_eq(ac_gin_engine_decide("mlx5", false, why, &e, line, sizeof(line)),
                 ncclInvalidUsage);
    cr_assert_eq(e, AC_GIN_ENGINE_COUNT, "no output on failure");
    cr_assert_str_eq(ac_last_error(),
                     "GIN: ANYCCL_GIN_ENGINE=mlx5, but the mlx5 direct engine cannot run in this "
                     "process: no mlx5 device (/sys/class/infiniband absent) (set "
                     "ANYCCL_GIN_ENGINE=sw or auto to use the software engine)");
    cr_assert_eq(ac_gin_engine_decide("ibgda", true, "", &e, line, sizeof(line)), ncclInvalidUsage);
    cr_assert_str_eq(ac_last_error(),
                     "GIN: ANYCCL_GIN_ENGINE=ibgda is not an engine: use sw, mlx5 or auto");
}

/* This machine's probe: whatever it finds, an unusable engine says why. */
Test(gin_mlx5_engine, probe_gives_a_reason, .timeout = 20)
{
    char why[300] = "";
    if (!ac_gin_mlx5_usable(true, why, sizeof(why)))
        cr_assert_neq(why[0], '\0');
}

/* Every syndrome of the PRM's requester/responder error CQE, as rdma-core names them, to the
 * status a producer sees. */
Test(gin_mlx5_engine, syndromes_map_to_statuses, .timeout = 10)
{
    static const struct {
        uint32_t synd;
        int status;
    } cases[] = {
        {0x01, AC_GIN_ERR_ACCESS}, /* local length */
        {0x02, AC_GIN_ERR_SYSTEM}, /* local QP operation */
        {0x04, AC_GIN_ERR_ACCESS}, /* local protection */
        {0x05, AC_GIN_ERR_SYSTEM}, /* WR flushed */
        {0x06, AC_GIN_ERR_SYSTEM}, /* MW bind */
        {0x10, AC_GIN_ERR_PEER},   /* bad response */
        {0x11, AC_GIN_ERR_ACCESS}, /* local access */
        {0x12, AC_GIN_ERR_ACCESS}, /* remote invalid request */
        {0x13, AC_GIN_ERR_ACCESS}, /* remote access */
        {0x14, AC_GIN_ERR_PEER},   /* remote operation */
        {0x15, AC_GIN_ERR_PEER},   /* transport retries exceeded */
        {0x16, AC_GIN_ERR_PEER},   /* RNR retries exceeded */
        {0x22, AC_GIN_ERR_PEER},   /* remote aborted */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(ac_mlx5_synd_status(cases[i].synd), cases[i].status, "syndrome %#x",
                     cases[i].synd);
#if HAS_MLX5DV
    cr_assert_eq(MLX5_CQE_SYNDROME_REMOTE_ACCESS_ERR, AC_MLX5_SYND_REMOTE_ACCESS);
    cr_assert_eq(MLX5_CQE_SYNDROME_TRANSPORT_RETRY_EXC_ERR, AC_MLX5_SYND_RETRY_EXC);
    cr_assert_eq(MLX5_CQE_SYNDROME_REMOTE_ABORTED_ERR, AC_MLX5_SYND_REMOTE_ABORTED);
    cr_assert_eq(MLX5_CQE_REQ_ERR, AC_MLX5_CQE_REQ_ERR);
    cr_assert_eq(MLX5_CQE_INVALID, AC_MLX5_CQE_INVALID);
    cr_assert_eq(MLX5_OPCODE_ATOMIC_FA, AC_MLX5_OPCODE_ATOMIC_FA);
    cr_assert_eq(MLX5_WQE_CTRL_CQ_UPDATE, AC_MLX5_CTRL_CQ_UPDATE);
    cr_assert_eq(MLX5_SND_DBR, 1);
#endif
}
