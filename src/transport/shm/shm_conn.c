/* The shared-memory connector: ranks on one host exchange slots through a segment the receiver
 * creates (shm_segment.c). The data path is two monotonic counters and no copies: the executor
 * writes into and reads from the slot pointers directly. Nothing here blocks except
 * recv_connect, which waits for the sender's attach, bounded by ANYCCL_INIT_TIMEOUT. */
#include "transport/shm/shm.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"
#include "device/kernels/ll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_CHECK_NS (20ull * 1000 * 1000) /* peer-alive checks while waiting for attach */
#define IDLE_POLLS_PER_CLOCK 1024              /* data path: idle polls between clock reads */

struct shm_conn {
    struct ac_shm_segment seg;
    uint64_t pos;      /* this side's counter (sender: tail, receiver: head), private copy */
    uint64_t peer_pos; /* the other side's counter as last read */
    uint32_t idle_polls;
    uint64_t peer_check_ns; /* 0: never check the peer from the data path */
    uint64_t next_peer_check_ns;
    /* LL and LL128: the executor reads and writes plain bytes here; send_post packs them into
     * the protocol's slot, recv_slot unpacks into it as lines arrive (resuming at rx_next). */
    char *stage;
    bool rx_has_header, rx_is_ready;
    uint32_t rx_bytes, rx_next;
};

/* Private buffer for the LL protocols: the larger payload of the two. */
#define STAGE_BYTES (AC_LL128_MAX_BYTES > AC_LL_MAX_BYTES ? AC_LL128_MAX_BYTES : AC_LL_MAX_BYTES)

static bool shm_can_connect(const struct ac_peer_info *self, const struct ac_peer_info *peer)
{
    if (ac_config_get()->shm_disable)
        return false;
    return ac_peer_shares_host(self, peer);
}

/* Only meaningful when the pid is ours to look at: same host and same pid namespace. */
static bool is_peer_gone(const struct ac_conn *conn)
{
    const struct ac_peer_info *self = conn->self_info, *peer = conn->peer_info;

    if (self == NULL || peer == NULL || peer->pid <= 0 || !ac_peer_shares_host(self, peer))
        return false;
    return ac_shm_pid_is_gone(peer->pid);
}

static ncclResult_t fail_peer_gone(const struct ac_conn *conn, const char *when)
{
    return AC_FAIL(ncclRemoteError,
                   "rank %d: peer rank %d (pid %d on host %s) exited %s on "
                   "channel %d (shared memory); look at that rank's output for why it stopped",
                   conn->self_info->rank, conn->peer, conn->peer_info->pid,
                   conn->peer_info->hostname, when, conn->channel);
}

static void free_conn_state(struct shm_conn *sc)
{
    if (sc != NULL)
        free(sc->stage);
    free(sc);
}

static struct shm_conn *new_conn(void)
{
    struct shm_conn *sc = calloc(1, sizeof(*sc));
    int64_t ms = ac_config_get()->peer_check_ms;

    if (sc == NULL)
        return NULL;
    if (posix_memalign((void **)&sc->stage, AC_SHM_LINE, STAGE_BYTES) != 0) {
        free(sc);
        return NULL;
    }
    sc->peer_check_ns = ms > 0 ? (uint64_t)ms * 1000000ull : 0;
    return sc;
}

static ncclResult_t shm_recv_setup(struct ac_conn *conn, struct ac_conn_blob *blob_out)
{
    struct shm_conn *sc = new_conn();
    struct ac_shm_blob blob;
    ncclResult_t res;

    if (sc == NULL)
        return AC_FAIL(ncclSystemError, "rank %d: out of memory for a shm connector",
                       conn->self_info->rank);
    AC_CHECK_GOTO(ac_shm_segment_create(conn, &sc->seg), res, free_conn);
    memset(&blob, 0, sizeof(blob));
    blob.magic = AC_SHM_MAGIC;
    blob.total_bytes = sc->seg.layout.total_bytes;
    blob.slot_bytes = sc->seg.layout.slot_bytes;
    blob.nslots = sc->seg.layout.nslots;
    blob.is_shm_open = sc->seg.is_shm_open;
    memcpy(blob.path, sc->seg.path, sizeof(blob.path));
    _Static_assert(sizeof(blob) <= sizeof(blob_out->bytes), "shm blob too large");
    memset(blob_out, 0, sizeof(*blob_out));
    memcpy(blob_out->bytes, &blob, sizeof(blob));
    conn->priv = sc;
    AC_TRACE(AC_SUB_SHM, "rank %d channel %d: shm segment %s (%zu bytes) for rank %d",
             conn->self_info->rank, conn->channel, sc->seg.path, sc->seg.layout.total_bytes,
             conn->peer);
    return ncclSuccess;

free_conn:
    free_conn_state(sc);
    return res;
}

static ncclResult_t shm_send_connect(struct ac_conn *conn, const struct ac_conn_blob *peer_blob)
{
    struct shm_conn *sc = new_conn();
    struct ac_shm_blob blob;
    ncclResult_t res;

    if (sc == NULL)
        return AC_FAIL(ncclSystemError, "rank %d: out of memory for a shm connector",
                       conn->self_info->rank);
    memcpy(&blob, peer_blob->bytes, sizeof(blob));
    AC_CHECK_GOTO(ac_shm_segment_attach(conn, &blob, &sc->seg), res, free_conn);
    sc->seg.ctrl->sender_pid = (int32_t)getpid();
    __atomic_store_n(&sc->seg.ctrl->is_sender_attached, 1u, __ATOMIC_RELEASE);
    conn->priv = sc;
    return ncclSuccess;

free_conn:
    free_conn_state(sc);
    return res;
}

/* Waits for the sender's attach, then removes the name: from here on nothing is left in
 * /dev/shm whatever happens to either process. */
static ncclResult_t shm_recv_connect(struct ac_conn *conn)
{
    struct shm_conn *sc = conn->priv;
    struct ac_backoff backoff = {0};
    int64_t timeout_s = ac_config_get()->init_timeout_s;
    uint64_t start = ac_now_ns(), next_check = start;
    ncclResult_t res;

    if (sc == NULL)
        return AC_FAIL(ncclInternalError, "shm recv_connect without recv_setup");
    while (!__atomic_load_n(&sc->seg.ctrl->is_sender_attached, __ATOMIC_ACQUIRE)) {
        uint64_t now = ac_now_ns();
        if (now >= next_check) {
            /* gone after attaching (a sender that connected and exited at once) is a connect */
            if (is_peer_gone(conn) &&
                !__atomic_load_n(&sc->seg.ctrl->is_sender_attached, __ATOMIC_ACQUIRE)) {
                res = fail_peer_gone(conn, "before attaching its shared-memory segment");
                goto unlink_name;
            }
            next_check = now + CONNECT_CHECK_NS;
        }
        if (timeout_s > 0 && now - start >= (uint64_t)timeout_s * 1000000000ull) {
            res = AC_FAIL(ncclRemoteError,
                          "rank %d: peer rank %d (host %s) did not attach "
                          "shared-memory segment %s of channel %d within %lld s "
                          "(ANYCCL_INIT_TIMEOUT); is that rank stuck or gone?",
                          conn->self_info->rank, conn->peer, conn->peer_info->hostname,
                          sc->seg.path, conn->channel, (long long)timeout_s);
            goto unlink_name;
        }
        ac_backoff_idle(&backoff);
    }
    ac_shm_segment_unlink(&sc->seg);
    return ncclSuccess;

unlink_name:
    ac_shm_segment_unlink(&sc->seg);
    return res;
}

/* A poll that found nothing to do; now and then checks that the peer still exists, so that a
 * dead peer becomes an error rather than a hang. */
static ncclResult_t idle_poll(struct ac_conn *conn, struct shm_conn *sc)
{
    if (++sc->idle_polls % IDLE_POLLS_PER_CLOCK != 0 || sc->peer_check_ns == 0)
        return ncclSuccess;
    uint64_t now = ac_now_ns();
    if (now < sc->next_peer_check_ns)
        return ncclSuccess;
    sc->next_peer_check_ns = now + sc->peer_check_ns;
    if (!is_peer_gone(conn))
        return ncclSuccess;
    /* The peer may have posted its last slot (or released ours) and exited between our read of
     * the counter and the check: read it again now that the peer can no longer change it. */
    bool is_moved = conn->is_send
                        ? __atomic_load_n(&sc->seg.ctrl->head, __ATOMIC_ACQUIRE) != sc->peer_pos
                        : __atomic_load_n(&sc->seg.ctrl->tail, __ATOMIC_ACQUIRE) > sc->pos;
    if (is_moved)
        return ncclSuccess;
    return fail_peer_gone(conn, conn->is_send ? "while this rank waits to send to it"
                                              : "while this rank waits for its data");
}

static ncclResult_t fail_corrupt(const struct ac_conn *conn, const char *what)
{
    return AC_FAIL(ncclRemoteError,
                   "rank %d: shared-memory connection with rank %d on channel "
                   "%d is corrupt (%s); did a process of the peer write to it out of turn?",
                   conn->self_info->rank, conn->peer, conn->channel, what);
}

static void *slot_at(const struct shm_conn *sc, uint64_t pos)
{
    return sc->seg.slots + (size_t)(pos % sc->seg.layout.nslots) * sc->seg.layout.slot_stride;
}

static uint64_t *ll_slot_at(const struct shm_conn *sc, uint64_t pos)
{
    return (uint64_t *)(sc->seg.ll_slots +
                        (size_t)(pos % sc->seg.layout.nslots) * sc->seg.layout.ll_stride);
}

static uint64_t *ll128_slot_at(const struct shm_conn *sc, uint64_t pos)
{
    return (uint64_t *)(sc->seg.ll128_slots +
                        (size_t)(pos % sc->seg.layout.nslots) * sc->seg.layout.ll128_stride);
}

/* A value the LL slot at pos has never held: lap and position together. */
static uint32_t ll_flag(uint64_t pos)
{
    return (uint32_t)(pos + 1);
}

static size_t proto_max_bytes(const struct shm_conn *sc, enum ac_proto proto)
{
    return proto == AC_PROTO_LL      ? sc->seg.layout.ll_max_bytes
           : proto == AC_PROTO_LL128 ? sc->seg.layout.ll128_max_bytes
                                     : sc->seg.layout.slot_bytes;
}

static ncclResult_t shm_send_slot(struct ac_conn *conn, void **slot_out)
{
    struct shm_conn *sc = conn->priv;
    uint32_t nslots = sc->seg.layout.nslots;

    if (sc->pos - sc->peer_pos >= nslots) {
        sc->peer_pos = __atomic_load_n(&sc->seg.ctrl->head, __ATOMIC_ACQUIRE);
        if (sc->peer_pos > sc->pos)
            return fail_corrupt(conn, "receiver released more slots than were posted");
        if (sc->pos - sc->peer_pos >= nslots) {
            *slot_out = NULL;
            return idle_poll(conn, sc);
        }
    }
    sc->idle_polls = 0;
    *slot_out = conn->proto == AC_PROTO_SIMPLE ? slot_at(sc, sc->pos) : sc->stage;
    return ncclSuccess;
}

static ncclResult_t shm_send_post(struct ac_conn *conn, size_t bytes)
{
    struct shm_conn *sc = conn->priv;
    uint32_t nslots = sc->seg.layout.nslots;

    if (bytes > proto_max_bytes(sc, conn->proto) || sc->pos - sc->peer_pos >= nslots)
        return AC_FAIL(ncclInternalError,
                       "shm send_post of %zu bytes to rank %d (channel %d, protocol %d) "
                       "without a free slot of %zu bytes",
                       bytes, conn->peer, conn->channel, (int)conn->proto,
                       proto_max_bytes(sc, conn->proto));
    if (conn->proto == AC_PROTO_LL)
        ac_ll_pack(ll_slot_at(sc, sc->pos), sc->stage, (uint32_t)bytes, conn->tx_tag,
                   ll_flag(sc->pos), 0, 1);
    else if (conn->proto == AC_PROTO_LL128)
        ac_ll128_pack(ll128_slot_at(sc, sc->pos), sc->stage, (uint32_t)bytes, conn->tx_tag,
                      sc->pos + 1, 0, 1);
    /* The counter and size are written in every protocol: the receiver's LL path ignores them,
     * but they tell it what a sender that used another protocol posted (a mismatch), and they
     * are what the peer-alive checks compare. Slots are far below 4 GiB: the operation's tag
     * rides in the upper half of the size. */
    sc->seg.ctrl->sizes[sc->pos % nslots] = bytes | (uint64_t)conn->tx_tag << 32;
    sc->pos++;
    __atomic_store_n(&sc->seg.ctrl->tail, sc->pos, __ATOMIC_RELEASE);
    return ncclSuccess;
}

/* Simple: the tail counter says a slot is there; its size word says how much it holds. */
static ncclResult_t recv_simple(struct ac_conn *conn, struct shm_conn *sc, const void **slot_out,
                                size_t *bytes_out)
{
    uint32_t nslots = sc->seg.layout.nslots;

    if (sc->peer_pos == sc->pos) {
        uint64_t tail = __atomic_load_n(&sc->seg.ctrl->tail, __ATOMIC_ACQUIRE);
        /* Behind us is no error: an LL or LL128 slot is received from its data, so the last one
         * may have been released before its sender stored the counter. */
        if (tail <= sc->pos) {
            *slot_out = NULL;
            *bytes_out = 0;
            return idle_poll(conn, sc);
        }
        if (tail - sc->pos > nslots)
            return fail_corrupt(conn, "sender posted more slots than exist");
        sc->peer_pos = tail;
    }
    uint64_t word = sc->seg.ctrl->sizes[sc->pos % nslots];
    uint64_t bytes = word & 0xffffffffu;
    conn->rx_tag = (uint32_t)(word >> 32);
    if (bytes > sc->seg.layout.slot_bytes)
        return fail_corrupt(conn, "slot size larger than a slot");
    sc->idle_polls = 0;
    *slot_out = slot_at(sc, sc->pos);
    *bytes_out = (size_t)bytes;
    return ncclSuccess;
}

/* The header of the LL or LL128 slot at the receiver's position, when it has arrived. */
static bool ll_header(const struct ac_conn *conn, const struct shm_conn *sc, uint32_t *bytes,
                      uint32_t *tag)
{
    return conn->proto == AC_PROTO_LL
               ? ac_ll_header(ll_slot_at(sc, sc->pos), ll_flag(sc->pos), bytes, tag)
               : ac_ll128_header(ll128_slot_at(sc, sc->pos), sc->pos + 1, bytes, tag);
}

/* Nothing in the LL slot yet. Now and then (with the peer checks) look at the counter too: a
 * slot posted there without its LL header means the sender used another protocol (the ranks
 * disagree about the operation): hand the slot over as Simple, and the executor reports the
 * difference from its tag. */
static ncclResult_t recv_ll_idle(struct ac_conn *conn, struct shm_conn *sc, const void **slot_out,
                                 size_t *bytes_out)
{
    *slot_out = NULL;
    *bytes_out = 0;
    if ((sc->idle_polls + 1) % IDLE_POLLS_PER_CLOCK == 0 &&
        __atomic_load_n(&sc->seg.ctrl->tail, __ATOMIC_ACQUIRE) > sc->pos) {
        uint32_t bytes, tag;
        if (!ll_header(conn, sc, &bytes, &tag))
            return recv_simple(conn, sc, slot_out, bytes_out);
    }
    return idle_poll(conn, sc);
}

/* LL and LL128: the data itself says it has arrived; unpacked into the stage as it comes. */
static ncclResult_t recv_ll(struct ac_conn *conn, struct shm_conn *sc, const void **slot_out,
                            size_t *bytes_out)
{
    bool is_ll = conn->proto == AC_PROTO_LL;
    uint64_t *slot = is_ll ? ll_slot_at(sc, sc->pos) : ll128_slot_at(sc, sc->pos);

    if (!sc->rx_is_ready) {
        if (!sc->rx_has_header) {
            uint32_t bytes, tag;
            if (!ll_header(conn, sc, &bytes, &tag))
                return recv_ll_idle(conn, sc, slot_out, bytes_out);
            if (bytes > proto_max_bytes(sc, conn->proto))
                return fail_corrupt(conn, "LL slot size larger than a slot");
            sc->rx_has_header = true;
            sc->rx_bytes = bytes;
            sc->rx_next = 0;
            conn->rx_tag = tag;
        }
        uint32_t end = is_ll ? (sc->rx_bytes + 3) / 4 : ac_ll128_lines(sc->rx_bytes);
        sc->rx_next = is_ll ? ac_ll_unpack_from(sc->stage, slot, sc->rx_bytes, ll_flag(sc->pos),
                                                sc->rx_next)
                            : ac_ll128_unpack_from(sc->stage, slot, sc->rx_bytes, sc->pos + 1,
                                                   sc->rx_next);
        if (sc->rx_next < end) {
            *slot_out = NULL;
            *bytes_out = 0;
            return ncclSuccess; /* arriving: no idle accounting */
        }
        sc->rx_is_ready = true;
    }
    sc->idle_polls = 0;
    *slot_out = sc->stage;
    *bytes_out = sc->rx_bytes;
    return ncclSuccess;
}

static ncclResult_t shm_recv_slot(struct ac_conn *conn, const void **slot_out, size_t *bytes_out)
{
    struct shm_conn *sc = conn->priv;

    if (conn->proto != AC_PROTO_SIMPLE)
        return recv_ll(conn, sc, slot_out, bytes_out);
    return recv_simple(conn, sc, slot_out, bytes_out);
}

static ncclResult_t shm_recv_release(struct ac_conn *conn)
{
    struct shm_conn *sc = conn->priv;

    if (conn->proto != AC_PROTO_SIMPLE ? !sc->rx_is_ready : sc->pos == sc->peer_pos)
        return AC_FAIL(ncclInternalError,
                       "shm recv_release from rank %d (channel %d) without a "
                       "delivered slot",
                       conn->peer, conn->channel);
    sc->rx_is_ready = sc->rx_has_header = false;
    sc->pos++;
    if (sc->peer_pos < sc->pos)
        sc->peer_pos = sc->pos; /* LL never reads the tail: keep "nothing pending" consistent */
    __atomic_store_n(&sc->seg.ctrl->head, sc->pos, __ATOMIC_RELEASE);
    return ncclSuccess;
}

static bool shm_is_flushing(struct ac_conn *conn)
{
    return false;
}

static void shm_close(struct ac_conn *conn)
{
    struct shm_conn *sc = conn->priv;

    if (sc == NULL)
        return;
    ac_shm_segment_close(&sc->seg);
    free_conn_state(sc);
    conn->priv = NULL;
}

const struct ac_transport ac_shm_transport = {
    .name = "SHM",
    .is_slot_peer_cached = true,
    .can_connect = shm_can_connect,
    .recv_setup = shm_recv_setup,
    .send_connect = shm_send_connect,
    .recv_connect = shm_recv_connect,
    .send_slot = shm_send_slot,
    .send_post = shm_send_post,
    .recv_slot = shm_recv_slot,
    .recv_release = shm_recv_release,
    .progress = NULL,
    .is_flushing = shm_is_flushing,
    .close = shm_close,
};
