/* The libfabric provider of the RDMA engine (transport "ofi"): RDMA writes with remote CQ data
 * (fi_writedata) on reliable datagram endpoints (FI_EP_RDM) of any libfabric provider that offers
 * them: efa, verbs, cxi, psm3 on clusters; tcp (tcp;ofi_rxm) and sockets anywhere, which is how it
 * runs in CI. libfabric.so.1 is opened with dlopen at first use, so AnyCCL loads without it; every
 * call past fi_getinfo/fi_fabric is an inline through libfabric's ops tables.
 *
 * One fabric and domain per process (FI_THREAD_SAFE, so connectors of different threads share
 * them); per connector a completion queue, an address vector and nqps endpoints. Software
 * providers (tcp, sockets, udp, shm) are used only when asked for (ANYCCL_NET=ofi or
 * ANYCCL_OFI_PROVIDER): sockets are the default network over plain Ethernet. */
#include "transport/rdma/rdma.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/socket.h"
#include "common/time.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if __has_include(<rdma/fabric.h>)
#define HAS_OFI_HEADERS 1
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#else
#define HAS_OFI_HEADERS 0
#endif

#if HAS_OFI_HEADERS

#define OFI_API FI_VERSION(1, 10)
#define NAME_MAX_BYTES 56

static struct {
    int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *,
                   struct fi_info **);
    void (*freeinfo)(struct fi_info *);
    struct fi_info *(*dupinfo)(const struct fi_info *);
    int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
    const char *(*strerror)(int);
    uint32_t (*version)(void);
} fi;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static bool is_found, is_software;
static char init_why[256];
static char description[160];
static struct fi_info *info;
static struct fid_fabric *fabric;
static struct fid_domain *domain;
static uint64_t next_key = 1; /* keys chosen by us when the provider does not pick them */

struct op {
    struct fi_context2 fc; /* first: libfabric's scratch space when it asks for FI_CONTEXT(2) */
    uint64_t ctx;
    int qp;
    bool is_recv;
    struct op *next_free;
};

struct ac_rdma_ep {
    int nqps;
    struct fid_cq *cq;
    struct fid_av *av;
    struct fid_ep *ep[AC_RDMA_MAX_QPS];
    fi_addr_t peer[AC_RDMA_MAX_QPS];
    struct op *ops;
    struct op *free_ops;
    uint64_t refused_since_ns;   /* first of consecutive writes refused as not connected */
};

/* The sockets provider refuses a write with ENOENT/ENOTCONN while its connection to the peer is
 * still being made (seen under load, right after set-up): the write is tried again later, for
 * at most WRITE_REFUSED_NS, after which the refusal is an error. */
#define WRITE_REFUSED_NS (10 * 1000000000ull)

static bool load_library(char *why, size_t len)
{
    void *lib = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(why, len, "libfabric.so.1 not loadable (%s); install libfabric1", dlerror());
        return false;
    }
    *(void **)&fi.getinfo = dlsym(lib, "fi_getinfo");
    *(void **)&fi.freeinfo = dlsym(lib, "fi_freeinfo");
    *(void **)&fi.dupinfo = dlsym(lib, "fi_dupinfo");
    *(void **)&fi.fabric = dlsym(lib, "fi_fabric");
    *(void **)&fi.strerror = dlsym(lib, "fi_strerror");
    *(void **)&fi.version = dlsym(lib, "fi_version");
    if (!fi.getinfo || !fi.freeinfo || !fi.dupinfo || !fi.fabric || !fi.strerror || !fi.version) {
        snprintf(why, len, "libfabric.so.1 lacks fi_getinfo/fi_fabric/...: too old");
        return false;
    }
    if (fi.version() < OFI_API) {
        snprintf(why, len, "libfabric %u.%u is older than 1.10", FI_MAJOR(fi.version()),
                 FI_MINOR(fi.version()));
        return false;
    }
    return true;
}

static bool is_software_provider(const char *prov)
{
    static const char *const soft[] = {"tcp", "sockets", "udp", "shm", "net"};
    size_t n = strcspn(prov, ";");
    for (size_t i = 0; i < sizeof(soft) / sizeof(soft[0]); i++)
        if (strlen(soft[i]) == n && strncmp(prov, soft[i], n) == 0)
            return true;
    return false;
}

/* The first offer (hardware ones only unless allow_soft) on an interface of NCCL_SOCKET_IFNAME
 * (when set), loopback last. */
static struct fi_info *pick_offer(struct fi_info *list, bool allow_soft)
{
    const char *ifname = ac_config_get()->socket_ifname;
    struct fi_info *lo = NULL;
    for (struct fi_info *p = list; p != NULL; p = p->next) {
        const char *dom = p->domain_attr && p->domain_attr->name ? p->domain_attr->name : "";
        bool is_soft = is_software_provider(p->fabric_attr->prov_name);
        if (!allow_soft && is_soft)
            continue;
        if (ifname != NULL && is_soft && !ac_socket_ifname_matches(ifname, dom))
            continue;
        if (strncmp(dom, "lo", 2) == 0) {
            lo = lo ? lo : p;
            continue;
        }
        return p;
    }
    return lo;
}

static struct fi_info *make_hints(const char *prov)
{
    struct fi_info *h = fi.dupinfo(NULL);
    if (h == NULL)
        return NULL;
    h->caps = FI_RMA | FI_WRITE | FI_REMOTE_WRITE; /* remote CQ data: cq_data_size, below */
    h->mode = FI_CONTEXT | FI_CONTEXT2 | FI_RX_CQ_DATA;
    h->ep_attr->type = FI_EP_RDM;
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    h->domain_attr->threading = FI_THREAD_SAFE;
    h->tx_attr->msg_order = FI_ORDER_RMA_WAW; /* credits overwrite one word, in order */
    if (prov != NULL)
        h->fabric_attr->prov_name = strdup(prov);
    return h;
}

static bool open_domain(bool allow_soft, char *why, size_t len)
{
    const char *prov = ac_config_get()->ofi_provider;
    struct fi_info *hints = make_hints(prov), *list = NULL;
    if (hints == NULL) {
        snprintf(why, len, "out of memory");
        return false;
    }
    int rc = fi.getinfo(OFI_API, NULL, NULL, 0, hints, &list);
    fi.freeinfo(hints);
    struct fi_info *p = rc == 0 ? pick_offer(list, allow_soft) : NULL;
    if (p == NULL) {
        snprintf(why, len,
                 "no libfabric %sprovider%s%s offers RDMA writes with remote CQ data on "
                 "reliable datagram endpoints (fi_getinfo: %s)%s",
                 allow_soft ? "" : "hardware ", prov ? " named " : "", prov ? prov : "",
                 rc ? fi.strerror(-rc) : "no usable interface",
                 allow_soft ? "" : "; ANYCCL_NET=ofi would use its software providers (tcp)");
        fi.freeinfo(list);
        return false;
    }
    if (p->domain_attr->cq_data_size < 4) {
        snprintf(why, len, "libfabric provider %s carries %zu bytes of remote CQ data (4 needed)",
                 p->fabric_attr->prov_name, p->domain_attr->cq_data_size);
        fi.freeinfo(list);
        return false;
    }
    info = fi.dupinfo(p);
    fi.freeinfo(list);
    if (info == NULL) {
        snprintf(why, len, "out of memory");
        return false;
    }
    /* A write completes when the data is in the peer's memory, not when it left this process:
     * a rank may exit right after its last write completes, and data still in flight on a
     * software provider would die with its sockets. */
    info->tx_attr->op_flags |= FI_DELIVERY_COMPLETE;
    if ((rc = fi.fabric(info->fabric_attr, &fabric, NULL)) != 0 ||
        (rc = fi_domain(fabric, info, &domain, NULL)) != 0) {
        snprintf(why, len, "provider %s: opening fabric/domain failed: %s",
                 info->fabric_attr->prov_name, fi.strerror(-rc));
        return false;
    }
    is_software = is_software_provider(info->fabric_attr->prov_name);
    snprintf(description, sizeof(description), "libfabric %u.%u provider %s, domain %s",
             FI_MAJOR(fi.version()), FI_MINOR(fi.version()), info->fabric_attr->prov_name,
             info->domain_attr->name);
    AC_INFO(AC_SUB_NET | AC_SUB_INIT, "ofi: %s (mr_mode 0x%x, mode 0x%llx%s)", description,
            (unsigned)info->domain_attr->mr_mode, (unsigned long long)info->mode,
            is_software ? ", a software provider: used only when ANYCCL_NET=ofi or "
                          "ANYCCL_OFI_PROVIDER asks for it"
                        : "");
    return true;
}

/* Whether this machine has a device a hardware libfabric provider drives (verbs, efa, psm3:
 * /sys/class/infiniband; cxi: /sys/class/cxi; opx/psm2: /dev/hfi1_0). Without one, and without
 * ANYCCL_NET=ofi, libfabric is not even loaded: its fi_getinfo costs ~0.2 s per process. */
static bool has_rdma_hardware(void)
{
    return access("/sys/class/infiniband", F_OK) == 0 || access("/sys/class/cxi", F_OK) == 0 ||
           access("/dev/hfi1_0", F_OK) == 0;
}

/* Software providers are allowed when the user asked for ofi (ANYCCL_NET=ofi, or a provider
 * named in ANYCCL_OFI_PROVIDER); otherwise only hardware ones. A process that first looked for
 * hardware only looks again, once, when it is asked for software too. */
static bool ofi_is_usable(bool is_forced, char *why, size_t len)
{
    static int probed = -1; /* -1: not yet; 0: hardware only; 1: any provider */
    bool allow_soft = is_forced || ac_config_get()->ofi_provider != NULL;
    pthread_mutex_lock(&init_lock);
    if (probed < 0 || (!is_found && allow_soft && probed == 0)) {
        probed = allow_soft;
        if (!allow_soft && !has_rdma_hardware()) {
            snprintf(init_why, sizeof(init_why),
                     "no RDMA hardware here (no /sys/class/infiniband, "
                     "/sys/class/cxi or /dev/hfi1_0): libfabric not probed; ANYCCL_NET=ofi uses "
                     "its software providers");
            is_found = false;
        } else {
            is_found = load_library(init_why, sizeof(init_why)) &&
                       open_domain(allow_soft, init_why, sizeof(init_why));
        }
        if (!is_found)
            AC_INFO(AC_SUB_NET | AC_SUB_INIT, "ofi: not usable: %s", init_why);
    }
    pthread_mutex_unlock(&init_lock);
    if (!is_found) {
        snprintf(why, len, "%s", init_why);
        return false;
    }
    if (is_software && !allow_soft) {
        snprintf(why, len, "%s is a software provider (set ANYCCL_NET=ofi to use it)",
                 info->fabric_attr->prov_name);
        return false;
    }
    return true;
}

static const char *ofi_describe(void)
{
    return description;
}

static struct op *op_get(struct ac_rdma_ep *e)
{
    struct op *o = e->free_ops;
    if (o != NULL)
        e->free_ops = o->next_free;
    return o;
}

static void op_put(struct ac_rdma_ep *e, struct op *o)
{
    o->next_free = e->free_ops;
    e->free_ops = o;
}

static void ofi_ep_close(struct ac_rdma_ep *e)
{
    if (e == NULL)
        return;
    for (int q = 0; q < e->nqps; q++)
        if (e->ep[q] != NULL)
            fi_close(&e->ep[q]->fid);
    if (e->av != NULL)
        fi_close(&e->av->fid);
    if (e->cq != NULL)
        fi_close(&e->cq->fid);
    free(e->ops);
    free(e);
}

static ncclResult_t ofi_fail(const char *what, int rc)
{
    return AC_FAIL(ncclSystemError, "ofi transport (%s): %s failed: %s", description, what,
                   fi.strerror(rc < 0 ? -rc : rc));
}

/* Address: [u8 nqps][u8 name bytes][names]. */
static ncclResult_t open_endpoints(struct ac_rdma_ep *e, uint8_t *addr, size_t *addr_len)
{
    int rc;
    size_t name_len = 0;
    addr[0] = (uint8_t)e->nqps;
    for (int q = 0; q < e->nqps; q++) {
        struct fid_ep *ep;
        if ((rc = fi_endpoint(domain, info, &ep, NULL)) != 0)
            return ofi_fail("fi_endpoint", rc);
        e->ep[q] = ep;
        if ((rc = fi_ep_bind(ep, &e->cq->fid, FI_TRANSMIT | FI_RECV)) != 0 ||
            (rc = fi_ep_bind(ep, &e->av->fid, 0)) != 0)
            return ofi_fail("fi_ep_bind", rc);
        if ((rc = fi_enable(ep)) != 0)
            return ofi_fail("fi_enable", rc);
        size_t len = NAME_MAX_BYTES;
        if ((rc = fi_getname(&ep->fid, addr + 2 + (size_t)q * name_len, &len)) != 0 ||
            (q > 0 && len != name_len) || 2 + (size_t)e->nqps * len > AC_RDMA_ADDR_MAX)
            return AC_FAIL(ncclSystemError,
                           "ofi transport (%s): endpoint name of %zu bytes does "
                           "not fit (%s)",
                           description, len, rc ? fi.strerror(-rc) : "too long");
        name_len = len;
    }
    addr[1] = (uint8_t)name_len;
    *addr_len = 2 + (size_t)e->nqps * name_len;
    return ncclSuccess;
}

static ncclResult_t ofi_ep_open(int nqps, int depth, struct ac_rdma_ep **ep_out, void *addr_out,
                                size_t *addr_len_out)
{
    struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_DATA,
                                 .size = (size_t)(nqps * (2 * depth + 8))};
    struct fi_av_attr av_attr = {.type = FI_AV_TABLE, .count = (size_t)nqps};
    int rc, nops = nqps * 2 * depth;
    ncclResult_t res;
    struct ac_rdma_ep *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->ops = calloc((size_t)nops, sizeof(*e->ops))) == NULL) {
        free(e);
        return AC_FAIL(ncclSystemError, "ofi transport: out of memory");
    }
    e->nqps = nqps;
    for (int i = 0; i < nops; i++)
        op_put(e, &e->ops[i]);
    if ((rc = fi_cq_open(domain, &cq_attr, &e->cq, NULL)) != 0) {
        res = ofi_fail("fi_cq_open", rc);
        goto fail;
    }
    if ((rc = fi_av_open(domain, &av_attr, &e->av, NULL)) != 0) {
        res = ofi_fail("fi_av_open", rc);
        goto fail;
    }
    AC_CHECK_GOTO(open_endpoints(e, addr_out, addr_len_out), res, fail);
    *ep_out = e;
    return ncclSuccess;
fail:
    ofi_ep_close(e);
    return res;
}

static ncclResult_t ofi_ep_connect(struct ac_rdma_ep *e, const void *peer_addr, size_t len)
{
    const uint8_t *a = peer_addr;
    if (len < 2 || a[0] != e->nqps || len != 2 + (size_t)a[0] * a[1])
        return AC_FAIL(ncclInternalError,
                       "ofi transport: peer endpoint address malformed "
                       "(%zu bytes for %d endpoints)",
                       len, e->nqps);
    int n = fi_av_insert(e->av, a + 2, (size_t)e->nqps, e->peer, 0, NULL);
    if (n != e->nqps)
        return ofi_fail("fi_av_insert of the peer's endpoints", n < 0 ? n : -FI_EINVAL);
    return ncclSuccess;
}

static ncclResult_t ofi_reg(struct ac_rdma_ep *e, void *buf, size_t len, struct ac_rdma_mr *mr_out)
{
    struct fid_mr *mr;
    uint64_t mode = info->domain_attr->mr_mode;
    uint64_t key = __atomic_fetch_add(&next_key, 1, __ATOMIC_RELAXED);
    int rc = fi_mr_reg(domain, buf, len, FI_WRITE | FI_REMOTE_WRITE, 0, key, 0, &mr, NULL);
    if (rc != 0)
        return ofi_fail("fi_mr_reg", rc);
    *mr_out = (struct ac_rdma_mr){.handle = mr,
                                  .desc = fi_mr_desc(mr),
                                  .rbase = (mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)buf : 0,
                                  .key = fi_mr_key(mr)};
    return ncclSuccess;
}

static void ofi_dereg(struct ac_rdma_ep *e, struct ac_rdma_mr *mr)
{
    if (mr->handle != NULL)
        fi_close(&((struct fid_mr *)mr->handle)->fid);
    mr->handle = NULL;
}

static ncclResult_t ofi_write(struct ac_rdma_ep *e, int qp, const void *local, size_t len,
                              const struct ac_rdma_mr *mr, uint64_t raddr, uint64_t rkey,
                              bool has_imm, uint32_t imm, uint64_t ctx, bool *is_busy_out)
{
    struct op *o = op_get(e);
    *is_busy_out = false;
    if (o == NULL) {
        *is_busy_out = true;
        return ncclSuccess;
    }
    o->ctx = ctx;
    o->qp = qp;
    o->is_recv = false;
    ssize_t rc =
        has_imm ? fi_writedata(e->ep[qp], local, len, mr->desc, imm, e->peer[qp], raddr, rkey, o)
                : fi_write(e->ep[qp], local, len, mr->desc, e->peer[qp], raddr, rkey, o);
    if (rc == 0) {
        e->refused_since_ns = 0;
        return ncclSuccess;
    }
    op_put(e, o);
    if (rc == -FI_EAGAIN) {
        *is_busy_out = true;
        return ncclSuccess;
    }
    if (rc == -FI_ENOENT || rc == -FI_ENOTCONN) {
        uint64_t now = ac_now_ns();
        if (e->refused_since_ns == 0)
            e->refused_since_ns = now;
        if (now - e->refused_since_ns < WRITE_REFUSED_NS) {
            *is_busy_out = true;
            return ncclSuccess;
        }
    }
    return ofi_fail(has_imm ? "fi_writedata" : "fi_write", (int)rc);
}

static ncclResult_t ofi_post_recv(struct ac_rdma_ep *e, int qp, int n)
{
    if (!(info->mode & FI_RX_CQ_DATA))
        return ncclSuccess; /* remote CQ data needs no receive buffer with this provider */
    for (int i = 0; i < n; i++) {
        struct op *o = op_get(e);
        if (o == NULL)
            return AC_FAIL(ncclInternalError, "ofi transport: out of operation contexts");
        o->qp = qp;
        o->is_recv = true;
        ssize_t rc;
        while ((rc = fi_recv(e->ep[qp], NULL, 0, NULL, FI_ADDR_UNSPEC, o)) == -FI_EAGAIN)
            fi_cq_read(e->cq, NULL, 0);
        if (rc != 0) {
            op_put(e, o);
            return ofi_fail("fi_recv", (int)rc);
        }
    }
    return ncclSuccess;
}

static void read_error(struct ac_rdma_ep *e, struct ac_rdma_wc *wc)
{
    struct fi_cq_err_entry err = {0};
    char prov[AC_RDMA_ERR_MAX / 2] = "";
    memset(wc, 0, sizeof(*wc));
    wc->is_error = true;
    wc->kind = AC_RDMA_WC_WRITE;
    if (fi_cq_readerr(e->cq, &err, 0) < 0) {
        snprintf(wc->err, sizeof(wc->err), "an error completion that could not be read");
        return;
    }
    struct op *o = err.op_context;
    if (o != NULL && !(err.flags & FI_REMOTE_CQ_DATA)) {
        wc->kind = o->is_recv ? AC_RDMA_WC_IMM : AC_RDMA_WC_WRITE;
        wc->ctx = o->ctx;
        op_put(e, o);
    }
    const char *p = fi_cq_strerror(e->cq, err.prov_errno, err.err_data, prov, sizeof(prov));
    snprintf(wc->err, sizeof(wc->err), "%s (provider: %s)", fi.strerror(err.err),
             p != NULL ? p : "no details");
}

static ncclResult_t ofi_poll(struct ac_rdma_ep *e, struct ac_rdma_wc *wc, int max, int *n_out)
{
    struct fi_cq_data_entry ent[32];
    int n = 0;
    *n_out = 0;
    ssize_t got = fi_cq_read(e->cq, ent, (size_t)(max < 32 ? max : 32));
    if (got == -FI_EAGAIN)
        return ncclSuccess;
    if (got == -FI_EAVAIL) {
        read_error(e, &wc[0]);
        *n_out = 1;
        return ncclSuccess;
    }
    if (got < 0)
        return ofi_fail("fi_cq_read", (int)got);
    for (ssize_t i = 0; i < got; i++, n++) {
        struct op *o = ent[i].op_context;
        memset(&wc[n], 0, sizeof(wc[n]));
        /* some providers (sockets) also flag the writer's own completion with FI_REMOTE_CQ_DATA */
        uint64_t f = ent[i].flags;
        if ((f & (FI_REMOTE_WRITE | FI_RECV)) || ((f & FI_REMOTE_CQ_DATA) && !(f & FI_WRITE))) {
            wc[n].kind = AC_RDMA_WC_IMM;
            wc[n].imm = (uint32_t)ent[i].data;
            wc[n].qp = -1;
            if ((info->mode & FI_RX_CQ_DATA) && o != NULL) {
                wc[n].qp = o->qp;
                op_put(e, o);
            }
        } else {
            wc[n].kind = AC_RDMA_WC_WRITE;
            wc[n].ctx = o ? o->ctx : 0;
            if (o != NULL)
                op_put(e, o);
        }
    }
    *n_out = n;
    return ncclSuccess;
}

#else /* no libfabric headers at build time */

static bool ofi_is_usable(bool is_forced, char *why, size_t len)
{
    snprintf(why, len, "built without libfabric headers (install libfabric-dev and rebuild)");
    return false;
}
static const char *ofi_describe(void)
{
    return "libfabric (not built)";
}
static ncclResult_t not_built(void)
{
    return AC_FAIL(ncclInvalidUsage, "ofi transport: built without libfabric headers");
}
static ncclResult_t ofi_ep_open(int nqps, int depth, struct ac_rdma_ep **ep_out, void *addr_out,
                                size_t *addr_len_out)
{
    return not_built();
}
static ncclResult_t ofi_ep_connect(struct ac_rdma_ep *e, const void *a, size_t len)
{
    return not_built();
}
static ncclResult_t ofi_reg(struct ac_rdma_ep *e, void *buf, size_t len, struct ac_rdma_mr *mr)
{
    return not_built();
}
static void ofi_dereg(struct ac_rdma_ep *e, struct ac_rdma_mr *mr) {}
static ncclResult_t ofi_write(struct ac_rdma_ep *e, int qp, const void *local, size_t len,
                              const struct ac_rdma_mr *mr, uint64_t raddr, uint64_t rkey,
                              bool has_imm, uint32_t imm, uint64_t ctx, bool *is_busy_out)
{
    return not_built();
}
static ncclResult_t ofi_post_recv(struct ac_rdma_ep *e, int qp, int n)
{
    return not_built();
}
static ncclResult_t ofi_poll(struct ac_rdma_ep *e, struct ac_rdma_wc *wc, int max, int *n_out)
{
    return not_built();
}
static void ofi_ep_close(struct ac_rdma_ep *e) {}

#endif

static const struct ac_rdma_provider ofi_provider = {
    .name = "ofi",
    .is_usable = ofi_is_usable,
    .describe = ofi_describe,
    .ep_open = ofi_ep_open,
    .ep_connect = ofi_ep_connect,
    .reg = ofi_reg,
    .dereg = ofi_dereg,
    .write = ofi_write,
    .post_recv = ofi_post_recv,
    .poll = ofi_poll,
    .ep_close = ofi_ep_close,
};

static int ofi_nqps(void)
{
    return (int)ac_config_get()->ofi_eps;
}

static bool ofi_can_connect(const struct ac_peer_info *self, const struct ac_peer_info *peer)
{
    return ac_rdma_can_connect(&ac_ofi_transport, self, peer);
}

const struct ac_rdma_transport ac_ofi_transport =
    AC_RDMA_TRANSPORT("ofi", ofi_can_connect, ofi_provider, ofi_nqps);
