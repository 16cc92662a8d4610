/* Device backends: one ops table per kind of memory (host, CUDA, HIP), libfabric hmem_ops style.
 * The GPU backends dlopen their vendor's driver library at first use and carry their kernels as
 * code embedded in this library; no SDK header or library is needed to build or to link AnyCCL.
 * Streams and events are the vendor's opaque handles (a CUstream / hipStream_t is what a user
 * passes as cudaStream_t); NULL is the vendor's default stream. */
#ifndef AC_DEVICE_BACKEND_H
#define AC_DEVICE_BACKEND_H

#include "nccl.h"
#include "device/kernels/reduce.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum ac_mem_kind {
    AC_MEM_HOST,
    AC_MEM_CUDA,
    AC_MEM_HIP,
    AC_MEM_KIND_COUNT,
};

struct ac_kcoll_args;

/* CUDA's and HIP's IPC handles are both 64 opaque bytes (CU_IPC_HANDLE_SIZE, HIP_IPC_HANDLE_SIZE).
 */
#define AC_IPC_HANDLE_BYTES 64
/* How a handle's bytes are opened. */
enum ac_ipc_kind {
    AC_IPC_VENDOR = 0,   /* the vendor's handle (cuIpcGetMemHandle, hipIpcGetMemHandle) */
    AC_IPC_POSIX_FD = 1, /* a CUDA cuMem allocation: the exporting process's pid and the fd of its
                          * POSIX shareable handle, copied by the importer with pidfd_getfd(2)
                          * (src/device/cuda/cuda_backend.c) */
};
struct ac_ipc_handle {
    unsigned char bytes[AC_IPC_HANDLE_BYTES];
    uint32_t kind; /* enum ac_ipc_kind; 0 when only bytes was filled */
    uint32_t reserved;
};

/* What a backend knows about a pointer. */
struct ac_ptr_info {
    enum ac_mem_kind kind;
    int device;      /* the GPU ordinal the memory belongs to; -1 for host memory */
    bool is_managed; /* managed (unified) memory: reachable from host and device */
};

/* Every call but init and classify requires a usable backend (init said so). Calls that take a
 * stream are asynchronous on GPU backends (ordered on that stream) and complete before returning
 * on the host backend. Errors are ncclUnhandledCudaError (the vendor's call and its error string in
 * the last-error message), ncclInvalidUsage for what the backend cannot do. */
struct ac_backend {
    size_t size; /* sizeof(struct ac_backend): members are only ever appended */
    const char *name;
    enum ac_mem_kind kind;
    /* Loads the vendor library and looks for a device. Never fails: a missing library, symbol or
     * device gives *usable_out = false and the reason in why. Called once by the registry. */
    void (*init)(bool *usable_out, char *why, size_t why_len);
    /* Forgets what init found (closes the library): the registry's test reset only. */
    void (*fini)(void);
    /* *is_mine_out: ptr is memory of this backend (for host: always true); info_out filled then. */
    ncclResult_t (*classify)(const void *ptr, bool *is_mine_out, struct ac_ptr_info *info_out);
    ncclResult_t (*alloc)(int device, size_t bytes, void **ptr_out);
    ncclResult_t (*free)(void *ptr);
    /* Copies between any two pointers the vendor's unified addressing knows (host included). */
    ncclResult_t (*memcpy_async)(void *dst, const void *src, size_t bytes, void *stream);
    ncclResult_t (*memset_async)(void *dst, int value, size_t bytes, void *stream);
    ncclResult_t (*stream_create)(void **stream_out);
    ncclResult_t (*stream_destroy)(void *stream);
    ncclResult_t (*stream_sync)(void *stream);
    ncclResult_t (*event_create)(void **event_out);
    ncclResult_t (*event_destroy)(void *event);
    ncclResult_t (*event_record)(void *event, void *stream);
    ncclResult_t (*event_query)(void *event, bool *done_out); /* not done yet is not an error */
    ncclResult_t (*event_sync)(void *event);
    ncclResult_t (*stream_wait_event)(void *stream, void *event);
    /* Device memory shared with another process of the same machine: export gives a handle of
     * the allocation holding ptr (an interior pointer names its allocation, as in CUDA), which
     * the peer passes to import; import gives that allocation's base in the importing process
     * (on its current device), and the importer closes it with ipc_close. Importing a handle of
     * the calling process is refused (CUDA's cuIpcOpenMemHandle refuses it). cuMem memory from
     * mem_alloc_shareable is exported as AC_IPC_POSIX_FD (CUDA refuses legacy IPC on it). */
    ncclResult_t (*ipc_export)(void *ptr, struct ac_ipc_handle *handle_out);
    ncclResult_t (*ipc_import)(const struct ac_ipc_handle *handle, void **ptr_out);
    ncclResult_t (*ipc_close)(void *ptr);
    /* The kernels of src/device/kernels/, with the semantics of reduce.h's ac_kern_copy_out and
     * ac_kern_reduce (a == NULL: ac_kern_load), on the stream. */
    ncclResult_t (*copy)(void *dst, const void *src, size_t bytes, void *stream);
    ncclResult_t (*reduce)(const struct ac_redop *op, void *dst, const void *a, const void *b,
                           size_t count, bool is_final, void *stream);
    /* GPUDirect RDMA: a dma-buf file descriptor covering device memory [ptr, ptr + bytes) (the
     * range rounded out to pages inside), and ptr's offset within it, for ibv_reg_dmabuf_mr. The
     * caller closes *fd_out. NULL, or ncclInvalidUsage, when the driver cannot export one (no
     * such call, or the GPU or driver does not support it): the caller stages through host
     * memory. May be NULL in a backend (host memory needs no export). */
    ncclResult_t (*dmabuf_export)(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out);
    /* Collectives on streams (src/core/stream.c) stage through these. host_alloc: pinned host
     * memory that every device of the backend reads and writes at the same address (mapped,
     * portable, unified addressing), zeroed. */
    ncclResult_t (*host_alloc)(size_t bytes, void **ptr_out);
    ncclResult_t (*host_free)(void *ptr);
    /* On the stream, after its earlier work: *flag = value, made visible to the CPU together with
     * that work (stream_signal); or: the stream's later work waits until
     * (int32_t)(*flag - value) >= 0, the flag being written by a CPU thread (stream_wait).
     * flag lies in host_alloc memory. Stream memory operations where the driver has them, else
     * the one-thread kernels of kernels/sync.cuh. */
    ncclResult_t (*stream_signal)(void *stream, volatile uint32_t *flag, uint32_t value);
    ncclResult_t (*stream_wait)(void *stream, volatile uint32_t *flag, uint32_t value);
    /* The mlx5 direct engine (src/gin/gin_mlx5_qp.c): host memory the NIC also uses (send queue,
     * CQ, doorbell records), or with is_io a NIC's doorbell page (MMIO: cuMemHostRegister with
     * CU_MEMHOSTREGISTER_IOMEMORY, hipHostRegister with hipHostRegisterIoMemory), made
     * addressable by the backend's devices; *dev_ptr_out is its device address. ptr and bytes
     * are page-aligned. host_unmap undoes it. NULL where not implemented: the engine is then
     * unavailable, with that reason. */
    ncclResult_t (*host_map)(void *ptr, size_t bytes, bool is_io, void **dev_ptr_out);
    ncclResult_t (*host_unmap)(void *ptr);
    /* The device collective engine (src/device/kernels/devcoll.h): launches ac_k_coll(*args) on
     * the stream, one block of AC_KERNEL_THREADS threads per task. With args NULL, only says
     * whether it could (the kernel is in the current context's module), launching nothing:
     * ncclInvalidUsage with the reason when not. NULL in the host backend. */
    ncclResult_t (*launch_coll)(const struct ac_kcoll_args *args, unsigned nblocks, void *stream);
    /* Bit d of *mask_out: `device` can read and write device d's memory (cuDeviceCanAccessPeer,
     * hipDeviceCanAccessPeer; its own bit is always set; devices from 64 on are left out). */
    ncclResult_t (*peer_mask)(int device, uint64_t *mask_out);
    /* ncclMemAlloc's device memory, on the calling thread's current device, that ipc_export can
     * share with other processes: CUDA: cuMemCreate with POSIX file descriptor handles, the size
     * rounded up to the granularity, readable and writable by the device and the devices that can
     * access it, where the device has virtual memory management and POSIX fd handles, else
     * cuMemAlloc; HIP: hipMalloc. NULL in the host backend. */
    ncclResult_t (*mem_alloc_shareable)(size_t bytes, void **ptr_out);
    /* Frees memory from mem_alloc_shareable (ptr its base); *is_mine_out false, and nothing done,
     * for any other pointer. */
    ncclResult_t (*mem_free_shareable)(void *ptr, bool *is_mine_out);
    /* The device allocation holding ptr: its base and size (cuMemGetAddressRange: for cuMem
     * memory, the mapping; hipMemGetAddressRange). NULL in the host backend. */
    ncclResult_t (*mem_range)(const void *ptr, void **base_out, size_t *bytes_out);
};

extern const struct ac_backend ac_host_backend;
extern const struct ac_backend ac_cuda_backend;
extern const struct ac_backend ac_hip_backend;

/* The backend of a memory kind, initialized at first use; NULL when it is not usable (then why,
 * when not NULL, says why). Thread-safe. */
const struct ac_backend *ac_backend_get(enum ac_mem_kind kind, char *why, size_t why_len);
/* The backend that owns p: the first usable GPU backend that claims it, else the host backend.
 * Never NULL. */
const struct ac_backend *ac_backend_for_pointer(const void *p);
/* Whether any GPU backend is usable in this process: decided at the first call, then one load, so
 * that host-only calls pay nothing for the GPU path. No driver is loaded for it when the machine has
 * no GPU device node and ANYCCL_CUDA_LIBRARY is unset. */
bool ac_backends_have_gpu(void);
/* The first usable GPU backend (CUDA, then HIP); NULL when none is, with why saying why not. */
const struct ac_backend *ac_backend_first_gpu(char *why, size_t why_len);
/* One line per backend: usable or not, and why (anyccl-info). */
void ac_backends_describe(FILE *out);
/* What the library was built with for a GPU backend: "sm_80 sm_90 compute_90", "" when its kernels
 * were not built (no nvcc / hipcc at build time). */
const char *ac_cuda_built_archs(void);
const char *ac_hip_built_archs(void);

/* Tests only: the library a backend opens (NULL: the default names), and a reset that makes the
 * next ac_backend_get run init again. Not thread-safe against concurrent ac_backend_get. */
void ac_cuda_set_library_for_test(const char *path);
void ac_hip_set_library_for_test(const char *path);
void ac_backends_reset_for_test(void);

#endif
