/* The mlx5 direct engine's first piece, and only that: the encoding of one RDMA-write WQE
 * (control, remote-address and data segments: 3 x 16 bytes of one 64-byte basic block) as a
 * device would write it into the send queue before it bumps the doorbell record and rings the
 * UAR. Written without rdma-core, byte-swapping by hand, so that it can move into device code;
 * tests/unit/gin/test_mlx5_wqe.c checks the bytes against rdma-core's own inline builders
 * (mlx5dv_set_ctrl_seg, mlx5dv_set_data_seg) where infiniband/mlx5dv.h exists.
 *
 * NOT an engine: nothing here creates a QP, maps a UAR or polls a CQ, and nothing has run on a
 * ConnectX. See docs/gpu-initiated.md. */
#include "gin/gin.h"

#include <string.h>

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

void ac_gin_mlx5_rdma_write_wqe(uint8_t wqe[64], uint16_t pi, uint32_t qpn, uint64_t raddr,
                                uint32_t rkey, uint64_t laddr, uint32_t lkey, uint32_t bytes,
                                bool is_signaled)
{
    memset(wqe, 0, 64);
    /* ctrl: opmod 0 | wqe index (the producer index, 16 bits, wraps) | opcode RDMA_WRITE (0x08) */
    put_be32(wqe + 0, ((uint32_t)pi << 8) | 0x08u);
    /* qpn | ds: the WQE's size in 16-byte units (ctrl + raddr + data = 3) */
    put_be32(wqe + 4, (qpn << 8) | 3u);
    /* signature 0 (byte 8), dci stream 0 (9-10), fm_ce_se (11): CQ_UPDATE asks for a CQE */
    wqe[11] = is_signaled ? (uint8_t)(2u << 2) : 0;
    /* imm (12-15) 0. raddr segment: */
    put_be64(wqe + 16, raddr);
    put_be32(wqe + 24, rkey);
    /* data segment: byte_count, lkey, address */
    put_be32(wqe + 32, bytes);
    put_be32(wqe + 36, lkey);
    put_be64(wqe + 40, laddr);
}
