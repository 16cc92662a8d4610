/* The one table of environment variables and the only caller of getenv in AnyCCL. Each row is read
 * once into struct ac_config; ac_config_reload builds a new table and swaps a pointer, so readers
 * never see a half-written one. Warnings about malformed values are deferred until logging is set
 * up, because logging itself reads its settings from this table. */
#include "common/config.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum row_type { ROW_BOOL, ROW_INT64, ROW_STRING };

struct row {
    const char *name;      /* ANYCCL_X: wins when set */
    const char *nccl_name; /* NCCL_X honoured for compatibility, or NULL */
    enum row_type type;
    const char *def;  /* default, written as a user would write it; NULL: unset */
    size_t offset;    /* of the field in struct ac_config */
    int64_t min, max; /* accepted range (ROW_INT64 only) */
    const char *meaning;
};

#define OFF(field) offsetof(struct ac_config, field)
#define STR_ROW(name, nccl, def, field, meaning)                                                   \
    {                                                                                              \
        name, nccl, ROW_STRING, def, OFF(field), 0, 0, meaning                                     \
    }
#define BOOL_ROW(name, nccl, def, field, meaning)                                                  \
    {                                                                                              \
        name, nccl, ROW_BOOL, def, OFF(field), 0, 1, meaning                                       \
    }
#define INT_ROW(name, nccl, def, field, min, max, meaning)                                         \
    {                                                                                              \
        name, nccl, ROW_INT64, def, OFF(field), min, max, meaning                                  \
    }

static const struct row rows[] = {
    STR_ROW("ANYCCL_DEBUG", "NCCL_DEBUG", NULL, debug,
            "Log level: VERSION, WARN, INFO, ABORT or TRACE (case-insensitive). Unset: no output."),
    STR_ROW("ANYCCL_DEBUG_SUBSYS", "NCCL_DEBUG_SUBSYS", NULL, debug_subsys,
            "Subsystems logged at INFO and TRACE, a comma list of INIT, COLL, P2P, SHM, NET, "
            "GRAPH, TUNING, ENV, ALLOC, CALL, PROXY, NVLS, BOOTSTRAP, REG, PROFILE, RAS, ALL; "
            "a leading ^ logs all but those listed. Unset: INIT,BOOTSTRAP,ENV."),
    STR_ROW("ANYCCL_DEBUG_FILE", "NCCL_DEBUG_FILE", NULL, debug_file,
            "File that receives the log instead of stdout; %h is replaced by the host name, %p by "
            "the process id."),
    STR_ROW("ANYCCL_COMM_ID", "NCCL_COMM_ID", NULL, comm_id,
            "host:port where rank 0 listens for the bootstrap, instead of an address chosen by "
            "ncclGetUniqueId."),
    STR_ROW("ANYCCL_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", NULL, socket_ifname,
            "Network interfaces for bootstrap and socket traffic: a comma list of name prefixes; "
            "a leading ^ excludes them, a leading = matches names exactly. Unset: chosen "
            "automatically."),
    STR_ROW("ANYCCL_SOCKET_FAMILY", "NCCL_SOCKET_FAMILY", NULL, socket_family,
            "Address family for sockets: AF_INET or AF_INET6. Unset: either."),
    STR_ROW("ANYCCL_HOSTID", "NCCL_HOSTID", NULL, hostid,
            "Overrides the host identity: ranks with different values are on different nodes "
            "(no shared memory between them). Unset: hostname, boot id and network namespace."),
    INT_ROW("ANYCCL_INIT_TIMEOUT", NULL, "300", init_timeout_s, 1, INT32_MAX,
            "Seconds communicator initialization (bootstrap rendezvous, connection set-up) waits "
            "for the other ranks before it fails."),
    INT_ROW("ANYCCL_TIMEOUT", NULL, "0", timeout_s, 0, INT32_MAX,
            "Seconds any wait inside a collective or point-to-point call may last before the call "
            "fails; 0: no limit."),
    BOOL_ROW("ANYCCL_SHM_DISABLE", "NCCL_SHM_DISABLE", "0", shm_disable,
             "1 disables the shared-memory transport between ranks of one host (sockets are used "
             "instead)."),
    BOOL_ROW("ANYCCL_BOARD", NULL, "1", board,
             "1 runs allreduces, allgathers, reduce-scatters and all-to-alls whose input is at "
             "most 16 KiB, and broadcasts of at most 4 KiB where no rank shares its core, "
             "between the ranks of one host (at most 8, joined by shared memory) on a board: one "
             "shared segment per communicator where each rank posts its input and takes what it "
             "needs from the others'. 0 sends them through the connectors like larger ones. "
             "Every rank's value must agree for the board to be used."),
    BOOL_ROW("ANYCCL_P2P_DISABLE", "NCCL_P2P_DISABLE", "0", p2p_disable,
             "1 disables the peer-to-peer path for GPU buffers (the device collective engine "
             "over CUDA/HIP IPC, or pointers shared between threads of one process): "
             "collectives on GPU buffers are then staged through pinned host memory and run by "
             "the host engine."),
    BOOL_ROW("ANYCCL_LOCAL_REGISTER", "NCCL_LOCAL_REGISTER", "1", local_register,
             "1 lets collectives on the peer-to-peer path read and write GPU buffers registered "
             "with ncclCommRegister (or ncclMemAlloc memory so registered) in place, on every "
             "rank, and allreduces, allgathers and reduce-scatters between the ranks of one host "
             "read registered ncclMemAlloc host buffers in place, instead of copying through the "
             "connectors' slots; 0 always uses the slots. Rank 0's value applies to the "
             "communicator."),
    INT_ROW("ANYCCL_P2P_DIRECT_MIN_BYTES", NULL, "65536", p2p_direct_min_bytes, 0, INT64_MAX,
            "Smallest collective on GPU buffers (count times the type's size), or allreduce, "
            "allgather or reduce-scatter on host buffers of one host (its largest buffer, at "
            "least 16 KiB + 1), for which the ranks look whether their buffers are registered "
            "(host: ncclMemAlloc memory), and then use them in place (ANYCCL_LOCAL_REGISTER). "
            "Looking makes each rank's host wait for the others to reach the call, which costs "
            "smaller calls more than the copy it saves. Rank 0's value applies to the "
            "communicator."),
    BOOL_ROW("ANYCCL_CMA_ENABLE", NULL, "0", cma_enable,
             "1 lets ranks of one host read each other's buffers directly with cross-memory "
             "attach (process_vm_readv): one copy instead of two through shared-memory slots for "
             "transfers of at least ANYCCL_CMA_MIN_BYTES. Used only where every rank could read "
             "its peers when the communicator was created (same user, no ptrace restriction). "
             "Off by default: where the kernel's copy runs at half of memcpy's speed (measured "
             "on virtual machines), the two pipelined copies through slots are faster."),
    INT_ROW("ANYCCL_LARGE_CHUNK_MIN_BYTES", NULL, "33554432", large_chunk_min_bytes, 0, INT64_MAX,
            "Smallest allreduce (bytes of the vector) that moves in chunks of four slots' worth, "
            "where every connector of the communicator is a socket and ranks share cores (each "
            "message then costs system calls and a wake-up). Rank 0's value applies to the "
            "communicator."),
    INT_ROW("ANYCCL_CMA_MIN_BYTES", NULL, "32768", cma_min_bytes, 0, INT64_MAX,
            "Smallest transfer (per peer) read directly from the sender's memory rather than "
            "passed through shared-memory slots: from a registered buffer allocated with "
            "ncclMemAlloc, or by cross-memory attach (ANYCCL_CMA_ENABLE). Rank 0's value "
            "applies to the communicator."),
    INT_ROW("ANYCCL_SHM_STREAM", NULL, "-1", shm_stream, -1, 1,
            "How a rank writes chunks of 8 KiB and more into shared-memory slots that a peer "
            "reads: 1 with non-temporal (streaming) stores, 0 with plain stores, -1 chosen as it "
            "runs by what each has cost lately (streaming pays where the host runs the two "
            "ranks' cores apart, without a shared cache; docs/performance.md)."),
    STR_ROW("ANYCCL_SHM_DIR", NULL, "/dev/shm", shm_dir,
            "Directory holding the shared-memory segments; it must be a tmpfs that all ranks of "
            "a host share."),
    INT_ROW("ANYCCL_BUFFSIZE", "NCCL_BUFFSIZE", "4194304", buffsize, 1024, INT64_C(1) << 30,
            "Bytes of buffering per connection, split into ANYCCL_NSLOTS slots."),
    INT_ROW("ANYCCL_NSLOTS", NULL, "8", nslots, 1, 64,
            "Slots per connection (NCCL's NCCL_STEPS): how many chunks may be in flight."),
    INT_ROW("ANYCCL_SOCKET_NTHREADS", "NCCL_SOCKET_NTHREADS", "1", socket_nthreads, 1, 16,
            "Reserved: threads per socket connection; currently ignored."),
    STR_ROW("ANYCCL_NET", NULL, NULL, net,
            "Network transport between ranks that shared memory does not join: ib (verbs), ofi "
            "(libfabric) or socket. Unset: verbs when an RDMA device is usable, then libfabric "
            "with a hardware provider, else sockets (see docs/networking.md)."),
    STR_ROW("ANYCCL_OFI_PROVIDER", NULL, NULL, ofi_provider,
            "libfabric provider of the ofi transport (e.g. tcp, sockets, efa, verbs, cxi; "
            "layered names like tcp;ofi_rxm work). Unset: the first provider that offers RDMA "
            "writes with remote CQ data."),
    INT_ROW("ANYCCL_OFI_EPS", NULL, "1", ofi_eps, 1, 8,
            "libfabric endpoints per ofi connection; slots are spread round-robin over them."),
    STR_ROW("ANYCCL_IB_HCA", "NCCL_IB_HCA", NULL, ib_hca,
            "RDMA devices the ib transport may use, NCCL's syntax: comma list of name prefixes "
            "with optional :port; leading = matches names exactly, leading ^ excludes. Unset: "
            "every active port."),
    INT_ROW("ANYCCL_IB_GID_INDEX", "NCCL_IB_GID_INDEX", "-1", ib_gid_index, -1, 255,
            "GID index used on RoCE ports; -1: chosen automatically (a RoCE v2 GID, preferring "
            "an IPv4-mapped one)."),
    INT_ROW("ANYCCL_IB_TIMEOUT", "NCCL_IB_TIMEOUT", "20", ib_timeout, 1, 31,
            "InfiniBand/RoCE ack timeout exponent: 4.096 us * 2^value per retry."),
    INT_ROW("ANYCCL_IB_RETRY_CNT", "NCCL_IB_RETRY_CNT", "7", ib_retry_cnt, 0, 7,
            "InfiniBand/RoCE transport retries before a queue pair fails."),
    INT_ROW("ANYCCL_IB_QPS_PER_CONNECTION", "NCCL_IB_QPS_PER_CONNECTION", "1", ib_qps, 1, 8,
            "Queue pairs per ib connection; slots are spread round-robin over them."),
    STR_ROW("ANYCCL_ALGO", "NCCL_ALGO", NULL, algo,
            "Algorithms allowed, in NCCL's syntax (e.g. Ring,Tree; a leading ^ excludes). Unset: "
            "chosen by the tuner."),
    STR_ROW("ANYCCL_PROTO", "NCCL_PROTO", NULL, proto,
            "Protocols allowed, in NCCL's syntax (Simple, LL, LL128; a leading ^ excludes). "
            "Unset: chosen by the tuner."),
    INT_ROW("ANYCCL_LL_THRESHOLD", NULL, "-1", ll_threshold, -1, INT64_C(1) << 40,
            "Largest operation (bytes per rank, or per transfer for send/recv and the exchanges) "
            "that uses the LL protocol when NCCL_PROTO allows it; -1: none (on the host it "
            "measured slower than Simple at every size). LL steps carry at most 4 KiB."),
    INT_ROW("ANYCCL_LL128_THRESHOLD", NULL, "-1", ll128_threshold, -1, INT64_C(1) << 40,
            "Largest operation that uses the LL128 protocol (after LL) when NCCL_PROTO allows it; "
            "-1: none (on the host it measured slower than Simple). LL128 steps carry at most "
            "16 KiB."),
    INT_ROW("ANYCCL_MIN_NCHANNELS", "NCCL_MIN_NCHANNELS", "1", min_nchannels, 1, 64,
            "Fewest channels (parallel rings or trees) a communicator uses."),
    INT_ROW("ANYCCL_MAX_NCHANNELS", "NCCL_MAX_NCHANNELS", "2", max_nchannels, 1, 64,
            "Most channels a communicator uses."),
    INT_ROW("ANYCCL_SPIN_COUNT", NULL, "2000", spin_count, 0, INT64_C(1) << 30,
            "Idle polls a waiting rank spins (for at most about 100 us) before it yields the core "
            "and then sleeps; lower it when ranks outnumber cores."),
    INT_ROW("ANYCCL_PEER_CHECK_MS", NULL, "200", peer_check_ms, 1, 3600000,
            "Milliseconds between the checks, during a wait, that the peers are still alive."),
    STR_ROW("ANYCCL_TOPO_FILE", "NCCL_TOPO_FILE", NULL, topo_file,
            "XML topology file (NCCL's format, see docs/topology.md) used instead of discovering "
            "the machine. Unset: discovered with hwloc or /sys."),
    STR_ROW("ANYCCL_TOPO_DUMP_FILE", "NCCL_TOPO_DUMP_FILE", NULL, topo_dump_file,
            "File the topology in use (discovered or loaded) is written to as XML, once per "
            "process."),
    BOOL_ROW("ANYCCL_RAS_ENABLE", "NCCL_RAS_ENABLE", "1", ras_enable,
             "1 runs the RAS thread (see docs/ras.md): heartbeats between the job's processes, "
             "dead-peer detection, the status report on NCCL_RAS_ADDR; 0 turns it off."),
    STR_ROW("ANYCCL_RAS_ADDR", "NCCL_RAS_ADDR", "localhost:28028", ras_addr,
            "host:port where one process per host answers RAS clients (anyccl-ras, ncclras, nc); "
            "none: no client port."),
    INT_ROW("ANYCCL_RAS_HEARTBEAT_MS", NULL, "1000", ras_heartbeat_ms, 10, 3600000,
            "Milliseconds between RAS heartbeats to the processes this one shares a communicator "
            "with."),
    INT_ROW("ANYCCL_RAS_DEAD_MS", NULL, "5000", ras_dead_ms, 100, INT64_C(86400000),
            "Milliseconds without a heartbeat after which a peer process is declared dead (a "
            "closed RAS connection is noticed at once)."),
    INT_ROW("ANYCCL_FLIGHT_RECORDER", NULL, "256", flight_recorder, 1, 1048576,
            "Operations the flight recorder keeps per communicator (rounded up to a power of "
            "two)."),
    STR_ROW("ANYCCL_FLIGHT_RECORDER_FILE", NULL, "/tmp/anyccl-fr.%h.%p.txt", flight_recorder_file,
            "File the flight recorder is appended to on abort, on a failed operation "
            "(ncclRemoteError) and on SIGUSR1; %h is the host name, %p the process id; none: "
            "never written."),
    BOOL_ROW("ANYCCL_RAS_SIGUSR1", NULL, "0", ras_sigusr1,
             "1 makes SIGUSR1 dump every communicator's flight recorder (the handler is installed "
             "when the first communicator is created)."),
    BOOL_ROW("ANYCCL_GPU_INITIATED", NULL, "0", gpu_initiated,
             "1 runs ncclAlltoAll on host buffers through the GPU-initiated (GIN) descriptor ring "
             "and its software engine when every pair of ranks shares a host and can write each "
             "other's memory; other calls and other communicators take the normal path. Off by "
             "default: see docs/gpu-initiated.md for the measurement."),
    STR_ROW("ANYCCL_GIN_ENGINE", NULL, "auto", gin_engine,
            "Engine of the GPU-initiated path: sw (a CPU thread consumes the descriptor ring), "
            "mlx5 (the direct engine: the producer writes ConnectX WQEs and rings the doorbell; "
            "an error where it cannot run, never a fallback) or auto (mlx5 only when a ConnectX "
            "port, libmlx5 and a GPU backend that can map the doorbell page are all present; the "
            "choice and why are logged at INFO). See docs/gpu-initiated.md."),
    STR_ROW("ANYCCL_CUDA_LIBRARY", NULL, NULL, cuda_library,
            "Path or name of the CUDA driver library the CUDA backend opens instead of "
            "libcuda.so.1: for packaging, and for tests that point a process at an emulated "
            "driver (docs/gpu.md)."),
    STR_ROW("ANYCCL_HIP_LIBRARY", NULL, NULL, hip_library,
            "Path or name of the HIP runtime library the HIP backend opens instead of "
            "libamdhip64.so (.6, .5): for packaging, and for tests that point a process at an "
            "emulated runtime (docs/gpu.md)."),
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* One parsed table. Tables replaced by ac_config_reload stay allocated (and reachable, so leak
 * checkers stay quiet): a reader may still hold a pointer into one. */
struct config_slot {
    struct ac_config cfg;
    const char *source[NROWS]; /* the variable a value came from; NULL: the default */
    struct config_slot *older;
};

static struct config_slot first_slot;
static struct config_slot *current;
static pthread_mutex_t load_mutex = PTHREAD_MUTEX_INITIALIZER;

/* Messages waiting for logging to be initialized (see flush_pending). */
#define PENDING_MAX 48
#define PENDING_BYTES 320
struct pending_msg {
    enum ac_log_level level;
    char text[PENDING_BYTES];
};
static struct pending_msg pending[PENDING_MAX];
static int npending;
static int has_pending;
static pthread_mutex_t pending_mutex = PTHREAD_MUTEX_INITIALIZER;

static void defer(enum ac_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void defer(enum ac_log_level level, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&pending_mutex);
    if (npending < PENDING_MAX) {
        pending[npending].level = level;
        va_start(ap, fmt);
        vsnprintf(pending[npending].text, PENDING_BYTES, fmt, ap);
        va_end(ap);
        npending++;
        __atomic_store_n(&has_pending, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pending_mutex);
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes"}, *const no[] = {"0", "false", "no"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

/* Decimal, optionally followed by K, M or G (powers of 1024), as NCCL_BUFFSIZE=8M. */
static bool parse_int64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno != 0)
        return false;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    default:
        break;
    }
    if (shift != 0)
        end++;
    if (*end != '\0' || v > (INT64_MAX >> shift) || v < (INT64_MIN >> shift))
        return false;
    *out = (int64_t)v * ((int64_t)1 << shift);
    return true;
}

/* Stores text into the row's field; false (field untouched) when it is malformed. */
static bool store_value(const struct row *r, const char *text, struct ac_config *cfg)
{
    char *field = (char *)cfg + r->offset;
    bool b;
    int64_t v;
    switch (r->type) {
    case ROW_BOOL:
        if (!parse_bool(text, &b))
            return false;
        memcpy(field, &b, sizeof(b));
        return true;
    case ROW_INT64:
        if (!parse_int64(text, &v) || v < r->min || v > r->max)
            return false;
        memcpy(field, &v, sizeof(v));
        return true;
    case ROW_STRING: {
        /* Never freed: earlier tables, and the strings they point to, stay valid forever. */
        const char *copy = text == NULL ? NULL : strdup(text);
        memcpy(field, &copy, sizeof(copy));
        return text == NULL || copy != NULL;
    }
    }
    return false;
}

static void describe_accepted(const struct row *r, char *buf, size_t len)
{
    if (r->type == ROW_BOOL)
        snprintf(buf, len, "0, 1, true, false, yes or no");
    else
        snprintf(buf, len,
                 "an integer from %" PRId64 " to %" PRId64 ", optionally with a K, M or "
                 "G suffix (x1024)",
                 r->min, r->max);
}

/* ANYCCL_X wins over NCCL_X; an empty value counts as unset. Each field is stored once (a string
 * stored twice would leak its first copy). */
static void load_row(size_t i, struct config_slot *slot)
{
    const struct row *r = &rows[i];
    const char *used = r->name;
    const char *text = getenv(r->name);
    if (text == NULL && r->nccl_name != NULL) {
        used = r->nccl_name;
        text = getenv(r->nccl_name);
    }
    slot->source[i] = NULL;
    if (text != NULL && text[0] != '\0') {
        if (store_value(r, text, &slot->cfg)) {
            slot->source[i] = used;
            defer(AC_LOG_INFO, "%s set by environment to %s", used, text);
            return;
        }
        char accepted[160];
        describe_accepted(r, accepted, sizeof(accepted));
        defer(AC_LOG_WARN, "%s=%s is not valid: use %s; keeping the default %s", used, text,
              accepted, r->def != NULL ? r->def : "(unset)");
    }
    store_value(r, r->def, &slot->cfg);
}

static void load_slot(struct config_slot *slot)
{
    for (size_t i = 0; i < NROWS; i++)
        load_row(i, slot);
}

/* Logging reads its own settings through ac_config_get, so messages found while loading wait
 * here until the log level is known. Called from inside log initialization, ac_log_init returns
 * at once and the level is still unknown: the messages stay queued, and ac_log_init calls
 * ac_config_get again when it is done. */
static void flush_pending(void)
{
    struct pending_msg out[PENDING_MAX];
    if (__atomic_load_n(&ac_log_level_now, __ATOMIC_ACQUIRE) < 0)
        ac_log_init();
    if (__atomic_load_n(&ac_log_level_now, __ATOMIC_ACQUIRE) < 0)
        return;
    pthread_mutex_lock(&pending_mutex);
    int n = npending;
    memcpy(out, pending, sizeof(out[0]) * (size_t)n);
    npending = 0;
    __atomic_store_n(&has_pending, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pending_mutex);
    for (int i = 0; i < n; i++) {
        if (out[i].level == AC_LOG_WARN)
            AC_WARN("%s", out[i].text);
        else
            AC_INFO(AC_SUB_ENV, "%s", out[i].text);
    }
}

int64_t ac_config_setup_timeout_s(void)
{
    const struct ac_config *cfg = ac_config_get();
    int64_t t = cfg->init_timeout_s;
    if (cfg->timeout_s > 0 && (t <= 0 || cfg->timeout_s < t))
        t = cfg->timeout_s;
    return t > 0 ? t : 1;
}

const struct ac_config *ac_config_get(void)
{
    struct config_slot *slot = __atomic_load_n(&current, __ATOMIC_ACQUIRE);
    if (slot == NULL) {
        pthread_mutex_lock(&load_mutex);
        slot = current;
        if (slot == NULL) {
            slot = &first_slot;
            load_slot(slot);
            __atomic_store_n(&current, slot, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&load_mutex);
    }
    if (__atomic_load_n(&has_pending, __ATOMIC_ACQUIRE))
        flush_pending();
    return &slot->cfg;
}

void ac_config_reload(void)
{
    struct config_slot *slot = calloc(1, sizeof(*slot));
    if (slot == NULL) {
        defer(AC_LOG_WARN, "cannot re-read the environment: out of memory; keeping the settings");
        return;
    }
    pthread_mutex_lock(&load_mutex);
    load_slot(slot);
    slot->older = current;
    __atomic_store_n(&current, slot, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&load_mutex);
}

static const char *format_value(const struct row *r, const struct ac_config *cfg, char *buf,
                                size_t len)
{
    const char *field = (const char *)cfg + r->offset;
    bool b;
    int64_t v;
    const char *s;
    switch (r->type) {
    case ROW_BOOL:
        memcpy(&b, field, sizeof(b));
        return b ? "1" : "0";
    case ROW_INT64:
        memcpy(&v, field, sizeof(v));
        snprintf(buf, len, "%" PRId64, v);
        return buf;
    case ROW_STRING:
        memcpy(&s, field, sizeof(s));
        return s != NULL ? s : "(unset)";
    }
    return "?";
}

void ac_config_print(FILE *out)
{
    const struct ac_config *cfg = ac_config_get();
    struct config_slot *slot = __atomic_load_n(&current, __ATOMIC_ACQUIRE);
    char buf[32];
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &rows[i];
        const char *source = slot != NULL && &slot->cfg == cfg ? slot->source[i] : NULL;
        fprintf(out, "  %s", r->name);
        if (r->nccl_name != NULL)
            fprintf(out, " (or %s)", r->nccl_name);
        fprintf(out, " = %s", format_value(r, cfg, buf, sizeof(buf)));
        if (source != NULL)
            fprintf(out, "  [set by %s; default %s]\n", source, r->def ? r->def : "(unset)");
        else
            fprintf(out, "  [default]\n");
        fprintf(out, "      %s\n", r->meaning);
    }
}

static const char *type_name(const struct row *r, char *buf, size_t len)
{
    if (r->type == ROW_BOOL)
        return "boolean (0, 1, true, false, yes, no)";
    if (r->type == ROW_STRING)
        return "string";
    snprintf(buf, len, "integer, %" PRId64 " to %" PRId64 " (K, M, G suffixes: x1024)", r->min,
             r->max);
    return buf;
}

void ac_config_print_markdown(FILE *out)
{
    char buf[96];
    fprintf(out, "| Variable | Also read as | Type | Default | Meaning |\n");
    fprintf(out, "|---|---|---|---|---|\n");
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &rows[i];
        fprintf(out, "| `%s` | ", r->name);
        if (r->nccl_name != NULL)
            fprintf(out, "`%s`", r->nccl_name);
        else
            fprintf(out, "-");
        fprintf(out, " | %s | ", type_name(r, buf, sizeof(buf)));
        if (r->def != NULL)
            fprintf(out, "`%s`", r->def);
        else
            fprintf(out, "(unset)");
        fprintf(out, " | %s |\n", r->meaning);
    }
}
