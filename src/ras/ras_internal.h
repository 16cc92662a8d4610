/* What the RAS files share: the per-communicator record (kept by the hot-path hooks, read by the
 * RAS thread), the flight recorder, the process-wide state of the RAS thread and the report. */
#ifndef AC_RAS_RAS_INTERNAL_H
#define AC_RAS_RAS_INTERNAL_H

#include "ras/ras.h"
#include "ras/ras_wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>

/* One flight-recorder entry. The hooks of the communicator's calling thread write it; a dump may
 * read it at the same time and then prints a mix of two operations, never crashes: `seq` is
 * stored last (release), so an entry whose seq is not the one expected is skipped. */
struct ac_ras_fr_entry {
    _Atomic uint64_t seq;
    int32_t coll;
    int32_t type;
    int32_t redop;
    int32_t root_or_peer;
    uint64_t count;
    uint64_t enqueue_ns;
    _Atomic uint64_t start_ns;
    _Atomic uint64_t end_ns;
    _Atomic int32_t result; /* -1 while running */
};

/* A peer rank's location: the RAS process that runs it. */
#define AC_RAS_PROC_NONE (-1) /* the rank's process runs no RAS thread */
#define AC_RAS_PROC_SELF (-2) /* this process */

struct ac_ras_comm {
    struct ncclComm *comm;
    uint64_t comm_hash;
    int rank;
    int nranks;
    _Atomic uint64_t nenqueued;
    _Atomic uint64_t nstarted;
    _Atomic uint64_t nfinished;
    _Atomic uint64_t cur_start_ns;
    _Atomic int32_t cur_coll;
    _Atomic int32_t last_error;
    _Atomic bool has_dumped; /* the error dump ran once */
    bool is_aborting;
    uint32_t fr_mask; /* flight recorder: fr_mask + 1 entries (power of two) */
    struct ac_ras_fr_entry *fr;
    /* Owned by ras.c, under the state lock. */
    int *rank_proc; /* nranks: index in the process table, or AC_RAS_PROC_* */
    int *rank_pid;
    char (*rank_host)[64];
    struct ac_ras_comm *next;
};

/* ras_fr.c */
struct ac_ras_comm *ac_ras_rec_alloc(struct ncclComm *comm);
void ac_ras_rec_free(struct ac_ras_comm *rec);
void ac_ras_rec_snapshot(struct ac_ras_comm *rec, struct ac_ras_record *out, uint64_t now_ns);
/* Appends the flight recorder of rec to the dump file (ANYCCL_FLIGHT_RECORDER_FILE). */
void ac_ras_fr_dump(struct ac_ras_comm *rec, const char *reason);
/* Writes it to an open stream (tests, and the dump file). */
void ac_ras_fr_write(struct ac_ras_comm *rec, const char *reason, FILE *out);
const char *ac_ras_coll_name(int coll);
/* The dump file for this process, %h and %p expanded. */
void ac_ras_fr_path(char *buf, size_t len);

/* ras.c: the RAS thread's state, shared with the report (ras_client_proto.c). */
enum ac_ras_proc_state {
    AC_RAS_PROC_ALIVE,
    AC_RAS_PROC_LEFT, /* said BYE: ended its RAS thread on purpose */
    AC_RAS_PROC_DEAD,
};

struct ac_ras_proc {
    struct ac_ras_addr addr;
    char host[64];
    enum ac_ras_proc_state state;
    int nrefs;       /* local communicators that contain one of its ranks */
    uint64_t key_id; /* a key both sides know (a shared communicator's) */
    uint8_t key[8];
    uint64_t last_rx_ns; /* anything received from it */
    uint64_t connect_fail_since_ns;
    uint64_t next_connect_ns;
    uint64_t dead_ns;
    char dead_why[96];
    /* Latest progress it reported (keepalive or reply). */
    struct ac_ras_record *recs;
    uint32_t nrecs;
    uint64_t recs_ns;
    uint64_t replied_query; /* id of the last query it answered */
};

#define AC_RAS_NEVENTS 16
struct ac_ras_state {
    pthread_mutex_t lock;
    struct ac_ras_comm *comms;
    struct ac_ras_proc *procs;
    int nprocs;
    int cap_procs;
    struct ac_ras_addr self;
    char self_host[64];
    char events[AC_RAS_NEVENTS][160]; /* recent errors and deaths, oldest overwritten */
    uint64_t event_ns[AC_RAS_NEVENTS];
    int nevents;
    uint64_t query_id;
};
extern struct ac_ras_state ac_ras_g;

struct sockaddr_storage;
void ac_ras_addr_from_sockaddr(const struct sockaddr_storage *sa, struct ac_ras_addr *out);
void ac_ras_addr_to_sockaddr(const struct ac_ras_addr *a, struct sockaddr_storage *out);
const char *ac_ras_addr_str(const struct ac_ras_addr *a, char *buf, size_t len);
/* Process table and keys (lock held). */
int ac_ras_proc_find(const struct ac_ras_addr *addr);
int ac_ras_proc_add(const struct ac_ras_addr *addr);
bool ac_ras_proc_declare_dead(int idx, const char *why);
void ac_ras_comm_key(uint64_t comm_hash, uint8_t key[8]);
bool ac_ras_key_lookup(uint64_t key_id, uint8_t key_out[8]);
void ac_ras_comm_fini_rec(struct ac_ras_comm *rec, bool is_registered);

/* ras_net.c: the thread. start listens on the bootstrap interface (sets ac_ras_g.self) and returns
 * false when RAS cannot run; stop says BYE to the peers and joins the thread. */
bool ac_ras_net_start(const struct sockaddr_storage *bootstrap_addr);
void ac_ras_net_stop(void);
void ac_ras_net_wake(void);
void ac_ras_net_signal_dump(void); /* async-signal-safe */
void ac_ras_net_forget(void);      /* in a child after fork */
/* Asks every live peer process for its progress; complete when all answered (lock held). */
uint64_t ac_ras_query_start(void);
bool ac_ras_query_complete(uint64_t id);

/* ras_client_proto.c: the client port, driven by the RAS thread. */
void ac_ras_clients_open(void);
/* Fills up to max pollfds (the listener first, then each client); returns how many. */
int ac_ras_clients_pollfds(struct pollfd *fds, int max);
/* Called on every loop with the pollfds filled above (lock held). */
void ac_ras_clients_handle(const struct pollfd *fds, int n);
void ac_ras_clients_close_all(void);

/* Records an event for the report (caller holds the lock). */
void ac_ras_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* ras_client_proto.c: the report from the state and the records gathered (lock held). */
struct ac_ras_strbuf {
    char *p;
    size_t len;
    size_t cap;
};
void ac_ras_sb_printf(struct ac_ras_strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ac_ras_report(struct ac_ras_strbuf *sb, bool is_json, bool is_verbose, uint64_t query_id);

/* ras_client_proto.c: the text protocol's parsing, pure (no state, no I/O; fuzzed). */
#define AC_RAS_CLIENT_LINE_MAX 1024
enum ac_ras_client_cmd_kind {
    AC_RAS_CMD_NONE,    /* empty line: nothing to do */
    AC_RAS_CMD_REPLY,   /* answer `reply` and change nothing */
    AC_RAS_CMD_TIMEOUT, /* set timeout_s, answer `reply` */
    AC_RAS_CMD_FORMAT,  /* set is_json, answer `reply` */
    AC_RAS_CMD_STATUS,  /* start a report (is_verbose) */
};
struct ac_ras_client_cmd {
    enum ac_ras_client_cmd_kind kind;
    double timeout_s;
    bool is_json;
    bool is_verbose;
    char reply[AC_RAS_CLIENT_LINE_MAX + 64];
};
void ac_ras_client_parse_cmd(const char *line, struct ac_ras_client_cmd *out);
/* The first complete line of in[0..len): terminated in place (a trailing \r dropped), *line_out
 * points at it; returns the bytes it used with its newline, 0 when no newline has arrived yet. */
size_t ac_ras_client_take_line(char *in, size_t len, char **line_out);

#endif
