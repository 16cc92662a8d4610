/* Clocks and the polite wait used by every loop that polls memory or sockets. */
#ifndef AC_COMMON_TIME_H
#define AC_COMMON_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t ac_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One poll of a spin: tells the core (and its hyperthread sibling) that this is a wait. */
static inline void ac_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* While spinning, the poll loops read the clock once every so many idle polls (the first time
 * after that many): a read costs about as much as a poll. */
#define AC_SPIN_POLLS_PER_CLOCK 64u

/* A poll loop's back-off: spin for spin_count idle polls (at most 100 us), then yield the core,
 * then sleep in growing steps up to 100 us, so that more ranks than cores still make progress. Reset it
 * whenever the loop made progress. */
struct ac_backoff {
    uint32_t idle_polls;
    /* More ranks than cores on this machine: the rank we wait for is probably not running, so
     * spinning only delays it; yield at once, and keep yielding longer before sleeping. */
    bool is_oversubscribed;
    /* ANYCCL_SPIN_COUNT, read at the first idle poll: the spin loop reads no configuration */
    bool is_loaded;
    uint32_t spin_polls;
    uint64_t spin_since_ns; /* the clock at this wait's first read (AC_SPIN_POLLS_PER_CLOCK) */
};

void ac_backoff_idle(struct ac_backoff *b);
static inline void ac_backoff_reset(struct ac_backoff *b) { b->idle_polls = 0; }
/* Still in the spin phase (the next idle poll will not yield or sleep). */
static inline bool ac_backoff_is_spinning(const struct ac_backoff *b)
{
    return b->is_loaded && b->idle_polls < b->spin_polls;
}

#endif
