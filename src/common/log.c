/* Leveled logging compatible with NCCL_DEBUG, NCCL_DEBUG_SUBSYS and NCCL_DEBUG_FILE. Settings are
 * read through the config table (never getenv), parsed once under a mutex, and published through
 * ac_log_level_now, which the inline fast path in log.h reads without a lock. */
#include "common/log.h"
#include "common/config.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Read without a lock by ac_log_enabled (log.h) on every log call: written under init_mutex, the
 * mask before the level, and the level with release ordering. A reader racing a re-init may see
 * the old mask with the new level for one call, which is harmless. */
int ac_log_level_now = -1;
uint64_t ac_log_subsys_mask;

/* NCCL's default when NCCL_DEBUG_SUBSYS is unset. */
#define DEFAULT_SUBSYS_MASK ((uint64_t)(AC_SUB_INIT | AC_SUB_BOOTSTRAP | AC_SUB_ENV))
#define LINE_MAX_BYTES 2048
#define HOST_MAX 64

static pthread_mutex_t init_mutex = PTHREAD_MUTEX_INITIALIZER;
/* Set while this thread parses the settings: a log call made meanwhile (the config table warning
 * about a malformed variable) must neither recurse nor wait on init_mutex. */
static __thread int is_initializing;
static __thread int thread_rank = -1;
static char host_name[HOST_MAX] = "unknown";
/* Written under init_mutex, read by writers: a FILE that was opened is never closed, because
 * another thread may still be writing to it after ac_log_reset (a re-init opening a new file
 * leaks the old one: a few bytes, and only when tests or ncclResetDebugInit change the name). */
static FILE *log_file;
static char log_file_pattern[PATH_MAX];

static const struct {
    const char *name;
    uint64_t mask;
} subsys_names[] = {
    {"INIT", AC_SUB_INIT},
    {"COLL", AC_SUB_COLL},
    {"P2P", AC_SUB_P2P},
    {"SHM", AC_SUB_SHM},
    {"NET", AC_SUB_NET},
    {"GRAPH", AC_SUB_GRAPH},
    {"TUNING", AC_SUB_TUNING},
    {"ENV", AC_SUB_ENV},
    {"ALLOC", AC_SUB_ALLOC},
    {"CALL", AC_SUB_CALL},
    {"PROXY", AC_SUB_PROXY},
    {"NVLS", AC_SUB_NVLS},
    {"BOOTSTRAP", AC_SUB_BOOTSTRAP},
    {"REG", AC_SUB_REG},
    {"PROFILE", AC_SUB_PROFILE},
    {"RAS", AC_SUB_RAS},
    {"ALL", (uint64_t)AC_SUB_ALL},
};

static const char *const level_names[] = {"NONE", "VERSION", "WARN", "INFO", "ABORT", "TRACE"};

/* NCCL_DEBUG: unset or empty is NONE, as in NCCL. An unknown word is reported (NCCL ignores it
 * silently) and WARN is used, since the user asked for some logging. Returns false if unknown. */
static bool parse_level(const char *s, int *level_out)
{
    *level_out = AC_LOG_NONE;
    if (s == NULL || s[0] == '\0')
        return true;
    for (int l = AC_LOG_VERSION; l <= AC_LOG_TRACE; l++) {
        if (strcasecmp(s, level_names[l]) == 0) {
            *level_out = l;
            return true;
        }
    }
    *level_out = AC_LOG_WARN;
    return false;
}

/* NCCL's rule: a comma list of names; a leading ^ starts from all subsystems and removes the
 * listed ones. Names are case-insensitive; an unknown one is copied into bad_out (first only). */
static uint64_t parse_subsys(const char *s, char *bad_out, size_t bad_len)
{
    if (s == NULL)
        return DEFAULT_SUBSYS_MASK;
    bool is_inverted = s[0] == '^';
    uint64_t mask = is_inverted ? ~(uint64_t)0 : 0;
    const char *p = is_inverted ? s + 1 : s;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        uint64_t bit = 0;
        for (size_t i = 0; i < sizeof(subsys_names) / sizeof(subsys_names[0]); i++) {
            const char *name = subsys_names[i].name;
            if (strlen(name) == len && strncasecmp(p, name, len) == 0)
                bit = subsys_names[i].mask;
        }
        if (bit == 0 && len > 0 && bad_out[0] == '\0')
            snprintf(bad_out, bad_len, "%.*s", (int)len, p);
        mask = is_inverted ? mask & ~bit : mask | bit;
        p += len;
        if (*p == ',')
            p++;
    }
    return mask;
}

/* %h: the host name up to its first dot, %p: the pid, %%: a percent sign (NCCL's substitutions). */
static void expand_file_name(const char *pattern, char *out, size_t out_len)
{
    size_t n = 0;
    for (const char *p = pattern; *p != '\0' && n + 1 < out_len; p++) {
        int written;
        if (p[0] == '%' && p[1] == 'h')
            written = snprintf(out + n, out_len - n, "%s", host_name);
        else if (p[0] == '%' && p[1] == 'p')
            written = snprintf(out + n, out_len - n, "%d", (int)getpid());
        else if (p[0] == '%' && p[1] == '%')
            written = snprintf(out + n, out_len - n, "%%");
        else {
            out[n++] = *p;
            continue;
        }
        p++;
        n += (size_t)written < out_len - n ? (size_t)written : out_len - n - 1;
    }
    out[n] = '\0';
}

/* Read at the first initialization only: writers read host_name without a lock, so a re-init
 * (ac_log_reset) must not rewrite it under them. */
static void read_host_name(void)
{
    static bool has_host_name;
    char buf[256];
    if (has_host_name)
        return;
    has_host_name = true;
    if (gethostname(buf, sizeof(buf)) != 0)
        return;
    buf[HOST_MAX - 1] = '\0';
    buf[strcspn(buf, ".")] = '\0';
    memcpy(host_name, buf, strlen(buf) + 1);
}

/* Opens NCCL_DEBUG_FILE once per distinct name; stdout when unset or when it cannot be opened
 * (NCCL falls back silently; the caller reports it). Returns false when the open failed. */
static bool open_log_file(const char *pattern, char *path_out, size_t path_len)
{
    path_out[0] = '\0';
    if (pattern == NULL || pattern[0] == '\0') {
        __atomic_store_n(&log_file, stdout, __ATOMIC_RELEASE);
        log_file_pattern[0] = '\0';
        return true;
    }
    if (log_file != NULL && log_file != stdout && strcmp(pattern, log_file_pattern) == 0)
        return true;
    expand_file_name(pattern, path_out, path_len);
    FILE *f = fopen(path_out, "w");
    if (f == NULL) {
        __atomic_store_n(&log_file, stdout, __ATOMIC_RELEASE);
        return false;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    __atomic_store_n(&log_file, f, __ATOMIC_RELEASE);
    snprintf(log_file_pattern, sizeof(log_file_pattern), "%s", pattern);
    return true;
}

/* Problems found while parsing, reported once the level is published (logging from inside the
 * initialization would recurse). */
struct init_problems {
    const char *bad_level;
    char bad_subsys[32];
    char bad_file[PATH_MAX];
};

static void parse_settings(struct init_problems *pb)
{
    const struct ac_config *cfg = ac_config_get();
    int level;
    read_host_name();
    if (!parse_level(cfg->debug, &level))
        pb->bad_level = cfg->debug;
    ac_log_subsys_mask = parse_subsys(cfg->debug_subsys, pb->bad_subsys, sizeof(pb->bad_subsys));
    if (open_log_file(cfg->debug_file, pb->bad_file, sizeof(pb->bad_file)))
        pb->bad_file[0] = '\0';
    __atomic_store_n(&ac_log_level_now, level, __ATOMIC_RELEASE);
}

static void report_problems(const struct init_problems *pb)
{
    if (pb->bad_level != NULL)
        AC_WARN("NCCL_DEBUG=%s is not a level: use VERSION, WARN, INFO, ABORT or TRACE; "
                "logging at WARN",
                pb->bad_level);
    if (pb->bad_subsys[0] != '\0')
        AC_WARN("NCCL_DEBUG_SUBSYS: unknown subsystem '%s' ignored; known: INIT, COLL, P2P, SHM, "
                "NET, GRAPH, TUNING, ENV, ALLOC, CALL, PROXY, NVLS, BOOTSTRAP, REG, PROFILE, RAS, "
                "ALL (a leading ^ excludes)",
                pb->bad_subsys);
    if (pb->bad_file[0] != '\0')
        AC_WARN("NCCL_DEBUG_FILE: cannot open %s for writing; logging to stdout", pb->bad_file);
}

void ac_log_init(void)
{
    if (is_initializing)
        return;
    struct init_problems pb = {0};
    is_initializing = 1;
    pthread_mutex_lock(&init_mutex);
    if (__atomic_load_n(&ac_log_level_now, __ATOMIC_ACQUIRE) < 0)
        parse_settings(&pb);
    pthread_mutex_unlock(&init_mutex);
    is_initializing = 0;
    report_problems(&pb);
    /* The config table defers its own warnings until logging is set up: flush them now. */
    ac_config_get();
}

/* ncclResetDebugInit: NCCL re-reads NCCL_DEBUG* from the environment, which may have changed, so
 * the config table is re-read too (other modules keep the values they already took from it). */
void ac_log_reset(void)
{
    ac_config_reload();
    pthread_mutex_lock(&init_mutex);
    __atomic_store_n(&ac_log_level_now, -1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_mutex);
}

void ac_log_set_rank(int rank)
{
    thread_rank = rank;
}

/* "host:pid:tid [rank] NCCL INFO msg"; WARN and TRACE add file:line before "NCCL", as NCCL's
 * WARN lines do. VERSION lines are labelled INFO, as NCCL prints its version line at INFO. */
static int format_prefix(char *buf, size_t len, enum ac_log_level level, const char *file, int line)
{
    char rank[16] = "-";
    if (thread_rank >= 0)
        snprintf(rank, sizeof(rank), "%d", thread_rank);
    const char *name = level == AC_LOG_VERSION ? "INFO" : level_names[level];
    if (level == AC_LOG_WARN || level == AC_LOG_TRACE)
        return snprintf(buf, len, "%s:%d:%d [%s] %s:%d NCCL %s ", host_name, (int)getpid(),
                        (int)gettid(), rank, file, line, name);
    return snprintf(buf, len, "%s:%d:%d [%s] NCCL %s ", host_name, (int)getpid(), (int)gettid(),
                    rank, name);
}

void ac_log_write(enum ac_log_level level, uint64_t subsys, const char *file, int line,
                  const char *fmt, ...)
{
    char buf[LINE_MAX_BYTES];
    if (level <= AC_LOG_NONE || level > AC_LOG_TRACE)
        return;
    if (__atomic_load_n(&ac_log_level_now, __ATOMIC_ACQUIRE) < 0)
        ac_log_init();
    int n = format_prefix(buf, sizeof(buf), level, file, line);
    if (n < 0 || (size_t)n >= sizeof(buf) - 1)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t total = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (total > sizeof(buf) - 2)
        total = sizeof(buf) - 2; /* truncated: keep room for the newline */
    buf[total++] = '\n';
    /* One fwrite per line: stdio locks the stream, so lines from threads never interleave. */
    FILE *f = __atomic_load_n(&log_file, __ATOMIC_ACQUIRE);
    if (f == NULL)
        f = stdout;
    fwrite(buf, 1, total, f);
    /* NCCL leaves stdout buffered; we flush so that a hung or killed job keeps its last lines. */
    if (f == stdout)
        fflush(f);
}
