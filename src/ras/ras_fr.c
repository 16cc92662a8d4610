/* The per-communicator record and flight recorder: the hot-path hooks (enqueue, start, end) write
 * a ring of the last N operations and three progress counters, with relaxed stores and the coarse
 * monotonic clock (a few ns; resolution of one timer tick, 1-4 ms), never a lock or an allocation.
 * The ring is dumped as text, one line per operation, on abort, on SIGUSR1 (opt-in) and when an
 * operation fails with ncclRemoteError (a dead peer or a timeout). */
#include "common/check.h"
#include "common/config.h"
#include "core/comm.h"
#include "ras/ras_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t coarse_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct ac_ras_comm *ac_ras_rec_alloc(struct ncclComm *comm)
{
    int64_t want = ac_config_get()->flight_recorder;
    uint32_t n = 1;
    while ((int64_t)n < want && n < (1u << 20))
        n <<= 1;
    struct ac_ras_comm *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return NULL;
    rec->fr = calloc(n, sizeof(*rec->fr));
    if (!rec->fr) {
        free(rec);
        return NULL;
    }
    rec->fr_mask = n - 1;
    rec->comm = comm;
    rec->comm_hash = comm->comm_hash;
    rec->rank = comm->rank;
    rec->nranks = comm->nranks;
    atomic_store(&rec->cur_coll, -1);
    return rec;
}

void ac_ras_rec_free(struct ac_ras_comm *rec)
{
    if (!rec)
        return;
    free(rec->fr);
    free(rec->rank_proc);
    free(rec->rank_pid);
    free(rec->rank_host);
    free(rec);
}

uint64_t ac_ras_op_enqueue(struct ncclComm *comm, int coll, size_t count, int type, int redop,
                           int root_or_peer)
{
    struct ac_ras_comm *rec = comm->ras;
    if (!rec)
        return 0;
    /* One thread issues a communicator's operations (NCCL's rule), so load + store is enough. */
    uint64_t seq = atomic_load_explicit(&rec->nenqueued, memory_order_relaxed) + 1;
    struct ac_ras_fr_entry *e = &rec->fr[seq & rec->fr_mask];
    atomic_store_explicit(&e->seq, 0, memory_order_relaxed);
    e->coll = coll;
    e->type = type;
    e->redop = redop;
    e->root_or_peer = root_or_peer;
    e->count = count;
    e->enqueue_ns = coarse_now_ns();
    atomic_store_explicit(&e->start_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->end_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&e->result, -1, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq, memory_order_release);
    atomic_store_explicit(&rec->nenqueued, seq, memory_order_release);
    return seq;
}

void ac_ras_op_start(struct ncclComm *comm, uint64_t seq)
{
    struct ac_ras_comm *rec = comm->ras;
    if (!rec || seq == 0)
        return;
    struct ac_ras_fr_entry *e = &rec->fr[seq & rec->fr_mask];
    uint64_t now = coarse_now_ns();
    atomic_store_explicit(&e->start_ns, now, memory_order_relaxed);
    atomic_store_explicit(&rec->cur_start_ns, now, memory_order_relaxed);
    atomic_store_explicit(&rec->cur_coll, e->coll, memory_order_relaxed);
    atomic_store_explicit(&rec->nstarted, seq, memory_order_release);
}

void ac_ras_op_end(struct ncclComm *comm, uint64_t seq, ncclResult_t res)
{
    struct ac_ras_comm *rec = comm->ras;
    if (!rec || seq == 0)
        return;
    struct ac_ras_fr_entry *e = &rec->fr[seq & rec->fr_mask];
    atomic_store_explicit(&e->end_ns, coarse_now_ns(), memory_order_relaxed);
    atomic_store_explicit(&e->result, (int32_t)res, memory_order_relaxed);
    atomic_store_explicit(&rec->nfinished, seq, memory_order_release);
    if (res == ncclSuccess)
        return;
    atomic_store(&rec->last_error, (int32_t)res);
    if (res == ncclRemoteError && !atomic_exchange(&rec->has_dumped, true))
        ac_ras_fr_dump(rec, "operation failed (ncclRemoteError)");
}

void ac_ras_rec_snapshot(struct ac_ras_comm *rec, struct ac_ras_record *out, uint64_t now_ns)
{
    memset(out, 0, sizeof(*out));
    out->comm_hash = rec->comm_hash;
    out->nranks = (uint32_t)rec->nranks;
    out->rank = (uint32_t)rec->rank;
    /* Read in reverse order of the writes, so finished <= started <= enqueued holds. */
    out->nfinished = atomic_load_explicit(&rec->nfinished, memory_order_acquire);
    out->nstarted = atomic_load_explicit(&rec->nstarted, memory_order_acquire);
    out->nenqueued = atomic_load_explicit(&rec->nenqueued, memory_order_acquire);
    if (out->nstarted < out->nfinished)
        out->nstarted = out->nfinished;
    if (out->nenqueued < out->nstarted)
        out->nenqueued = out->nstarted;
    out->cur_coll = out->nstarted ? atomic_load(&rec->cur_coll) : -1;
    uint64_t start = atomic_load(&rec->cur_start_ns);
    uint64_t coarse = coarse_now_ns();
    (void)now_ns;
    out->cur_age_ms = out->nstarted == 0 ? UINT32_MAX
                      : coarse > start   ? (uint32_t)((coarse - start) / 1000000u)
                                         : 0;
    out->last_error = atomic_load(&rec->last_error);
    out->flags = rec->is_aborting || rec->comm->abort_flag ? AC_RAS_REC_ABORTED : 0;
}

const char *ac_ras_coll_name(int coll)
{
    static const char *const names[] = {"AllReduce", "AllGather", "ReduceScatter", "Broadcast",
                                        "Reduce",    "AllToAll",  "Gather",        "Scatter",
                                        "Send",      "Recv"};
    return coll >= 0 && coll < (int)(sizeof(names) / sizeof(names[0])) ? names[coll] : "?";
}

static const char *redop_name(int redop)
{
    static const char *const names[] = {"sum", "prod", "max", "min"};
    return redop >= 0 && redop < 4 ? names[redop] : "-";
}

void ac_ras_fr_path(char *buf, size_t len)
{
    const char *pat = ac_config_get()->flight_recorder_file;
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    size_t o = 0;
    for (const char *p = pat ? pat : ""; *p && o + 1 < len; p++) {
        if (p[0] == '%' && (p[1] == 'h' || p[1] == 'p')) {
            int n = p[1] == 'h' ? snprintf(buf + o, len - o, "%s", host)
                                : snprintf(buf + o, len - o, "%d", (int)getpid());
            o += n > 0 ? (size_t)n : 0;
            o = o < len ? o : len - 1;
            p++;
        } else {
            buf[o++] = *p;
        }
    }
    buf[o] = '\0';
}

static void write_entry(const struct ac_ras_fr_entry *e, uint64_t seq, uint64_t now, FILE *out)
{
    uint64_t st = atomic_load(&e->start_ns), en = atomic_load(&e->end_ns);
    int32_t res = atomic_load(&e->result);
    const char *state = st == 0 ? "enqueued" : en == 0 ? "started" : "finished";
    char peer[32] = "-";
    if (e->root_or_peer >= 0)
        snprintf(peer, sizeof(peer), "%s=%d", e->coll >= 8 ? "peer" : "root", e->root_or_peer);
    fprintf(out, "seq=%" PRIu64 " %s count=%" PRIu64 " type=%s op=%s %s state=%s", seq,
            ac_ras_coll_name(e->coll), e->count, ac_type_name((ncclDataType_t)e->type),
            e->coll <= 4 && e->coll != 1 && e->coll != 3 ? redop_name(e->redop) : "-", peer, state);
    fprintf(out, " enqueued=-%.3fs", now > e->enqueue_ns ? (now - e->enqueue_ns) / 1e9 : 0.0);
    if (st)
        fprintf(out, " started=-%.3fs", now > st ? (now - st) / 1e9 : 0.0);
    if (en)
        fprintf(out, " duration=%.3fs result=%s", en > st ? (en - st) / 1e9 : 0.0,
                ncclGetErrorString((ncclResult_t)res));
    fputc('\n', out);
}

void ac_ras_fr_write(struct ac_ras_comm *rec, const char *reason, FILE *out)
{
    uint64_t last = atomic_load(&rec->nenqueued), now = coarse_now_ns();
    uint64_t n = (uint64_t)rec->fr_mask + 1, first = last >= n ? last - n + 1 : 1;
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    time_t wall = time(NULL);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", gmtime(&wall));
    fprintf(out,
            "# AnyCCL flight recorder: comm 0x%016" PRIx64 " rank %d of %d, pid %d on %s, "
            "%s UTC, reason: %s\n",
            rec->comm_hash, rec->rank, rec->nranks, (int)getpid(), host, when, reason);
    fprintf(out,
            "# ops enqueued %" PRIu64 ", started %" PRIu64 ", finished %" PRIu64
            "; times are before this dump (clock resolution ~4 ms)\n",
            last, (uint64_t)atomic_load(&rec->nstarted), (uint64_t)atomic_load(&rec->nfinished));
    for (uint64_t s = first; s <= last && last > 0; s++) {
        const struct ac_ras_fr_entry *e = &rec->fr[s & rec->fr_mask];
        if (atomic_load_explicit(&e->seq, memory_order_acquire) == s)
            write_entry(e, s, now, out);
    }
    fflush(out);
}

void ac_ras_fr_dump(struct ac_ras_comm *rec, const char *reason)
{
    char path[512];
    ac_ras_fr_path(path, sizeof(path));
    if (!path[0] || strcmp(path, "none") == 0)
        return;
    FILE *f = fopen(path, "a");
    if (!f) {
        AC_WARN("RAS: cannot write the flight recorder to %s (%s): set "
                "ANYCCL_FLIGHT_RECORDER_FILE to a writable path",
                path, strerror(errno));
        return;
    }
    ac_ras_fr_write(rec, reason, f);
    fclose(f);
    AC_INFO(AC_SUB_RAS, "RAS: flight recorder of comm 0x%016" PRIx64 " rank %d written to %s (%s)",
            rec->comm_hash, rec->rank, path, reason);
}
