/* The choice between plain and streamed stores into peer-read slots: it follows the measured
 * costs, re-measures the store not in use, and one slow write does not flip it. */
#include "transport/slot_store.h"

#include <criterion/criterion.h>

#define KIB 1024ull
#define MS (1000ull * 1000)

struct sim {
    struct ac_slot_stores s;
    uint64_t now;
    unsigned nplain, nstream; /* writes by store, since the last count() */
};

/* One 512 KiB write of `kind` whose cost per store is given in ns per KiB; returns the store. */
static enum ac_store write_one(struct sim *m, enum ac_store_kind kind, float plain, float stream)
{
    bool is_probe;
    enum ac_store st = ac_slot_store_pick(&m->s, kind, m->now, 0, AC_STORE_STREAM, &is_probe);
    uint64_t ns = (uint64_t)((st == AC_STORE_PLAIN ? plain : stream) * 512);
    m->now += ns + 10 * 1000; /* and 10 us between writes */
    ac_slot_store_note(&m->s, kind, st, is_probe, 512 * KIB, ns, m->now, 0);
    if (st == AC_STORE_PLAIN)
        m->nplain++;
    else
        m->nstream++;
    return st;
}

static void run(struct sim *m, int nwrites, float plain, float stream)
{
    m->nplain = m->nstream = 0;
    for (int i = 0; i < nwrites; i++)
        write_one(m, AC_STORE_COMPUTED, plain, stream);
}

Test(slot_store, shared_cache_keeps_plain_stores)
{
    struct sim m = {0};
    run(&m, 5000, 45, 50);
    /* a probe of the streamed store at first, then one per recheck interval */
    uint64_t nprobes = 1 + m.now / AC_SLOT_STORE_RECHECK_NS;
    cr_assert_geq(m.now, 3 * AC_SLOT_STORE_RECHECK_NS, "the run spans several intervals");
    cr_assert_leq(m.nstream, nprobes, "%u streamed writes, %llu probes", m.nstream,
                  (unsigned long long)nprobes);
    cr_assert_eq(write_one(&m, AC_STORE_COMPUTED, 45, 50), AC_STORE_PLAIN);
}

Test(slot_store, cores_apart_switch_to_streaming_within_a_few_writes)
{
    struct sim m = {0};
    run(&m, 100, 45, 50);
    int i = 0;
    while (write_one(&m, AC_STORE_COMPUTED, 430, 42) == AC_STORE_PLAIN)
        cr_assert_lt(++i, 4, "still plain after %d slow writes", i);
    run(&m, 1000, 430, 42);
    cr_assert_gt(m.nstream, 990, "%u of 1000 streamed", m.nstream);
}

Test(slot_store, back_to_plain_after_the_recheck_interval)
{
    struct sim m = {0};
    run(&m, 200, 430, 42);
    cr_assert_eq(write_one(&m, AC_STORE_COMPUTED, 430, 42), AC_STORE_STREAM);
    uint64_t since = m.now;
    while (write_one(&m, AC_STORE_COMPUTED, 45, 50) == AC_STORE_STREAM)
        cr_assert_leq(m.now - since, AC_SLOT_STORE_RECHECK_NS + MS, "still streaming");
    run(&m, 500, 45, 50);
    cr_assert_gt(m.nplain, 480);
}

Test(slot_store, one_slow_write_does_not_flip)
{
    struct sim m = {0};
    run(&m, 100, 45, 50);
    /* preempted in the middle of one plain write: 100x its cost, once */
    write_one(&m, AC_STORE_COMPUTED, 4500, 50);
    run(&m, 20, 45, 50);
    cr_assert_eq(m.nstream, 0, "%u streamed writes after one outlier", m.nstream);
}

Test(slot_store, kinds_are_measured_apart)
{
    struct sim m = {0};
    /* reductions cost more per byte than copies with either store: no reason to stream */
    for (int i = 0; i < 200; i++) {
        write_one(&m, AC_STORE_COPY, 25, 28);
        write_one(&m, AC_STORE_COMPUTED, 70, 75);
    }
    cr_assert_eq(write_one(&m, AC_STORE_COPY, 25, 28), AC_STORE_PLAIN);
    cr_assert_eq(write_one(&m, AC_STORE_COMPUTED, 70, 75), AC_STORE_PLAIN);
}

Test(slot_store, first_writes_only_count)
{
    struct ac_slot_stores s = {0};
    bool is_probe;
    /* page faults: slow, and not taken for the store's cost */
    for (int i = 0; i < 8; i++) {
        enum ac_store want = i % 2 ? AC_STORE_PLAIN : AC_STORE_STREAM;
        enum ac_store st = ac_slot_store_pick(&s, AC_STORE_COPY, 0, 8, want, &is_probe);
        cr_assert_eq(st, want, "write %d of the warm-up", i);
        cr_assert(!is_probe);
        ac_slot_store_note(&s, AC_STORE_COPY, st, is_probe, 512 * KIB, 5 * MS, 0, 8);
    }
    cr_assert_eq(s.ns_per_kib[AC_STORE_COPY][AC_STORE_PLAIN], 0);
    cr_assert_eq(s.ns_per_kib[AC_STORE_COPY][AC_STORE_STREAM], 0);
}
