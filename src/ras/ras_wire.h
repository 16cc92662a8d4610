/* The RAS wire format v1 between the RAS threads of a job: a fixed 24-byte header, then a typed
 * payload. Everything is little-endian and encoded field by field (never a memcpy of a struct);
 * every read is checked against the bytes that remain, so a short or lying message fails to decode
 * instead of reading past its end. Also SHA-256 and HMAC-SHA256, which authenticate HELLO. */
#ifndef AC_RAS_RAS_WIRE_H
#define AC_RAS_RAS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AC_RAS_MAGIC 0x53524341u /* "ACRS" read as a little-endian u32 */
#define AC_RAS_VERSION 1
#define AC_RAS_HDR_BYTES 24
#define AC_RAS_MAX_PAYLOAD (1u << 20)
#define AC_RAS_NONCE_BYTES 16
#define AC_RAS_MAC_BYTES 16
/* Records in one KEEPALIVE or REPLY; more local ranks than this are not reported. */
#define AC_RAS_MAX_RECORDS 1024

enum ac_ras_msg_type {
    AC_RAS_MSG_HELLO = 1,     /* key id, nonce, sender identity, MAC: first message of a conn */
    AC_RAS_MSG_HELLO_ACK = 2, /* u32 status: 0 accepted */
    AC_RAS_MSG_KEEPALIVE = 3, /* u64 sender ns, progress records */
    AC_RAS_MSG_DEAD_PEER = 4, /* the process at an address is dead */
    AC_RAS_MSG_QUERY = 5,     /* u64 query id */
    AC_RAS_MSG_REPLY = 6,     /* u64 query id, progress records */
    AC_RAS_MSG_BYE = 7,       /* the sender closes this connection on purpose (not a death) */
};

struct ac_ras_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length; /* payload bytes after the header */
    uint32_t seq;
    uint32_t sender; /* the sender's pid, for logs */
    uint32_t reserved;
};

/* A process's RAS listening address as published in the bootstrap allgather and in messages. */
struct ac_ras_addr {
    uint8_t family; /* 4 or 6; 0: this process runs no RAS thread */
    uint8_t ip[16]; /* v4 in the first 4 bytes */
    uint16_t port;
    uint32_t pid;
};
#define AC_RAS_ADDR_BYTES 24

struct ac_ras_hello {
    uint64_t key_id; /* names the key (never the key itself) */
    uint8_t nonce[AC_RAS_NONCE_BYTES];
    struct ac_ras_addr from;
    uint8_t mac[AC_RAS_MAC_BYTES]; /* HMAC-SHA256(key, everything above), truncated */
};

/* One rank's progress on one communicator. Times are ages (ms before the message was built), as
 * monotonic clocks of different hosts cannot be compared. */
struct ac_ras_record {
    uint64_t comm_hash;
    uint32_t nranks;
    uint32_t rank;
    uint64_t nenqueued; /* seq of the last op enqueued (ops are numbered from 1) */
    uint64_t nstarted;
    uint64_t nfinished;
    int32_t cur_coll;    /* enum ac_coll of op #nstarted; -1 when none */
    uint32_t cur_age_ms; /* since op #nstarted started; UINT32_MAX: none */
    int32_t last_error;  /* ncclResult_t of the last failed op, 0 when none */
    uint32_t flags;      /* AC_RAS_REC_* */
};
#define AC_RAS_RECORD_BYTES 56
#define AC_RAS_REC_ABORTED 1u

/* A bounded writer/reader over a byte buffer. A writer that runs out of room, or a reader asked
 * for more than remains, sets has_failed and keeps failing; check it once at the end. */
struct ac_ras_buf {
    uint8_t *p;
    size_t len;
    size_t pos;
    bool has_failed;
};

void ac_ras_buf_init(struct ac_ras_buf *b, void *p, size_t len);
void ac_ras_put_u8(struct ac_ras_buf *b, uint8_t v);
void ac_ras_put_u16(struct ac_ras_buf *b, uint16_t v);
void ac_ras_put_u32(struct ac_ras_buf *b, uint32_t v);
void ac_ras_put_u64(struct ac_ras_buf *b, uint64_t v);
void ac_ras_put_bytes(struct ac_ras_buf *b, const void *p, size_t n);
uint8_t ac_ras_get_u8(struct ac_ras_buf *b);
uint16_t ac_ras_get_u16(struct ac_ras_buf *b);
uint32_t ac_ras_get_u32(struct ac_ras_buf *b);
uint64_t ac_ras_get_u64(struct ac_ras_buf *b);
void ac_ras_get_bytes(struct ac_ras_buf *b, void *p, size_t n);
static inline size_t ac_ras_buf_left(const struct ac_ras_buf *b)
{
    return b->len - b->pos;
}

void ac_ras_hdr_encode(const struct ac_ras_hdr *h, uint8_t out[AC_RAS_HDR_BYTES]);
/* Checks magic, version and length bound; on failure *why_out says what was wrong. */
bool ac_ras_hdr_decode(const uint8_t in[AC_RAS_HDR_BYTES], struct ac_ras_hdr *h_out,
                       const char **why_out);

void ac_ras_addr_put(struct ac_ras_buf *b, const struct ac_ras_addr *a);
/* Also checks that the family is 0, 4 or 6 (sets has_failed otherwise). */
void ac_ras_addr_get(struct ac_ras_buf *b, struct ac_ras_addr *a);
bool ac_ras_addr_equal(const struct ac_ras_addr *a, const struct ac_ras_addr *b);

/* HELLO payload: encode computes the MAC with key; decode checks the layout only. */
void ac_ras_hello_encode(struct ac_ras_buf *b, struct ac_ras_hello *h, const uint8_t *key,
                         size_t key_len);
bool ac_ras_hello_decode(struct ac_ras_buf *b, struct ac_ras_hello *h_out);
/* Constant-time check of h->mac against key. */
bool ac_ras_hello_verify(const struct ac_ras_hello *h, const uint8_t *key, size_t key_len);
/* The public name of a key: SHA-256("anyccl-ras-key" || key), first 8 bytes. */
uint64_t ac_ras_key_id(const uint8_t *key, size_t key_len);

/* Records: a u32 count, then count records; decode refuses a count larger than max or than the
 * remaining bytes can hold. */
void ac_ras_records_put(struct ac_ras_buf *b, const struct ac_ras_record *r, uint32_t n);
bool ac_ras_records_get(struct ac_ras_buf *b, struct ac_ras_record *r_out, uint32_t max,
                        uint32_t *n_out);

/* SHA-256 (FIPS 180-4) and HMAC (RFC 2104). */
void ac_ras_sha256(const void *data, size_t len, uint8_t out[32]);
void ac_ras_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                        uint8_t out[32]);

#endif
