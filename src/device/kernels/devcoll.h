/* What the host side and the device collective engine (engine.h, kernel ac_k_coll) agree on: the
 * connectors of the peer-to-peer transport for GPU buffers, and the work of one launch. Plain C
 * with fixed-size members only (addresses as uint64_t), so that gcc, nvcc and hipcc lay it out
 * the same way.
 *
 * A connector carries one direction between two ranks, as the shared-memory transport does for
 * host buffers: its slots lie in the RECEIVER's memory and the sender writes them directly (a
 * peer-mapped GPU allocation: CUDA/HIP IPC, or the pointer itself between ranks of one process);
 * `posted` (receiver's memory, written by the sender) counts the slots posted, `freed` (sender's
 * memory, written by the receiver) counts the slots consumed. Slot k of the connector's lifetime
 * is slot k % nslots; the counters never reset: the host knows how many steps each launch moves
 * on each connector and passes the starting count (`base`), so no state lives on the device.
 * LL and LL128 slots (ll.h formats, flag = post count + 1) have memory of their own per protocol,
 * as in the shared-memory transport. */
#ifndef AC_DEVICE_KERNELS_DEVCOLL_H
#define AC_DEVICE_KERNELS_DEVCOLL_H

#include "device/kernels/ll.h"
#include "device/kernels/sched.h"

#include <stdint.h>

#define AC_DEV_MAX_PEERS 7 /* = AC_TASK_MAX_PEERS */

/* Bytes between two slots of the LL and LL128 areas (slots[AC_PROTO_LL], slots[AC_PROTO_LL128]):
 * the largest slot of each format (ll.h), rounded to 128 bytes. The Simple area's stride is
 * slot_bytes. An area holds nslots slots. */
#define AC_DEV_LL_SLOT_BYTES                                                                       \
    ((((AC_LL_HEADER_WORDS + AC_LL_MAX_BYTES / 4u) * 8u) + 127u) / 128u * 128u)
#define AC_DEV_LL128_SLOT_BYTES                                                                    \
    ((8u + AC_LL128_MAX_BYTES + AC_LL128_DATA_WORDS * 8u - 1u) / (AC_LL128_DATA_WORDS * 8u) *      \
     AC_LL128_LINE_BYTES)

struct ac_dev_conn {
    uint64_t slots[3];  /* per enum ac_proto: base address of that protocol's slot area */
    uint64_t posted;    /* address of a uint64_t counter in the receiver's memory */
    uint64_t freed;     /* address of a uint64_t counter in the sender's memory */
    uint64_t sizes;     /* Simple: address of nslots uint64_t in the receiver's memory, the bytes
                         * and tag of each posted slot (bytes | tag << 32), for mismatch checks */
    uint64_t base;      /* slots moved on this connector before this launch */
    uint32_t nslots;
    uint32_t slot_bytes; /* Simple payload bytes per slot; LL/LL128 carry AC_LL_MAX_BYTES /
                          * AC_LL128_MAX_BYTES per slot at most */
};

#define AC_DEV_MAX_RANKS (AC_DEV_MAX_PEERS + 1)

/* A direct task (registered buffers, src/core/devpath_direct.c): instead of the schedule's steps,
 * the block reads and writes every rank's user buffers through these addresses (peers' mapped
 * into this process), between two barriers over its connectors to every peer (sched.nrecv =
 * sched.nsend = nranks - 1, recv[k]/send[k] the k-th other rank): one empty slot each way before
 * (every rank's buffers are ready: their streams reached the call) and one after (nobody still
 * touches them when any kernel ends). Each element is read and written by one rank's block only,
 * which makes in-place calls safe; all-to-all in place is never direct. */
struct ac_dev_direct {
    uint64_t send[AC_DEV_MAX_RANKS];   /* by rank: its sendbuff, as this rank addresses it */
    uint64_t recv[AC_DEV_MAX_RANKS];   /* by rank: its recvbuff (reduce: the root's only) */
    uint64_t scalar[AC_DEV_MAX_RANKS]; /* by rank: its premul scalar (premulsum scalars are each
                                        * rank's own) */
    uint32_t is_on;
    uint32_t block, nblocks; /* this task's share of the work: block of nblocks */
    int32_t root;
};

/* One block of a launch: one task (one channel of one operation) of the schedule. */
struct ac_dev_task {
    struct ac_sched sched;                   /* sched.h: the step schedule, as the host runs it */
    struct ac_dev_direct direct;             /* is_on: a direct task (sched: its op's fields) */
    struct ac_dev_conn recv[AC_DEV_MAX_PEERS]; /* sched.nrecv used */
    struct ac_dev_conn send[AC_DEV_MAX_PEERS]; /* sched.nsend used */
    uint32_t proto;                          /* enum ac_proto */
    uint32_t tag;                            /* same on both ends: carried by every slot (size
                                              * word, LL/LL128 header) and checked by the
                                              * receiver */
};
/* Tasks of one launch run at the same time: two of them must not use one connector in the same
 * direction (the host's tickets order such operations; give them separate launches, or separate
 * connectors). */

/* Status a launch reports (written by the first block that fails; 0: all went well). */
enum ac_dev_status {
    AC_DEV_OK = 0,
    AC_DEV_ABORTED = 1,  /* *abort became non-zero while waiting (ncclCommAbort, a dead peer) */
    AC_DEV_MISMATCH = 2, /* a slot's size or tag differs from the schedule's: ranks called
                          * different operations */
};

/* The argument of ac_k_coll(struct ac_kcoll_args): one block per task. tasks, abort and status lie
 * in memory the device reads (pinned, mapped host memory from the backend's host_alloc). */
struct ac_kcoll_args {
    uint64_t tasks;  /* address of ntasks struct ac_dev_task */
    uint64_t abort;  /* address of a volatile uint32_t: non-zero = stop waiting, report ABORTED */
    uint64_t status; /* address of a uint32_t: enum ac_dev_status, written on failure */
    uint32_t ntasks;
    uint32_t pad;
};

#define AC_KERNEL_COLL_NAME "ac_k_coll"

#endif
