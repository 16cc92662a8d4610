/* Shared user memory: ncclMemAlloc on the host backend returns memory backed by a memfd, which
 * other processes of the host can map. A transfer from such a buffer, registered with the
 * communicator, is read by the receiver straight from the sender's pages (one memcpy) instead of
 * going through a connector's slots (two). The sender names the region by (pid, fd, id); the
 * receiver opens /proc/<pid>/fd/<fd> (the same permission as cross-memory attach, which each rank
 * probes at init) and keeps the mapping until the region's id changes or the communicator ends. */
#ifndef AC_TRANSPORT_SHM_REGION_H
#define AC_TRANSPORT_SHM_REGION_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a buffer lies in a shared region of this process. */
struct ac_region_ref {
    int fd;
    uint64_t id;             /* unique in this process: tells a reused fd number apart */
    uint64_t region_bytes;
    uint64_t offset;
};

ncclResult_t ac_region_alloc(size_t bytes, void **ptr_out);
/* False if ptr is not the start of a shared region (it was allocated some other way). */
bool ac_region_free(void *ptr);
/* Whether [ptr, ptr + bytes) lies in one shared region of this process. */
bool ac_region_find(const void *ptr, size_t bytes, struct ac_region_ref *out);

/* Receiver side: a communicator's mappings of its peers' regions. */
struct ac_region_cache;
void ac_region_cache_free(struct ac_region_cache *cache);
/* The address, in this process, of offset `ref->offset` of process pid's region (mapped on
 * first use). Errors name the peer. */
ncclResult_t ac_region_map(struct ac_region_cache **cache, int pid, int peer_rank,
                           const char *peer_host, const struct ac_region_ref *ref,
                           const void **addr_out);

#endif
