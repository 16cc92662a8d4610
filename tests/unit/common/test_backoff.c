/* The poll back-off: spin for ANYCCL_SPIN_COUNT idle polls (at most about 100 us), yield for
 * 1000 more, then sleep from 1 us doubling every 4 polls up to 100 us; and more waiting threads
 * than cores still progress. */
#include "common/config.h"
#include "common/time.h"
#include "common_test_env.h"

#include <criterion/criterion.h>
#include <pthread.h>

static void setup(void)
{
    test_clean_env();
    ac_config_reload();
}

TestSuite(backoff, .init = setup, .timeout = 10);

Test(backoff, counts_polls_and_resets)
{
    struct ac_backoff b = {0};
    for (int i = 0; i < 5; i++)
        ac_backoff_idle(&b);
    cr_expect_eq(b.idle_polls, 5);
    ac_backoff_reset(&b);
    cr_expect_eq(b.idle_polls, 0);
}

Test(backoff, saturates_instead_of_wrapping)
{
    setenv("ANYCCL_SPIN_COUNT", "0", 1);
    ac_config_reload();
    struct ac_backoff b = {UINT32_MAX};
    ac_backoff_idle(&b);
    cr_expect_eq(b.idle_polls, UINT32_MAX);
}

static uint64_t time_one_poll(uint32_t idle_polls)
{
    struct ac_backoff b = {idle_polls};
    uint64_t t0 = ac_now_ns();
    ac_backoff_idle(&b);
    return ac_now_ns() - t0;
}

/* nanosleep never returns early, so these lower bounds are exact; upper bounds would be flaky on a
 * loaded machine and are not checked. With spin_count 0 the sleeps start after 1000 yields. */
Test(backoff, sleeps_grow_to_100us)
{
    setenv("ANYCCL_SPIN_COUNT", "0", 1);
    ac_config_reload();
    cr_expect_geq(time_one_poll(1000), 1000);           /* first sleep: 1 us */
    cr_expect_geq(time_one_poll(1000 + 4 * 3), 8000);   /* 1 us << 3 */
    cr_expect_geq(time_one_poll(1000 + 4 * 6), 64000);  /* 1 us << 6 */
    cr_expect_geq(time_one_poll(1000 + 4 * 7), 100000); /* capped at 100 us */
    cr_expect_geq(time_one_poll(5000000), 100000);
}

#define NRING 8
#define NROUNDS 30

struct ring {
    int token; /* the thread allowed to pass it on */
    int passes;
};

struct member {
    struct ring *ring;
    int id;
};

/* Each thread waits, with the back-off, for the token and hands it to the next: 8 threads on
 * 2 cores must still pass it 240 times well within the test's timeout. */
static void *pass_token(void *arg)
{
    struct member *m = arg;
    struct ac_backoff b = {0};
    for (int round = 0; round < NROUNDS; round++) {
        while (__atomic_load_n(&m->ring->token, __ATOMIC_ACQUIRE) != m->id)
            ac_backoff_idle(&b);
        ac_backoff_reset(&b);
        m->ring->passes++;
        __atomic_store_n(&m->ring->token, (m->id + 1) % NRING, __ATOMIC_RELEASE);
    }
    return NULL;
}

Test(backoff, more_threads_than_cores_progress)
{
    struct ring ring = {0, 0};
    struct member members[NRING];
    pthread_t t[NRING];
    for (int i = 0; i < NRING; i++) {
        members[i] = (struct member){&ring, i};
        cr_assert_eq(pthread_create(&t[i], NULL, pass_token, &members[i]), 0);
    }
    for (int i = 0; i < NRING; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(ring.passes, NRING * NROUNDS);
}

/* A wait spins for ANYCCL_SPIN_COUNT polls or about 100 us, whichever ends first (a poll of a
 * socket connector costs a system call: 2000 of them held a core for milliseconds). With 2^30
 * polls the count alone would keep spinning for tens of seconds, past this test's timeout. */
Test(backoff, spin_phase_ends_after_its_time_cap)
{
    setenv("ANYCCL_SPIN_COUNT", "1073741824", 1);
    ac_config_reload();
    struct ac_backoff b = {0};
    uint64_t polls = 0;
    do {
        ac_backoff_idle(&b);
        polls++;
    } while (ac_backoff_is_spinning(&b));
    cr_expect_lt(polls, UINT64_C(1) << 30);
}
