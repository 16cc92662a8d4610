/* The RDMA engine (src/transport/rdma) driven directly, one connector pair in one process over
 * libfabric's tcp provider: exact delivery in order across wrap-arounds of a 2-slot FIFO and 2
 * endpoints, sizes 0 to a full slot; and a corrupted remote key (the receiver's slot window)
 * turning into an error naming the peer, not a hang. Skips without libfabric. */
#include "common/check.h"
#include "common/config.h"
#include "common/time.h"
#include "transport/rdma/rdma.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(rdma_engine, .timeout = 60);

#define SLOT_BYTES 4096
#define KEY_OFFSET 40 /* of slots_key in the receiver's blob (struct rdma_blob) */

static struct ac_peer_info infos[2];

static void make_info(struct ac_peer_info *info, int rank)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&info->addr;
    memset(info, 0, sizeof(*info));
    info->rank = rank;
    info->pid = getpid();
    snprintf(info->hostname, AC_HOSTNAME_MAX, "unit%d", rank);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* Rank 0 sends to rank 1 on channel 3 over ofi (tcp), nslots slots, eps endpoints. */
static void setup(struct ac_conn *s, struct ac_conn *r, int nslots, const char *eps,
                  bool is_bad_key)
{
    char why[256];
    setenv("ANYCCL_NET", "ofi", 1);
    setenv("ANYCCL_OFI_PROVIDER", "tcp", 1);
    setenv("ANYCCL_OFI_EPS", eps, 1);
    setenv("ANYCCL_INIT_TIMEOUT", "20", 1);
    ac_config_reload();
    if (!ac_ofi_transport.pv->is_usable(true, why, sizeof(why)))
        cr_skip_test("libfabric's tcp provider is not usable: %s", why);
    make_info(&infos[0], 0);
    make_info(&infos[1], 1);
    struct ac_conn base = {.tp = &ac_ofi_transport.tp,
                           .channel = 3,
                           .nslots = nslots,
                           .slot_bytes = SLOT_BYTES,
                           .comm_hash = 0x1234};
    *s = base;
    *r = base;
    s->is_send = true;
    s->peer = 1;
    s->self_info = &infos[0];
    s->peer_info = &infos[1];
    r->peer = 0;
    r->self_info = &infos[1];
    r->peer_info = &infos[0];
    struct ac_conn_blob blob;
    cr_assert_eq(s->tp->recv_setup(r, &blob), ncclSuccess, "%s", ac_last_error());
    if (is_bad_key)
        blob.bytes[KEY_OFFSET] ^= 0x5a;
    cr_assert_eq(s->tp->send_connect(s, &blob), ncclSuccess, "%s", ac_last_error());
    cr_assert_eq(r->tp->recv_connect(r), ncclSuccess, "%s", ac_last_error());
}

static void fill(unsigned char *p, size_t n, unsigned seq)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seq * 31u + i * 7u);
}

Test(rdma_engine, delivers_in_order_across_wraps_and_endpoints)
{
    struct ac_conn s, r;
    setup(&s, &r, 2, "2", false);
    const unsigned nmsg = 200;
    unsigned sent = 0, got = 0;
    unsigned char want[SLOT_BYTES];
    uint64_t deadline = ac_now_ns() + 40ull * 1000000000ull;
    while (got < nmsg) {
        cr_assert(ac_now_ns() < deadline, "stuck: sent %u, received %u", sent, got);
        cr_assert_eq(s.tp->progress(&s), ncclSuccess, "%s", ac_last_error());
        void *slot = NULL;
        if (sent < nmsg) {
            cr_assert_eq(s.tp->send_slot(&s, &slot), ncclSuccess);
            if (slot != NULL) {
                size_t n = (size_t)(sent * 397u) % (SLOT_BYTES + 1); /* 0 .. SLOT_BYTES */
                fill(slot, n, sent);
                cr_assert_eq(s.tp->send_post(&s, n), ncclSuccess, "%s", ac_last_error());
                sent++;
            }
        }
        cr_assert_eq(r.tp->progress(&r), ncclSuccess, "%s", ac_last_error());
        const void *in = NULL;
        size_t bytes = 0;
        cr_assert_eq(r.tp->recv_slot(&r, &in, &bytes), ncclSuccess);
        if (in != NULL) {
            size_t n = (size_t)(got * 397u) % (SLOT_BYTES + 1);
            cr_assert_eq(bytes, n, "message %u: %zu bytes, want %zu", got, bytes, n);
            fill(want, n, got);
            cr_assert(memcmp(in, want, n) == 0, "message %u: wrong bytes", got);
            cr_assert_eq(r.tp->recv_release(&r), ncclSuccess);
            got++;
        }
    }
    while (s.tp->is_flushing(&s)) {
        cr_assert(ac_now_ns() < deadline, "sender never flushed");
        cr_assert_eq(s.tp->progress(&s), ncclSuccess, "%s", ac_last_error());
        cr_assert_eq(r.tp->progress(&r), ncclSuccess, "%s", ac_last_error());
    }
    s.tp->close(&s);
    r.tp->close(&r);
}

Test(rdma_engine, bad_remote_key_is_an_error_not_a_hang)
{
    struct ac_conn s, r;
    setup(&s, &r, 2, "1", true);
    ncclResult_t res = ncclSuccess;
    uint64_t deadline = ac_now_ns() + 30ull * 1000000000ull;
    bool is_posted = false;
    while (res == ncclSuccess && ac_now_ns() < deadline) {
        void *slot = NULL;
        res = s.tp->progress(&s);
        if (res == ncclSuccess && !is_posted && (res = s.tp->send_slot(&s, &slot)) == ncclSuccess &&
            slot != NULL) {
            memset(slot, 1, 64);
            res = s.tp->send_post(&s, 64);
            is_posted = true;
        }
        if (res == ncclSuccess)
            res = r.tp->progress(&r); /* the target side must run for tcp to answer */
        if (res == ncclSuccess) {
            const void *in = NULL;
            size_t bytes;
            cr_assert_eq(r.tp->recv_slot(&r, &in, &bytes), ncclSuccess);
            cr_assert_null(in, "a write with a wrong key was delivered");
        }
    }
    cr_assert(is_posted);
    cr_assert_neq(res, ncclSuccess, "no error within 30 s");
    const char *msg = ac_last_error();
    cr_assert(strstr(msg, "rank") != NULL && strstr(msg, "ofi") != NULL, "%s", msg);
    cr_log_info("bad key: %s", msg);
    s.tp->close(&s);
    r.tp->close(&r);
}
