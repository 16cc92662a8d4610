/* Cross-memory attach: a rank reads a buffer of another process on its host with
 * process_vm_readv, one copy from the owner's memory into its own, instead of a copy into a
 * shared-memory slot and another out of it. The kernel allows it between processes of one user
 * (unless Yama's ptrace_scope forbids it) or with CAP_SYS_PTRACE, so each rank probes its peers
 * once, at communicator creation, and the path is used only between ranks that both could. */
#ifndef AC_TRANSPORT_CMA_H
#define AC_TRANSPORT_CMA_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A word of this process, with a value chosen at random once, that peers read to prove they can. */
void ac_cma_probe_word(uint64_t *addr_out, uint64_t *value_out);
/* Whether this process can read the probe word of process pid. */
bool ac_cma_probe(int pid, uint64_t addr, uint64_t value);
/* Copies bytes from address `remote` of process pid to `local`. Errors name the peer (rank,
 * host) and what failed: the owner's buffer is not mapped (EFAULT), the process is gone (ESRCH). */
ncclResult_t ac_cma_read(int pid, int peer_rank, const char *peer_host, void *local,
                         uint64_t remote, size_t bytes);

#endif
