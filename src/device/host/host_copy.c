/* Copies into the user's buffers. Large results are written with non-temporal stores: they are
 * not read again soon by this rank, and regular stores would first read every destination line
 * (write-allocate), which costs a third of a core's memory bandwidth here. Copies into connector
 * slots are plain memcpy (the peer reads them next, from cache), except where the executor
 * knows the peer's core still holds the slot's lines (ac_kern_copy_stream, src/core/exec.c). */
#include "device/kernels/reduce.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

/* Below this size the destination likely stays in cache for the caller: keep regular stores. */
#define STREAM_MIN_BYTES (256 * 1024)

__attribute__((target("avx2"))) static void copy_stream_avx2(char *d, const char *s, size_t n)
{
    size_t head = (size_t)(-(uintptr_t)d & 31);
    if (head > n)
        head = n;
    memcpy(d, s, head);
    size_t i = head;
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + i + 64));
        __m256i e = _mm256_loadu_si256((const __m256i *)(s + i + 96));
        _mm256_stream_si256((__m256i *)(d + i), a);
        _mm256_stream_si256((__m256i *)(d + i + 32), b);
        _mm256_stream_si256((__m256i *)(d + i + 64), c);
        _mm256_stream_si256((__m256i *)(d + i + 96), e);
    }
    _mm_sfence(); /* streamed stores are weakly ordered: publish them before returning */
    memcpy(d + i, s + i, n - i);
}

static int has_avx2(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
}

void ac_kern_copy_out_part(void *dst, const void *src, size_t bytes, size_t whole_bytes)
{
    if (dst == src)
        return;
    if (whole_bytes >= STREAM_MIN_BYTES && has_avx2())
        copy_stream_avx2(dst, src, bytes);
    else
        memmove(dst, src, bytes);
}

void ac_kern_copy_stream(void *dst, const void *src, size_t bytes)
{
    if (has_avx2())
        copy_stream_avx2(dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}
#else
void ac_kern_copy_out_part(void *dst, const void *src, size_t bytes, size_t whole_bytes)
{
    if (dst != src)
        memmove(dst, src, bytes);
}

void ac_kern_copy_stream(void *dst, const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
}
#endif

void ac_kern_copy_out(void *dst, const void *src, size_t bytes)
{
    ac_kern_copy_out_part(dst, src, bytes, bytes);
}

void ac_kern_copy_user(void *dst, const void *src, size_t bytes)
{
    uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    if (dst == src || bytes == 0)
        return;
    if (d < s + bytes && s < d + bytes)
        memmove(dst, src, bytes);
    else
        ac_kern_copy_out(dst, src, bytes);
}
