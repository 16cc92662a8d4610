/* The LL and LL128 slot formats (src/device/kernels/ll.h), host build: every payload size from 0
 * to a few lines and the largest, round trips byte for byte, the header (size and tag), a reader
 * that must not accept words or lines of an earlier use of the slot (older flags), resuming where
 * data stopped arriving, several "threads" packing one slot as a GPU kernel would, and bytes past
 * the payload left untouched in the reader's buffer. */
#include "device/kernels/ll.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}

#define SLOT_WORDS (AC_LL128_MAX_BYTES / 8 * 2)
#define GUARD 0x5a

static uint64_t slot[SLOT_WORDS];
static unsigned char src[AC_LL128_MAX_BYTES], dst[AC_LL128_MAX_BYTES + 64];

static void fill(uint32_t seed)
{
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (unsigned char)(i * 131u + seed * 7u + (i >> 8));
}

static void check_roundtrip(enum ac_proto proto, uint32_t bytes, uint32_t nthreads)
{
    uint32_t tag = 0x80000000u | bytes, flag = 1000 + bytes, got_bytes = 0, got_tag = 0;
    memset(dst, GUARD, sizeof(dst));
    for (uint32_t t = 0; t < nthreads; t++) {
        if (proto == AC_PROTO_LL)
            ac_ll_pack(slot, src, bytes, tag, flag, t, nthreads);
        else
            ac_ll128_pack(slot, src, bytes, tag, flag, t, nthreads);
    }
    if (proto == AC_PROTO_LL) {
        cr_assert(ac_ll_header(slot, flag, &got_bytes, &got_tag));
        cr_assert_eq(ac_ll_unpack_from(dst, slot, bytes, flag, 0), (bytes + 3) / 4);
        cr_assert(!ac_ll_header(slot, flag + 1, &got_bytes, &got_tag), "a newer flag matched");
    } else {
        cr_assert(ac_ll128_header(slot, flag, &got_bytes, &got_tag));
        cr_assert_eq(ac_ll128_unpack_from(dst, slot, bytes, flag, 0), ac_ll128_lines(bytes));
    }
    cr_assert_eq(got_bytes, bytes);
    cr_assert_eq(got_tag, tag);
    cr_assert(memcmp(dst, src, bytes) == 0, "payload of %u bytes differs (%s, %u threads)", bytes,
              proto == AC_PROTO_LL ? "LL" : "LL128", nthreads);
    for (uint32_t i = bytes; i < bytes + 64; i++)
        cr_assert_eq(dst[i], GUARD, "byte %u past a %u-byte payload was written", i, bytes);
}

Test(ll, roundtrip_every_small_size)
{
    fill(1);
    for (uint32_t bytes = 0; bytes <= 600; bytes++) {
        check_roundtrip(AC_PROTO_LL, bytes, 1);
        check_roundtrip(AC_PROTO_LL128, bytes, 1);
    }
}

Test(ll, roundtrip_largest_and_threaded)
{
    static const uint32_t sizes[] = {AC_LL_MAX_BYTES - 1, AC_LL_MAX_BYTES};
    fill(2);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (uint32_t nt = 1; nt <= 5; nt += 2)
            check_roundtrip(AC_PROTO_LL, sizes[i], nt);
    static const uint32_t sizes128[] = {119, 120, 121, 232, 240, AC_LL128_MAX_BYTES - 3,
                                        AC_LL128_MAX_BYTES};
    for (size_t i = 0; i < sizeof(sizes128) / sizeof(sizes128[0]); i++)
        for (uint32_t nt = 1; nt <= 5; nt += 2)
            check_roundtrip(AC_PROTO_LL128, sizes128[i], nt);
}

Test(ll, sizes_of_slots)
{
    cr_assert_eq(ac_ll_slot_bytes(0), 16);
    cr_assert_eq(ac_ll_slot_bytes(1), 24);
    cr_assert_eq(ac_ll_slot_bytes(4), 24);
    cr_assert_eq(ac_ll_slot_bytes(5), 32);
    cr_assert_eq(ac_ll128_lines(0), 1);
    cr_assert_eq(ac_ll128_lines(112), 1); /* line 0: 8 header bytes + 112 */
    cr_assert_eq(ac_ll128_lines(113), 2);
    cr_assert_eq(ac_ll128_lines(232), 2);
    cr_assert_eq(ac_ll128_lines(233), 3);
    cr_assert_eq(ac_ll128_slot_bytes(AC_LL128_MAX_BYTES) % AC_LL128_LINE_BYTES, 0);
}

/* A slot used before with flag f holds stale data; a reader of use f + 1 waits for every word. */
Test(ll, stale_words_are_not_accepted_and_reading_resumes)
{
    const uint32_t bytes = 100, n = (bytes + 3) / 4;
    fill(3);
    ac_ll_pack(slot, src, bytes, 7, 41, 0, 1); /* the previous use */
    fill(4);
    uint32_t got_bytes, got_tag;
    cr_assert(!ac_ll_header(slot, 42, &got_bytes, &got_tag));
    cr_assert_eq(ac_ll_unpack_from(dst, slot, bytes, 42, 0), 0);
    /* the writer of use 42 gets halfway: payload words 0..9 only */
    for (uint32_t i = 0; i < 10; i++) {
        uint32_t v;
        memcpy(&v, src + 4 * i, 4);
        slot[AC_LL_HEADER_WORDS + i] = ac_ll_word(v, 42);
    }
    cr_assert_eq(ac_ll_unpack_from(dst, slot, bytes, 42, 0), 10);
    ac_ll_pack(slot, src, bytes, 9, 42, 0, 1);
    cr_assert(ac_ll_header(slot, 42, &got_bytes, &got_tag));
    cr_assert_eq(got_tag, 9);
    cr_assert_eq(ac_ll_unpack_from(dst, slot, bytes, 42, 10), n);
    cr_assert(memcmp(dst, src, bytes) == 0);
}

Test(ll128, stale_lines_are_not_accepted_and_reading_resumes)
{
    const uint32_t bytes = 500, lines = ac_ll128_lines(bytes);
    uint32_t got_bytes, got_tag;
    fill(5);
    ac_ll128_pack(slot, src, bytes, 7, 41, 0, 1);
    fill(6);
    cr_assert(!ac_ll128_header(slot, 42, &got_bytes, &got_tag));
    /* lines 0 and 2 of use 42 arrive (line 1 not yet): the reader stops at line 1 */
    ac_ll128_pack(slot, src, bytes, 8, 42, 0, 2); /* lines 0, 2, 4 */
    cr_assert(ac_ll128_header(slot, 42, &got_bytes, &got_tag));
    cr_assert_eq(got_bytes, bytes);
    cr_assert_eq(got_tag, 8);
    cr_assert_eq(ac_ll128_unpack_from(dst, slot, bytes, 42, 0), 1);
    ac_ll128_pack(slot, src, bytes, 8, 42, 1, 2); /* lines 1, 3 */
    cr_assert_eq(ac_ll128_unpack_from(dst, slot, bytes, 42, 1), lines);
    cr_assert(memcmp(dst, src, bytes) == 0);
}
