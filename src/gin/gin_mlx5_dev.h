/* The mlx5 direct engine of GIN, host side: engine selection (ANYCCL_GIN_ENGINE), and the set-up
 * of one RC QP + CQ per peer through libibverbs and libmlx5 (both dlopen'ed: never linked) whose
 * send queue, doorbell records, BlueFlame register and CQ are described in a struct
 * ac_gin_mlx5_dev (src/device/kernels/gin_mlx5.h) for a producer that posts WQEs itself.
 * Compiled and unit-tested against fakes only: no ConnectX has run it. See docs/gpu-initiated.md.
 */
#ifndef AC_GIN_GIN_MLX5_DEV_H
#define AC_GIN_GIN_MLX5_DEV_H

#include "device/kernels/gin_mlx5.h"
#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ncclComm;
struct ac_backend;
struct mlx5dv_qp;
struct mlx5dv_cq;

enum ac_gin_engine { AC_GIN_ENGINE_SW, AC_GIN_ENGINE_MLX5, AC_GIN_ENGINE_COUNT };

/* The decision, without probing: setting is ANYCCL_GIN_ENGINE (NULL or "": auto); is_mlx5_usable
 * and why_not say what the probe found. *line_out (for the INFO log) reads "engine=mlx5 ran=yes"
 * or "engine=mlx5 ran=no: <why>". A malformed setting, or mlx5 forced where it cannot run, is
 * ncclInvalidUsage with the message in the last error: never a fallback. */
ncclResult_t ac_gin_engine_decide(const char *setting, bool is_mlx5_usable, const char *why_not,
                                  enum ac_gin_engine *engine_out, char *line_out, size_t line_len);

/* Whether this process can run the direct engine: an mlx5 device (ConnectX) with an active port,
 * libibverbs and libmlx5 loadable with the entry points used, and (when needs_gpu) a usable GPU
 * backend with host_map (to map the UAR and queues into the GPU). Probed once, then cached. */
bool ac_gin_mlx5_usable(bool needs_gpu, char *why, size_t why_len);

/* ac_gin_engine_decide on this process's ANYCCL_GIN_ENGINE and probe (the probe only runs when
 * the setting is not sw). */
ncclResult_t ac_gin_engine_select(bool needs_gpu, enum ac_gin_engine *engine_out, char *line_out,
                                  size_t line_len);

/* The engine of the GIN all-to-all (ANYCCL_GPU_INITIATED=1, host producers): the software one.
 * Fills the INFO line saying why not mlx5; ANYCCL_GIN_ENGINE=mlx5 is an error (ncclInvalidUsage,
 * on every rank alike): unusable here, or usable but not driven by this path yet. */
ncclResult_t ac_gin_engine_for_host_alltoall(char *line_out, size_t line_len);

/* Fills the QP part of one peer's entry from what mlx5dv_init_obj returned, checking what the
 * device code assumes: 64-byte send stride, power-of-two counts, 64-byte CQEs, a CQ at least as
 * deep as the send queue, a BlueFlame register. ncclInvalidUsage with the reason otherwise. Pure
 * (unit-tested with fake mlx5dv structs). */
ncclResult_t ac_gin_mlx5_fill_qp(struct ac_gin_mlx5_qp *out, const struct mlx5dv_qp *dq,
                                 const struct mlx5dv_cq *dc, uint32_t qpn, char *why,
                                 size_t why_len);

/* One engine: a QP + CQ per peer, connected; the window [win, win + win_bytes) and the signals
 * [nsignals] registered. Collective over comm (the QP numbers, GIDs and keys are allgathered
 * through the bootstrap, as the verbs provider exchanges its addresses). gpu NULL: a host
 * producer (the CPU writes WQEs and rings the UAR itself); else the queues, records and UAR are
 * mapped into the GPU through gpu->host_map and ac_gin_mlx5_dev() is a device pointer; win and
 * signals must then be memory the GPU addresses (device memory needs GPUDirect RDMA to register).
 * A rank that fails before the allgather leaves the others waiting for the bootstrap's timeout.
 * Nothing in AnyCCL calls it yet (docs/gpu-initiated.md). */
struct ac_gin_mlx5;
ncclResult_t ac_gin_mlx5_create(struct ncclComm *comm, void *win, size_t win_bytes,
                                uint64_t *signals, uint32_t nsignals, uint32_t nwqes,
                                const struct ac_backend *gpu, struct ac_gin_mlx5 **out);
/* The producer's view (host or device address, as created). */
struct ac_gin_mlx5_dev *ac_gin_mlx5_dev(struct ac_gin_mlx5 *e);
void ac_gin_mlx5_destroy(struct ac_gin_mlx5 *e);

#endif
