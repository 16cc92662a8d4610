/* The peer-to-peer connectors for GPU buffers (src/transport/p2p/): the layout of the receiver's
 * memory against devcoll.h's strides, and a connector's two ends made in one process on the
 * emulated CUDA driver (the pointer is used as is, as between ranks that are threads): both ends
 * see the same slots and counters, in zeroed memory of the right owner; geometry and blob checks.
 */
#include "transport/p2p/p2p.h"

#include <criterion/criterion.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

Test(p2p_layout, areas_follow_the_device_strides, .timeout = 10)
{
    struct ac_p2p_layout l;
    uint32_t nslots = 8;
    size_t slot_bytes = 1u << 19;

    ac_p2p_layout(nslots, slot_bytes, &l);
    cr_expect_eq(l.posted_off, 0);
    cr_expect_eq(l.sizes_off, 128);
    cr_expect_eq(l.stride[AC_PROTO_SIMPLE], slot_bytes);
    cr_expect_eq(l.stride[AC_PROTO_LL], AC_DEV_LL_SLOT_BYTES);
    cr_expect_eq(l.stride[AC_PROTO_LL128], AC_DEV_LL128_SLOT_BYTES);
    cr_expect_eq(l.slots_off[AC_PROTO_SIMPLE], 256); /* 128 + 8 words, rounded to 128 */
    for (int p = 0; p < AC_PROTO_COUNT; p++)
        cr_expect_eq(l.slots_off[p] % 128, 0, "protocol %d area at %zu", p, l.slots_off[p]);
    cr_expect_geq(l.slots_off[AC_PROTO_LL], l.slots_off[AC_PROTO_SIMPLE] + nslots * slot_bytes);
    cr_expect_geq(l.slots_off[AC_PROTO_LL128],
                  l.slots_off[AC_PROTO_LL] + nslots * (size_t)AC_DEV_LL_SLOT_BYTES);
    cr_expect_geq(l.bytes, l.slots_off[AC_PROTO_LL128] + nslots * (size_t)AC_DEV_LL128_SLOT_BYTES);
    /* an LL slot holds the largest LL payload in its wire format */
    cr_expect_geq(AC_DEV_LL_SLOT_BYTES, ac_ll_slot_bytes(AC_LL_MAX_BYTES));
    cr_expect_geq(AC_DEV_LL128_SLOT_BYTES, ac_ll128_slot_bytes(AC_LL128_MAX_BYTES));
}

static const struct ac_backend *emu_cuda(void)
{
    static char path[PATH_MAX];
    char exe[PATH_MAX], why[256] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

    cr_assert(n > 0);
    exe[n] = '\0';
    snprintf(path, sizeof path, "%s/../device/fake/libcuda_emu.so", dirname(exe));
    cr_assert(access(path, R_OK) == 0, "%s missing (make test-build builds it)", path);
    ac_backends_reset_for_test();
    ac_cuda_set_library_for_test(path);
    const struct ac_backend *be = ac_backend_get(AC_MEM_CUDA, why, sizeof why);
    cr_assert_not_null(be, "emulated driver not usable: %s", why);
    return be;
}

static uint64_t read_word(const struct ac_backend *be, uint64_t addr)
{
    uint64_t v = ~0ull;
    cr_assert_eq(be->memcpy_async(&v, (void *)(uintptr_t)addr, sizeof v, NULL), ncclSuccess);
    cr_assert_eq(be->stream_sync(NULL), ncclSuccess);
    return v;
}

Test(p2p_conn, both_ends_in_one_process, .timeout = 30)
{
    const struct ac_backend *be = emu_cuda();
    struct ac_p2p_conn send, recv;
    struct ac_p2p_blob send_blob, recv_blob;
    struct ac_p2p_layout l;
    bool is_mine;
    struct ac_ptr_info info;

    cr_assert_eq(ac_p2p_conn_open(be, 0, true, 1, 4, 8192, 42, &send, &send_blob), ncclSuccess);
    cr_assert_eq(ac_p2p_conn_open(be, 0, false, 0, 4, 8192, 42, &recv, &recv_blob), ncclSuccess);
    cr_expect_eq(send_blob.magic, AC_P2P_BLOB_MAGIC);
    cr_expect_eq(send_blob.pid, (int32_t)getpid());
    cr_expect_eq(send_blob.bytes, 128); /* the sender holds only `freed` */
    ac_p2p_layout(4, 8192, &l);
    cr_expect_eq(recv_blob.bytes, l.bytes);
    cr_assert_eq(ac_p2p_conn_connect(&send, &recv_blob), ncclSuccess);
    cr_assert_eq(ac_p2p_conn_connect(&recv, &send_blob), ncclSuccess);
    cr_expect_not(send.is_imported, "one process: the pointer, no import");
    for (int p = 0; p < AC_PROTO_COUNT; p++) {
        cr_expect_eq(send.dev.slots[p], recv.dev.slots[p]);
        cr_expect_eq(recv.dev.slots[p], (uint64_t)(uintptr_t)recv.own + l.slots_off[p]);
    }
    cr_expect_eq(send.dev.posted, recv.dev.posted);
    cr_expect_eq(recv.dev.posted, (uint64_t)(uintptr_t)recv.own + l.posted_off);
    cr_expect_eq(send.dev.sizes, (uint64_t)(uintptr_t)recv.own + l.sizes_off);
    cr_expect_eq(send.dev.freed, recv.dev.freed);
    cr_expect_eq(send.dev.freed, (uint64_t)(uintptr_t)send.own);
    cr_expect_eq(send.dev.nslots, 4);
    cr_expect_eq(send.dev.slot_bytes, 8192);
    cr_expect_eq(send.dev.base, 0);
    /* counters start at zero, in device memory */
    cr_expect_eq(read_word(be, send.dev.posted), 0);
    cr_expect_eq(read_word(be, send.dev.freed), 0);
    cr_expect_eq(read_word(be, send.dev.sizes + 3 * 8), 0);
    cr_assert_eq(be->classify(recv.own, &is_mine, &info), ncclSuccess);
    cr_expect(is_mine && info.kind == AC_MEM_CUDA, "slots are GPU memory");
    ac_p2p_conn_close(&send);
    ac_p2p_conn_close(&recv);
    ac_p2p_conn_close(&send); /* closed twice: nothing */
}

Test(p2p_conn, geometry_and_blob_checked, .timeout = 30)
{
    const struct ac_backend *be = emu_cuda();
    struct ac_p2p_conn a, b;
    struct ac_p2p_blob ba, bb;

    cr_assert_eq(ac_p2p_conn_open(be, 0, true, 1, 4, 8192, 42, &a, &ba), ncclSuccess);
    cr_assert_eq(ac_p2p_conn_open(be, 0, false, 0, 2, 8192, 42, &b, &bb), ncclSuccess);
    cr_expect_eq(ac_p2p_conn_connect(&a, &bb), ncclInvalidUsage, "2 slots against 4");
    bb.magic = 0;
    cr_expect_eq(ac_p2p_conn_connect(&a, &bb), ncclInternalError);
    cr_expect_eq(ac_p2p_conn_open(be, 0, true, 1, 0, 8192, 42, &b, &bb), ncclInternalError);
    ac_p2p_conn_close(&a);
    ac_p2p_conn_close(&b);
}
