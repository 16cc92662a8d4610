/* Registered GPU buffers and peers' imported GPU memory, per communicator (src/core/devreg.c).
 *
 * ncclCommRegister of a buffer a GPU backend owns registers it here: the buffer must lie in one
 * device allocation (the backend's mem_range: cuMemGetAddressRange), and that allocation is
 * exported once per communicator (ipc_export), however many registrations (the same buffer
 * twice, overlapping or disjoint buffers of one allocation) refer to it; the export goes with
 * the last of them. A transport (H3's GPU peer-to-peer path) asks ac_devreg_lookup whether a
 * buffer it sends from or receives into is registered, sends the handle and offset to the peer,
 * and the peer maps it with ac_devreg_import, cached per (peer, handle).
 *
 * All calls are thread-safe (one lock per communicator). */
#ifndef AC_CORE_DEVREG_H
#define AC_CORE_DEVREG_H

#include "device/backend.h"
#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>

struct ncclComm;
struct ac_devreg;     /* a communicator's cache, comm->devreg, made at first use */
struct ac_devreg_reg; /* one ncclCommRegister of a GPU buffer */

/* ncclCommRegister / ncclCommDeregister of GPU memory (src/core/misc.c). Registering is refused
 * (ncclInvalidArgument) when [buff, buff + size) is not inside one allocation. When the backend
 * cannot export the allocation (cuMem memory not from ncclMemAlloc, a driver refusing IPC), the
 * registration still succeeds, without a handle: ac_devreg_lookup does not report it. */
ncclResult_t ac_devreg_register(struct ncclComm *comm, const struct ac_backend *be, void *buff,
                                size_t size, struct ac_devreg_reg **reg_out);
ncclResult_t ac_devreg_deregister(struct ncclComm *comm, struct ac_devreg_reg *reg);

/* Whether [ptr, ptr + bytes) lies inside one registered GPU buffer whose allocation has a handle:
 * ncclSuccess with *h_out, the allocation's handle, and *offset_out, ptr's offset from the
 * allocation's base (which is what ac_devreg_import gives the peer); else ncclInvalidArgument,
 * quietly (no error recorded, no log: not being registered is not an error). */
ncclResult_t ac_devreg_lookup(struct ncclComm *comm, const void *ptr, size_t bytes,
                              struct ac_ipc_handle *h_out, size_t *offset_out);

/* The base address, in this process, of peer's allocation named by h (a handle from the peer's
 * ac_devreg_lookup): mapped at the first call (the first usable GPU backend's ipc_import, on the
 * calling thread's current device), then cached per (peer, handle) with a reference count. Each
 * successful call takes one reference, which ac_devreg_release gives back. Errors are the
 * backend's (a handle of this very process is ncclInvalidUsage: use the pointer itself). */
ncclResult_t ac_devreg_import(struct ncclComm *comm, int peer, const struct ac_ipc_handle *h,
                              void **base_out);
/* Gives back a reference of ac_devreg_import (base as it returned). An import without references
 * stays mapped for the next ac_devreg_import of the same handle; the cache closes the oldest
 * unreferenced ones beyond AC_DEVREG_MAX_IDLE, and all at ac_devreg_close_peer and
 * ac_devreg_free. ncclInvalidArgument for a base not imported from peer, or without references. */
ncclResult_t ac_devreg_release(struct ncclComm *comm, int peer, void *base);
#define AC_DEVREG_MAX_IDLE 64
/* Closes peer's imports now unreferenced, and the others when their last reference is given back
 * (a transport whose connection to peer goes away: its buffers may be freed). */
void ac_devreg_close_peer(struct ncclComm *comm, int peer);

/* Communicator destroy or abort (ac_comm_free): every import closed, every registration and
 * export dropped (registrations left by the user included). */
void ac_devreg_free(struct ncclComm *comm);

/* Tests: what the cache holds. */
struct ac_devreg_stats {
    int nregs;    /* registrations */
    int nexports; /* allocations exported */
    int nimports; /* peers' allocations mapped */
    int nidle;    /* of those, without references */
    int nrefs;    /* references on imports, all together */
};
void ac_devreg_get_stats(struct ncclComm *comm, struct ac_devreg_stats *out);

#endif
