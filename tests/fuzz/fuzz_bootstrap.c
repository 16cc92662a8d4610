/* Fuzz target: what the bootstrap reads from outside (src/core/bootstrap.c, bootstrap_root.c):
 * the 128-byte ncclUniqueId (a user passes it around; ac_unique_id_decode), then a rank's hello
 * as the root judges it (ac_bootstrap_hello_judge), then a stream of rank-to-rank message headers
 * (ac_bootstrap_msg_hdr_check) with the secret and rank count those established. Oracles: a
 * decoded id re-encodes to an id that decodes the same; an admitted hello or accepted header is
 * within the bounds the callers index arrays with. */
#include "fuzz.h"
#include "common/socket.h"
#include "core/bootstrap.h"
#include "core/bootstrap_wire.h"

#include <string.h>

FUZZ_QUIET_INIT

static uint64_t unique_id(const uint8_t *data)
{
    ncclUniqueId id, again;
    struct ac_unique_id uid, uid2;
    memcpy(&id, data, sizeof(id));
    if (ac_unique_id_decode(&id, &uid) != ncclSuccess)
        return 0x5eC12e7ull;
    FUZZ_CHECK(uid.magic == AC_UNIQUE_ID_MAGIC && ac_socket_addr_is_valid(&uid.root));
    ac_unique_id_encode(&uid, &again);
    FUZZ_CHECK(ac_unique_id_decode(&again, &uid2) == ncclSuccess);
    FUZZ_CHECK(uid2.secret == uid.secret && uid2.id_hash == uid.id_hash &&
               ac_socket_addr_equal(&uid2.root, &uid.root) &&
               ac_socket_addr_port(&uid2.root) == ac_socket_addr_port(&uid.root));
    char s[128];
    ac_socket_addr_str(&uid.root, s, sizeof(s));
    FUZZ_CHECK(memchr(s, '\0', sizeof(s)) != NULL);
    return uid.secret;
}

static int hello(const uint8_t *data, uint64_t secret)
{
    struct ac_bootstrap_hello h;
    char why[AC_BOOTSTRAP_MSG_LEN];
    memcpy(&h, data, sizeof(h));
    enum ac_bootstrap_verdict v = ac_bootstrap_hello_judge(&h, secret, why, sizeof(why));
    FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
    if (v != AC_BOOTSTRAP_ADMIT) {
        FUZZ_CHECK(v == AC_BOOTSTRAP_DROP || v == AC_BOOTSTRAP_REFUSE);
        FUZZ_CHECK(why[0] != '\0');
        return 8;
    }
    FUZZ_CHECK(h.magic == AC_BOOTSTRAP_HELLO_MAGIC && h.secret == secret);
    FUZZ_CHECK(h.nranks > 0 && h.nranks <= AC_BOOTSTRAP_MAX_RANKS);
    FUZZ_CHECK(h.rank >= 0 && h.rank < h.nranks);
    char s[128];
    ac_socket_addr_str(&h.listen_addr, s, sizeof(s));
    FUZZ_CHECK(memchr(s, '\0', sizeof(s)) != NULL);
    return h.nranks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < sizeof(ncclUniqueId))
        return 0;
    uint64_t secret = unique_id(data);
    size_t off = sizeof(ncclUniqueId);
    if (size - off < sizeof(struct ac_bootstrap_hello))
        return 0;
    int nranks = hello(data + off, secret), from = -1;
    off += sizeof(struct ac_bootstrap_hello);
    while (size - off >= sizeof(struct ac_bootstrap_msg_hdr)) {
        struct ac_bootstrap_msg_hdr h;
        memcpy(&h, data + off, sizeof(h));
        off += sizeof(h);
        if (ac_bootstrap_msg_hdr_check(&h, secret, nranks, from) != NULL)
            return 0; /* the connection is dropped */
        FUZZ_CHECK(h.from >= 0 && h.from < nranks && (from < 0 || from == h.from));
        FUZZ_CHECK(h.bytes <= AC_BOOTSTRAP_MSG_MAX_BYTES);
        from = h.from;
        /* The payload follows; at most what the input has left. */
        off += h.bytes < size - off ? (size_t)h.bytes : size - off;
    }
    return 0;
}
