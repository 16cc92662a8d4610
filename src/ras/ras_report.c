/* The status report a RAS client receives: processes and nodes, communicators, and for each one
 * which ranks are dead, silent or behind, and in which operation. Built in the queried process
 * from its own records and the ones its peers sent (answers to this query, else their last
 * heartbeat, with its age). Text for people, JSON (SET FORMAT json) for programs. */
#include "common/time.h"
#include "ras/ras_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ac_ras_sb_printf(struct ac_ras_strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    for (int pass = 0; pass < 2; pass++) {
        size_t room = sb->cap - sb->len;
        va_start(ap, fmt);
        int n = vsnprintf(sb->p ? sb->p + sb->len : NULL, sb->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            sb->len += (size_t)n;
            return;
        }
        size_t cap = (sb->len + (size_t)n + 1) * 2;
        char *p = realloc(sb->p, cap);
        if (!p)
            return;
        sb->p = p;
        sb->cap = cap;
    }
}

/* Below this, ranks out of step are a running job, not a stuck one. */
#define SLOW_S 1.0

enum view_state { V_OK, V_STALE, V_DEAD, V_LEFT, V_MISSING };
static const char *const state_names[] = {"ok", "not_responding", "dead", "left", "missing"};

struct rank_view {
    enum view_state state;
    bool has_rec;
    struct ac_ras_record rec;
    int pid;
    const char *host;
    double data_age_s; /* how old rec is (0: answered this query, or local) */
    const char *why;   /* dead: why */
};

struct comm_view {
    uint64_t hash;
    int nranks;
    const struct ac_ras_comm *local; /* a local rank's record, if any */
    struct rank_view *ranks;
};

/* Communicator sizes come from peers: bounded like the bootstrap's. */
#define MAX_RANKS (1 << 20)

static bool *new_flags(int n)
{
    return n > 0 && n <= MAX_RANKS ? calloc((size_t)n, sizeof(bool)) : NULL;
}

static double age_s(uint64_t then, uint64_t now)
{
    return now > then ? (now - then) / 1e9 : 0;
}

static void view_from_proc(struct rank_view *v, const struct ac_ras_proc *p, uint64_t query,
                           uint64_t now)
{
    v->pid = (int)p->addr.pid;
    v->host = p->host;
    v->data_age_s = p->replied_query == query ? 0 : age_s(p->recs_ns, now);
    v->state = p->state == AC_RAS_PROC_DEAD   ? V_DEAD
               : p->state == AC_RAS_PROC_LEFT ? V_LEFT
               : p->replied_query == query    ? V_OK
                                              : V_STALE;
    v->why = p->dead_why;
}

/* Fills cv->ranks from the local records and every process's records (lock held). */
static void fill_view(struct comm_view *cv, uint64_t query, uint64_t now)
{
    for (int r = 0; r < cv->nranks; r++) {
        cv->ranks[r].state = V_MISSING;
        cv->ranks[r].host = "?";
    }
    for (const struct ac_ras_comm *c = ac_ras_g.comms; c; c = c->next) {
        if (c->comm_hash != cv->hash || c->nranks != cv->nranks || !c->rank_proc)
            continue;
        for (int r = 0; r < c->nranks; r++) {
            struct rank_view *v = &cv->ranks[r];
            if (v->has_rec)
                continue;
            v->pid = c->rank_pid[r];
            v->host = c->rank_host[r];
            if (c->rank_proc[r] >= 0)
                view_from_proc(v, &ac_ras_g.procs[c->rank_proc[r]], query, now);
        }
        struct rank_view *me = &cv->ranks[c->rank];
        me->state = V_OK;
        me->has_rec = true;
        me->data_age_s = 0;
        ac_ras_rec_snapshot((struct ac_ras_comm *)c, &me->rec, now);
    }
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        const struct ac_ras_proc *p = &ac_ras_g.procs[i];
        for (uint32_t k = 0; k < p->nrecs; k++) {
            const struct ac_ras_record *rec = &p->recs[k];
            if (rec->comm_hash != cv->hash || (int)rec->nranks != cv->nranks)
                continue;
            struct rank_view *v = &cv->ranks[rec->rank];
            view_from_proc(v, p, query, now);
            v->has_rec = true;
            v->rec = *rec;
        }
    }
    for (int r = 0; r < cv->nranks; r++)
        if (!cv->ranks[r].has_rec && cv->ranks[r].state == V_OK)
            cv->ranks[r].state = V_MISSING; /* answered, without this communicator (yet) */
}

/* "0-2,4,6-7" for the ranks r with pick[r]. */
static void rank_list(const bool *pick, int n, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int r = 0; r < n && o + 24 < len; r++) {
        if (!pick[r])
            continue;
        int e = r;
        while (e + 1 < n && pick[e + 1])
            e++;
        o += (size_t)(e == r ? snprintf(buf + o, len - o, "%s%d", o ? "," : "", r)
                             : snprintf(buf + o, len - o, "%s%d-%d", o ? "," : "", r, e));
        r = e;
    }
    if (o + 24 >= len)
        snprintf(buf + (len > 4 ? len - 4 : 0), 4, "...");
}

static const char *op_name(const struct ac_ras_record *r)
{
    return ac_ras_coll_name(r->cur_coll);
}

static double op_age_s(const struct rank_view *v)
{
    return v->rec.cur_age_ms == UINT32_MAX ? 0 : v->rec.cur_age_ms / 1e3 + v->data_age_s;
}

/* One line per finding; the same lines go into JSON "findings". */
static void emit(struct ac_ras_strbuf *sb, bool is_json, bool *is_first, const char *line)
{
    if (!is_json) {
        ac_ras_sb_printf(sb, "    %s\n", line);
        *is_first = false;
        return;
    }
    ac_ras_sb_printf(sb, "%s\"", *is_first ? "" : ",");
    for (const char *p = line; *p; p++)
        ac_ras_sb_printf(sb, *p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
    ac_ras_sb_printf(sb, "\"");
    *is_first = false;
}

static void describe_rank(const struct rank_view *v, int r, char *buf, size_t len)
{
    snprintf(buf, len, "rank %d (node %s, pid %d)", r, v->host, v->pid);
}

static void find_silent(struct ac_ras_strbuf *sb, bool is_json, bool *first,
                        const struct comm_view *cv)
{
    char line[512], who[128];
    for (int r = 0; r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        if (v->state == V_OK)
            continue;
        describe_rank(v, r, who, sizeof(who));
        char seen[160] = "";
        if (v->has_rec && v->rec.nstarted > v->rec.nfinished)
            snprintf(seen, sizeof(seen), "; last seen in %s #%" PRIu64 " (%.1f s in it)",
                     op_name(&v->rec), v->rec.nstarted, op_age_s(v));
        else if (v->has_rec)
            snprintf(seen, sizeof(seen), "; last seen idle after op #%" PRIu64 " (%s)",
                     v->rec.nfinished, v->rec.nfinished ? op_name(&v->rec) : "none");
        if (v->state == V_DEAD)
            snprintf(line, sizeof(line), "%s is DEAD: %s%s", who, v->why, seen);
        else if (v->state == V_STALE)
            snprintf(line, sizeof(line), "%s is NOT RESPONDING (last heard %.1f s ago)%s", who,
                     v->data_age_s, seen);
        else if (v->state == V_LEFT)
            snprintf(line, sizeof(line), "%s left (destroyed its communicators)%s", who, seen);
        else
            snprintf(line, sizeof(line),
                     "%s: no information (its process runs no RAS thread, "
                     "or has not connected yet)",
                     who);
        emit(sb, is_json, first, line);
    }
}

static void find_behind(struct ac_ras_strbuf *sb, bool is_json, bool *first,
                        const struct comm_view *cv, bool is_verbose)
{
    uint64_t top = 0;
    for (int r = 0; r < cv->nranks; r++)
        if (cv->ranks[r].has_rec && cv->ranks[r].rec.nstarted > top)
            top = cv->ranks[r].rec.nstarted;
    bool *ahead = new_flags(cv->nranks);
    if (!ahead)
        return;
    double lead_s = 0;
    const char *lead_op = "?";
    for (int r = 0; r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        ahead[r] = v->has_rec && v->rec.nstarted == top;
        if (ahead[r] && v->rec.nfinished < top && op_age_s(v) >= lead_s) {
            lead_s = op_age_s(v);
            lead_op = op_name(&v->rec);
        }
    }
    char list[256], who[128], line[640];
    rank_list(ahead, cv->nranks, list, sizeof(list));
    for (int r = 0; r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        if (!v->has_rec || ahead[r] || v->state != V_OK || (lead_s < SLOW_S && !is_verbose))
            continue; /* a running job is always a little out of step */
        describe_rank(v, r, who, sizeof(who));
        if (v->rec.nstarted > v->rec.nfinished)
            snprintf(line, sizeof(line),
                     "%s is in %s #%" PRIu64 ", %.1f s behind ranks %s "
                     "(in %s #%" PRIu64 ")",
                     who, op_name(&v->rec), v->rec.nstarted, lead_s, list, lead_op, top);
        else
            snprintf(line, sizeof(line),
                     "%s has not called op #%" PRIu64 " yet (finished #%" PRIu64
                     "), %.1f s behind ranks %s (in %s #%" PRIu64 ")",
                     who, v->rec.nfinished + 1, v->rec.nfinished, lead_s, list, lead_op, top);
        emit(sb, is_json, first, line);
    }
    free(ahead);
}

/* Everyone at the same op: say who is still inside it, and catch different operations. */
static void find_inside(struct ac_ras_strbuf *sb, bool is_json, bool *first,
                        const struct comm_view *cv, bool is_verbose)
{
    bool *in = new_flags(cv->nranks);
    bool *idle = new_flags(cv->nranks);
    char list[256], line[512];
    int nin = 0, nidle = 0, coll = -2;
    bool is_mismatch = false;
    uint64_t seq = 0;
    double age = 0;
    for (int r = 0; in && idle && r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        if (!v->has_rec || v->state != V_OK)
            continue; /* silent ranks are reported with what was last seen */
        in[r] = v->rec.nstarted > v->rec.nfinished;
        idle[r] = !in[r];
        nin += in[r];
        nidle += idle[r];
        if (in[r] && v->rec.nstarted > seq) {
            seq = v->rec.nstarted;
            coll = v->rec.cur_coll;
        }
    }
    for (int r = 0; in && idle && r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        in[r] = in[r] && v->rec.nstarted == seq; /* the others are reported as behind */
        is_mismatch |= in[r] && v->rec.cur_coll != coll;
        age = in[r] && op_age_s(v) > age ? op_age_s(v) : age;
    }
    if (nin > 0 && (age >= SLOW_S || is_verbose || is_mismatch)) {
        rank_list(in, cv->nranks, list, sizeof(list));
        snprintf(line, sizeof(line), "ranks %s are inside %s #%" PRIu64 " (longest %.1f s)%s", list,
                 ac_ras_coll_name(coll), seq, age,
                 is_mismatch ? "; MISMATCH: they called different operations with this number"
                             : "");
        emit(sb, is_json, first, line);
    }
    if (nidle > 0 && (is_verbose || (nin > 0 && age >= SLOW_S))) {
        rank_list(idle, cv->nranks, list, sizeof(list));
        snprintf(line, sizeof(line), "ranks %s are idle (between operations)", list);
        emit(sb, is_json, first, line);
    }
    free(in);
    free(idle);
}

/* ---- the whole report ---- */

static int collect_comms(struct comm_view **out)
{
    int n = 0, cap = 0;
    struct comm_view *v = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (const struct ac_ras_comm *c = ac_ras_g.comms; pass == 0 && c; c = c->next) {
            bool has = false;
            for (int i = 0; i < n && !has; i++)
                has = v[i].hash == c->comm_hash;
            if (!has && n == cap) {
                cap = cap ? 2 * cap : 8;
                struct comm_view *nv = realloc(v, (size_t)cap * sizeof(*v));
                if (!nv)
                    break;
                v = nv;
            }
            if (!has && n < cap)
                v[n++] = (struct comm_view){c->comm_hash, c->nranks, c, NULL};
        }
        for (int i = 0; pass == 1 && i < ac_ras_g.nprocs; i++) {
            for (uint32_t k = 0; k < ac_ras_g.procs[i].nrecs; k++) {
                const struct ac_ras_record *r = &ac_ras_g.procs[i].recs[k];
                bool has = false;
                for (int j = 0; j < n && !has; j++)
                    has = v[j].hash == r->comm_hash;
                if (!has && n == cap) {
                    cap = cap ? 2 * cap : 8;
                    struct comm_view *nv = realloc(v, (size_t)cap * sizeof(*v));
                    if (!nv)
                        break;
                    v = nv;
                }
                if (!has && n < cap)
                    v[n++] = (struct comm_view){r->comm_hash, (int)r->nranks, NULL, NULL};
            }
        }
    }
    *out = v;
    return n;
}

static void report_processes(struct ac_ras_strbuf *sb, bool is_json, uint64_t query, uint64_t now)
{
    int nnodes = 1;
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        bool is_new = strcmp(ac_ras_g.procs[i].host, ac_ras_g.self_host) != 0;
        for (int j = 0; j < i && is_new; j++)
            is_new = strcmp(ac_ras_g.procs[j].host, ac_ras_g.procs[i].host) != 0;
        nnodes += is_new;
    }
    if (!is_json) {
        ac_ras_sb_printf(sb, "Job: %d processes on %d node(s) known to pid %d on %s\n",
                         ac_ras_g.nprocs + 1, nnodes, (int)getpid(), ac_ras_g.self_host);
        ac_ras_sb_printf(sb, "Processes:\n  pid %d on %s: this process\n", (int)getpid(),
                         ac_ras_g.self_host);
    } else {
        ac_ras_sb_printf(sb,
                         "\"nodes\":%d,\"processes\":[{\"pid\":%d,\"host\":\"%s\","
                         "\"state\":\"ok\",\"self\":true}",
                         nnodes, (int)getpid(), ac_ras_g.self_host);
    }
    for (int i = 0; i < ac_ras_g.nprocs; i++) {
        const struct ac_ras_proc *p = &ac_ras_g.procs[i];
        struct rank_view v = {0};
        view_from_proc(&v, p, query, now);
        double heard = age_s(p->last_rx_ns, now);
        if (is_json) {
            ac_ras_sb_printf(sb,
                             ",{\"pid\":%u,\"host\":\"%s\",\"state\":\"%s\","
                             "\"last_heard_s\":%.3f}",
                             p->addr.pid, p->host, state_names[v.state], heard);
            continue;
        }
        ac_ras_sb_printf(sb, "  pid %u on %s: %s", p->addr.pid, p->host,
                         v.state == V_OK      ? "ok"
                         : v.state == V_STALE ? "NOT RESPONDING"
                         : v.state == V_DEAD  ? "DEAD"
                                              : "left");
        if (v.state == V_STALE)
            ac_ras_sb_printf(sb, " (last heard %.1f s ago)", heard);
        if (v.state == V_DEAD)
            ac_ras_sb_printf(sb, " (%.1f s ago: %s)", age_s(p->dead_ns, now), p->dead_why);
        ac_ras_sb_printf(sb, "\n");
    }
    if (is_json)
        ac_ras_sb_printf(sb, "],");
}

static void report_comm(struct ac_ras_strbuf *sb, bool is_json, bool is_verbose,
                        struct comm_view *cv, bool is_first_comm)
{
    int nprocs = 0, nok = 0;
    for (int r = 0; r < cv->nranks; r++) {
        bool is_new = true;
        for (int q = 0; q < r && is_new; q++)
            is_new = cv->ranks[q].pid != cv->ranks[r].pid ||
                     strcmp(cv->ranks[q].host, cv->ranks[r].host) != 0;
        nprocs += is_new;
        nok += cv->ranks[r].state == V_OK;
    }
    if (is_json) {
        ac_ras_sb_printf(sb,
                         "%s{\"hash\":\"0x%016" PRIx64 "\",\"nranks\":%d,\"nprocesses\":%d,"
                         "\"ranks\":[",
                         is_first_comm ? "" : ",", cv->hash, cv->nranks, nprocs);
        for (int r = 0; r < cv->nranks; r++) {
            const struct rank_view *v = &cv->ranks[r];
            ac_ras_sb_printf(sb, "%s{\"rank\":%d,\"pid\":%d,\"host\":\"%s\",\"state\":\"%s\"",
                             r ? "," : "", r, v->pid, v->host, state_names[v->state]);
            if (v->has_rec)
                ac_ras_sb_printf(sb,
                                 ",\"enqueued\":%" PRIu64 ",\"started\":%" PRIu64
                                 ",\"finished\":%" PRIu64 ",\"current\":\"%s\","
                                 "\"current_age_s\":%.3f,\"data_age_s\":%.3f,\"last_error\":%d",
                                 v->rec.nenqueued, v->rec.nstarted, v->rec.nfinished,
                                 v->rec.nstarted > v->rec.nfinished ? op_name(&v->rec) : "",
                                 op_age_s(v), v->data_age_s, v->rec.last_error);
            ac_ras_sb_printf(sb, "}");
        }
        ac_ras_sb_printf(sb, "],\"findings\":[");
    } else {
        ac_ras_sb_printf(sb, "  comm 0x%016" PRIx64 ": %d ranks in %d process(es), %d answered\n",
                         cv->hash, cv->nranks, nprocs, nok);
    }
    bool first = true;
    find_silent(sb, is_json, &first, cv);
    find_behind(sb, is_json, &first, cv, is_verbose);
    find_inside(sb, is_json, &first, cv, is_verbose);
    for (int r = 0; r < cv->nranks; r++) {
        const struct rank_view *v = &cv->ranks[r];
        char line[256];
        if (v->has_rec && v->rec.last_error != 0) {
            snprintf(line, sizeof(line), "rank %d: last failed operation returned %s", r,
                     ncclGetErrorString((ncclResult_t)v->rec.last_error));
            emit(sb, is_json, &first, line);
        }
        if (is_verbose && v->has_rec) {
            snprintf(line, sizeof(line),
                     "rank %d (pid %d): enqueued %" PRIu64 ", started %" PRIu64
                     ", finished %" PRIu64,
                     r, v->pid, v->rec.nenqueued, v->rec.nstarted, v->rec.nfinished);
            emit(sb, is_json, &first, line);
        }
    }
    if (first && !is_json)
        ac_ras_sb_printf(sb,
                         "    all ranks answered; none is stuck (no operation older than "
                         "%.0f s)\n",
                         SLOW_S);
    if (is_json)
        ac_ras_sb_printf(sb, "]}");
}

static void report_events(struct ac_ras_strbuf *sb, bool is_json, uint64_t now)
{
    int n = ac_ras_g.nevents < AC_RAS_NEVENTS ? ac_ras_g.nevents : AC_RAS_NEVENTS;
    ac_ras_sb_printf(sb, is_json ? ",\"events\":[" : n ? "Recent events:\n" : "");
    for (int k = 0; k < n; k++) {
        int i = (ac_ras_g.nevents - n + k) % AC_RAS_NEVENTS;
        char line[224];
        snprintf(line, sizeof(line), "%.1f s ago: %s", age_s(ac_ras_g.event_ns[i], now),
                 ac_ras_g.events[i]);
        bool first = k == 0;
        if (is_json)
            emit(sb, true, &first, line);
        else
            ac_ras_sb_printf(sb, "  %s\n", line);
    }
    if (is_json)
        ac_ras_sb_printf(sb, "]");
}

void ac_ras_report(struct ac_ras_strbuf *sb, bool is_json, bool is_verbose, uint64_t query_id)
{
    uint64_t now = ac_now_ns();
    struct comm_view *cvs = NULL;
    int ncomms = collect_comms(&cvs);
    if (is_json)
        ac_ras_sb_printf(sb, "{\"anyccl_ras\":1,\"protocol\":2,");
    else
        ac_ras_sb_printf(sb, "AnyCCL RAS status report\n");
    report_processes(sb, is_json, query_id, now);
    if (is_json)
        ac_ras_sb_printf(sb, "\"communicators\":[");
    else
        ac_ras_sb_printf(sb, "Communicators: %d\n", ncomms);
    for (int i = 0; i < ncomms; i++) {
        if (cvs[i].nranks <= 0 || cvs[i].nranks > MAX_RANKS)
            continue;
        cvs[i].ranks = calloc((size_t)cvs[i].nranks, sizeof(struct rank_view));
        if (!cvs[i].ranks)
            continue;
        fill_view(&cvs[i], query_id, now);
        report_comm(sb, is_json, is_verbose, &cvs[i], i == 0);
        free(cvs[i].ranks);
    }
    if (is_json)
        ac_ras_sb_printf(sb, "]");
    report_events(sb, is_json, now);
    ac_ras_sb_printf(sb, is_json ? "}\n" : "");
    free(cvs);
}
