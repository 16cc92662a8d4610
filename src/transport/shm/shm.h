/* Shared-memory transport internals: the layout of one segment (a control block and nslots slots)
 * and the segment life cycle, shared by shm_segment.c (create, reserve, map, unlink) and
 * shm_conn.c (the connector ops and the data path). Nothing outside this folder includes it. */
#ifndef AC_TRANSPORT_SHM_H
#define AC_TRANSPORT_SHM_H

#include "nccl.h"
#include "transport/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AC_SHM_MAGIC 0x414e5943434c534dull /* "ANYCCLSM" */
#define AC_SHM_VERSION 1u
#define AC_SHM_LINE 128 /* two lines: adjacent-line prefetch shares pairs */
#define AC_SHM_PAGE 4096
#define AC_SHM_PATH_MAX 200

/* The control block at offset 0 of a segment. Ordering contract (C11 acquire/release, through the
 * __atomic builtins so that it holds across processes):
 *   sender:   write payload, sizes[t % nslots]; store-release tail = t + 1
 *   receiver: load-acquire tail, then read sizes and payload; store-release head = h + 1
 *   sender:   load-acquire head before reusing the slot at head - 1
 * LL and LL128 slots carry their own flags, and a receiver may take and release one before the
 * sender's tail store lands: a tail behind the receiver's head means "nothing new", not corruption.
 * tail and sizes share lines (both written by the sender, both read together by the receiver);
 * head sits alone on its own lines so that the two writers never share a line. */
struct ac_shm_ctrl {
    _Alignas(AC_SHM_LINE) uint64_t magic;
    uint32_t version;
    uint32_t nslots;
    uint64_t slot_bytes;
    uint64_t slot_stride;
    uint64_t total_bytes;
    uint32_t is_sender_attached; /* 0 -> 1 with store-release by send_connect */
    int32_t sender_pid;
    _Alignas(AC_SHM_LINE) uint64_t head; /* written by the receiver: slots released so far */
    _Alignas(AC_SHM_LINE) uint64_t tail; /* written by the sender: slots posted so far */
    uint64_t sizes[];                    /* payload bytes of each slot, by the sender */
};

/* Sizes of a segment, computed the same way on both sides. After the Simple protocol's slots
 * come the LL and LL128 slots (src/device/kernels/ll.h): each protocol has memory of its own, so
 * that stale bytes of one never look like a valid flag of another. */
struct ac_shm_layout {
    uint32_t nslots;
    size_t slot_bytes;
    size_t slot_stride; /* slot_bytes rounded up to a page: every slot starts page-aligned */
    size_t ctrl_bytes;  /* control block rounded up to a page: slot 0 starts there */
    size_t ll_max_bytes, ll128_max_bytes; /* payload per slot in LL and LL128 */
    size_t ll_offset, ll_stride;          /* from the start of the segment; lines of 128 bytes */
    size_t ll128_offset, ll128_stride;
    size_t total_bytes;
};

/* A mapped segment as seen by one side. */
struct ac_shm_segment {
    struct ac_shm_ctrl *ctrl;
    char *slots;
    char *ll_slots, *ll128_slots;
    struct ac_shm_layout layout;
    bool is_shm_open;           /* named in the shm_open namespace, else a file path */
    bool is_linked;             /* the name still exists: close must unlink it */
    char path[AC_SHM_PATH_MAX]; /* shm_open name ("/anyccl-...") or full file path */
};

/* What the receiver sends to the sender (fits in struct ac_conn_blob). */
struct ac_shm_blob {
    uint64_t magic;
    uint64_t total_bytes;
    uint64_t slot_bytes;
    uint32_t nslots;
    uint32_t is_shm_open;
    char path[AC_SHM_PATH_MAX];
};

ncclResult_t ac_shm_layout_compute(int nslots, size_t slot_bytes, struct ac_shm_layout *out);
/* Receiver: creates, reserves (posix_fallocate), maps and initializes a fresh segment for conn. */
ncclResult_t ac_shm_segment_create(const struct ac_conn *conn, struct ac_shm_segment *seg_out);
/* Sender: opens and maps the segment named in blob, checks it matches conn's sizes. */
ncclResult_t ac_shm_segment_attach(const struct ac_conn *conn, const struct ac_shm_blob *blob,
                                   struct ac_shm_segment *seg_out);
/* Whether pid (in this pid namespace) has exited: no such process, or a zombie. */
bool ac_shm_pid_is_gone(int pid);
/* Removes the name (the mapping stays valid); idempotent. */
void ac_shm_segment_unlink(struct ac_shm_segment *seg);
/* Unmaps, and unlinks if the name is still there. */
void ac_shm_segment_close(struct ac_shm_segment *seg);

#endif
