/* Fuzz target: the RAS binary wire format (src/ras/ras_wire.c) as a RAS thread reads a stream
 * from a peer (ras_net.c parse_input/handle_msg): header, then each message type's payload
 * decoder. Oracles: whatever decodes re-encodes to the same bytes. */
#include "fuzz.h"
#include "ras/ras_wire.h"

#include <string.h>

FUZZ_QUIET_INIT

static const uint8_t key[8] = {1, 2, 3, 4, 5, 6, 7, 8};

static void check_hdr_roundtrip(const uint8_t *in, const struct ac_ras_hdr *h)
{
    uint8_t out[AC_RAS_HDR_BYTES];
    ac_ras_hdr_encode(h, out);
    FUZZ_CHECK(memcmp(in, out, AC_RAS_HDR_BYTES) == 0);
}

static void hello(const uint8_t *p, size_t len)
{
    struct ac_ras_buf b, w;
    struct ac_ras_hello h, again;
    uint8_t out[128];
    ac_ras_buf_init(&b, (void *)p, len);
    if (!ac_ras_hello_decode(&b, &h))
        return;
    bool is_signed = ac_ras_hello_verify(&h, key, sizeof(key));
    again = h;
    ac_ras_buf_init(&w, out, sizeof(out));
    ac_ras_hello_encode(&w, &again, key, sizeof(key));
    FUZZ_CHECK(!w.has_failed && w.pos == b.pos);
    /* Key id (8), nonce (16), address (24, its byte 1 a pad that is not kept): kept. */
    FUZZ_CHECK(memcmp(out, p, 25) == 0 && memcmp(out + 26, p + 26, 22) == 0);
    FUZZ_CHECK(is_signed == (memcmp(again.mac, h.mac, AC_RAS_MAC_BYTES) == 0));
}

/* As ras_net.c store_records: room for what the payload can hold, at most AC_RAS_MAX_RECORDS. */
static void records(const uint8_t *p, size_t len)
{
    struct ac_ras_buf b, w;
    ac_ras_buf_init(&b, (void *)p, len);
    (void)ac_ras_get_u64(&b); /* sender time or query id */
    uint32_t max = (uint32_t)(ac_ras_buf_left(&b) / AC_RAS_RECORD_BYTES), n = 0;
    struct ac_ras_record *r = calloc(max ? max : 1, sizeof(*r));
    if (r == NULL)
        return;
    size_t start = b.pos;
    if (ac_ras_records_get(&b, r, max < AC_RAS_MAX_RECORDS ? max : AC_RAS_MAX_RECORDS, &n)) {
        FUZZ_CHECK(n <= max && b.pos == start + 4 + (size_t)n * AC_RAS_RECORD_BYTES);
        for (uint32_t i = 0; i < n; i++)
            FUZZ_CHECK(r[i].rank < r[i].nranks && r[i].nfinished <= r[i].nstarted &&
                       r[i].nstarted <= r[i].nenqueued);
        size_t bytes = b.pos - start;
        uint8_t *out = malloc(bytes);
        ac_ras_buf_init(&w, out, bytes);
        ac_ras_records_put(&w, r, n);
        FUZZ_CHECK(!w.has_failed && w.pos == bytes && memcmp(out, p + start, bytes) == 0);
        free(out);
    }
    free(r);
}

static void dead_peer(const uint8_t *p, size_t len)
{
    struct ac_ras_buf b, w;
    struct ac_ras_addr a;
    uint8_t out[AC_RAS_ADDR_BYTES];
    ac_ras_buf_init(&b, (void *)p, len);
    ac_ras_addr_get(&b, &a);
    if (b.has_failed)
        return;
    FUZZ_CHECK(a.family == 0 || a.family == 4 || a.family == 6);
    ac_ras_buf_init(&w, out, sizeof(out));
    ac_ras_addr_put(&w, &a);
    FUZZ_CHECK(!w.has_failed && out[0] == p[0] && memcmp(out + 2, p + 2, 22) == 0);
    FUZZ_CHECK(ac_ras_addr_equal(&a, &a));
}

static void payload(uint16_t type, const uint8_t *p, size_t len)
{
    struct ac_ras_buf b;
    ac_ras_buf_init(&b, (void *)p, len);
    switch (type) {
    case AC_RAS_MSG_HELLO:
        return hello(p, len);
    case AC_RAS_MSG_HELLO_ACK:
        (void)ac_ras_get_u32(&b);
        return;
    case AC_RAS_MSG_KEEPALIVE:
    case AC_RAS_MSG_REPLY:
        return records(p, len);
    case AC_RAS_MSG_QUERY:
        (void)ac_ras_get_u64(&b);
        return;
    case AC_RAS_MSG_DEAD_PEER:
        return dead_peer(p, len);
    default:
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    bool is_first = true;
    while (size - off >= AC_RAS_HDR_BYTES) {
        struct ac_ras_hdr h;
        const char *why = NULL;
        if (!ac_ras_hdr_decode(data + off, &h, &why)) {
            FUZZ_CHECK(why != NULL && why[0] != '\0');
            return 0;
        }
        check_hdr_roundtrip(data + off, &h);
        FUZZ_CHECK(h.length <= AC_RAS_MAX_PAYLOAD);
        if (is_first && h.length > 256) /* ras_net.c: oversized first message */
            return 0;
        if (size - off - AC_RAS_HDR_BYTES < h.length)
            return 0;
        /* An exact-size copy of the payload: a decoder reading past it is caught by ASan. */
        uint8_t *p = malloc(h.length ? h.length : 1);
        memcpy(p, data + off + AC_RAS_HDR_BYTES, h.length);
        payload(h.type, p, h.length);
        free(p);
        off += AC_RAS_HDR_BYTES + h.length;
        is_first = false;
    }
    return 0;
}
