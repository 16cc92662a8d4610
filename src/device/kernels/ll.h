/* The low-latency protocols, written once for the host build (shared-memory transport) and the
 * GPU builds: the receiver learns that data has arrived from the data itself, with no separate
 * "slot posted" counter to read first, which saves one cache-line (or PCIe) round trip per
 * message.
 *
 * LL: every 8-byte word carries 4 bytes of data and a 4-byte flag, written with one 64-bit store,
 * so a reader that sees the flag sees its data (half the bandwidth: for small messages).
 *   word 0: size | flag << 32    word 1: tag | flag << 32    words 2..: 4 payload bytes each
 * LL128: 128-byte lines of 15 data words and a flag word stored after them with release order;
 * a reader that acquires the flag sees the line (15/16 of the bandwidth).
 *   line 0: word 0 = size | tag << 32, words 1..14 payload; lines 1..: words 0..14 payload
 * flag: a value the slot has never held before (the transport passes its post count + 1), so no
 * slot needs clearing between uses. Each protocol has slot memory of its own: stale bytes of
 * another protocol could otherwise look like a valid flag.
 *
 * Host functions run in one thread (tid 0, nthreads 1); GPU kernels pass their thread index and
 * count, and each thread handles the words i = tid, tid + nthreads, ... */
#ifndef AC_DEVICE_KERNELS_LL_H
#define AC_DEVICE_KERNELS_LL_H

#include "device/kernels/compat.h"

#include <stdint.h>
#include <string.h>

/* The protocols (NCCL_PROTO names them Simple, LL, LL128). */
enum ac_proto {
    AC_PROTO_SIMPLE, /* a counter says the slot is posted, then the payload is read */
    AC_PROTO_LL,
    AC_PROTO_LL128,
    AC_PROTO_COUNT,
};

/* Most payload bytes one slot carries in each protocol (the transport sizes its slot memory from
 * these, and the planner cuts steps to fit). */
#define AC_LL_MAX_BYTES 4096u
#define AC_LL128_MAX_BYTES (16u * 1024)
#define AC_LL_HEADER_WORDS 2u
#define AC_LL128_LINE_WORDS 16u
#define AC_LL128_DATA_WORDS 15u
#define AC_LL128_LINE_BYTES 128u

/* Device builds: volatile 64-bit accesses are single instructions (st.volatile.u64); the LL128
 * flag is ordered after its line by a system-scope fence, since the reader may be the host or a
 * peer GPU. Host build: relaxed atomics for single-copy 64-bit accesses, release/acquire for the
 * LL128 flag. */
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define AC_LL_STORE(p, v) (*(volatile uint64_t *)(p) = (v))
#define AC_LL_LOAD(p) (*(const volatile uint64_t *)(p))
#define AC_LL_STORE_RELEASE(p, v) (__threadfence_system(), *(volatile uint64_t *)(p) = (v))
#define AC_LL_LOAD_ACQUIRE(p) ac_ll_load_acquire_dev(p)
__device__ inline uint64_t ac_ll_load_acquire_dev(const uint64_t *p)
{
    uint64_t v = *(const volatile uint64_t *)p;
    __threadfence_system();
    return v;
}
#else
#define AC_LL_STORE(p, v) __atomic_store_n((uint64_t *)(p), (uint64_t)(v), __ATOMIC_RELAXED)
#define AC_LL_LOAD(p) __atomic_load_n((const uint64_t *)(p), __ATOMIC_RELAXED)
#define AC_LL_STORE_RELEASE(p, v)                                                                  \
    __atomic_store_n((uint64_t *)(p), (uint64_t)(v), __ATOMIC_RELEASE)
#define AC_LL_LOAD_ACQUIRE(p) __atomic_load_n((const uint64_t *)(p), __ATOMIC_ACQUIRE)
#endif

/* ---- LL ---- */

/* Words of an LL slot that carries `bytes` of payload, header included. */
AC_DEVFN uint32_t ac_ll_words(uint32_t bytes)
{
    return AC_LL_HEADER_WORDS + (bytes + 3) / 4;
}

/* Slot bytes LL needs for a payload of `bytes`. */
AC_DEVFN uint32_t ac_ll_slot_bytes(uint32_t bytes)
{
    return ac_ll_words(bytes) * 8u;
}

AC_DEVFN uint64_t ac_ll_word(uint32_t data, uint32_t flag)
{
    return (uint64_t)data | (uint64_t)flag << 32;
}

/* The last, partial payload word (bytes % 4 != 0), zero-padded. Fixed-size copies elsewhere:
 * a copy of variable length is a library call per word. */
AC_DEVFN uint32_t ac_ll_tail_word(const char *src, uint32_t bytes)
{
    uint32_t v = 0, off = bytes & ~3u;
    for (uint32_t b = 0; off + b < bytes; b++)
        v |= (uint32_t)(unsigned char)src[off + b] << (8 * b);
    return v;
}

AC_DEVFN void ac_ll_pack(uint64_t *slot, const void *src, uint32_t bytes, uint32_t tag,
                         uint32_t flag, uint32_t tid, uint32_t nthreads)
{
    const char *s = (const char *)src;
    uint32_t nfull = bytes / 4, n = (bytes + 3) / 4;
    for (uint32_t i = tid; i < n; i += nthreads) {
        uint32_t v;
        if (i < nfull)
            memcpy(&v, s + 4 * i, 4);
        else
            v = ac_ll_tail_word(s, bytes);
        AC_LL_STORE(&slot[AC_LL_HEADER_WORDS + i], ac_ll_word(v, flag));
    }
    if (tid == 0) {
        AC_LL_STORE(&slot[1], ac_ll_word(tag, flag));
        AC_LL_STORE(&slot[0], ac_ll_word(bytes, flag));
    }
}

/* The header, when it has arrived: returns 1 and the size and tag, else 0. */
AC_DEVFN int ac_ll_header(const uint64_t *slot, uint32_t flag, uint32_t *bytes_out,
                          uint32_t *tag_out)
{
    uint64_t w0 = AC_LL_LOAD(&slot[0]);
    if ((uint32_t)(w0 >> 32) != flag)
        return 0;
    uint64_t w1 = AC_LL_LOAD(&slot[1]);
    if ((uint32_t)(w1 >> 32) != flag)
        return 0;
    *bytes_out = (uint32_t)w0;
    *tag_out = (uint32_t)w1;
    return 1;
}

/* Host polling: copies payload words from word `from` (0-based, after the header) while they
 * have arrived; returns the index of the first missing word (the payload's word count when all
 * are there), so that the next poll resumes there. */
AC_DEVFN uint32_t ac_ll_unpack_from(void *dst, const uint64_t *slot, uint32_t bytes, uint32_t flag,
                                    uint32_t from)
{
    uint32_t nfull = bytes / 4, n = (bytes + 3) / 4;
    char *d = (char *)dst;
    for (uint32_t i = from; i < n; i++) {
        uint64_t w = AC_LL_LOAD(&slot[AC_LL_HEADER_WORDS + i]);
        if ((uint32_t)(w >> 32) != flag)
            return i;
        uint32_t v = (uint32_t)w;
        if (i < nfull) {
            memcpy(d + 4 * i, &v, 4);
        } else {
            for (uint32_t b = 0; 4 * i + b < bytes; b++)
                d[4 * i + b] = (char)(v >> (8 * b));
        }
    }
    return n;
}

/* ---- LL128 ---- */

AC_DEVFN uint32_t ac_ll128_lines(uint32_t bytes)
{
    /* 8 header bytes, then payload, 120 bytes per line */
    return (8u + bytes + AC_LL128_DATA_WORDS * 8u - 1) / (AC_LL128_DATA_WORDS * 8u);
}

AC_DEVFN uint32_t ac_ll128_slot_bytes(uint32_t bytes)
{
    return ac_ll128_lines(bytes) * AC_LL128_LINE_BYTES;
}

/* Where line l's payload starts in the user's bytes, and in which word of the line (line 0
 * starts with the header word). */
AC_DEVFN uint32_t ac_ll128_line_off(uint32_t l)
{
    return l == 0 ? 0 : l * AC_LL128_DATA_WORDS * 8u - 8u;
}

/* Each line is one thread's in the device build (the flag must follow that line's data). The
 * data words need no atomicity: the reader touches them only after acquiring the flag, and the
 * slot is not written again before the reader releases it. Bytes past the payload in the last
 * line are left as they were (the reader ignores them). */
AC_DEVFN void ac_ll128_pack(uint64_t *slot, const void *src, uint32_t bytes, uint32_t tag,
                            uint64_t flag, uint32_t tid, uint32_t nthreads)
{
    uint32_t lines = ac_ll128_lines(bytes);
    for (uint32_t l = tid; l < lines; l += nthreads) {
        uint64_t *line = slot + (size_t)l * AC_LL128_LINE_WORDS;
        uint32_t off = ac_ll128_line_off(l), w0 = l == 0 ? 1u : 0u;
        uint32_t room = (AC_LL128_DATA_WORDS - w0) * 8u;
        uint32_t n = off >= bytes ? 0 : bytes - off < room ? bytes - off : room;
        if (l == 0)
            line[0] = (uint64_t)bytes | (uint64_t)tag << 32;
        if (n == AC_LL128_DATA_WORDS * 8u)
            memcpy(&line[0], (const char *)src + off, AC_LL128_DATA_WORDS * 8u);
        else if (n > 0)
            memcpy(&line[w0], (const char *)src + off, n);
        AC_LL_STORE_RELEASE(&line[AC_LL128_DATA_WORDS], flag);
    }
}

AC_DEVFN int ac_ll128_header(const uint64_t *slot, uint64_t flag, uint32_t *bytes_out,
                             uint32_t *tag_out)
{
    if (AC_LL_LOAD_ACQUIRE(&slot[AC_LL128_DATA_WORDS]) != flag)
        return 0;
    uint64_t h = AC_LL_LOAD(&slot[0]);
    *bytes_out = (uint32_t)h;
    *tag_out = (uint32_t)(h >> 32);
    return 1;
}

/* Host polling, as ac_ll_unpack_from but by lines: returns the first line not yet there
 * (ac_ll128_lines(bytes) when complete). */
AC_DEVFN uint32_t ac_ll128_unpack_from(void *dst, const uint64_t *slot, uint32_t bytes,
                                       uint64_t flag, uint32_t from)
{
    uint32_t lines = ac_ll128_lines(bytes);
    for (uint32_t l = from; l < lines; l++) {
        const uint64_t *line = slot + (size_t)l * AC_LL128_LINE_WORDS;
        if (AC_LL_LOAD_ACQUIRE(&line[AC_LL128_DATA_WORDS]) != flag)
            return l;
        uint32_t off = ac_ll128_line_off(l), w0 = l == 0 ? 1u : 0u;
        uint32_t room = (AC_LL128_DATA_WORDS - w0) * 8u;
        uint32_t n = off >= bytes ? 0 : bytes - off < room ? bytes - off : room;
        if (n == AC_LL128_DATA_WORDS * 8u)
            memcpy((char *)dst + off, &line[0], AC_LL128_DATA_WORDS * 8u);
        else if (n > 0)
            memcpy((char *)dst + off, &line[w0], n);
    }
    return lines;
}

#endif
