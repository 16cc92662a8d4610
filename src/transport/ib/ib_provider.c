/* The verbs provider of the RDMA engine (transport "ib"): InfiniBand and RoCE through libibverbs,
 * opened with dlopen at first use so that AnyCCL loads where it is absent. Reliable-connected queue
 * pairs joined by the engine's out-of-band exchange (as NCCL does: librdmacm is not needed), RDMA
 * write with immediate data, one completion queue per connector, registrations through a cache.
 *
 * Device choice: the first active port, in device order, that NCCL_IB_HCA allows; the link layer
 * is read per port; on RoCE the GID index is chosen by ac_ib_gid_pick (NCCL_IB_GID_INDEX wins).
 * Device memory is registered with ibv_reg_dmabuf_mr on a dma-buf its GPU backend exports
 * (GPUDirect RDMA; the choice is ib_dmabuf.c's), else refused so that the caller stages it through
 * host memory; the executor's slots are host memory today, so nothing passes device memory yet. */
#include "transport/ib/ib_select.h"
#include "transport/rdma/rdma.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "device/backend.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#if __has_include(<infiniband/verbs.h>)
#define HAS_VERBS_HEADERS 1
#include <infiniband/verbs.h>
#else
#define HAS_VERBS_HEADERS 0
#endif

#if HAS_VERBS_HEADERS

#define MAX_GIDS 128
#define RECV_WR_FLAG (UINT64_C(1) << 62)
/* Idle registrations kept: none. The cache shares a registration among the buffers alive inside
 * it; keeping one after its last user would need an invalidation hook (munmap interception or
 * ODP), or a range freed and reused by malloc would hit a registration of the old pages. */
#define MRCACHE_IDLE 0

static struct {
    struct ibv_device **(*get_device_list)(int *);
    void (*free_device_list)(struct ibv_device **);
    const char *(*get_device_name)(struct ibv_device *);
    struct ibv_context *(*open_device)(struct ibv_device *);
    int (*close_device)(struct ibv_context *);
    int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
    int (*query_port)(struct ibv_context *, uint8_t, struct ibv_port_attr *); /* compat symbol */
    int (*query_gid)(struct ibv_context *, uint8_t, int, union ibv_gid *);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *);
    int (*dealloc_pd)(struct ibv_pd *); /* optional: without it the first device stays */
    struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
    int (*dereg_mr)(struct ibv_mr *);
    struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
    int (*destroy_cq)(struct ibv_cq *);
    struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
    int (*destroy_qp)(struct ibv_qp *);
    int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
    const char *(*wc_status_str)(enum ibv_wc_status);
    /* rdma-core 34 and newer; NULL: device memory is staged */
    struct ibv_mr *(*reg_dmabuf_mr)(struct ibv_pd *, uint64_t offset, size_t len, uint64_t iova,
                                    int fd, int access);
} ib;

/* The one device port this process uses. */
static struct {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    uint8_t port;
    enum ac_ib_link link;
    int gid_index;
    union ibv_gid gid;
    uint16_t lid;
    enum ibv_mtu mtu;
    char name[AC_IB_NAME_MAX];
} dev;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* init and the registration cache */
static bool is_inited, is_found;
static char init_why[256], description[200];
static struct ac_ib_mrcache mrcache;
/* The rank's rail NIC when it is an RDMA device (src/core/netdev.c): tried first. The device may
 * change to it until the first endpoint is opened (neps), never after. */
static char preferred_name[AC_IB_NAME_MAX];
static int preferred_port;
static int neps;

struct ac_rdma_ep {
    int nqps, depth;
    struct ibv_cq *cq;
    struct ibv_qp *qp[AC_RDMA_MAX_QPS];
    int posted[AC_RDMA_MAX_QPS]; /* writes in flight per queue pair */
    uint32_t psn[AC_RDMA_MAX_QPS];
};

/* What the peer needs to join our queue pairs. */
struct ib_addr {
    uint8_t nqps, link, mtu, pad;
    uint16_t lid, pad2;
    uint8_t gid[16];
    uint32_t qpn[AC_RDMA_MAX_QPS];
    uint32_t psn[AC_RDMA_MAX_QPS];
};
_Static_assert(sizeof(struct ib_addr) <= AC_RDMA_ADDR_MAX, "ib address too large");

static bool load_library(char *why, size_t len)
{
    void *lib = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(why, len, "libibverbs.so.1 not loadable (%s)", dlerror());
        return false;
    }
#define SYM(field, name) *(void **)&ib.field = dlsym(lib, name)
    SYM(get_device_list, "ibv_get_device_list");
    SYM(free_device_list, "ibv_free_device_list");
    SYM(get_device_name, "ibv_get_device_name");
    SYM(open_device, "ibv_open_device");
    SYM(close_device, "ibv_close_device");
    SYM(query_device, "ibv_query_device");
    SYM(query_port, "ibv_query_port");
    SYM(query_gid, "ibv_query_gid");
    SYM(alloc_pd, "ibv_alloc_pd");
    SYM(dealloc_pd, "ibv_dealloc_pd");
    SYM(reg_mr, "ibv_reg_mr");
    SYM(dereg_mr, "ibv_dereg_mr");
    SYM(create_cq, "ibv_create_cq");
    SYM(destroy_cq, "ibv_destroy_cq");
    SYM(create_qp, "ibv_create_qp");
    SYM(destroy_qp, "ibv_destroy_qp");
    SYM(modify_qp, "ibv_modify_qp");
    SYM(wc_status_str, "ibv_wc_status_str");
#undef SYM
    *(void **)&ib.reg_dmabuf_mr = dlsym(lib, "ibv_reg_dmabuf_mr");
    if (!ib.get_device_list || !ib.free_device_list || !ib.get_device_name || !ib.open_device ||
        !ib.close_device || !ib.query_device || !ib.query_port || !ib.query_gid || !ib.alloc_pd ||
        !ib.reg_mr || !ib.dereg_mr || !ib.create_cq || !ib.destroy_cq || !ib.create_qp ||
        !ib.destroy_qp || !ib.modify_qp || !ib.wc_status_str) {
        snprintf(why, len, "libibverbs.so.1 lacks a verbs entry point: too old");
        return false;
    }
    return true;
}

/* The header's ibv_query_port, without its link-time reference to the compat symbol. */
static int query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
    struct verbs_context *vctx = verbs_get_ctx_op(ctx, query_port);
    memset(attr, 0, sizeof(*attr));
    if (vctx == NULL)
        return ib.query_port(ctx, port, attr);
    return vctx->query_port(ctx, port, attr, sizeof(*attr));
}

/* Fills dev's GID for a RoCE / IB port; false when none is usable. */
static bool pick_gid(const char *name, uint8_t port, const struct ibv_port_attr *pa)
{
    static struct ac_ib_gid gids[MAX_GIDS];
    int n = pa->gid_tbl_len < MAX_GIDS ? pa->gid_tbl_len : MAX_GIDS;
    for (int i = 0; i < n; i++) {
        union ibv_gid g;
        memset(&gids[i], 0, sizeof(gids[i]));
        if (ib.query_gid(dev.ctx, port, i, &g) != 0)
            continue;
        memcpy(gids[i].raw, g.raw, 16);
        gids[i].type = ac_ib_read_gid_type(name, port, i);
    }
    int idx = ac_ib_gid_pick(gids, n, dev.link, (int)ac_config_get()->ib_gid_index);
    if (idx < 0)
        return false;
    dev.gid_index = idx;
    memcpy(dev.gid.raw, gids[idx].raw, 16);
    return true;
}

/* Tries every port of one device (only_port when > 0); true with dev filled when one is active
 * and allowed. */
static bool try_device(struct ibv_device *d, const struct ac_ib_hca_filter *filter, int only_port)
{
    const char *name = ib.get_device_name(d);
    struct ibv_device_attr da;
    dev.ctx = ib.open_device(d);
    if (dev.ctx == NULL)
        return false;
    if (ib.query_device(dev.ctx, &da) == 0) {
        for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
            struct ibv_port_attr pa;
            if ((only_port > 0 && p != only_port) || !ac_ib_hca_match(filter, name, p) ||
                query_port(dev.ctx, p, &pa) != 0 || pa.state != IBV_PORT_ACTIVE)
                continue;
            dev.link = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? AC_IB_LINK_ETH : AC_IB_LINK_IB;
            dev.port = p;
            dev.lid = pa.lid;
            dev.mtu = pa.active_mtu;
            if (!pick_gid(name, p, &pa)) {
                AC_INFO(AC_SUB_NET, "ib: %s port %d: no usable GID (NCCL_IB_GID_INDEX?)", name, p);
                continue;
            }
            snprintf(dev.name, sizeof(dev.name), "%s", name);
            return true;
        }
    }
    ib.close_device(dev.ctx);
    dev.ctx = NULL;
    return false;
}

static ncclResult_t cache_reg(void *ctx, void *addr, size_t len, void **handle_out)
{
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    struct ibv_mr *mr = ib.reg_mr(dev.pd, addr, len, access);
    if (mr == NULL)
        return AC_FAIL(ncclSystemError,
                       "ib transport (%s): ibv_reg_mr of %zu bytes failed: %s "
                       "(ulimit -l too low?)",
                       description, len, strerror(errno));
    *handle_out = mr;
    return ncclSuccess;
}

static void cache_dereg(void *ctx, void *handle)
{
    ib.dereg_mr(handle);
}

static bool open_device(char *why, size_t len)
{
    struct ac_ib_hca_filter filter;
    int n = 0;
    if (ac_ib_hca_parse(ac_config_get()->ib_hca, &filter) != ncclSuccess) {
        snprintf(why, len, "NCCL_IB_HCA is malformed (see the warning above)");
        return false;
    }
    struct ibv_device **list = ib.get_device_list(&n);
    const char **names = calloc((size_t)(n > 0 ? n : 1), sizeof(*names));
    int *order = calloc((size_t)(n > 0 ? n : 1), sizeof(*order));
    for (int i = 0; list != NULL && names != NULL && i < n; i++)
        names[i] = ib.get_device_name(list[i]);
    if (list != NULL && names != NULL && order != NULL) {
        ac_ib_device_order(names, n, preferred_name, order);
        for (int k = 0; k < n && dev.ctx == NULL; k++)
            try_device(list[order[k]], &filter,
                       strcmp(names[order[k]], preferred_name) == 0 ? preferred_port : 0);
    }
    free(names);
    free(order);
    if (list != NULL)
        ib.free_device_list(list);
    if (dev.ctx == NULL) {
        snprintf(why, len, "no active RDMA port%s (%d device(s) listed)",
                 ac_config_get()->ib_hca ? " allowed by NCCL_IB_HCA" : "", n);
        return false;
    }
    if ((dev.pd = ib.alloc_pd(dev.ctx)) == NULL) {
        snprintf(why, len, "ibv_alloc_pd on %s failed: %s", dev.name, strerror(errno));
        return false;
    }
    ac_ib_mrcache_init(&mrcache, cache_reg, cache_dereg, NULL, MRCACHE_IDLE);
    snprintf(description, sizeof(description), "verbs %s port %d (%s, GID index %d)", dev.name,
             dev.port, dev.link == AC_IB_LINK_ETH ? "RoCE" : "InfiniBand", dev.gid_index);
    AC_INFO(AC_SUB_NET | AC_SUB_INIT, "ib: %s; GPU buffers: %s", description,
            ib.reg_dmabuf_mr ? "dma-buf registration (GPUDirect RDMA, ibv_reg_dmabuf_mr) when "
                               "their backend exports dma-bufs, else staged through host memory"
                             : "staged through host memory (libibverbs has no ibv_reg_dmabuf_mr: "
                               "rdma-core 34 or newer registers them directly)");
    return true;
}

static bool ib_is_usable(bool is_forced, char *why, size_t len)
{
    pthread_mutex_lock(&lock);
    if (!is_inited) {
        is_inited = true;
        /* no kernel RDMA devices: do not even load libibverbs (and its providers) */
        if (access("/sys/class/infiniband", F_OK) != 0)
            snprintf(init_why, sizeof(init_why), "no RDMA device (/sys/class/infiniband absent)");
        else
            is_found =
                load_library(init_why, sizeof(init_why)) && open_device(init_why, sizeof(init_why));
        if (!is_found)
            AC_INFO(AC_SUB_NET | AC_SUB_INIT, "ib: not usable: %s", init_why);
    }
    pthread_mutex_unlock(&lock);
    if (!is_found)
        snprintf(why, len, "%s", init_why);
    return is_found;
}

static const char *ib_describe(void)
{
    return description;
}

void ac_ib_prefer_device(const char *name, int port)
{
    pthread_mutex_lock(&lock);
    snprintf(preferred_name, sizeof(preferred_name), "%s", name);
    preferred_port = port;
    bool is_other = is_found && (strcmp(dev.name, name) != 0 || dev.port != port);
    if (is_other && (__atomic_load_n(&neps, __ATOMIC_ACQUIRE) > 0 || ib.dealloc_pd == NULL)) {
        AC_INFO(AC_SUB_NET | AC_SUB_INIT,
                "ib: the rail NIC is %s port %d, but this process already uses %s port %d (%s): "
                "one RDMA port per process in this version",
                name, port, dev.name, dev.port,
                ib.dealloc_pd ? "endpoints are open on it" : "no ibv_dealloc_pd");
    } else if (is_other) {
        char was[AC_IB_NAME_MAX + 16];
        snprintf(was, sizeof(was), "%s port %d", dev.name, dev.port);
        ib.dealloc_pd(dev.pd);
        ib.close_device(dev.ctx);
        memset(&dev, 0, sizeof(dev));
        is_found = open_device(init_why, sizeof(init_why));
        AC_INFO(AC_SUB_NET | AC_SUB_INIT, "ib: rail NIC %s port %d: %s (was %s)", name, port,
                is_found ? description : init_why, was);
    }
    pthread_mutex_unlock(&lock);
}

static ncclResult_t verbs_fail(const char *what, int err)
{
    return AC_FAIL(ncclSystemError, "ib transport (%s): %s failed: %s", description, what,
                   strerror(err));
}

static void ib_ep_close(struct ac_rdma_ep *e)
{
    if (e == NULL)
        return;
    for (int q = 0; q < e->nqps; q++)
        if (e->qp[q] != NULL)
            ib.destroy_qp(e->qp[q]);
    if (e->cq != NULL)
        ib.destroy_cq(e->cq);
    free(e);
}

static ncclResult_t qp_init(struct ac_rdma_ep *e, int q)
{
    struct ibv_qp_init_attr ia = {.send_cq = e->cq,
                                  .recv_cq = e->cq,
                                  .qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = (uint32_t)e->depth,
                                          .max_recv_wr = (uint32_t)e->depth,
                                          .max_send_sge = 1,
                                          .max_recv_sge = 1}};
    if ((e->qp[q] = ib.create_qp(dev.pd, &ia)) == NULL)
        return verbs_fail("ibv_create_qp", errno);
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT,
                            .pkey_index = 0,
                            .port_num = dev.port,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE};
    int rc = ib.modify_qp(e->qp[q], &a,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    return rc != 0 ? verbs_fail("ibv_modify_qp to INIT", rc) : ncclSuccess;
}

static ncclResult_t ib_ep_open(int nqps, int depth, struct ac_rdma_ep **ep_out, void *addr_out,
                               size_t *addr_len_out)
{
    struct ib_addr addr = {
        .nqps = (uint8_t)nqps, .link = (uint8_t)dev.link, .mtu = dev.mtu, .lid = dev.lid};
    ncclResult_t res;
    struct ac_rdma_ep *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return AC_FAIL(ncclSystemError, "ib transport: out of memory");
    e->nqps = nqps;
    e->depth = depth;
    if ((e->cq = ib.create_cq(dev.ctx, nqps * 2 * depth + 8, NULL, NULL, 0)) == NULL) {
        res = verbs_fail("ibv_create_cq", errno);
        goto fail;
    }
    for (int q = 0; q < nqps; q++) {
        AC_CHECK_GOTO(qp_init(e, q), res, fail);
        if (getrandom(&e->psn[q], sizeof(e->psn[q]), 0) != (ssize_t)sizeof(e->psn[q]))
            e->psn[q] = 0;
        e->psn[q] &= 0xffffff;
        addr.qpn[q] = e->qp[q]->qp_num;
        addr.psn[q] = e->psn[q];
    }
    memcpy(addr.gid, dev.gid.raw, 16);
    memcpy(addr_out, &addr, sizeof(addr));
    *addr_len_out = sizeof(addr);
    __atomic_fetch_add(&neps, 1, __ATOMIC_RELEASE);
    *ep_out = e;
    return ncclSuccess;
fail:
    ib_ep_close(e);
    return res;
}

static ncclResult_t qp_connect(struct ac_rdma_ep *e, int q, const struct ib_addr *peer)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR,
                            .path_mtu = peer->mtu < dev.mtu ? (enum ibv_mtu)peer->mtu : dev.mtu,
                            .dest_qp_num = peer->qpn[q],
                            .rq_psn = peer->psn[q],
                            .max_dest_rd_atomic = 1,
                            .min_rnr_timer = 12,
                            .ah_attr = {.dlid = peer->lid, .sl = 0, .port_num = dev.port}};
    if (dev.link == AC_IB_LINK_ETH) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, peer->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)dev.gid_index;
        a.ah_attr.grh.hop_limit = 255;
    }
    int rc = ib.modify_qp(e->qp[q], &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc != 0)
        return verbs_fail("ibv_modify_qp to RTR", rc);
    const struct ac_config *cfg = ac_config_get();
    struct ibv_qp_attr s = {.qp_state = IBV_QPS_RTS,
                            .timeout = (uint8_t)cfg->ib_timeout,
                            .retry_cnt = (uint8_t)cfg->ib_retry_cnt,
                            .rnr_retry = 7,
                            .sq_psn = e->psn[q],
                            .max_rd_atomic = 1};
    rc = ib.modify_qp(e->qp[q], &s,
                      IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                          IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    return rc != 0 ? verbs_fail("ibv_modify_qp to RTS", rc) : ncclSuccess;
}

static ncclResult_t ib_ep_connect(struct ac_rdma_ep *e, const void *peer_addr, size_t len)
{
    struct ib_addr peer;
    if (len != sizeof(peer))
        return AC_FAIL(ncclInternalError, "ib transport: peer address of %zu bytes", len);
    memcpy(&peer, peer_addr, sizeof(peer));
    if (peer.nqps != e->nqps || peer.link != dev.link)
        return AC_FAIL(ncclInvalidUsage,
                       "ib transport (%s): peer has %d queue pairs on %s, this "
                       "side %d on %s: both ends of a connection need the same link layer",
                       description, peer.nqps, peer.link == AC_IB_LINK_ETH ? "RoCE" : "IB", e->nqps,
                       dev.link == AC_IB_LINK_ETH ? "RoCE" : "IB");
    for (int q = 0; q < e->nqps; q++)
        AC_CHECK(qp_connect(e, q, &peer));
    return ncclSuccess;
}

/* Device memory through its dma-buf; not cached (the cache's ranges are host pages). */
static ncclResult_t reg_dmabuf(void *buf, size_t len, const struct ac_ib_reg_plan *plan,
                               struct ac_rdma_mr *mr_out)
{
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    struct ibv_mr *mr =
        ib.reg_dmabuf_mr(dev.pd, plan->offset, len, (uint64_t)(uintptr_t)buf, plan->fd, access);
    int err = errno;
    close(plan->fd);
    if (mr == NULL)
        return AC_FAIL(ncclSystemError,
                       "ib transport (%s): ibv_reg_dmabuf_mr of %zu bytes of %s memory failed: %s "
                       "(does the NIC's driver import dma-bufs? see docs/networking.md)",
                       description, len, plan->backend, strerror(err));
    *mr_out = (struct ac_rdma_mr){.handle = mr,
                                  .desc = mr,
                                  .rbase = (uint64_t)(uintptr_t)buf,
                                  .key = mr->rkey,
                                  .is_direct = true};
    return ncclSuccess;
}

static ncclResult_t ib_reg(struct ac_rdma_ep *e, void *buf, size_t len, struct ac_rdma_mr *mr_out)
{
    const struct ac_ib_reg_env env = {.backend_for_pointer = ac_backend_for_pointer,
                                      .has_reg_dmabuf_mr = ib.reg_dmabuf_mr != NULL};
    struct ac_ib_reg_plan plan;
    ac_ib_reg_plan(&env, buf, len, &plan);
    if (plan.path == AC_IB_REG_DMABUF)
        return reg_dmabuf(buf, len, &plan, mr_out);
    if (plan.path == AC_IB_REG_STAGE)
        return AC_FAIL(ncclInvalidUsage,
                       "ib transport (%s): %s memory at %p cannot be registered with the NIC (%s): "
                       "stage it through host memory",
                       description, plan.backend, buf, plan.why);
    void *h;
    pthread_mutex_lock(&lock);
    ncclResult_t res = ac_ib_mrcache_get(&mrcache, buf, len, &h);
    pthread_mutex_unlock(&lock);
    if (res != ncclSuccess)
        return res;
    struct ibv_mr *mr = h;
    *mr_out = (struct ac_rdma_mr){
        .handle = mr, .desc = mr, .rbase = (uint64_t)(uintptr_t)buf, .key = mr->rkey};
    return ncclSuccess;
}

static void ib_dereg(struct ac_rdma_ep *e, struct ac_rdma_mr *mr)
{
    if (mr->handle == NULL)
        return;
    if (mr->is_direct) {
        ib.dereg_mr(mr->handle);
        mr->handle = NULL;
        return;
    }
    pthread_mutex_lock(&lock);
    ac_ib_mrcache_put(&mrcache, mr->handle);
    pthread_mutex_unlock(&lock);
    mr->handle = NULL;
}

/* Offsets are added to rbase, the buffer's own address: raddr is already virtual. */
static ncclResult_t ib_write(struct ac_rdma_ep *e, int qp, const void *local, size_t len,
                             const struct ac_rdma_mr *mr, uint64_t raddr, uint64_t rkey,
                             bool has_imm, uint32_t imm, uint64_t ctx, bool *is_busy_out)
{
    const struct ibv_mr *m = mr->desc;
    struct ibv_sge sge = {
        .addr = (uint64_t)(uintptr_t)local, .length = (uint32_t)len, .lkey = m->lkey};
    struct ibv_send_wr wr = {.wr_id = ctx,
                             .sg_list = &sge,
                             .num_sge = 1,
                             .opcode = has_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE,
                             .send_flags = IBV_SEND_SIGNALED,
                             .imm_data = htonl(imm),
                             .wr = {.rdma = {.remote_addr = raddr, .rkey = (uint32_t)rkey}}};
    struct ibv_send_wr *bad;
    *is_busy_out = e->posted[qp] >= e->depth;
    if (*is_busy_out)
        return ncclSuccess;
    int rc = ibv_post_send(e->qp[qp], &wr, &bad);
    if (rc == ENOMEM) {
        *is_busy_out = true;
        return ncclSuccess;
    }
    if (rc != 0)
        return verbs_fail("ibv_post_send", rc);
    e->posted[qp]++;
    return ncclSuccess;
}

static ncclResult_t ib_post_recv(struct ac_rdma_ep *e, int qp, int n)
{
    for (int i = 0; i < n; i++) {
        struct ibv_recv_wr wr = {.wr_id = RECV_WR_FLAG | (uint64_t)qp, .num_sge = 0}, *bad;
        int rc = ibv_post_recv(e->qp[qp], &wr, &bad);
        if (rc != 0)
            return verbs_fail("ibv_post_recv", rc);
    }
    return ncclSuccess;
}

static int qp_index(const struct ac_rdma_ep *e, uint32_t qp_num)
{
    for (int q = 0; q < e->nqps; q++)
        if (e->qp[q]->qp_num == qp_num)
            return q;
    return 0;
}

static ncclResult_t ib_poll(struct ac_rdma_ep *e, struct ac_rdma_wc *out, int max, int *n_out)
{
    struct ibv_wc wc[32];
    int n = ibv_poll_cq(e->cq, max < 32 ? max : 32, wc);
    *n_out = 0;
    if (n < 0)
        return verbs_fail("ibv_poll_cq", EIO);
    for (int i = 0; i < n; i++) {
        struct ac_rdma_wc *o = &out[i];
        bool is_recv = (wc[i].wr_id & RECV_WR_FLAG) != 0;
        memset(o, 0, sizeof(*o));
        o->kind = is_recv ? AC_RDMA_WC_IMM : AC_RDMA_WC_WRITE;
        o->qp = is_recv ? (int)(wc[i].wr_id & 0xff) : -1;
        o->ctx = wc[i].wr_id;
        o->imm = ntohl(wc[i].imm_data);
        if (!is_recv)
            e->posted[qp_index(e, wc[i].qp_num)]--;
        if (wc[i].status != IBV_WC_SUCCESS) {
            o->is_error = true;
            snprintf(o->err, sizeof(o->err), "%s (vendor error 0x%x)",
                     ib.wc_status_str(wc[i].status), wc[i].vendor_err);
        }
    }
    *n_out = n;
    return ncclSuccess;
}

#else /* built without <infiniband/verbs.h> */

static bool ib_is_usable(bool is_forced, char *why, size_t len)
{
    snprintf(why, len, "built without libibverbs headers (install libibverbs-dev and rebuild)");
    return false;
}
static const char *ib_describe(void)
{
    return "verbs (not built)";
}
static ncclResult_t not_built(void)
{
    return AC_FAIL(ncclInvalidUsage, "ib transport: built without libibverbs headers");
}
static ncclResult_t ib_ep_open(int nqps, int depth, struct ac_rdma_ep **ep_out, void *addr_out,
                               size_t *addr_len_out)
{
    return not_built();
}
void ac_ib_prefer_device(const char *name, int port) {}
static ncclResult_t ib_ep_connect(struct ac_rdma_ep *e, const void *a, size_t len)
{
    return not_built();
}
static ncclResult_t ib_reg(struct ac_rdma_ep *e, void *buf, size_t len, struct ac_rdma_mr *mr)
{
    return not_built();
}
static void ib_dereg(struct ac_rdma_ep *e, struct ac_rdma_mr *mr) {}
static ncclResult_t ib_write(struct ac_rdma_ep *e, int qp, const void *local, size_t len,
                             const struct ac_rdma_mr *mr, uint64_t raddr, uint64_t rkey,
                             bool has_imm, uint32_t imm, uint64_t ctx, bool *is_busy_out)
{
    return not_built();
}
static ncclResult_t ib_post_recv(struct ac_rdma_ep *e, int qp, int n)
{
    return not_built();
}
static ncclResult_t ib_poll(struct ac_rdma_ep *e, struct ac_rdma_wc *wc, int max, int *n_out)
{
    return not_built();
}
static void ib_ep_close(struct ac_rdma_ep *e) {}

#endif

static const struct ac_rdma_provider ib_provider = {
    .name = "ib",
    .is_usable = ib_is_usable,
    .describe = ib_describe,
    .ep_open = ib_ep_open,
    .ep_connect = ib_ep_connect,
    .reg = ib_reg,
    .dereg = ib_dereg,
    .write = ib_write,
    .post_recv = ib_post_recv,
    .poll = ib_poll,
    .ep_close = ib_ep_close,
};

static int ib_nqps(void)
{
    return (int)ac_config_get()->ib_qps;
}

static bool ib_can_connect(const struct ac_peer_info *self, const struct ac_peer_info *peer)
{
    return ac_rdma_can_connect(&ac_ib_transport, self, peer);
}

const struct ac_rdma_transport ac_ib_transport =
    AC_RDMA_TRANSPORT("ib", ib_can_connect, ib_provider, ib_nqps);
