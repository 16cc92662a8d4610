/* The one table of environment variables. Each row: our name (ANYCCL_X), the NCCL name it honours
 * (NCCL_X), type, default, meaning. ANYCCL_X wins over NCCL_X; a malformed value is a WARN naming
 * the variable and the accepted values, and the default is kept. No other file calls getenv. */
#ifndef AC_COMMON_CONFIG_H
#define AC_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct ac_config {
    /* logging */
    const char *debug;          /* NCCL_DEBUG: VERSION, WARN, INFO, ABORT, TRACE */
    const char *debug_subsys;   /* NCCL_DEBUG_SUBSYS: INIT,COLL,... ^ to exclude */
    const char *debug_file;     /* NCCL_DEBUG_FILE: %h host, %p pid */
    /* bootstrap and sockets */
    const char *comm_id;        /* NCCL_COMM_ID: host:port of the root */
    const char *socket_ifname;  /* NCCL_SOCKET_IFNAME: prefixes, ^ excludes, = exact */
    const char *socket_family;  /* NCCL_SOCKET_FAMILY: AF_INET or AF_INET6 */
    const char *hostid;         /* NCCL_HOSTID: overrides the node identity */
    int64_t init_timeout_s;     /* ANYCCL_INIT_TIMEOUT: bound on bootstrap rendezvous */
    int64_t timeout_s;          /* ANYCCL_TIMEOUT: bound on any wait inside a call; 0: none */
    /* transports */
    bool shm_disable;           /* NCCL_SHM_DISABLE */
    bool board;                 /* ANYCCL_BOARD: small allreduces on a shared board */
    bool p2p_disable;           /* NCCL_P2P_DISABLE */
    bool local_register;        /* NCCL_LOCAL_REGISTER: registered GPU buffers used in place */
    int64_t p2p_direct_min_bytes; /* ANYCCL_P2P_DIRECT_MIN_BYTES */
    const char *shm_dir;        /* ANYCCL_SHM_DIR: where segments live (default /dev/shm) */
    bool cma_enable;            /* ANYCCL_CMA_ENABLE: single-copy reads between local ranks */
    int64_t cma_min_bytes;      /* ANYCCL_CMA_MIN_BYTES: smallest transfer read that way */
    int64_t shm_stream;         /* ANYCCL_SHM_STREAM: -1 measured, 0 plain, 1 streamed stores */
    int64_t buffsize;           /* NCCL_BUFFSIZE: bytes of slots per connection */
    int64_t nslots;             /* ANYCCL_NSLOTS: slots per connection (NCCL_STEPS) */
    int64_t socket_nthreads;    /* reserved */
    const char *net;            /* ANYCCL_NET: ib, ofi or socket */
    const char *ofi_provider;   /* ANYCCL_OFI_PROVIDER: libfabric provider name */
    int64_t ofi_eps;            /* ANYCCL_OFI_EPS: endpoints per ofi connection */
    const char *ib_hca;         /* NCCL_IB_HCA */
    int64_t ib_gid_index;       /* NCCL_IB_GID_INDEX; -1: automatic */
    int64_t ib_timeout;         /* NCCL_IB_TIMEOUT */
    int64_t ib_retry_cnt;       /* NCCL_IB_RETRY_CNT */
    int64_t ib_qps;             /* NCCL_IB_QPS_PER_CONNECTION */
    /* algorithms */
    const char *algo;           /* NCCL_ALGO */
    const char *proto;          /* NCCL_PROTO */
    int64_t ll_threshold;       /* ANYCCL_LL_THRESHOLD: LL up to this many bytes */
    int64_t ll128_threshold;    /* ANYCCL_LL128_THRESHOLD: LL128 up to this many bytes */
    int64_t min_nchannels;      /* NCCL_MIN_NCHANNELS */
    int64_t max_nchannels;      /* NCCL_MAX_NCHANNELS */
    /* waiting */
    int64_t spin_count;         /* ANYCCL_SPIN_COUNT: polls before yielding the core */
    int64_t peer_check_ms;      /* ANYCCL_PEER_CHECK_MS: how often a wait checks peers are alive */
    /* topology */
    const char *topo_file;      /* NCCL_TOPO_FILE: XML topology loaded instead of discovery */
    const char *topo_dump_file; /* NCCL_TOPO_DUMP_FILE: where the topology in use is written */
    /* RAS */
    bool ras_enable;            /* ANYCCL_RAS_ENABLE: RAS thread, heartbeats, client port */
    const char *ras_addr;       /* NCCL_RAS_ADDR: host:port of the RAS client port */
    int64_t ras_heartbeat_ms;   /* ANYCCL_RAS_HEARTBEAT_MS */
    int64_t ras_dead_ms;        /* ANYCCL_RAS_DEAD_MS: silence after which a peer is dead */
    int64_t flight_recorder;    /* ANYCCL_FLIGHT_RECORDER: operations kept per communicator */
    const char *flight_recorder_file; /* ANYCCL_FLIGHT_RECORDER_FILE: %h host, %p pid */
    bool ras_sigusr1;           /* ANYCCL_RAS_SIGUSR1: SIGUSR1 dumps the flight recorders */
    /* GPU-initiated networking */
    bool gpu_initiated;         /* ANYCCL_GPU_INITIATED: all-to-all through the GIN ring */
    const char *gin_engine;     /* ANYCCL_GIN_ENGINE: sw, mlx5 or auto */
    /* device backends */
    const char *cuda_library;   /* ANYCCL_CUDA_LIBRARY: instead of libcuda.so.1 */
    const char *hip_library;    /* ANYCCL_HIP_LIBRARY */

    /* chunking (src/core/plan.c) */
    int64_t large_chunk_min_bytes; /* ANYCCL_LARGE_CHUNK_MIN_BYTES */
};

/* Read once (thread-safe); later calls return the same table. */
const struct ac_config *ac_config_get(void);
/* Seconds that set-up with peers (bootstrap, connections) may wait: ANYCCL_INIT_TIMEOUT, or
 * ANYCCL_TIMEOUT when that is shorter; at least 1. */
int64_t ac_config_setup_timeout_s(void);
/* Re-read the environment: for tests only. */
void ac_config_reload(void);
/* Print every variable with its value, default and meaning (anyccl-info). */
void ac_config_print(FILE *out);
/* Print the table as Markdown (docs/env.md is generated from it). */
void ac_config_print_markdown(FILE *out);

#endif
