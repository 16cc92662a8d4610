/* Between the CUDA backend (cuda_backend.c) and its shareable memory (cuda_mem.c): ncclMemAlloc's
 * device memory, cuMem allocations exported as POSIX file descriptors, and their import. */
#ifndef AC_DEVICE_CUDA_MEM_H
#define AC_DEVICE_CUDA_MEM_H

#include "device/backend.h"

/* cuda_backend.c: the driver library it opened (NULL when none), and cudaSetDevice's effect. */
void *ac_cuda_driver_lib(void);
ncclResult_t ac_cuda_set_device(int device);

/* cuda_mem.c: struct ac_backend's mem_alloc_shareable, mem_free_shareable, mem_range. */
ncclResult_t ac_cuda_mem_alloc_shareable(size_t bytes, void **ptr_out);
ncclResult_t ac_cuda_mem_free_shareable(void *ptr, bool *is_mine_out);
ncclResult_t ac_cuda_mem_range(const void *ptr, void **base_out, size_t *bytes_out);
/* The cuMem side of ipc_export / ipc_import / ipc_close: *is_done_out false when ptr is not
 * memory of mem_alloc_shareable's cuMem path (export) or not a mapping made by
 * ac_cuda_vmm_import (close): the caller then uses the legacy cuIpc calls. */
ncclResult_t ac_cuda_vmm_export(void *ptr, struct ac_ipc_handle *handle_out, bool *is_done_out);
ncclResult_t ac_cuda_vmm_import(const struct ac_ipc_handle *handle, void **ptr_out);
ncclResult_t ac_cuda_vmm_close(void *ptr, bool *is_done_out);
/* Forgets the driver's symbols (the backend's fini): allocations still listed are dropped. */
void ac_cuda_mem_fini(void);

#endif
