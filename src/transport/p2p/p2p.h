/* The peer-to-peer transport for GPU buffers: connectors whose slots lie in the receiving GPU's
 * memory and are written by the sending GPU directly (CUDA IPC over NVLink or PCIe, HIP IPC over
 * xGMI; between ranks that are threads of one process, the pointer itself). The device collective
 * engine (src/device/kernels/devcoll.h, kernel ac_k_coll) moves the data; this file only sets the
 * memory up and tears it down. Ranks may share a GPU (NCCL refuses that; AnyCCL allows it: the
 * "peer" memory is then the GPU's own). src/core/devcoll.c exchanges the blobs and decides when
 * this transport is used. */
#ifndef AC_TRANSPORT_P2P_P2P_H
#define AC_TRANSPORT_P2P_P2P_H

#include "device/backend.h"
#include "device/kernels/devcoll.h"
#include "device/kernels/ll.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the receiver's allocation keeps each part, from its start: the `posted` counter (alone in
 * its 128-byte line), `sizes` (nslots words), then the slot areas of Simple, LL and LL128, each
 * nslots * stride bytes. */
struct ac_p2p_layout {
    size_t posted_off;
    size_t sizes_off;
    size_t slots_off[AC_PROTO_COUNT];
    size_t stride[AC_PROTO_COUNT]; /* bytes from one slot to the next */
    size_t bytes;
};

/* The layout of a connector of nslots slots of slot_bytes Simple payload: strides as devcoll.h
 * sets them (slot_bytes, AC_DEV_LL_SLOT_BYTES, AC_DEV_LL128_SLOT_BYTES), areas 128-byte aligned. */
void ac_p2p_layout(uint32_t nslots, size_t slot_bytes, struct ac_p2p_layout *out);

#define AC_P2P_BLOB_MAGIC 0x50325031u /* "P2P1" */

/* What one end of a connector tells the other: its allocation, as an IPC handle and as its own
 * address (used as is by a peer in the same process, which CUDA does not let import its own
 * handles), and the geometry both ends must share. */
struct ac_p2p_blob {
    uint32_t magic;
    int32_t pid;
    uint64_t host_hash; /* with pid: same process */
    uint64_t addr;
    uint64_t bytes;
    uint32_t nslots;
    uint32_t slot_bytes;
    struct ac_ipc_handle handle;
};

/* One direction between two ranks, as one end holds it. */
struct ac_p2p_conn {
    const struct ac_backend *be;
    bool is_send;
    int peer;
    void *own; /* receiver: posted, sizes and slots; sender: the `freed` counter */
    size_t own_bytes;
    void *remote;           /* the other end's allocation, as this process addresses it */
    bool is_imported;       /* remote came from ipc_import (ipc_close it) */
    struct ac_dev_conn dev; /* the addresses the kernel uses; dev.base = slots moved so far */
};

/* Allocates this end's memory on `device` (current context), zeroed, and describes it in
 * *blob_out for the peer. On failure nothing stays allocated. */
ncclResult_t ac_p2p_conn_open(const struct ac_backend *be, int device, bool is_send, int peer,
                              uint32_t nslots, size_t slot_bytes, uint64_t host_hash,
                              struct ac_p2p_conn *c, struct ac_p2p_blob *blob_out);
/* Maps the other end's memory (its blob), and fills c->dev. Fails with the reason when the
 * geometry differs or the import fails; c stays open (ac_p2p_conn_close frees it). */
ncclResult_t ac_p2p_conn_connect(struct ac_p2p_conn *c, const struct ac_p2p_blob *peer);
/* Closes the import, then frees this end's memory. Safe on a connector never opened. */
void ac_p2p_conn_close(struct ac_p2p_conn *c);

#endif
