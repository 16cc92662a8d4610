/* What bootstrap.c (the ranks) and bootstrap_root.c (the root thread) say to each other. Integers
 * travel in host byte order and addresses as struct sockaddr_storage, as in NCCL: every rank of a
 * job runs the same library on machines of the same byte order. */
#ifndef AC_CORE_BOOTSTRAP_WIRE_H
#define AC_CORE_BOOTSTRAP_WIRE_H

#include "nccl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
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

/* A rank's message to another rank: this header, then `bytes` of payload. */
struct ac_bootstrap_msg_hdr {
    uint64_t secret;
    int32_t from;
    uint32_t kind; /* AC_BOOTSTRAP_KIND_* */
    uint32_t tag;
    uint32_t pad;
    uint64_t bytes;
};
enum { AC_BOOTSTRAP_KIND_USER = 1, AC_BOOTSTRAP_KIND_ALLGATHER = 2, AC_BOOTSTRAP_KIND_BARRIER = 3 };
#define AC_BOOTSTRAP_MSG_MAX_BYTES (64u << 20)

/* The checks on received bytes, pure (no I/O; fuzzed by tests/fuzz/). */
/* A complete message header from a connection that so far sent as rank `from` (-1: nothing
 * yet) to a rank of an nranks-rank bootstrap: NULL when acceptable, else why not. */
const char *ac_bootstrap_msg_hdr_check(const struct ac_bootstrap_msg_hdr *h, uint64_t secret,
                                       int nranks, int from);
/* A complete hello at the root: DROP a stranger (bad magic, version or secret: not answered),
 * REFUSE a rank of this job whose fields are unusable (the rendezvous fails), or ADMIT it (the
 * root still checks nranks agreement and duplicates). why (len bytes) says why not. */
enum ac_bootstrap_verdict { AC_BOOTSTRAP_DROP, AC_BOOTSTRAP_REFUSE, AC_BOOTSTRAP_ADMIT };
enum ac_bootstrap_verdict ac_bootstrap_hello_judge(const struct ac_bootstrap_hello *h,
                                                   uint64_t secret, char *why, size_t len);

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
