/* The mlx5 WQE encoding of src/gin/gin_mlx5.c against rdma-core's own inline builders (golden
 * bytes), where infiniband/mlx5dv.h exists. This checks our encoding, not a NIC: nothing here
 * talks to a ConnectX. */
#include "gin/gin.h"

#include <criterion/criterion.h>
#include <string.h>

#if __has_include(<infiniband/mlx5dv.h>)
#include <infiniband/mlx5dv.h>

static void golden(uint8_t out[64], uint16_t pi, uint32_t qpn, uint64_t raddr, uint32_t rkey,
                   uint64_t laddr, uint32_t lkey, uint32_t bytes, bool is_signaled)
{
    memset(out, 0, 64);
    struct mlx5_wqe_ctrl_seg *ctrl = (void *)out;
    struct mlx5_wqe_raddr_seg *ra = (void *)(out + sizeof(*ctrl));
    struct mlx5_wqe_data_seg *data = (void *)(out + sizeof(*ctrl) + sizeof(*ra));
    mlx5dv_set_ctrl_seg(ctrl, pi, MLX5_OPCODE_RDMA_WRITE, 0, qpn,
                        is_signaled ? MLX5_WQE_CTRL_CQ_UPDATE : 0, 3, 0, 0);
    ra->raddr = htobe64(raddr);
    ra->rkey = htobe32(rkey);
    mlx5dv_set_data_seg(data, bytes, lkey, (uintptr_t)laddr);
}

Test(gin_mlx5, rdma_write_wqe_matches_rdma_core)
{
    cr_assert_eq(sizeof(struct mlx5_wqe_ctrl_seg) + sizeof(struct mlx5_wqe_raddr_seg) +
                     sizeof(struct mlx5_wqe_data_seg),
                 48u);
    const uint16_t pis[] = {0, 1, 0x1234, 0xffff};
    for (unsigned i = 0; i < sizeof(pis) / sizeof(pis[0]); i++) {
        for (int sig = 0; sig < 2; sig++) {
            uint8_t ours[64], theirs[64];
            ac_gin_mlx5_rdma_write_wqe(ours, pis[i], 0xabcde, 0x7f0012345678ull, 0xdeadbeef,
                                       0x5500aa00bb00ull, 0x1234567, 65536, sig);
            golden(theirs, pis[i], 0xabcde, 0x7f0012345678ull, 0xdeadbeef, 0x5500aa00bb00ull,
                   0x1234567, 65536, sig);
            for (int b = 0; b < 64; b++)
                cr_assert_eq(ours[b], theirs[b], "pi %u signaled %d: byte %d is %#x, rdma-core %#x",
                             pis[i], sig, b, ours[b], theirs[b]);
        }
    }
}
#else
Test(gin_mlx5, rdma_write_wqe_matches_rdma_core)
{
    cr_skip_test("infiniband/mlx5dv.h not installed (apt-get install libibverbs-dev)");
}
#endif
