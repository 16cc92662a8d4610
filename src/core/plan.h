/* A run: the tasks that one call or one group turns into, with the connectors they use. Built by
 * src/core/plan.c, executed by src/core/exec.c. */
#ifndef AC_CORE_PLAN_H
#define AC_CORE_PLAN_H

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
};

struct ac_run {
    struct ac_run_task *tasks;
    int ntasks;
    int cap;
    struct ncclComm **comms;       /* distinct communicators of the run */
    int ncomms;
};

/* Turns the operations into tasks (and does the purely local parts: copies to self). */
ncclResult_t ac_plan_build(struct ac_run *run, struct ac_op *ops);
void ac_plan_free(struct ac_run *run);

#endif
