/* The device path of calls on streams: collectives on GPU buffers run by the device collective
 * engine (kernel ac_k_coll, src/device/kernels/devcoll.h) over peer-to-peer connectors
 * (src/transport/p2p/), launched on the user's stream, instead of being staged through host
 * memory for the proxy thread (src/core/stream.c). Used on a communicator whose ranks all agreed,
 * at their first collective on GPU buffers, that each is a GPU rank of one backend on this host
 * that reaches every other (see src/core/devpath.c and docs/gpu.md). */
#ifndef AC_CORE_DEVPATH_H
#define AC_CORE_DEVPATH_H

#include "core/enqueue.h"

/* Launches the operations of ops (one call or one group, every one with a backend) that go the
 * device path, and returns the others in *rest_out (a malloc'd array linked as a list, the
 * caller frees it; NULL when none is left). *has_device_out: whether any op went the device
 * path; when false, *rest_out is NULL and every op is left for the staged path. Returns once the
 * work is ordered on the streams. */
ncclResult_t ac_devpath_submit(const struct ac_op *ops, struct ac_op **rest_out,
                               bool *has_device_out);

/* Looks at the launches that have finished: a failed one's status becomes the communicator's
 * asynchronous error (ncclCommGetAsyncError). */
void ac_devpath_poll(struct ncclComm *comm);

/* ncclCommFinalize: returns once every launch of comm has ended; a failed one's status is then
 * the communicator's asynchronous error. */
ncclResult_t ac_devpath_finalize(struct ncclComm *comm);

/* ncclCommDestroy / ncclCommAbort: after an abort (comm->abort_flag), running kernels are told to
 * return; waits for the launches (bounded), then frees the connectors and work memory. */
void ac_devpath_free(struct ncclComm *comm);

/* Internal (src/core/devpath_pick.c): the agreement of every rank of comm, whose buffers are
 * memory of be on device, on whether the device path is used; logged once at INFO. A failed
 * agreement (a peer gone) is *is_on_out = false, not an error. */
struct ac_backend;
ncclResult_t ac_devpath_pick(struct ncclComm *comm, const struct ac_backend *be, int device,
                             bool *is_on_out);

/* Tests and logs: launches made on the device path by this communicator so far. */
uint64_t ac_devpath_launches(const struct ncclComm *comm);

#endif
