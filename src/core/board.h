/* The board: a shared-memory segment per communicator whose ranks all run on one host, where each
 * rank posts the input of a small allreduce, allgather, reduce-scatter, all-to-all or broadcast
 * (reductions' premultiplied, as the one-shot sends them; a broadcast's other ranks only the
 * operation's number) in a slot of its own, and takes what it needs from the slots (reductions
 * folded in rank order). One store-release and one load per peer
 * replace a run through the connectors (plan, tickets, slots, tags): a 2-rank allreduce of 16
 * bytes took about 1900 instructions that way, most of a call whose data crosses cores in 40 ns.
 *
 * Each rank has a few slots, operation b using slot b % 4. Rank r writes the slot of operation b
 * only after finishing operation b - 1, and once every peer has posted b - 3 (which it did after
 * finishing b - 4, its last read of that slot): no acknowledgement. In the collectives where
 * every rank reads every rank's post, finishing b - 1 has shown all those posts already; a
 * broadcast's root reads none and returns once it posted, so it looks at its peers' slots now
 * and then. Operations on the board are numbered on their own: every rank sends the same calls
 * there (the decision depends on the call and on the communicator, which all ranks agreed at
 * init), whatever runs through the connectors in between.
 *
 * Each rank also publishes its current collective (its position in the communicator's order and
 * what it is), on the board whether or not the call runs there: ranks that disagree about a call
 * may take different paths (one the board, one the connectors), and the periodic health checks
 * of both compare these to name the difference instead of waiting for the timeout. */
#ifndef AC_CORE_BOARD_H
#define AC_CORE_BOARD_H

#include "collectives/coll.h"
#include "core/enqueue.h"

#include <stdbool.h>
#include <stdint.h>

struct ncclComm;

/* Calls whose input (a reduce-scatter's or all-to-all's whole input) is at most this many bytes
 * run on the board (the one-shot allreduce's limit). */
#define AC_BOARD_MAX_BYTES AC_ONESHOT_MAX_BYTES
/* Up to this many ranks: each reads every other rank's input. */
#define AC_BOARD_MAX_RANKS (AC_TASK_MAX_PEERS + 1)

/* At communicator creation, by every rank (collective, through the bootstrap): sets up the board
 * where every rank can (one host, shared memory, no GPU backend, no NCCL_ALGO or NCCL_PROTO,
 * ANYCCL_BOARD), else leaves comm->board NULL on every rank. Fails only if the bootstrap does. */
ncclResult_t ac_board_setup(struct ncclComm *comm);
void ac_board_free(struct ncclComm *comm);

/* Whether op runs on the board: the same answer on every rank that made the same call. */
bool ac_board_takes(const struct ac_op *op);

/* Publishes op, this rank's collective number coll_seq, as its current one. */
void ac_board_announce(const struct ac_op *op, uint64_t coll_seq);

/* Posts op's input as board operation number *seq_out; false (nothing done) while this rank's
 * previous board operation is not finished (a group with several). */
bool ac_board_post(const struct ac_op *op, uint64_t *seq_out);
/* Folds every rank's input of board operation seq into op's output once all have posted it;
 * *done tells whether it did. A rank that posted a different call is an ncclInvalidUsage error
 * naming the difference. */
ncclResult_t ac_board_finish(const struct ac_op *op, uint64_t seq, bool *done);
/* The first rank op waits for: one that has not posted board operation seq yet, or with seq 0
 * (not posted), one that keeps this rank from posting; -1 when none. */
int ac_board_missing(const struct ac_op *op, uint64_t seq);
/* For the health checks of any call: an error naming the difference when a peer's current
 * collective has this rank's number but is another call. */
ncclResult_t ac_board_check_peers(const struct ncclComm *comm);

/* Board operations that carry a record of at most AC_BOARD_MAX_BYTES instead of a call's input
 * (board_direct.c), under the same rules. Posting: false while it cannot yet. */
bool ac_board_post_record(const struct ac_op *op, const void *rec, size_t bytes, uint64_t *seq_out);
/* Once every other rank posted operation seq (the same call), copies each rank's record to
 * recs[rank] (bytes each) and finishes the operation; *done false while one has not. */
ncclResult_t ac_board_take_records(const struct ac_op *op, uint64_t seq, void *recs, size_t bytes,
                                   bool *done);
/* Rank's record of operation seq once posted (NULL before): words in it that its owner goes on
 * updating (atomically) while the operation lasts are read there. */
void *ac_board_record(const struct ac_op *op, uint64_t seq, int rank);
/* Finishes operation seq without reading the peers' posts. */
void ac_board_skip(const struct ac_op *op, uint64_t seq);
/* The communicator's smallest call on registered buffers run in place; 0: never. */
size_t ac_board_direct_min(const struct ncclComm *comm);

/* ---- src/core/board_direct.c: calls in place on registered shared buffers ---- */

/* A call's progress there (a task of the run). */
struct ac_board_direct_task {
    int phase;
    /* a call of a group, or one whose buffers this rank cannot share: votes no, its connectors'
     * tasks do the work */
    bool is_vote_only;
    bool is_declined;  /* some rank voted no: the call takes the connectors */
    uint64_t seq;      /* the board operation posted and waited for; 0 before posting the next */
};

/* Whether op is a candidate (the same answer on every rank that made the same call). */
bool ac_board_direct_is_candidate(const struct ac_op *op);
/* Whether this rank's buffers of op can be read in place (registered shared memory). */
bool ac_board_direct_can(const struct ac_op *op);
ncclResult_t ac_board_direct_advance(const struct ac_op *op, struct ac_board_direct_task *t,
                                     bool *progressed);
bool ac_board_direct_is_done(const struct ac_board_direct_task *t);
/* The first rank t waits for (health checks), -1 when none. */
int ac_board_direct_missing(const struct ac_op *op, const struct ac_board_direct_task *t);

#endif
