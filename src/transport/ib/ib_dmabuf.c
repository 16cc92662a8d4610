/* GPUDirect RDMA in the verbs provider: the choice between registering a buffer as host memory,
 * as a dma-buf exported by its GPU backend (ibv_reg_dmabuf_mr), or staging it through pinned host
 * memory. Kept apart from ib_provider.c, and written against function pointers, so that the unit
 * tests run every branch with fake backends (no GPU or NIC on the development machine). */
#include "transport/ib/ib_select.h"

#include "common/check.h"
#include "device/backend.h"

#include <stddef.h>
#include <stdio.h>

/* Whether a backend's table has the op at all: tables built before it was appended are shorter. */
static bool has_export(const struct ac_backend *be)
{
    return be->size >= offsetof(struct ac_backend, dmabuf_export) + sizeof(be->dmabuf_export) &&
           be->dmabuf_export != NULL;
}

void ac_ib_reg_plan(const struct ac_ib_reg_env *env, void *ptr, size_t len,
                    struct ac_ib_reg_plan *out)
{
    const struct ac_backend *be = env->backend_for_pointer(ptr);
    out->backend = be->name;
    out->fd = -1;
    out->offset = 0;
    out->why[0] = '\0';
    if (be->kind == AC_MEM_HOST) {
        out->path = AC_IB_REG_HOST;
        return;
    }
    out->path = AC_IB_REG_STAGE;
    if (!env->has_reg_dmabuf_mr) {
        snprintf(out->why, sizeof(out->why),
                 "libibverbs has no ibv_reg_dmabuf_mr (rdma-core 34 or newer needed)");
        return;
    }
    if (!has_export(be)) {
        snprintf(out->why, sizeof(out->why), "the %s backend cannot export dma-bufs", be->name);
        return;
    }
    char saved[512];
    snprintf(saved, sizeof(saved), "%s", ac_last_error());
    int fd = -1;
    uint64_t offset = 0;
    if (be->dmabuf_export(ptr, len, &fd, &offset) != ncclSuccess || fd < 0) {
        snprintf(out->why, sizeof(out->why), "%s", ac_last_error());
        ac_restore_error(saved);
        return;
    }
    out->path = AC_IB_REG_DMABUF;
    out->fd = fd;
    out->offset = offset;
}
