/* Pure selection logic of the verbs provider, kept apart from libibverbs so that unit tests run it
 * on any machine: NCCL_IB_HCA parsing and matching, the GID choice on RoCE ports, the link layer
 * and GID type words of sysfs, and a memory-registration cache over any register/deregister pair.
 */
#ifndef AC_TRANSPORT_IB_SELECT_H
#define AC_TRANSPORT_IB_SELECT_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AC_IB_HCA_MAX 32
#define AC_IB_NAME_MAX 64

/* NCCL_IB_HCA: "[^][=]name[:port][,name[:port]...]". Without '=', a name is a prefix
 * ("mlx5" matches mlx5_0, mlx5_1); with '=', names match exactly; '^' excludes what is listed.
 * port 0: every port. */
struct ac_ib_hca_filter {
    bool is_exclude;
    bool is_exact;
    int n;
    struct {
        char name[AC_IB_NAME_MAX];
        int port;
    } items[AC_IB_HCA_MAX];
};

/* Parses spec (NULL or "": everything). Returns ncclInvalidUsage naming the bad item. */
ncclResult_t ac_ib_hca_parse(const char *spec, struct ac_ib_hca_filter *out);
/* Whether device dev, port port (1-based) may be used under the filter. */
bool ac_ib_hca_match(const struct ac_ib_hca_filter *f, const char *dev, int port);
/* The order in which the provider tries devices: the one named preferred (the rank's rail NIC,
 * NULL or "" for none) first, then the others in list order. Writes n indexes into order_out. */
void ac_ib_device_order(const char *const *names, int n, const char *preferred, int *order_out);

enum ac_ib_link { AC_IB_LINK_IB, AC_IB_LINK_ETH, AC_IB_LINK_UNKNOWN };
enum ac_ib_gid_type { AC_IB_GID_IB_ROCE_V1, AC_IB_GID_ROCE_V2, AC_IB_GID_UNKNOWN };

/* sysfs words: "InfiniBand" / "Ethernet"; "IB/RoCE v1" / "RoCE v2". */
enum ac_ib_link ac_ib_link_parse(const char *text);
enum ac_ib_gid_type ac_ib_gid_type_parse(const char *text);
/* The type of GID `index` of a port, from /sys/class/infiniband/<dev>/ports/<port>/gid_attrs;
 * AC_IB_GID_UNKNOWN when the file is missing or unreadable. */
enum ac_ib_gid_type ac_ib_read_gid_type(const char *devname, int port, int index);

struct ac_ib_gid {
    uint8_t raw[16];
    enum ac_ib_gid_type type;
};

/* The GID index a RoCE port uses: override when >= 0 (NCCL_IB_GID_INDEX, checked to exist and be
 * non-zero), else the first RoCE v2 GID holding an IPv4-mapped address (::ffff:a.b.c.d), else the
 * first RoCE v2 GID with a global (not link-local fe80::) IPv6 address, else the first non-zero
 * RoCE v1 GID. -1: none usable. InfiniBand ports use GID 0 (or the override). */
int ac_ib_gid_pick(const struct ac_ib_gid *gids, int ngids, enum ac_ib_link link, int override);
bool ac_ib_gid_is_zero(const uint8_t raw[16]);
bool ac_ib_gid_is_ipv4_mapped(const uint8_t raw[16]);

/* Memory-registration cache: registrations keyed by page-aligned range and reused by every buffer
 * inside one; reference-counted; the least recently released unused entry is deregistered once
 * more than max_unused entries are idle. Not thread-safe: callers hold their own lock. */
typedef ncclResult_t (*ac_ib_reg_fn)(void *ctx, void *addr, size_t len, void **handle_out);
typedef void (*ac_ib_dereg_fn)(void *ctx, void *handle);

struct ac_ib_mr_entry {
    uintptr_t start, end; /* page-aligned [start, end) */
    void *handle;
    int refs;
    uint64_t last_use;
};

struct ac_ib_mrcache {
    ac_ib_reg_fn reg;
    ac_ib_dereg_fn dereg;
    void *ctx;
    int max_unused;
    int n, cap;
    uint64_t clock;
    struct ac_ib_mr_entry *entries;
    uint64_t hits, misses; /* for logs and tests */
};

void ac_ib_mrcache_init(struct ac_ib_mrcache *c, ac_ib_reg_fn reg, ac_ib_dereg_fn dereg, void *ctx,
                        int max_unused);
/* The registration covering [addr, addr+len), registering the page-aligned range if none does. */
ncclResult_t ac_ib_mrcache_get(struct ac_ib_mrcache *c, void *addr, size_t len, void **handle_out);
/* Releases one reference taken by get. */
void ac_ib_mrcache_put(struct ac_ib_mrcache *c, void *handle);
/* Deregisters everything (references or not). */
void ac_ib_mrcache_clear(struct ac_ib_mrcache *c);

/* GPUDirect RDMA (src/transport/ib/ib_dmabuf.c): how a buffer is registered with the NIC. */
enum ac_ib_reg_path {
    AC_IB_REG_HOST,   /* host memory: ibv_reg_mr (through the cache) */
    AC_IB_REG_DMABUF, /* device memory exported as a dma-buf: ibv_reg_dmabuf_mr */
    AC_IB_REG_STAGE,  /* device memory the NIC cannot reach: stage through pinned host memory */
};

struct ac_backend;

/* What the choice depends on; functions so that unit tests substitute fakes. */
struct ac_ib_reg_env {
    const struct ac_backend *(*backend_for_pointer)(const void *p);
    bool has_reg_dmabuf_mr; /* libibverbs exports ibv_reg_dmabuf_mr (rdma-core 34 and newer) */
};

struct ac_ib_reg_plan {
    enum ac_ib_reg_path path;
    const char *backend; /* the name of the buffer's backend */
    int fd;              /* DMABUF: the exported dma-buf (the caller closes it), else -1 */
    uint64_t offset;     /* DMABUF: the buffer's offset in it */
    char why[256];       /* STAGE: why the dma-buf path is not taken */
};

/* Decides how [ptr, ptr + len) is registered: host memory directly; device memory through the
 * backend's dma-buf export when both the backend and libibverbs can; otherwise staged, with the
 * reason. A failed export is a reason to stage, not an error: the last-error message is left as
 * it was. */
void ac_ib_reg_plan(const struct ac_ib_reg_env *env, void *ptr, size_t len,
                    struct ac_ib_reg_plan *out);

#endif
