/* The mlx5 direct engine, host side: which GIN engine runs (ANYCCL_GIN_ENGINE), and the set-up of
 * one RC QP + CQ per peer whose send queue, doorbell records, UAR and CQ a producer drives itself
 * (src/device/kernels/gin_mlx5.h). libibverbs and libmlx5 are dlopen'ed at first use, like the
 * verbs provider's (src/transport/ib/ib_provider.c): AnyCCL loads and runs where they are absent.
 *
 * The route is the standard verbs objects plus mlx5dv_init_obj (rocSHMEM's; DEVX is not needed):
 * libmlx5 allocates the queues in host memory; a GPU producer reaches them, and the UAR page,
 * through the GPU backend's host_map (cuMemHostRegister / hipHostRegister, IOMEMORY for the UAR).
 * Mapping the UAR succeeds only where the GPU may reach the NIC's BAR (peer-to-peer PCIe); queues
 * in GPU memory (a parent-domain allocator) and a CPU-assisted doorbell are not written.
 *
 * Compiled and unit-tested against fakes only; no ConnectX has run any of it. */
#include "gin/gin_mlx5_dev.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "core/bootstrap.h"
#include "core/comm.h"
#include "device/backend.h"
#include "transport/ib/ib_select.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static const char *const engine_names[AC_GIN_ENGINE_COUNT] = {"sw", "mlx5"};

ncclResult_t ac_gin_engine_decide(const char *setting, bool is_mlx5_usable, const char *why_not,
                                  enum ac_gin_engine *engine_out, char *line_out, size_t line_len)
{
    bool is_auto = setting == NULL || setting[0] == '\0' || strcasecmp(setting, "auto") == 0;
    if (!is_auto && strcasecmp(setting, "sw") != 0 && strcasecmp(setting, "mlx5") != 0)
        return AC_FAIL(ncclInvalidUsage,
                       "GIN: ANYCCL_GIN_ENGINE=%s is not an engine: use sw, mlx5 or auto", setting);
    if (!is_auto && strcasecmp(setting, "sw") == 0) {
        *engine_out = AC_GIN_ENGINE_SW;
        snprintf(line_out, line_len, "engine=sw (ANYCCL_GIN_ENGINE=sw; engine=mlx5 not probed)");
        return ncclSuccess;
    }
    if (!is_mlx5_usable && !is_auto)
        return AC_FAIL(ncclInvalidUsage,
                       "GIN: ANYCCL_GIN_ENGINE=mlx5, but the mlx5 direct engine cannot run in "
                       "this process: %s (set ANYCCL_GIN_ENGINE=sw or auto to use the software "
                       "engine)",
                       why_not && why_not[0] ? why_not : "unknown reason");
    *engine_out = is_mlx5_usable ? AC_GIN_ENGINE_MLX5 : AC_GIN_ENGINE_SW;
    if (is_mlx5_usable)
        snprintf(line_out, line_len, "engine=mlx5 ran=yes (ANYCCL_GIN_ENGINE=%s)",
                 is_auto ? "auto" : "mlx5");
    else
        snprintf(line_out, line_len, "engine=%s; engine=mlx5 ran=no: %s", engine_names[*engine_out],
                 why_not && why_not[0] ? why_not : "unknown reason");
    return ncclSuccess;
}

#if __has_include(<infiniband/mlx5dv.h>) && __has_include(<infiniband/verbs.h>)
#define HAS_MLX5DV 1
#include <infiniband/mlx5dv.h>
#include <infiniband/verbs.h>
#else
#define HAS_MLX5DV 0
#endif

#if HAS_MLX5DV

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
    struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
    int (*dereg_mr)(struct ibv_mr *);
    struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
    int (*destroy_cq)(struct ibv_cq *);
    struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
    int (*destroy_qp)(struct ibv_qp *);
    int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
    /* libmlx5 */
    bool (*is_supported)(struct ibv_device *);
    int (*init_obj)(struct mlx5dv_obj *, uint64_t);
} fn;

/* The one mlx5 port this process uses. */
static struct {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    uint8_t port;
    enum ac_ib_link link;
    int gid_index;
    union ibv_gid gid;
    uint16_t lid;
    uint8_t mtu;
    uint8_t max_rd_atom; /* outstanding atomics per QP, both directions */
    char name[AC_IB_NAME_MAX];
} dev;

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static bool is_probed, is_found;
static char probe_why[256];

static bool load_libraries(char *why, size_t len)
{
    void *verbs = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (verbs == NULL) {
        snprintf(why, len, "libibverbs.so.1 not loadable (%s)", dlerror());
        return false;
    }
    void *mlx5 = dlopen("libmlx5.so.1", RTLD_NOW | RTLD_LOCAL);
    if (mlx5 == NULL) {
        snprintf(why, len, "no libmlx5 (libmlx5.so.1 not loadable: %s)", dlerror());
        return false;
    }
#define SYM(lib, field, name) *(void **)&fn.field = dlsym(lib, name)
    SYM(verbs, get_device_list, "ibv_get_device_list");
    SYM(verbs, free_device_list, "ibv_free_device_list");
    SYM(verbs, get_device_name, "ibv_get_device_name");
    SYM(verbs, open_device, "ibv_open_device");
    SYM(verbs, close_device, "ibv_close_device");
    SYM(verbs, query_device, "ibv_query_device");
    SYM(verbs, query_port, "ibv_query_port");
    SYM(verbs, query_gid, "ibv_query_gid");
    SYM(verbs, alloc_pd, "ibv_alloc_pd");
    SYM(verbs, reg_mr, "ibv_reg_mr");
    SYM(verbs, dereg_mr, "ibv_dereg_mr");
    SYM(verbs, create_cq, "ibv_create_cq");
    SYM(verbs, destroy_cq, "ibv_destroy_cq");
    SYM(verbs, create_qp, "ibv_create_qp");
    SYM(verbs, destroy_qp, "ibv_destroy_qp");
    SYM(verbs, modify_qp, "ibv_modify_qp");
    SYM(mlx5, is_supported, "mlx5dv_is_supported");
    SYM(mlx5, init_obj, "mlx5dv_init_obj");
#undef SYM
    void *const *all = (void *const *)&fn;
    for (size_t i = 0; i < sizeof(fn) / sizeof(void *); i++) {
        if (all[i] == NULL) {
            snprintf(why, len, "libibverbs.so.1 or libmlx5.so.1 lacks an entry point: too old");
            return false;
        }
    }
    return true;
}

/* The header's ibv_query_port, without its link-time reference to the compat symbol. */
static int query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr)
{
    struct verbs_context *vctx = verbs_get_ctx_op(ctx, query_port);
    memset(attr, 0, sizeof(*attr));
    if (vctx == NULL)
        return fn.query_port(ctx, port, attr);
    return vctx->query_port(ctx, port, attr, sizeof(*attr));
}

static bool pick_gid(const char *name, uint8_t port, int ngids)
{
    struct ac_ib_gid gids[128];
    int n = ngids < 128 ? ngids : 128;
    for (int i = 0; i < n; i++) {
        union ibv_gid g;
        memset(&gids[i], 0, sizeof(gids[i]));
        if (fn.query_gid(dev.ctx, port, i, &g) != 0)
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

/* An mlx5 device with an active port NCCL_IB_HCA allows: true with dev filled. */
static bool try_device(struct ibv_device *d, const struct ac_ib_hca_filter *filter)
{
    const char *name = fn.get_device_name(d);
    struct ibv_device_attr da;
    if (!fn.is_supported(d) || (dev.ctx = fn.open_device(d)) == NULL)
        return false;
    if (fn.query_device(dev.ctx, &da) == 0) {
        for (uint8_t p = 1; p <= da.phys_port_cnt; p++) {
            struct ibv_port_attr pa;
            if (!ac_ib_hca_match(filter, name, p) || query_port(dev.ctx, p, &pa) != 0 ||
                pa.state != IBV_PORT_ACTIVE)
                continue;
            dev.link = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? AC_IB_LINK_ETH : AC_IB_LINK_IB;
            dev.port = p;
            dev.lid = pa.lid;
            dev.mtu = (uint8_t)pa.active_mtu;
            int rd = da.max_qp_rd_atom < da.max_qp_init_rd_atom ? da.max_qp_rd_atom
                                                                : da.max_qp_init_rd_atom;
            dev.max_rd_atom = (uint8_t)(rd < 1 ? 1 : rd > 16 ? 16 : rd);
            if (!pick_gid(name, p, pa.gid_tbl_len))
                continue;
            snprintf(dev.name, sizeof(dev.name), "%s", name);
            return true;
        }
    }
    fn.close_device(dev.ctx);
    dev.ctx = NULL;
    return false;
}

static bool open_device(char *why, size_t len)
{
    struct ac_ib_hca_filter filter;
    int n = 0;
    if (ac_ib_hca_parse(ac_config_get()->ib_hca, &filter) != ncclSuccess) {
        snprintf(why, len, "NCCL_IB_HCA is malformed (see the warning above)");
        return false;
    }
    struct ibv_device **list = fn.get_device_list(&n);
    for (int i = 0; list != NULL && i < n && dev.ctx == NULL; i++)
        try_device(list[i], &filter);
    if (list != NULL)
        fn.free_device_list(list);
    if (dev.ctx == NULL) {
        snprintf(why, len, "no mlx5 device with an active port%s (%d RDMA device(s) listed)",
                 ac_config_get()->ib_hca ? " allowed by NCCL_IB_HCA" : "", n);
        return false;
    }
    if ((dev.pd = fn.alloc_pd(dev.ctx)) == NULL) {
        snprintf(why, len, "ibv_alloc_pd on %s failed: %s", dev.name, strerror(errno));
        return false;
    }
    AC_INFO(AC_SUB_NET | AC_SUB_INIT, "GIN: mlx5 direct engine can use %s port %d (%s, GID %d)",
            dev.name, dev.port, dev.link == AC_IB_LINK_ETH ? "RoCE" : "InfiniBand", dev.gid_index);
    return true;
}

static bool probe_nic(char *why, size_t len)
{
    pthread_mutex_lock(&probe_lock);
    if (!is_probed) {
        is_probed = true;
        /* no kernel RDMA device: do not even load the libraries (and their providers) */
        if (access("/sys/class/infiniband", F_OK) != 0)
            snprintf(probe_why, sizeof(probe_why), "no mlx5 device (/sys/class/infiniband absent)");
        else
            is_found = load_libraries(probe_why, sizeof(probe_why)) &&
                       open_device(probe_why, sizeof(probe_why));
    }
    pthread_mutex_unlock(&probe_lock);
    if (!is_found)
        snprintf(why, len, "%s", probe_why);
    return is_found;
}

#else /* !HAS_MLX5DV */

static bool probe_nic(char *why, size_t len)
{
    snprintf(why, len, "built without infiniband/mlx5dv.h (install libibverbs-dev and rebuild)");
    return false;
}

#endif

bool ac_gin_mlx5_usable(bool needs_gpu, char *why, size_t why_len)
{
    if (!probe_nic(why, why_len))
        return false;
    if (!needs_gpu)
        return true;
    char gwhy[200] = "";
    const struct ac_backend *gpu = ac_backend_first_gpu(gwhy, sizeof(gwhy));
    if (gpu == NULL) {
        snprintf(why, why_len, "no GPU backend to map the doorbell into (%s)", gwhy);
        return false;
    }
    if (gpu->size < offsetof(struct ac_backend, host_unmap) + sizeof(gpu->host_unmap) ||
        gpu->host_map == NULL || gpu->host_unmap == NULL) {
        snprintf(why, why_len,
                 "the %s backend cannot map the UAR and queues into the GPU (it has no "
                 "host_map op)",
                 gpu->name);
        return false;
    }
    return true;
}

ncclResult_t ac_gin_engine_select(bool needs_gpu, enum ac_gin_engine *engine_out, char *line_out,
                                  size_t line_len)
{
    const char *setting = ac_config_get()->gin_engine;
    char why[300] = "";
    bool is_usable = false;
    if (!(setting && strcasecmp(setting, "sw") == 0))
        is_usable = ac_gin_mlx5_usable(needs_gpu, why, sizeof(why));
    return ac_gin_engine_decide(setting, is_usable, why, engine_out, line_out, line_len);
}

ncclResult_t ac_gin_engine_for_host_alltoall(char *line_out, size_t line_len)
{
    enum ac_gin_engine engine;
    char line[400];
    AC_CHECK(ac_gin_engine_select(true, &engine, line, sizeof(line)));
    if (engine == AC_GIN_ENGINE_SW) {
        snprintf(line_out, line_len, "%s", line);
        return ncclSuccess;
    }
    const char *setting = ac_config_get()->gin_engine;
    if (setting && strcasecmp(setting, "mlx5") == 0)
        return AC_FAIL(ncclInvalidUsage,
                       "GIN: ANYCCL_GIN_ENGINE=mlx5: the mlx5 direct engine can run here, but the "
                       "all-to-all of ANYCCL_GPU_INITIATED=1 (host buffers, host producers) does "
                       "not drive it yet: it serves device producers "
                       "(src/device/kernels/gin_mlx5.h); set ANYCCL_GIN_ENGINE=sw or auto");
    snprintf(line_out, line_len,
             "engine=sw; engine=mlx5 ran=no: usable here, but the host all-to-all does not drive "
             "it yet");
    return ncclSuccess;
}

#if HAS_MLX5DV

ncclResult_t ac_gin_mlx5_fill_qp(struct ac_gin_mlx5_qp *out, const struct mlx5dv_qp *dq,
                                 const struct mlx5dv_cq *dc, uint32_t qpn, char *why,
                                 size_t why_len)
{
    const char *bad = NULL;
    if (dq->sq.buf == NULL || dq->dbrec == NULL || dq->bf.reg == NULL)
        bad = "no send queue, doorbell record or BlueFlame register";
    else if (dq->sq.stride != AC_GIN_MLX5_WQEBB)
        bad = "send-queue stride is not 64 bytes";
    else if (dq->sq.wqe_cnt == 0 || (dq->sq.wqe_cnt & (dq->sq.wqe_cnt - 1)) != 0 ||
             dq->sq.wqe_cnt > AC_GIN_MLX5_MAX_WQES)
        bad = "send-queue depth is not a power of two up to 32768";
    else if (dc->buf == NULL || dc->dbrec == NULL)
        bad = "no CQ buffer or doorbell record";
    else if (dc->cqe_size != AC_GIN_MLX5_CQE_BYTES)
        bad = "CQEs are not 64 bytes";
    else if (dc->cqe_cnt == 0 || (dc->cqe_cnt & (dc->cqe_cnt - 1)) != 0 ||
             dc->cqe_cnt < dq->sq.wqe_cnt)
        bad = "CQ depth is not a power of two at least the send queue's";
    if (bad) {
        snprintf(why, why_len, "%s (sq %u x %u bytes, cq %u x %u bytes)", bad, dq->sq.wqe_cnt,
                 dq->sq.stride, dc->cqe_cnt, dc->cqe_size);
        return AC_FAIL(ncclInvalidUsage, "GIN mlx5: the QP does not fit the direct engine: %s",
                       why);
    }
    memset(out, 0, sizeof(*out));
    out->sq_buf = dq->sq.buf;
    out->wqe_cnt = dq->sq.wqe_cnt;
    out->qpn = qpn;
    out->sq_dbrec = (uint32_t *)&dq->dbrec[MLX5_SND_DBR];
    out->bf_reg = dq->bf.reg;
    out->cq_buf = dc->buf;
    out->cqe_cnt = dc->cqe_cnt;
    out->cqn = dc->cqn;
    out->cq_dbrec = (uint32_t *)dc->dbrec;
    return ncclSuccess;
}

/* What rank r tells rank p about the QP it created for p, and its own windows. */
struct mlx5_addr {
    uint32_t qpn, psn;
    uint16_t lid;
    uint8_t link, mtu;
    uint8_t gid[16];
    uint64_t raddr, rbytes, sig_raddr;
    uint32_t rkey, sig_rkey, nsig, pad;
};

#define MAX_MAPS 64

struct ac_gin_mlx5 {
    struct ac_gin_mlx5_dev *dev; /* producer-visible (host_alloc memory when gpu) */
    const struct ac_backend *gpu;
    int nranks;
    struct ibv_cq **cqs;
    struct ibv_qp **qps;
    uint32_t *psn;
    struct ibv_mr *win_mr, *sig_mr, *scratch_mr;
    uint64_t *scratch;
    int nmaps;
    struct {
        uintptr_t base, end;
        char *dev_base;
    } maps[MAX_MAPS];
};

static ncclResult_t verbs_fail(const char *what, int err)
{
    return AC_FAIL(ncclSystemError, "GIN mlx5 engine (%s port %d): %s failed: %s", dev.name,
                   dev.port, what, strerror(err));
}

/* The device address of host range [p, p + bytes), mapped a page range at a time; ranges already
 * mapped are reused (libmlx5 packs several doorbell records in one page). */
static ncclResult_t map_range(struct ac_gin_mlx5 *e, void *p, size_t bytes, bool is_io,
                              void **dev_out)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)p;
    uintptr_t base = a & ~(pg - 1), end = (a + bytes + pg - 1) & ~(pg - 1);
    for (int i = 0; i < e->nmaps; i++) {
        if (base >= e->maps[i].base && end <= e->maps[i].end) {
            *dev_out = e->maps[i].dev_base + (a - e->maps[i].base);
            return ncclSuccess;
        }
    }
    if (e->nmaps == MAX_MAPS)
        return AC_FAIL(ncclInternalError, "GIN mlx5: more than %d ranges to map", MAX_MAPS);
    void *d = NULL;
    AC_CHECK(e->gpu->host_map((void *)base, end - base, is_io, &d));
    e->maps[e->nmaps].base = base;
    e->maps[e->nmaps].end = end;
    e->maps[e->nmaps].dev_base = d;
    e->nmaps++;
    *dev_out = (char *)d + (a - base);
    return ncclSuccess;
}

static ncclResult_t map_qp(struct ac_gin_mlx5 *e, struct ac_gin_mlx5_qp *q)
{
    void *d;
    AC_CHECK(map_range(e, q->sq_buf, (size_t)q->wqe_cnt * AC_GIN_MLX5_WQEBB, false, &d));
    q->sq_buf = d;
    AC_CHECK(map_range(e, q->sq_dbrec, 4, false, &d));
    q->sq_dbrec = d;
    AC_CHECK(map_range(e, q->bf_reg, 8, true, &d));
    q->bf_reg = d;
    AC_CHECK(map_range(e, q->cq_buf, (size_t)q->cqe_cnt * AC_GIN_MLX5_CQE_BYTES, false, &d));
    q->cq_buf = d;
    AC_CHECK(map_range(e, q->cq_dbrec, 4, false, &d));
    q->cq_dbrec = d;
    return ncclSuccess;
}

static ncclResult_t create_qp(struct ac_gin_mlx5 *e, int p, uint32_t nwqes,
                              struct mlx5_addr *addr_out)
{
    struct ac_gin_mlx5_qp *q = &e->dev->qps[p];
    if ((e->cqs[p] = fn.create_cq(dev.ctx, (int)nwqes, NULL, NULL, 0)) == NULL)
        return verbs_fail("ibv_create_cq", errno);
    /* every WQE asks for a CQE (sq_sig_all is 0, the producer sets CQ_UPDATE itself); no receive
     * queue: nothing here sends or writes with immediate to this QP */
    struct ibv_qp_init_attr ia = {
        .send_cq = e->cqs[p],
        .recv_cq = e->cqs[p],
        .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = nwqes, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1}};
    if ((e->qps[p] = fn.create_qp(dev.pd, &ia)) == NULL)
        return verbs_fail("ibv_create_qp", errno);
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT,
                            .port_num = dev.port,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                               IBV_ACCESS_REMOTE_ATOMIC};
    int rc = fn.modify_qp(e->qps[p], &a,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (rc != 0)
        return verbs_fail("ibv_modify_qp to INIT", rc);
    struct mlx5dv_qp dq;
    struct mlx5dv_cq dc;
    struct mlx5dv_obj obj = {.qp = {.in = e->qps[p], .out = &dq},
                             .cq = {.in = e->cqs[p], .out = &dc}};
    if ((rc = fn.init_obj(&obj, MLX5DV_OBJ_QP | MLX5DV_OBJ_CQ)) != 0)
        return verbs_fail("mlx5dv_init_obj", rc < 0 ? -rc : rc);
    char why[200];
    AC_CHECK(ac_gin_mlx5_fill_qp(q, &dq, &dc, e->qps[p]->qp_num, why, sizeof(why)));
    if (getrandom(&e->psn[p], sizeof(e->psn[p]), 0) != (ssize_t)sizeof(e->psn[p]))
        e->psn[p] = 0;
    e->psn[p] &= 0xffffff;
    addr_out->qpn = e->qps[p]->qp_num;
    addr_out->psn = e->psn[p];
    return ncclSuccess;
}

static ncclResult_t connect_qp(struct ac_gin_mlx5 *e, int p, const struct mlx5_addr *peer)
{
    const struct ac_config *cfg = ac_config_get();
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR,
                            .path_mtu = (enum ibv_mtu)(peer->mtu < dev.mtu ? peer->mtu : dev.mtu),
                            .dest_qp_num = peer->qpn,
                            .rq_psn = peer->psn,
                            .max_dest_rd_atomic = dev.max_rd_atom,
                            .min_rnr_timer = 12,
                            .ah_attr = {.dlid = peer->lid, .port_num = dev.port}};
    if (dev.link == AC_IB_LINK_ETH) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, peer->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)dev.gid_index;
        a.ah_attr.grh.hop_limit = 255;
    }
    int rc = fn.modify_qp(e->qps[p], &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc != 0)
        return verbs_fail("ibv_modify_qp to RTR", rc);
    struct ibv_qp_attr s = {.qp_state = IBV_QPS_RTS,
                            .timeout = (uint8_t)cfg->ib_timeout,
                            .retry_cnt = (uint8_t)cfg->ib_retry_cnt,
                            .rnr_retry = 7,
                            .sq_psn = e->psn[p],
                            .max_rd_atomic = dev.max_rd_atom};
    rc = fn.modify_qp(e->qps[p], &s,
                      IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                          IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    if (rc != 0)
        return verbs_fail("ibv_modify_qp to RTS", rc);
    struct ac_gin_mlx5_qp *q = &e->dev->qps[p];
    q->raddr = peer->raddr;
    q->rbytes = peer->rbytes;
    q->rkey = peer->rkey;
    q->sig_raddr = peer->sig_raddr;
    q->sig_rkey = peer->sig_rkey;
    q->nsig = peer->nsig;
    return e->gpu ? map_qp(e, q) : ncclSuccess;
}

static void *alloc_shared(const struct ac_backend *gpu, size_t bytes)
{
    void *p = NULL;
    if (gpu)
        return gpu->host_alloc(bytes, &p) == ncclSuccess ? p : NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    memset(p, 0, bytes);
    return p;
}

static void free_shared(const struct ac_backend *gpu, void *p)
{
    if (p && gpu)
        gpu->host_free(p);
    else
        free(p);
}

static ncclResult_t register_windows(struct ac_gin_mlx5 *e, void *win, size_t win_bytes,
                                     uint64_t *signals, uint32_t nsignals)
{
    /* Signals take RDMA atomics; no IBV_ACCESS_RELAXED_ORDERING anywhere, so a signal is never
     * seen before the writes that preceded it on the QP (design note rule 5). */
    int wa = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    int sa = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
    if ((e->win_mr = fn.reg_mr(dev.pd, win, win_bytes, wa)) == NULL)
        return verbs_fail("ibv_reg_mr of the window (device memory needs GPUDirect RDMA: "
                          "nvidia-peermem or a dma-buf registration, not written here)",
                          errno);
    if ((e->sig_mr = fn.reg_mr(dev.pd, signals, nsignals * sizeof(uint64_t), sa)) == NULL)
        return verbs_fail("ibv_reg_mr of the signals", errno);
    if ((e->scratch = alloc_shared(NULL, 64)) == NULL)
        return AC_FAIL(ncclSystemError, "GIN mlx5: out of memory");
    if ((e->scratch_mr = fn.reg_mr(dev.pd, e->scratch, 64, IBV_ACCESS_LOCAL_WRITE)) == NULL)
        return verbs_fail("ibv_reg_mr of the atomic scratch", errno);
    struct ac_gin_mlx5_dev *d = e->dev;
    d->laddr = (uint64_t)(uintptr_t)win;
    d->lbytes = win_bytes;
    d->lkey = e->win_mr->lkey;
    d->scratch_addr = (uint64_t)(uintptr_t)e->scratch;
    d->scratch_lkey = e->scratch_mr->lkey;
    d->signals = signals;
    d->nsignals = nsignals;
    return ncclSuccess;
}

static ncclResult_t exchange_and_connect(struct ncclComm *comm, struct ac_gin_mlx5 *e,
                                         struct mlx5_addr *all)
{
    int n = comm->nranks, me = comm->rank;
    for (int p = 0; p < n; p++) {
        struct mlx5_addr *a = &all[(size_t)me * n + p];
        a->lid = dev.lid;
        a->link = (uint8_t)dev.link;
        a->mtu = dev.mtu;
        memcpy(a->gid, dev.gid.raw, 16);
        a->raddr = e->dev->laddr;
        a->rbytes = e->dev->lbytes;
        a->rkey = e->win_mr->rkey;
        a->sig_raddr = (uint64_t)(uintptr_t)e->dev->signals;
        a->sig_rkey = e->sig_mr->rkey;
        a->nsig = e->dev->nsignals;
    }
    AC_CHECK(ac_bootstrap_allgather(comm->bs, all, (size_t)n * sizeof(*all)));
    for (int p = 0; p < n; p++) {
        if (p == me)
            continue;
        const struct mlx5_addr *peer = &all[(size_t)p * n + me];
        if (peer->link != (uint8_t)dev.link)
            return AC_FAIL(ncclInvalidUsage,
                           "GIN mlx5: rank %d is on %s, rank %d on %s: both ends of a QP need the "
                           "same link layer",
                           me, dev.link == AC_IB_LINK_ETH ? "RoCE" : "InfiniBand", p,
                           peer->link == AC_IB_LINK_ETH ? "RoCE" : "InfiniBand");
        AC_CHECK(connect_qp(e, p, peer));
    }
    return ncclSuccess;
}

ncclResult_t ac_gin_mlx5_create(struct ncclComm *comm, void *win, size_t win_bytes,
                                uint64_t *signals, uint32_t nsignals, uint32_t nwqes,
                                const struct ac_backend *gpu, struct ac_gin_mlx5 **out)
{
    char why[300];
    if (!ac_gin_mlx5_usable(gpu != NULL, why, sizeof(why)))
        return AC_FAIL(ncclInvalidUsage, "GIN mlx5 engine unavailable: %s", why);
    if (nwqes == 0 || (nwqes & (nwqes - 1)) != 0 || nwqes > AC_GIN_MLX5_MAX_WQES)
        return AC_FAIL(ncclInvalidUsage, "GIN mlx5: %u WQEs per QP: need a power of two <= %u",
                       nwqes, AC_GIN_MLX5_MAX_WQES);
    ncclResult_t res = ncclSuccess;
    int n = comm->nranks;
    struct mlx5_addr *all = NULL;
    struct ac_gin_mlx5 *e = calloc(1, sizeof(*e));
    if (!e)
        return AC_FAIL(ncclSystemError, "GIN mlx5: out of memory");
    e->gpu = gpu;
    e->nranks = n;
    e->cqs = calloc((size_t)n, sizeof(*e->cqs));
    e->qps = calloc((size_t)n, sizeof(*e->qps));
    e->psn = calloc((size_t)n, sizeof(*e->psn));
    all = calloc((size_t)n * n, sizeof(*all));
    e->dev = alloc_shared(gpu, sizeof(*e->dev) + (size_t)n * sizeof(struct ac_gin_mlx5_qp));
    if (!e->cqs || !e->qps || !e->psn || !all || !e->dev) {
        res = AC_FAIL(ncclSystemError, "GIN mlx5: out of memory for %d peers", n);
        goto fail;
    }
    struct ac_gin_mlx5_dev *d = e->dev;
    d->version = AC_GIN_MLX5_VERSION;
    d->size = sizeof(*d);
    d->me = (uint32_t)comm->rank;
    d->npeers = (uint32_t)n;
    /* the qps array follows the struct in the same (device-visible) allocation */
    d->qps = (struct ac_gin_mlx5_qp *)(d + 1);
    d->abort_flag = &comm->abort_flag;
    AC_CHECK_GOTO(register_windows(e, win, win_bytes, signals, nsignals), res, fail);
    for (int p = 0; p < n; p++)
        if (p != comm->rank)
            AC_CHECK_GOTO(create_qp(e, p, nwqes, &all[(size_t)comm->rank * n + p]), res, fail);
    AC_CHECK_GOTO(exchange_and_connect(comm, e, all), res, fail);
    AC_INFO(AC_SUB_NET | AC_SUB_INIT,
            "GIN: mlx5 direct engine: %d QPs on %s port %d, %u WQEs each, producer on the %s",
            n - 1, dev.name, dev.port, nwqes, gpu ? gpu->name : "host");
    free(all);
    *out = e;
    return ncclSuccess;
fail:
    free(all);
    ac_gin_mlx5_destroy(e);
    return res;
}

struct ac_gin_mlx5_dev *ac_gin_mlx5_dev(struct ac_gin_mlx5 *e)
{
    return e->dev;
}

void ac_gin_mlx5_destroy(struct ac_gin_mlx5 *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->nmaps; i++)
        e->gpu->host_unmap((void *)e->maps[i].base);
    for (int p = 0; p < e->nranks; p++) {
        if (e->qps && e->qps[p])
            fn.destroy_qp(e->qps[p]);
        if (e->cqs && e->cqs[p])
            fn.destroy_cq(e->cqs[p]);
    }
    if (e->scratch_mr)
        fn.dereg_mr(e->scratch_mr);
    if (e->sig_mr)
        fn.dereg_mr(e->sig_mr);
    if (e->win_mr)
        fn.dereg_mr(e->win_mr);
    free(e->scratch);
    free_shared(e->gpu, e->dev);
    free(e->cqs);
    free(e->qps);
    free(e->psn);
    free(e);
}

#else /* !HAS_MLX5DV: the engine cannot be built; every entry says so */

ncclResult_t ac_gin_mlx5_fill_qp(struct ac_gin_mlx5_qp *out, const struct mlx5dv_qp *dq,
                                 const struct mlx5dv_cq *dc, uint32_t qpn, char *why,
                                 size_t why_len)
{
    snprintf(why, why_len, "built without infiniband/mlx5dv.h");
    return AC_FAIL(ncclInvalidUsage, "GIN mlx5: built without infiniband/mlx5dv.h");
}

ncclResult_t ac_gin_mlx5_create(struct ncclComm *comm, void *win, size_t win_bytes,
                                uint64_t *signals, uint32_t nsignals, uint32_t nwqes,
                                const struct ac_backend *gpu, struct ac_gin_mlx5 **out)
{
    return AC_FAIL(ncclInvalidUsage, "GIN mlx5 engine unavailable: built without "
                                     "infiniband/mlx5dv.h (install libibverbs-dev and rebuild)");
}

struct ac_gin_mlx5_dev *ac_gin_mlx5_dev(struct ac_gin_mlx5 *e)
{
    return NULL;
}

void ac_gin_mlx5_destroy(struct ac_gin_mlx5 *e) {}

#endif
