/* RAS (reliability, availability, serviceability): what the core tells the RAS module, and what
 * the RAS module tells the core. Every process runs one RAS thread (ANYCCL_RAS_ENABLE=0 turns it
 * off) that joins the job's RAS network from the communicators' bootstrap information, keeps
 * peers alive with heartbeats, keeps a record of each communicator (ranks, the last operations
 * enqueued/started/finished on each rank, errors), answers NCCL's RAS text protocol on
 * NCCL_RAS_ADDR (localhost:28028 by default) and keeps a flight recorder of recent operations.
 *
 * The hooks below are called on the hot path: they never block, allocate or take a lock that the
 * RAS thread holds for long; a RAS failure is logged and never fails the caller. */
#ifndef AC_RAS_RAS_H
#define AC_RAS_RAS_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ncclComm;

/* End of communicator creation, on every rank (collective: may use the comm's bootstrap). */
void ac_ras_comm_init(struct ncclComm *comm);
/* Before the communicator's bootstrap and memory are released (destroy and abort). */
void ac_ras_comm_fini(struct ncclComm *comm, bool is_abort);

/* One user operation (a collective or a send/recv); returns its sequence number on this comm. */
uint64_t ac_ras_op_enqueue(struct ncclComm *comm, int coll, size_t count, int type, int redop,
                           int root_or_peer);
void ac_ras_op_start(struct ncclComm *comm, uint64_t seq);
void ac_ras_op_end(struct ncclComm *comm, uint64_t seq, ncclResult_t res);

/* Set by the RAS thread when it learns that a peer of `comm` died (missed heartbeats, closed RAS
 * connection): the executor polls it (comm->ras_dead_rank, -1 when none) and fails the call with
 * a message naming the rank. Declared here for documentation; the field lives in struct ncclComm.
 */

#endif
