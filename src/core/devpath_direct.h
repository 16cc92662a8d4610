/* Direct collectives on registered GPU buffers (src/core/devpath_direct.c), part of the device
 * path (devpath.c): when every rank's buffers that its peers must reach are registered
 * (ncclCommRegister, or ncclMemAlloc memory registered), the kernel reads and writes the peers'
 * user buffers themselves (devcoll.h: struct ac_dev_direct) instead of copying through the
 * connectors' slots.
 *
 * Each call is a candidate or not by what every rank sees alike (collective, count, type, rank
 * count, and rank 0's ANYCCL_P2P_DIRECT_MIN_BYTES and NCCL_LOCAL_REGISTER); a candidate's ranks
 * then exchange, through a small shared-memory mailbox per rank, where their buffers are (IPC
 * handle and offset, or the pointer itself between threads of one process), map each other's,
 * and tell each other whether that worked: the call is direct only when it did for all, and
 * takes the slots otherwise (a rank that did not register, a buffer the backend cannot export).
 * The exchange waits for the peers' hosts to reach the same call, which is why small calls are
 * not candidates. */
#ifndef AC_CORE_DEVPATH_DIRECT_H
#define AC_CORE_DEVPATH_DIRECT_H

#include "core/enqueue.h"
#include "device/kernels/devcoll.h"

#include <stdbool.h>

struct ac_direct; /* a communicator's mailboxes; NULL: this communicator never goes direct */

/* The result of one call's exchange. */
struct ac_direct_call {
    bool is_direct;
    struct ac_dev_direct d; /* is_on when direct; block and nblocks left to the caller */
    int nrefs;              /* imports (ac_devreg_import) to give back once the kernel ended */
    struct {
        int peer;
        void *base;
    } refs[2 * AC_DEV_MAX_PEERS];
};

/* At the device path's agreement (every rank of comm at once, be's device buffers): maps every
 * rank's mailbox. *st_out stays NULL, on every rank alike, where direct calls are off (disabled,
 * more than AC_DEV_MAX_RANKS ranks, or a rank could not map its peers' mailboxes). */
ncclResult_t ac_direct_setup(struct ncclComm *comm, struct ac_direct **st_out);
void ac_direct_free(struct ac_direct *st);

/* Whether op is a candidate (the same answer on every rank). */
bool ac_direct_is_candidate(const struct ac_direct *st, const struct ac_op *op);

/* The exchange of a candidate (every rank, in call order). Errors: a peer gone or the wait past
 * ANYCCL_TIMEOUT (the call fails; the communicator cannot go on). */
ncclResult_t ac_direct_exchange(struct ncclComm *comm, struct ac_direct *st, const struct ac_op *op,
                                struct ac_direct_call *out);
/* Gives back the call's imports. */
void ac_direct_release(struct ncclComm *comm, struct ac_direct_call *c);

#endif
