/* Operations as the user issued them, and how they run: alone, or together at the outermost
 * ncclGroupEnd. */
#ifndef AC_CORE_ENQUEUE_H
#define AC_CORE_ENQUEUE_H

#include "core/comm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ac_backend;

struct ac_op {
    enum ac_coll coll;
    struct ncclComm *comm;
    const void *sendbuff;
    void *recvbuff;
    size_t count;
    ncclDataType_t type;
    struct ac_redop redop;
    int root;                 /* broadcast, reduce, gather, scatter */
    int peer;                 /* send, recv */
    uint64_t ras_seq;         /* from ac_ras_op_enqueue: this op's number on its communicator */
    uint64_t coll_seq;        /* collectives: comm->ncolls_issued after this one; 0: send, recv */
    /* A call on a stream (src/core/stream.c): the GPU backend that orders it on stream. NULL for
     * host buffers with a NULL stream, which run in the calling thread. */
    const struct ac_backend *backend;
    void *stream;
    struct ac_op *next;
};

/* Whether two buffers of an operation share a byte (an empty one shares none). */
static inline bool ac_buffers_overlap(const void *a, size_t an, const void *b, size_t bn)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return an && bn && x < y + bn && y < x + an;
}

/* Runs the operation now, or queues a copy of it when a group is open. */
ncclResult_t ac_enqueue(const struct ac_op *op);

/* src/core/group.c */
bool ac_group_is_open(void);
/* Entry points report a refused call here, so that an open group fails as a whole. */
void ac_group_note_error(ncclResult_t res);
/* Queues a communicator creation to run, concurrently with the others, at ncclGroupEnd. */
typedef ncclResult_t (*ac_deferred_fn)(void *arg);
ncclResult_t ac_group_defer(ac_deferred_fn fn, void *arg);

/* src/core/exec.c: runs a list of operations to completion, all progressing together. */
ncclResult_t ac_exec_ops(struct ac_op *ops);

#endif
