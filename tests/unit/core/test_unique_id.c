/* ncclUniqueId encoding: round trip, and rejection of ids that were not produced by this library
 * or were changed on the way. */
#include "core/bootstrap.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

static struct ac_unique_id sample_v4(void)
{
    struct ac_unique_id id = {.magic = AC_UNIQUE_ID_MAGIC,
                              .version = 1,
                              .secret = 0x0123456789abcdefull,
                              .id_hash = 0xfedcba9876543210ull};
    struct sockaddr_in *in = (struct sockaddr_in *)&id.root;
    in->sin_family = AF_INET;
    in->sin_port = htons(29500);
    inet_pton(AF_INET, "10.1.2.3", &in->sin_addr);
    return id;
}

Test(unique_id, round_trip_ipv4, .timeout = 10)
{
    struct ac_unique_id in = sample_v4(), out;
    ncclUniqueId raw;
    ac_unique_id_encode(&in, &raw);
    cr_assert_eq(ac_unique_id_decode(&raw, &out), ncclSuccess);
    cr_assert_eq(out.magic, AC_UNIQUE_ID_MAGIC);
    cr_assert_eq(out.secret, 0x0123456789abcdefull);
    cr_assert_eq(out.id_hash, 0xfedcba9876543210ull);
    const struct sockaddr_in *o = (const struct sockaddr_in *)&out.root;
    cr_assert_eq(o->sin_family, AF_INET);
    cr_assert_eq(ntohs(o->sin_port), 29500);
    cr_assert_eq(o->sin_addr.s_addr, htonl(0x0a010203));
}

Test(unique_id, round_trip_ipv6, .timeout = 10)
{
    struct ac_unique_id in = sample_v4(), out;
    memset(&in.root, 0, sizeof(in.root));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&in.root;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(65535);
    inet_pton(AF_INET6, "fd00::1:2", &in6->sin6_addr);
    ncclUniqueId raw;
    ac_unique_id_encode(&in, &raw);
    cr_assert_eq(ac_unique_id_decode(&raw, &out), ncclSuccess);
    const struct sockaddr_in6 *o = (const struct sockaddr_in6 *)&out.root;
    cr_assert_eq(o->sin6_family, AF_INET6);
    cr_assert_eq(ntohs(o->sin6_port), 65535);
    cr_assert_eq(memcmp(&o->sin6_addr, &in6->sin6_addr, 16), 0);
}

Test(unique_id, bad_magic, .timeout = 10)
{
    struct ac_unique_id in = sample_v4(), out;
    in.magic = 0x12345678;
    ncclUniqueId raw;
    ac_unique_id_encode(&in, &raw);
    cr_assert_eq(ac_unique_id_decode(&raw, &out), ncclInvalidArgument);
}

Test(unique_id, changed_byte_is_rejected, .timeout = 10)
{
    struct ac_unique_id in = sample_v4(), out;
    ncclUniqueId raw;
    ac_unique_id_encode(&in, &raw);
    for (int i = 8; i < 48; i++) { /* any byte after magic and version */
        ncclUniqueId bad = raw;
        bad.internal[i] ^= 0x40;
        cr_assert_eq(ac_unique_id_decode(&bad, &out), ncclInvalidArgument, "byte %d", i);
    }
}

Test(unique_id, garbage, .timeout = 10)
{
    struct ac_unique_id out;
    ncclUniqueId raw;
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++)
        raw.internal[i] = (char)(i * 37 + 11);
    cr_assert_eq(ac_unique_id_decode(&raw, &out), ncclInvalidArgument);
    memset(&raw, 0, sizeof(raw));
    cr_assert_eq(ac_unique_id_decode(&raw, &out), ncclInvalidArgument);
}
