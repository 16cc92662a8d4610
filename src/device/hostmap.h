/* The GPU backends' host_map / host_unmap (struct ac_backend), each in its own file beside its
 * backend (cuda/cuda_hostmap.c, hip/hip_hostmap.c): host memory or a NIC's doorbell page made
 * addressable by the GPU, for the mlx5 direct engine of GIN (src/gin/gin_mlx5_qp.c). */
#ifndef AC_DEVICE_HOSTMAP_H
#define AC_DEVICE_HOSTMAP_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>

ncclResult_t ac_cuda_host_map(void *ptr, size_t bytes, bool is_io, void **dev_ptr_out);
ncclResult_t ac_cuda_host_unmap(void *ptr);
ncclResult_t ac_hip_host_map(void *ptr, size_t bytes, bool is_io, void **dev_ptr_out);
ncclResult_t ac_hip_host_unmap(void *ptr);

#endif
