/* The host entry to the mlx5 WQE encoding of src/device/kernels/gin_mlx5.h (the one source the
 * device producers use): one RDMA-write WQE as a device would write it into the send queue before
 * it bumps the doorbell record and rings the UAR. tests/unit/gin/test_mlx5_wqe.c checks the bytes
 * against rdma-core's own inline builders (mlx5dv_set_ctrl_seg, mlx5dv_set_data_seg) where
 * infiniband/mlx5dv.h exists. The engine around it: gin_mlx5_qp.c (host set-up) and the device
 * header; nothing has run on a ConnectX. See docs/gpu-initiated.md. */
#include "device/kernels/gin_mlx5.h"
#include "gin/gin.h"

void ac_gin_mlx5_rdma_write_wqe(uint8_t wqe[64], uint16_t pi, uint32_t qpn, uint64_t raddr,
                                uint32_t rkey, uint64_t laddr, uint32_t lkey, uint32_t bytes,
                                bool is_signaled)
{
    ac_mlx5_wqe_write(wqe, pi, qpn, 0, 0, raddr, rkey, laddr, lkey, bytes, is_signaled);
}
