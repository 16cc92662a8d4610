/* A run: the tasks that one call or one group turns into, with the connectors they use. Built by
 * src/core/plan.c, executed by src/core/exec.c. */
#ifndef AC_CORE_PLAN_H
#define AC_CORE_PLAN_H

#include "core/board.h"
#include "core/enqueue.h"

struct ac_run_task {
    struct ac_task t;
    struct ncclComm *comm;
    struct ac_conn *recv[AC_TASK_MAX_PEERS];
    struct ac_conn *send[AC_TASK_MAX_PEERS];
    uint64_t recv_ticket[AC_TASK_MAX_PEERS];
    uint64_t send_ticket[AC_TASK_MAX_PEERS];
    uint64_t step;
    bool is_done;            /* finished and passed its connectors on */
    uint32_t tag;            /* the operation's description on the wire (src/core/exec.c) */
    uint8_t tag_sent;        /* bit k: the first slot to send[k] carried it */
    uint8_t tag_seen;        /* bit k: the first slot from recv[k] was checked */
    /* Starts only once tasks [wait_first, wait_end) of the run are done (the rounds of a
     * recursive-doubling allgather, src/core/plan.c); an empty range: at once. */
    int wait_first, wait_end;
    const struct ac_op *board_op; /* a board task's call (board.h) */
    uint64_t board_seq;           /* its (first) operation number once posted, else 0 */
    /* The index of the run's board task on the same communicator before this one, which must
     * post first (every rank numbers the calls in the order it made them); -1 when none. */
    int board_prev;
    bool is_board_direct;               /* a board task of a call on registered buffers */
    struct ac_board_direct_task direct; /* its progress */
    /* 1 + the index of that task where it may do this task's work in place: this task starts
     * once it is done, and then only if some rank voted no; 0: not gated */
    int direct_gate;
};

/* Most runs are one call on one communicator with a task or two: they fit in the run itself, so
 * that a small blocking call allocates nothing (malloc and free were a fifth of its time). */
#define AC_RUN_INLINE_TASKS 4
#define AC_RUN_INLINE_COMMS 4

/* Working memory a run's tasks share (a reduce-scatter's partial results), freed with it. */
struct ac_scratch {
    struct ac_scratch *next;
    _Alignas(64) char data[];
};

/* A copy within the rank's memory that no transfer of the run reads or writes (an all-to-all's
 * own block): the executor does it in pieces while the run waits for its peers, and finishes it
 * before the run returns. */
struct ac_local_copy {
    char *dst;
    const char *src;
    size_t bytes, done;
};

#define AC_RUN_MAX_COPIES 4

struct ac_run {
    struct ac_run_task *tasks; /* inline_tasks, or the heap once more are needed */
    struct ac_scratch *scratch;
    /* GPU buffers for the device engine (src/core/devpath.c): no single-copy transfers or direct
     * reads (cross-memory attach cannot read GPU memory) and no local copies, which the caller
     * orders on the stream. Set after ac_plan_init. */
    bool is_device;
    int ntasks;
    int cap;
    struct ncclComm **comms;       /* distinct communicators of the run */
    int ncomms;
    int comms_cap;
    struct ac_local_copy copies[AC_RUN_MAX_COPIES];
    int ncopies;
    struct ac_run_task inline_tasks[AC_RUN_INLINE_TASKS];
    struct ncclComm *inline_comms[AC_RUN_INLINE_COMMS];
};

/* Sets up an empty run (the inline arrays are not cleared: tasks are, as they are added). */
void ac_plan_init(struct ac_run *run);
/* Turns the operations into tasks (and does the purely local parts: copies to self). */
ncclResult_t ac_plan_build(struct ac_run *run, struct ac_op *ops);
void ac_plan_free(struct ac_run *run);

#endif
