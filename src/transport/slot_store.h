/* How a sender writes large chunks into slots that the receiver reads with its own core (shared
 * memory): with plain stores, or with non-temporal (streaming) ones that leave no line in the
 * writer's cache. Which is faster depends on where the host runs the two cores, and that changes
 * as the ranks run, so the sender measures its writes and takes the store that has cost it less.
 *
 * When the two cores share a cache, plain stores reclaim the lines the receiver read about as
 * fast as streaming writes memory, and the receiver then reads the slot from that cache; at times
 * (for seconds to minutes) the host runs them apart, and each line reclaimed costs a round trip
 * between them. Two processes passing 512 KiB back and forth through shared memory on this
 * project's 2-vCPU machine wrote it in 22-29 us with plain stores and 21-28 with streamed ones in
 * the first case, in 215-224 us against 20-22 in the second (the reads took 14 us, and 25-31).
 * So streaming is used only where plain stores cost AC_SLOT_STREAM_GAIN times more, and the store
 * not in use is measured again every AC_SLOT_STORE_RECHECK_NS: a phase change is seen within that
 * time, at the cost of one chunk with the slower store. */
#ifndef AC_TRANSPORT_SLOT_STORE_H
#define AC_TRANSPORT_SLOT_STORE_H

#include <stdbool.h>
#include <stdint.h>

#define AC_SLOT_STREAM_GAIN 2.0f
#define AC_SLOT_STORE_RECHECK_NS (50ull * 1000 * 1000)

enum ac_store { AC_STORE_PLAIN, AC_STORE_STREAM };
/* A reduction computed into the slot adds the same time to both stores: its writes are compared
 * with each other only. */
enum ac_store_kind { AC_STORE_COPY, AC_STORE_COMPUTED };

/* Per sending connector, zeroed at creation. */
struct ac_slot_stores {
    float ns_per_kib[2][2];     /* [kind][store]; 0: not measured yet */
    uint64_t measured_ns[2][2]; /* when */
    uint32_t nwrites;           /* writes seen, the first ones not counted */
};

/* The store for the next write of this kind; *is_probe: it measures the store not in use. The
 * connector's first `warmup` writes, which are not measured, use warmup_store. */
enum ac_store ac_slot_store_pick(const struct ac_slot_stores *s, enum ac_store_kind kind,
                                 uint64_t now_ns, uint32_t warmup, enum ac_store warmup_store,
                                 bool *is_probe);
/* Records a write of `bytes` that took elapsed_ns with `store`, as picked (is_probe). The first
 * `warmup` writes of a connector only count: they fault its slots' pages in. */
void ac_slot_store_note(struct ac_slot_stores *s, enum ac_store_kind kind, enum ac_store store,
                        bool is_probe, uint64_t bytes, uint64_t elapsed_ns, uint64_t now_ns,
                        uint32_t warmup);

#endif
