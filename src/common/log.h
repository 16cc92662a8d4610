/* Leveled logging by subsystem, compatible with NCCL_DEBUG / NCCL_DEBUG_SUBSYS / NCCL_DEBUG_FILE:
 * the subsystem bits and names are NCCL's, lines start with "host:pid:tid [rank] NCCL <LEVEL>" so
 * log scrapers written for NCCL keep working. The level is checked before arguments are formatted. */
#ifndef AC_COMMON_LOG_H
#define AC_COMMON_LOG_H

#include <stdint.h>

enum ac_log_level {
    AC_LOG_NONE = 0,
    AC_LOG_VERSION = 1,
    AC_LOG_WARN = 2,
    AC_LOG_INFO = 3,
    AC_LOG_ABORT = 4,
    AC_LOG_TRACE = 5,
};

/* NCCL's ncclDebugLogSubSys values. */
enum ac_log_subsys {
    AC_SUB_INIT = 0x1,
    AC_SUB_COLL = 0x2,
    AC_SUB_P2P = 0x4,
    AC_SUB_SHM = 0x8,
    AC_SUB_NET = 0x10,
    AC_SUB_GRAPH = 0x20,
    AC_SUB_TUNING = 0x40,
    AC_SUB_ENV = 0x80,
    AC_SUB_ALLOC = 0x100,
    AC_SUB_CALL = 0x200,
    AC_SUB_PROXY = 0x400,
    AC_SUB_NVLS = 0x800,
    AC_SUB_BOOTSTRAP = 0x1000,
    AC_SUB_REG = 0x2000,
    AC_SUB_PROFILE = 0x4000,
    AC_SUB_RAS = 0x8000,
    AC_SUB_ALL = ~0,
};

extern int ac_log_level_now;     /* -1 until the environment has been read */
extern uint64_t ac_log_subsys_mask;

void ac_log_init(void);
/* Forget the parsed NCCL_DEBUG* settings so that the next log call reads them again. */
void ac_log_reset(void);
void ac_log_write(enum ac_log_level level, uint64_t subsys, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The rank printed in this thread's log lines; -1 prints none. Set by entry points. */
void ac_log_set_rank(int rank);

static inline int ac_log_enabled(enum ac_log_level level, uint64_t subsys)
{
    if (ac_log_level_now < 0)
        ac_log_init();
    return ac_log_level_now >= (int)level && (level <= AC_LOG_WARN || (ac_log_subsys_mask & subsys));
}

#define AC_LOG_(level, subsys, ...)                                                           \
    do {                                                                                      \
        if (ac_log_enabled((level), (subsys)))                                                \
            ac_log_write((level), (subsys), __FILE__, __LINE__, __VA_ARGS__);                 \
    } while (0)

#define AC_WARN(...) AC_LOG_(AC_LOG_WARN, AC_SUB_ALL, __VA_ARGS__)
#define AC_INFO(subsys, ...) AC_LOG_(AC_LOG_INFO, (subsys), __VA_ARGS__)
#define AC_TRACE(subsys, ...) AC_LOG_(AC_LOG_TRACE, (subsys), __VA_ARGS__)

#endif
