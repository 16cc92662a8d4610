/* What bootstrap.c (the ranks) and bootstrap_root.c (the root thread) say to each other. Integers
 * travel in host byte order and addresses as struct sockaddr_storage, as in NCCL: every rank of a
 * job runs the same library on machines of the same byte order. */
#ifndef AC_CORE_BOOTSTRAP_WIRE_H
#define AC_CORE_BOOTSTRAP_WIRE_H

#include "nccl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define AC_BOOTSTRAP_VERSION 1u
#define AC_BOOTSTRAP_HELLO_MAGIC 0x41434248u /* "ACBH": rank -> root */
#define AC_BOOTSTRAP_REPLY_MAGIC 0x41434252u /* "ACBR": root -> rank */
#define AC_BOOTSTRAP_MAX_RANKS (1 << 20)
#define AC_BOOTSTRAP_MSG_LEN 240

/* Rank -> root, first and only message of a rank's connection to the root. */
struct ac_bootstrap_hello {
    uint32_t magic;
    uint32_t version;
    uint64_t secret;
    int32_t nranks;
    int32_t rank;
    struct sockaddr_storage listen_addr; /* where this rank accepts bootstrap messages */
};

/* Root -> rank. status ncclSuccess is followed by nranks listen addresses (the table); any other
 * status ends the rendezvous for that rank, and msg says why. */
struct ac_bootstrap_reply {
    uint32_t magic;
    int32_t status;
    char msg[AC_BOOTSTRAP_MSG_LEN];
};

/* The rendezvous bound: ANYCCL_INIT_TIMEOUT, or ANYCCL_TIMEOUT when set and smaller. */
int64_t ac_bootstrap_timeout_s(void);

/* Listens on addr (port 0: ephemeral) and starts the root thread, which serves one rendezvous and
 * exits, closing its socket, once every rank got the table, the rendezvous failed and every rank
 * was told, the timeout passed, or *stop_flag became non-zero (checked every ~100 ms while
 * waiting; the ranks still waiting are told). With thread_out the thread is joinable and the
 * caller must join it (stop_flag lets it do so at once); without, it is detached and stop_flag
 * must be NULL. bound_out: the address ranks connect to. */
ncclResult_t ac_bootstrap_root_start(const struct sockaddr_storage *addr, uint64_t secret,
                                     volatile int *stop_flag, pthread_t *thread_out,
                                     struct sockaddr_storage *bound_out);

#endif
