/* RAS wire format v1: header and payload encoding, bounds checks on every field, HELLO MACs,
 * progress records; SHA-256 and HMAC-SHA256 against the published test vectors. */
#include "ras/ras_wire.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

Test(ras_wire, sha256_vectors, .timeout = 10)
{
    uint8_t d[32];
    char h[65];
    ac_ras_sha256("abc", 3, d);
    hex(d, 32, h);
    cr_expect_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ac_ras_sha256("", 0, d);
    hex(d, 32, h);
    cr_expect_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits */
    ac_ras_sha256(two, strlen(two), d);
    hex(d, 32, h);
    cr_expect_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(ras_wire, hmac_rfc4231_case2, .timeout = 10)
{
    uint8_t d[32];
    char h[65];
    const char *data = "what do ya want for nothing?";
    ac_ras_hmac_sha256((const uint8_t *)"Jefe", 4, data, strlen(data), d);
    hex(d, 32, h);
    cr_expect_str_eq(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

Test(ras_wire, header_roundtrip_and_rejects, .timeout = 10)
{
    uint8_t b[AC_RAS_HDR_BYTES];
    struct ac_ras_hdr h = {AC_RAS_MAGIC, AC_RAS_VERSION, AC_RAS_MSG_KEEPALIVE, 1234, 7, 99, 0}, o;
    const char *why = NULL;
    ac_ras_hdr_encode(&h, b);
    cr_expect_eq(memcmp(b, "ACRS", 4), 0);
    cr_expect_eq(b[8] | b[9] << 8, 1234);
    cr_assert(ac_ras_hdr_decode(b, &o, &why));
    cr_expect_eq(o.type, AC_RAS_MSG_KEEPALIVE);
    cr_expect_eq(o.length, 1234u);
    cr_expect_eq(o.seq, 7u);
    cr_expect_eq(o.sender, 99u);
    b[0] = 'X';
    cr_expect_not(ac_ras_hdr_decode(b, &o, &why));
    cr_expect_not_null(why);
    ac_ras_hdr_encode(&h, b);
    b[4] = 2; /* version 2 */
    cr_expect_not(ac_ras_hdr_decode(b, &o, &why));
    h.length = AC_RAS_MAX_PAYLOAD + 1;
    ac_ras_hdr_encode(&h, b);
    cr_expect_not(ac_ras_hdr_decode(b, &o, &why));
}

Test(ras_wire, reader_never_passes_the_end, .timeout = 10)
{
    uint8_t b[5] = {1, 2, 3, 4, 5};
    struct ac_ras_buf r;
    ac_ras_buf_init(&r, b, sizeof(b));
    cr_expect_eq(ac_ras_get_u32(&r), 0x04030201u);
    cr_expect_eq(ac_ras_get_u16(&r), 0); /* 1 byte left: fails, returns 0 */
    cr_expect(r.has_failed);
    cr_expect_eq(ac_ras_get_u8(&r), 0); /* stays failed */
    uint8_t out[3];
    struct ac_ras_buf w;
    ac_ras_buf_init(&w, out, sizeof(out));
    ac_ras_put_u16(&w, 0xbeef);
    ac_ras_put_u16(&w, 0xcafe);
    cr_expect(w.has_failed);
    cr_expect_eq(w.pos, 2u);
}

static void key_of(uint8_t key[8])
{
    memcpy(key, "\x11\x22\x33\x44\x55\x66\x77\x88", 8);
}

Test(ras_wire, hello_mac, .timeout = 10)
{
    uint8_t key[8], buf[128];
    key_of(key);
    struct ac_ras_hello h = {0}, o;
    h.key_id = ac_ras_key_id(key, 8);
    memset(h.nonce, 0xab, sizeof(h.nonce));
    h.from.family = 4;
    h.from.ip[0] = 10, h.from.ip[3] = 7;
    h.from.port = 4242;
    h.from.pid = 31337;
    struct ac_ras_buf w, r;
    ac_ras_buf_init(&w, buf, sizeof(buf));
    ac_ras_hello_encode(&w, &h, key, 8);
    cr_assert_not(w.has_failed);
    cr_expect_eq(w.pos, 8u + AC_RAS_NONCE_BYTES + AC_RAS_ADDR_BYTES + AC_RAS_MAC_BYTES);
    ac_ras_buf_init(&r, buf, w.pos);
    cr_assert(ac_ras_hello_decode(&r, &o));
    cr_expect_eq(o.from.port, 4242);
    cr_expect_eq(o.from.pid, 31337u);
    cr_expect(ac_ras_hello_verify(&o, key, 8));
    uint8_t other[8];
    key_of(other);
    other[7] ^= 1;
    cr_expect_not(ac_ras_hello_verify(&o, other, 8));
    o.from.port++; /* a changed field breaks the MAC */
    cr_expect_not(ac_ras_hello_verify(&o, key, 8));
    ac_ras_buf_init(&r, buf, w.pos - 1); /* truncated */
    cr_expect_not(ac_ras_hello_decode(&r, &o));
    buf[8 + AC_RAS_NONCE_BYTES] = 5; /* address family 5 */
    ac_ras_buf_init(&r, buf, w.pos);
    cr_expect_not(ac_ras_hello_decode(&r, &o));
}

Test(ras_wire, records_roundtrip_and_bounds, .timeout = 10)
{
    struct ac_ras_record in[2] =
        {
            {0x1122334455667788ull, 8, 3, 1045, 1042, 1041, 0, 15000, 0, 0},
            {0x99, 2, 1, 5, 5, 5, -1, UINT32_MAX, 6, 1},
        },
                         out[2];
    uint8_t buf[4 + 2 * AC_RAS_RECORD_BYTES];
    struct ac_ras_buf w, r;
    uint32_t n = 0;
    ac_ras_buf_init(&w, buf, sizeof(buf));
    ac_ras_records_put(&w, in, 2);
    cr_assert_not(w.has_failed);
    cr_expect_eq(w.pos, sizeof(buf));
    ac_ras_buf_init(&r, buf, w.pos);
    cr_assert(ac_ras_records_get(&r, out, 2, &n));
    cr_expect_eq(n, 2u);
    cr_expect_eq(out[0].comm_hash, 0x1122334455667788ull);
    cr_expect_eq(out[0].nstarted, 1042u);
    cr_expect_eq(out[0].cur_age_ms, 15000u);
    cr_expect_eq(out[1].cur_coll, -1);
    cr_expect_eq(out[1].last_error, 6);
    ac_ras_buf_init(&r, buf, w.pos);
    cr_expect_not(ac_ras_records_get(&r, out, 1, &n)); /* more than the caller's room */
    ac_ras_buf_init(&r, buf, w.pos - 1);
    cr_expect_not(ac_ras_records_get(&r, out, 2, &n)); /* count larger than the bytes */
    buf[0] = 0xff, buf[1] = 0xff, buf[2] = 0xff, buf[3] = 0x7f;
    ac_ras_buf_init(&r, buf, w.pos);
    cr_expect_not(ac_ras_records_get(&r, out, 2, &n));
    ac_ras_buf_init(&w, buf, sizeof(buf));
    in[0].rank = 8; /* rank >= nranks */
    ac_ras_records_put(&w, in, 2);
    ac_ras_buf_init(&r, buf, w.pos);
    cr_expect_not(ac_ras_records_get(&r, out, 2, &n));
}
