/* RAS lifecycle: communicator registration (the bootstrap allgather of RAS addresses, the process
 * table), the RAS thread's start and stop, dead-peer marking, SIGUSR1 and the event list. The
 * thread itself lives in ras_net.c. One lock (ac_ras_g.lock) guards the registry and the process
 * table; the hot-path hooks (ras_fr.c) never take it. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "core/comm.h"
#include "ras/ras_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ac_ras_state ac_ras_g = {.lock = PTHREAD_MUTEX_INITIALIZER};
/* Serializes starting and stopping the thread (never held by the thread itself). */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static int ncomms_registered;
static bool has_sig_handler;

void ac_ras_event(const char *fmt, ...)
{
    int i = ac_ras_g.nevents % AC_RAS_NEVENTS;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ac_ras_g.events[i], sizeof(ac_ras_g.events[i]), fmt, ap);
    va_end(ap);
    ac_ras_g.event_ns[i] = ac_now_ns();
    ac_ras_g.nevents++;
}

void ac_ras_addr_from_sockaddr(const struct sockaddr_storage *sa, struct ac_ras_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->ss_family == AF_INET) {
        out->family = 4;
        memcpy(out->ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        out->family = 6;
        memcpy(out->ip, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
    out->port = (uint16_t)ac_socket_addr_port(sa);
    out->pid = (uint32_t)getpid();
}

void ac_ras_addr_to_sockaddr(const struct ac_ras_addr *a, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (a->family == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a->ip, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, a->ip, 16);
    }
    ac_socket_addr_set_port(out, a->port);
}

const char *ac_ras_addr_str(const struct ac_ras_addr *a, char *buf, size_t len)
{
    struct sockaddr_storage sa;
    ac_ras_addr_to_sockaddr(a, &sa);
    return ac_socket_addr_str(&sa, buf, len);
}

/* ---- the process table (lock held) ---- */

int ac_ras_proc_find(const struct ac_ras_addr *addr)
{
    for (int i = 0; i < ac_ras_g.nprocs; i++)
        if (ac_ras_addr_equal(&ac_ras_g.procs[i].addr, addr))
            return i;
    return -1;
}

int ac_ras_proc_add(const struct ac_ras_addr *addr)
{
    int i = ac_ras_proc_find(addr);
    if (i >= 0)
        return i;
    if (ac_ras_g.nprocs == ac_ras_g.cap_procs) {
        int cap = ac_ras_g.cap_procs ? 2 * ac_ras_g.cap_procs : 16;
        struct ac_ras_proc *p = realloc(ac_ras_g.procs, (size_t)cap * sizeof(*p));
        if (!p)
            return -1;
        ac_ras_g.procs = p;
        ac_ras_g.cap_procs = cap;
    }
    struct ac_ras_proc *p = &ac_ras_g.procs[ac_ras_g.nprocs];
    memset(p, 0, sizeof(*p));
    p->addr = *addr;
    p->state = AC_RAS_PROC_ALIVE;
    p->last_rx_ns = ac_now_ns();
    snprintf(p->host, sizeof(p->host), "?");
    return ac_ras_g.nprocs++;
}

/* Marks a process dead: every local communicator with one of its ranks gets ras_dead_rank (its
 * running calls then fail naming the rank). Returns whether it was news. */
bool ac_ras_proc_declare_dead(int idx, const char *why)
{
    struct ac_ras_proc *p = &ac_ras_g.procs[idx];
    if (p->state == AC_RAS_PROC_DEAD)
        return false;
    p->state = AC_RAS_PROC_DEAD;
    p->dead_ns = ac_now_ns();
    snprintf(p->dead_why, sizeof(p->dead_why), "%s", why);
    char ranks[128] = "";
    size_t o = 0;
    for (struct ac_ras_comm *c = ac_ras_g.comms; c; c = c->next) {
        for (int r = 0; r < c->nranks; r++) {
            if (!c->rank_proc || c->rank_proc[r] != idx)
                continue;
            int none = -1;
            atomic_compare_exchange_strong(&c->comm->ras_dead_rank, &none, r);
            if (o + 40 < sizeof(ranks))
                o += (size_t)snprintf(ranks + o, sizeof(ranks) - o, "%s0x%08" PRIx64 ":%d",
                                      o ? ", " : "", c->comm_hash & 0xffffffffu, r);
        }
    }
    AC_WARN("RAS: process %u on %s is dead (%s); its ranks (comm:rank) %s will fail their "
            "operations",
            p->addr.pid, p->host, why, o ? ranks : "(none here)");
    ac_ras_event("pid %u on %s declared dead: %s; ranks %s", p->addr.pid, p->host, why,
                 o ? ranks : "-");
    return true;
}

/* ---- keys ---- */

void ac_ras_comm_key(uint64_t comm_hash, uint8_t key[8])
{
    for (int i = 0; i < 8; i++)
        key[i] = (uint8_t)(comm_hash >> (8 * i));
}

bool ac_ras_key_lookup(uint64_t key_id, uint8_t key_out[8])
{
    for (struct ac_ras_comm *c = ac_ras_g.comms; c; c = c->next) {
        uint8_t key[8];
        ac_ras_comm_key(c->comm_hash, key);
        if (ac_ras_key_id(key, sizeof(key)) == key_id) {
            memcpy(key_out, key, 8);
            return true;
        }
    }
    return false;
}

/* ---- SIGUSR1 ---- */

static void on_sigusr1(int sig)
{
    (void)sig;
    ac_ras_net_signal_dump();
}

static void install_sig_handler(void)
{
    if (has_sig_handler || !ac_config_get()->ras_sigusr1)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigusr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) == 0)
        has_sig_handler = true;
}

/* ---- registration ---- */

struct ras_blob {
    uint8_t bytes[AC_RAS_ADDR_BYTES + 64];
};

static void encode_blob(struct ras_blob *b, const struct ac_ras_addr *addr, const char *host)
{
    struct ac_ras_buf w;
    char h[64] = {0};
    snprintf(h, sizeof(h), "%s", host);
    ac_ras_buf_init(&w, b->bytes, sizeof(b->bytes));
    ac_ras_addr_put(&w, addr);
    ac_ras_put_bytes(&w, h, sizeof(h));
}

static bool decode_blob(const struct ras_blob *b, struct ac_ras_addr *addr, char host[64])
{
    struct ac_ras_buf r;
    ac_ras_buf_init(&r, (void *)b->bytes, sizeof(b->bytes));
    ac_ras_addr_get(&r, addr);
    ac_ras_get_bytes(&r, host, 64);
    host[63] = '\0';
    return !r.has_failed;
}

/* Fills rec's rank table from the allgathered blobs (lock held). */
static void map_ranks(struct ac_ras_comm *rec, const struct ras_blob *blobs)
{
    for (int r = 0; r < rec->nranks; r++) {
        struct ac_ras_addr a;
        char host[64];
        rec->rank_pid[r] = rec->comm->peers[r].pid;
        snprintf(rec->rank_host[r], 64, "%s", rec->comm->peers[r].hostname);
        if (!decode_blob(&blobs[r], &a, host) || a.family == 0) {
            rec->rank_proc[r] = AC_RAS_PROC_NONE;
            continue;
        }
        if (ac_ras_g.self.family && ac_ras_addr_equal(&a, &ac_ras_g.self)) {
            rec->rank_proc[r] = AC_RAS_PROC_SELF;
            continue;
        }
        int idx = ac_ras_proc_add(&a);
        rec->rank_proc[r] = idx;
        if (idx < 0)
            continue;
        struct ac_ras_proc *p = &ac_ras_g.procs[idx];
        if (p->state == AC_RAS_PROC_LEFT || p->addr.pid != a.pid) {
            p->state = AC_RAS_PROC_ALIVE; /* a new communicator with it: it is back */
            p->addr.pid = a.pid;
            p->last_rx_ns = ac_now_ns();
        }
        snprintf(p->host, sizeof(p->host), "%s", host);
        if (p->nrefs++ == 0 || p->key_id == 0) {
            ac_ras_comm_key(rec->comm_hash, p->key);
            p->key_id = ac_ras_key_id(p->key, sizeof(p->key));
        }
    }
}

/* A child of fork() has no RAS thread and none of the parent's peers. */
static void after_fork_child(void)
{
    pthread_mutex_init(&ac_ras_g.lock, NULL);
    pthread_mutex_init(&life_lock, NULL);
    ac_ras_g.comms = NULL;
    ac_ras_g.procs = NULL;
    ac_ras_g.nprocs = ac_ras_g.cap_procs = 0;
    ac_ras_g.self.family = 0;
    ncomms_registered = 0;
    ac_ras_net_forget();
    ac_ras_clients_close_all();
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

static bool start_thread_locked(struct ncclComm *comm)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_atfork);
    if (ncomms_registered++ > 0)
        return ac_ras_g.self.family != 0;
    install_sig_handler();
    return ac_ras_net_start(ac_bootstrap_local_addr(comm->bs));
}

static void stop_thread_locked(void)
{
    if (--ncomms_registered == 0)
        ac_ras_net_stop();
}

void ac_ras_comm_init(struct ncclComm *comm)
{
    const struct ac_config *cfg = ac_config_get();
    struct ac_ras_comm *rec = NULL;
    struct ras_blob *blobs = calloc((size_t)comm->nranks, sizeof(*blobs));
    struct ac_ras_addr self = {0};
    comm->ras = NULL;
    pthread_mutex_lock(&life_lock);
    bool is_running = cfg->ras_enable && start_thread_locked(comm);
    if (is_running) {
        rec = ac_ras_rec_alloc(comm);
        pthread_mutex_lock(&ac_ras_g.lock);
        self = ac_ras_g.self;
        if (rec) { /* the key is known before anyone can learn our address from the allgather */
            rec->next = ac_ras_g.comms;
            ac_ras_g.comms = rec;
        }
        pthread_mutex_unlock(&ac_ras_g.lock);
    }
    pthread_mutex_unlock(&life_lock);
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    if (!blobs) {
        AC_WARN("RAS: out of memory registering comm rank %d; RAS is off for it (the other "
                "ranks may wait for this rank's RAS address)",
                comm->rank);
        goto fail;
    }
    /* Every rank takes part, RAS on or off, so the bootstrap stays in step across ranks. */
    encode_blob(&blobs[comm->rank], rec ? &self : &(struct ac_ras_addr){0}, host);
    if (ac_bootstrap_allgather(comm->bs, blobs, sizeof(*blobs)) != ncclSuccess) {
        AC_WARN("RAS: exchanging RAS addresses failed on rank %d (%s); RAS is off for this "
                "communicator",
                comm->rank, ac_last_error());
        goto fail;
    }
    if (!rec)
        goto fail;
    rec->rank_proc = calloc((size_t)comm->nranks, sizeof(int));
    rec->rank_pid = calloc((size_t)comm->nranks, sizeof(int));
    rec->rank_host = calloc((size_t)comm->nranks, 64);
    if (!rec->rank_proc || !rec->rank_pid || !rec->rank_host)
        goto fail;
    pthread_mutex_lock(&ac_ras_g.lock);
    map_ranks(rec, blobs);
    comm->ras = rec;
    pthread_mutex_unlock(&ac_ras_g.lock);
    ac_ras_net_wake();
    free(blobs);
    AC_INFO(AC_SUB_RAS | AC_SUB_INIT, "RAS: comm 0x%016" PRIx64 " rank %d registered",
            comm->comm_hash, comm->rank);
    return;
fail:
    free(blobs);
    if (rec)
        ac_ras_comm_fini_rec(rec, is_running);
    else if (is_running) {
        pthread_mutex_lock(&life_lock);
        stop_thread_locked();
        pthread_mutex_unlock(&life_lock);
    }
}

/* Unregisters rec (the RAS thread no longer sees it), frees it, stops the thread with the last. */
void ac_ras_comm_fini_rec(struct ac_ras_comm *rec, bool is_registered)
{
    bool is_found = false;
    pthread_mutex_lock(&life_lock);
    pthread_mutex_lock(&ac_ras_g.lock);
    for (struct ac_ras_comm **pp = &ac_ras_g.comms; *pp; pp = &(*pp)->next) {
        if (*pp == rec) {
            *pp = rec->next;
            is_found = true;
            break;
        }
    }
    /* Not found: a communicator inherited through fork(); this process never registered it. */
    for (int r = 0; is_found && rec->rank_proc && r < rec->nranks; r++)
        if (rec->rank_proc[r] >= 0 && rec->rank_proc[r] < ac_ras_g.nprocs)
            ac_ras_g.procs[rec->rank_proc[r]].nrefs--;
    pthread_mutex_unlock(&ac_ras_g.lock);
    if (is_registered && is_found)
        stop_thread_locked();
    pthread_mutex_unlock(&life_lock);
    ac_ras_rec_free(rec);
}

void ac_ras_comm_fini(struct ncclComm *comm, bool is_abort)
{
    struct ac_ras_comm *rec = comm->ras;
    if (!rec)
        return;
    if (is_abort) {
        rec->is_aborting = true;
        ac_ras_fr_dump(rec, "ncclCommAbort");
    }
    comm->ras = NULL;
    ac_ras_comm_fini_rec(rec, true);
}
