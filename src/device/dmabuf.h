/* The GPU backends' dma-buf exports (struct ac_backend's dmabuf_export), each in its own file
 * beside its backend (cuda/cuda_dmabuf.c, hip/hip_dmabuf.c). */
#ifndef AC_DEVICE_DMABUF_H
#define AC_DEVICE_DMABUF_H

#include "nccl.h"

#include <stddef.h>
#include <stdint.h>

ncclResult_t ac_cuda_dmabuf_export(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out);
ncclResult_t ac_hip_dmabuf_export(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out);

#endif
