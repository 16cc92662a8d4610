/* The polite wait of every poll loop. Ranks may outnumber cores (tests run 8 ranks on 2 cores), so
 * a waiting rank must give its core to the rank it waits for: spin briefly for latency, then
 * yield, then sleep in growing steps. */
#include "common/time.h"
#include "common/config.h"

#include <sched.h>

/* The spin phase ends after spin_count polls or SPIN_MAX_NS, whichever comes first: a poll of a
 * socket connector is a system call or two (a microsecond or more), so 2000 of them kept a core
 * for milliseconds that the peer we wait for may need (4 ranks on 2 cores, each in its own
 * network namespace, took 4 ms per 8-byte all-to-all instead of 0.14 ms). Shared-memory polls
 * take tens of ns: their spin phase is the same as before. The clock is read every
 * AC_SPIN_POLLS_PER_CLOCK polls. */
#define SPIN_MAX_NS 100000ull
/* Polls that yield after the spin phase, before sleeping starts. */
#define YIELD_POLLS 1000u
/* Sleeps double every SLEEPS_PER_STEP idle polls: 1, 2, 4, ... 64 us, then 100 us. */
#define SLEEP_MIN_NS 1000u
#define SLEEP_MAX_NS 100000u
#define SLEEPS_PER_STEP 4u

static uint32_t sleep_ns_for(uint32_t nsleeps)
{
    uint32_t step = nsleeps / SLEEPS_PER_STEP;
    if (step >= 7)
        return SLEEP_MAX_NS;
    uint32_t ns = SLEEP_MIN_NS << step;
    return ns < SLEEP_MAX_NS ? ns : SLEEP_MAX_NS;
}

void ac_backoff_idle(struct ac_backoff *b)
{
    uint32_t n = b->idle_polls;
    if (n < UINT32_MAX)
        b->idle_polls = n + 1;
    if (!b->is_loaded) {
        /* spin_count is at most 2^30 (config range), so the sums below cannot wrap. */
        b->spin_polls = b->is_oversubscribed ? 0 : (uint32_t)ac_config_get()->spin_count;
        b->is_loaded = true;
    }
    uint32_t spin = b->spin_polls;
    uint32_t yields = b->is_oversubscribed ? 16 * YIELD_POLLS : YIELD_POLLS;
    if (n < spin) {
        /* The clock starts at the first read, AC_SPIN_POLLS_PER_CLOCK polls in (a few us at most):
         * a short wait, the common one for small messages, reads no clock at all. */
        if (n % AC_SPIN_POLLS_PER_CLOCK != 0 || n == 0) {
            ac_cpu_relax();
            return;
        }
        uint64_t now = ac_now_ns();
        if (n == AC_SPIN_POLLS_PER_CLOCK)
            b->spin_since_ns = now;
        if (now - b->spin_since_ns <= SPIN_MAX_NS) {
            ac_cpu_relax();
            return;
        }
        b->idle_polls = n = spin; /* spun long enough: the yield phase starts now */
    }
    if (n < spin + yields) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, (long)sleep_ns_for(n - spin - yields)};
    nanosleep(&ts, NULL);
}
