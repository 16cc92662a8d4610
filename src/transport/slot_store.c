#include "transport/slot_store.h"

/* Plain until both stores have been measured. */
static enum ac_store cheaper(const struct ac_slot_stores *s, enum ac_store_kind kind)
{
    float plain = s->ns_per_kib[kind][AC_STORE_PLAIN];
    float stream = s->ns_per_kib[kind][AC_STORE_STREAM];
    return plain > 0 && stream > 0 && plain > AC_SLOT_STREAM_GAIN * stream ? AC_STORE_STREAM
                                                                           : AC_STORE_PLAIN;
}

enum ac_store ac_slot_store_pick(const struct ac_slot_stores *s, enum ac_store_kind kind,
                                 uint64_t now_ns, uint32_t warmup, enum ac_store warmup_store,
                                 bool *is_probe)
{
    if (s->nwrites < warmup) {
        *is_probe = false;
        return warmup_store;
    }
    enum ac_store use = cheaper(s, kind);
    enum ac_store other = use == AC_STORE_PLAIN ? AC_STORE_STREAM : AC_STORE_PLAIN;
    *is_probe = s->ns_per_kib[kind][other] == 0 ||
                now_ns - s->measured_ns[kind][other] >= AC_SLOT_STORE_RECHECK_NS;
    return *is_probe ? other : use;
}

/* A probe replaces what was known of its store (measured a phase ago, maybe); the store in use
 * follows a running average that one slow write (the sender preempted) moves by at most 75 %. */
void ac_slot_store_note(struct ac_slot_stores *s, enum ac_store_kind kind, enum ac_store store,
                        bool is_probe, uint64_t bytes, uint64_t elapsed_ns, uint64_t now_ns,
                        uint32_t warmup)
{
    if (s->nwrites < warmup) {
        s->nwrites++;
        return;
    }
    if (bytes == 0)
        return;
    float x = (float)elapsed_ns * 1024.0f / (float)bytes;
    if (x <= 0)
        x = 1e-3f; /* a clock too coarse to see the write: as good as free */
    float *est = &s->ns_per_kib[kind][store];
    if (is_probe || *est == 0)
        *est = x;
    else
        *est += ((x < 4 * *est ? x : 4 * *est) - *est) / 4;
    s->measured_ns[kind][store] = now_ns;
}
