/* RAS wire format v1: bounded little-endian encoding, message header, HELLO (authenticated with
 * HMAC-SHA256 over the job key), progress records. Nothing here does I/O. */
#include "ras/ras_wire.h"

#include <string.h>

void ac_ras_buf_init(struct ac_ras_buf *b, void *p, size_t len)
{
    b->p = p;
    b->len = len;
    b->pos = 0;
    b->has_failed = false;
}

/* Reserves n bytes; NULL (and has_failed) when they do not fit. */
static uint8_t *take(struct ac_ras_buf *b, size_t n)
{
    if (b->has_failed || n > b->len - b->pos) {
        b->has_failed = true;
        return NULL;
    }
    uint8_t *at = b->p + b->pos;
    b->pos += n;
    return at;
}

static void put_le(struct ac_ras_buf *b, uint64_t v, int n)
{
    uint8_t *at = take(b, (size_t)n);
    for (int i = 0; at && i < n; i++)
        at[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(struct ac_ras_buf *b, int n)
{
    const uint8_t *at = take(b, (size_t)n);
    uint64_t v = 0;
    for (int i = 0; at && i < n; i++)
        v |= (uint64_t)at[i] << (8 * i);
    return v;
}

void ac_ras_put_u8(struct ac_ras_buf *b, uint8_t v)
{
    put_le(b, v, 1);
}
void ac_ras_put_u16(struct ac_ras_buf *b, uint16_t v)
{
    put_le(b, v, 2);
}
void ac_ras_put_u32(struct ac_ras_buf *b, uint32_t v)
{
    put_le(b, v, 4);
}
void ac_ras_put_u64(struct ac_ras_buf *b, uint64_t v)
{
    put_le(b, v, 8);
}
uint8_t ac_ras_get_u8(struct ac_ras_buf *b)
{
    return (uint8_t)get_le(b, 1);
}
uint16_t ac_ras_get_u16(struct ac_ras_buf *b)
{
    return (uint16_t)get_le(b, 2);
}
uint32_t ac_ras_get_u32(struct ac_ras_buf *b)
{
    return (uint32_t)get_le(b, 4);
}
uint64_t ac_ras_get_u64(struct ac_ras_buf *b)
{
    return get_le(b, 8);
}

void ac_ras_put_bytes(struct ac_ras_buf *b, const void *p, size_t n)
{
    uint8_t *at = take(b, n);
    if (at && n)
        memcpy(at, p, n);
}

void ac_ras_get_bytes(struct ac_ras_buf *b, void *p, size_t n)
{
    const uint8_t *at = take(b, n);
    if (at && n)
        memcpy(p, at, n);
    else if (n)
        memset(p, 0, n);
}

void ac_ras_hdr_encode(const struct ac_ras_hdr *h, uint8_t out[AC_RAS_HDR_BYTES])
{
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, out, AC_RAS_HDR_BYTES);
    ac_ras_put_u32(&b, h->magic);
    ac_ras_put_u16(&b, h->version);
    ac_ras_put_u16(&b, h->type);
    ac_ras_put_u32(&b, h->length);
    ac_ras_put_u32(&b, h->seq);
    ac_ras_put_u32(&b, h->sender);
    ac_ras_put_u32(&b, h->reserved);
}

bool ac_ras_hdr_decode(const uint8_t in[AC_RAS_HDR_BYTES], struct ac_ras_hdr *h_out,
                       const char **why_out)
{
    struct ac_ras_buf b;
    struct ac_ras_hdr h;
    ac_ras_buf_init(&b, (void *)in, AC_RAS_HDR_BYTES);
    h.magic = ac_ras_get_u32(&b);
    h.version = ac_ras_get_u16(&b);
    h.type = ac_ras_get_u16(&b);
    h.length = ac_ras_get_u32(&b);
    h.seq = ac_ras_get_u32(&b);
    h.sender = ac_ras_get_u32(&b);
    h.reserved = ac_ras_get_u32(&b);
    if (h.magic != AC_RAS_MAGIC)
        *why_out = "bad magic (not an AnyCCL RAS peer)";
    else if (h.version != AC_RAS_VERSION)
        *why_out = "unsupported wire version";
    else if (h.length > AC_RAS_MAX_PAYLOAD)
        *why_out = "payload length above 1 MiB";
    else {
        *h_out = h;
        return true;
    }
    return false;
}

void ac_ras_addr_put(struct ac_ras_buf *b, const struct ac_ras_addr *a)
{
    ac_ras_put_u8(b, a->family);
    ac_ras_put_u8(b, 0);
    ac_ras_put_bytes(b, a->ip, sizeof(a->ip));
    ac_ras_put_u16(b, a->port);
    ac_ras_put_u32(b, a->pid);
}

void ac_ras_addr_get(struct ac_ras_buf *b, struct ac_ras_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->family = ac_ras_get_u8(b);
    (void)ac_ras_get_u8(b);
    ac_ras_get_bytes(b, a->ip, sizeof(a->ip));
    a->port = ac_ras_get_u16(b);
    a->pid = ac_ras_get_u32(b);
    if (a->family != 0 && a->family != 4 && a->family != 6)
        b->has_failed = true;
}

bool ac_ras_addr_equal(const struct ac_ras_addr *a, const struct ac_ras_addr *b)
{
    return a->family == b->family && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

#define HELLO_SIGNED_BYTES (8 + AC_RAS_NONCE_BYTES + AC_RAS_ADDR_BYTES)

void ac_ras_hello_encode(struct ac_ras_buf *b, struct ac_ras_hello *h, const uint8_t *key,
                         size_t key_len)
{
    size_t start = b->pos;
    ac_ras_put_u64(b, h->key_id);
    ac_ras_put_bytes(b, h->nonce, AC_RAS_NONCE_BYTES);
    ac_ras_addr_put(b, &h->from);
    if (b->has_failed)
        return;
    uint8_t mac[32];
    ac_ras_hmac_sha256(key, key_len, b->p + start, b->pos - start, mac);
    memcpy(h->mac, mac, AC_RAS_MAC_BYTES);
    ac_ras_put_bytes(b, h->mac, AC_RAS_MAC_BYTES);
}

bool ac_ras_hello_decode(struct ac_ras_buf *b, struct ac_ras_hello *h_out)
{
    h_out->key_id = ac_ras_get_u64(b);
    ac_ras_get_bytes(b, h_out->nonce, AC_RAS_NONCE_BYTES);
    ac_ras_addr_get(b, &h_out->from);
    ac_ras_get_bytes(b, h_out->mac, AC_RAS_MAC_BYTES);
    return !b->has_failed && h_out->from.family != 0;
}

bool ac_ras_hello_verify(const struct ac_ras_hello *h, const uint8_t *key, size_t key_len)
{
    uint8_t signed_part[HELLO_SIGNED_BYTES], mac[32];
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, signed_part, sizeof(signed_part));
    ac_ras_put_u64(&b, h->key_id);
    ac_ras_put_bytes(&b, h->nonce, AC_RAS_NONCE_BYTES);
    ac_ras_addr_put(&b, &h->from);
    ac_ras_hmac_sha256(key, key_len, signed_part, b.pos, mac);
    uint8_t diff = 0;
    for (int i = 0; i < AC_RAS_MAC_BYTES; i++)
        diff |= (uint8_t)(mac[i] ^ h->mac[i]);
    return diff == 0;
}

uint64_t ac_ras_key_id(const uint8_t *key, size_t key_len)
{
    uint8_t buf[64 + 14], out[32];
    size_t n = key_len < 64 ? key_len : 64;
    memcpy(buf, "anyccl-ras-key", 14);
    memcpy(buf + 14, key, n);
    ac_ras_sha256(buf, 14 + n, out);
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id |= (uint64_t)out[i] << (8 * i);
    return id;
}

void ac_ras_records_put(struct ac_ras_buf *b, const struct ac_ras_record *r, uint32_t n)
{
    ac_ras_put_u32(b, n);
    for (uint32_t i = 0; i < n; i++) {
        ac_ras_put_u64(b, r[i].comm_hash);
        ac_ras_put_u32(b, r[i].nranks);
        ac_ras_put_u32(b, r[i].rank);
        ac_ras_put_u64(b, r[i].nenqueued);
        ac_ras_put_u64(b, r[i].nstarted);
        ac_ras_put_u64(b, r[i].nfinished);
        ac_ras_put_u32(b, (uint32_t)r[i].cur_coll);
        ac_ras_put_u32(b, r[i].cur_age_ms);
        ac_ras_put_u32(b, (uint32_t)r[i].last_error);
        ac_ras_put_u32(b, r[i].flags);
    }
}

bool ac_ras_records_get(struct ac_ras_buf *b, struct ac_ras_record *r_out, uint32_t max,
                        uint32_t *n_out)
{
    uint32_t n = ac_ras_get_u32(b);
    if (b->has_failed || n > max || n > ac_ras_buf_left(b) / AC_RAS_RECORD_BYTES)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        struct ac_ras_record *r = &r_out[i];
        r->comm_hash = ac_ras_get_u64(b);
        r->nranks = ac_ras_get_u32(b);
        r->rank = ac_ras_get_u32(b);
        r->nenqueued = ac_ras_get_u64(b);
        r->nstarted = ac_ras_get_u64(b);
        r->nfinished = ac_ras_get_u64(b);
        r->cur_coll = (int32_t)ac_ras_get_u32(b);
        r->cur_age_ms = ac_ras_get_u32(b);
        r->last_error = (int32_t)ac_ras_get_u32(b);
        r->flags = ac_ras_get_u32(b);
        if (r->nranks > (1u << 20) || r->rank >= r->nranks || r->nstarted > r->nenqueued ||
            r->nfinished > r->nstarted)
            return false;
    }
    *n_out = n;
    return !b->has_failed;
}

/* ---- SHA-256 ---- */

static const uint32_t k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

struct sha256 {
    uint32_t h[8];
    uint8_t block[64];
    size_t nblock;
    uint64_t total;
};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha_compress(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof(v));
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + k256[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof(v[0]));
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->nblock = 0;
    s->total = 0;
}

static void sha_update(struct sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->total += len;
    while (len > 0) {
        size_t n = 64 - s->nblock < len ? 64 - s->nblock : len;
        memcpy(s->block + s->nblock, p, n);
        s->nblock += n;
        p += n;
        len -= n;
        if (s->nblock == 64) {
            sha_compress(s, s->block);
            s->nblock = 0;
        }
    }
}

static void sha_final(struct sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0, len_be[8];
    sha_update(s, &pad, 1);
    while (s->nblock != 56)
        sha_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len_be[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len_be, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void ac_ras_sha256(const void *data, size_t len, uint8_t out[32])
{
    struct sha256 s;
    sha_init(&s);
    sha_update(&s, data, len);
    sha_final(&s, out);
}

void ac_ras_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                        uint8_t out[32])
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    if (key_len > 64)
        ac_ras_sha256(key, key_len, k);
    else if (key_len)
        memcpy(k, key, key_len);
    struct sha256 s;
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    sha_init(&s);
    sha_update(&s, pad, 64);
    sha_update(&s, data, len);
    sha_final(&s, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    sha_init(&s);
    sha_update(&s, pad, 64);
    sha_update(&s, inner, 32);
    sha_final(&s, out);
}
