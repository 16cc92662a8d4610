/* GPUDirect RDMA's registration choice in the verbs provider (src/transport/ib/ib_dmabuf.c), with
 * fake backends: host memory is registered directly; device memory through the dma-buf its
 * backend exports when libibverbs has ibv_reg_dmabuf_mr; otherwise it is staged, with a reason,
 * and a failed export changes no error the caller may report. No GPU or NIC is involved: this is
 * the decision only (the driver calls themselves are compiled, never run here). */
#include "common/check.h"
#include "device/backend.h"
#include "transport/ib/ib_select.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

TestSuite(ib_dmabuf, .timeout = 10);

static int nexports;
static void *exported_ptr;
static size_t exported_bytes;

static ncclResult_t export_ok(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out)
{
    nexports++;
    exported_ptr = ptr;
    exported_bytes = bytes;
    *fd_out = open("/dev/null", O_RDONLY);
    *offset_out = (uintptr_t)ptr & 4095;
    return ncclSuccess;
}

static ncclResult_t export_refused(void *ptr, size_t bytes, int *fd_out, uint64_t *offset_out)
{
    nexports++;
    return AC_FAIL(ncclInvalidUsage, "fake: device 0 cannot export dma-bufs");
}

static const struct ac_backend fake_host = {
    .size = sizeof(struct ac_backend),
    .name = "host",
    .kind = AC_MEM_HOST,
    .dmabuf_export = export_ok, /* never asked: host memory needs no export */
};
static const struct ac_backend fake_cuda = {
    .size = sizeof(struct ac_backend),
    .name = "cuda",
    .kind = AC_MEM_CUDA,
    .dmabuf_export = export_ok,
};
static const struct ac_backend fake_hip_refusing = {
    .size = sizeof(struct ac_backend),
    .name = "hip",
    .kind = AC_MEM_HIP,
    .dmabuf_export = export_refused,
};
static const struct ac_backend fake_cuda_no_op = {
    .size = sizeof(struct ac_backend),
    .name = "cuda",
    .kind = AC_MEM_CUDA,
};
/* A table from before the op was appended: its size ends before dmabuf_export, whatever the
 * memory after it holds. */
static const struct ac_backend fake_cuda_old_table = {
    .size = offsetof(struct ac_backend, dmabuf_export),
    .name = "cuda",
    .kind = AC_MEM_CUDA,
    .dmabuf_export = export_ok,
};

static const struct ac_backend *owner;
static const struct ac_backend *owner_of(const void *p)
{
    (void)p;
    return owner;
}

static struct ac_ib_reg_plan plan_for(const struct ac_backend *be, bool has_reg_dmabuf_mr,
                                      void *ptr, size_t len)
{
    struct ac_ib_reg_env env = {.backend_for_pointer = owner_of,
                                .has_reg_dmabuf_mr = has_reg_dmabuf_mr};
    struct ac_ib_reg_plan plan;
    owner = be;
    nexports = 0;
    memset(&plan, 0x5a, sizeof(plan));
    ac_ib_reg_plan(&env, ptr, len, &plan);
    return plan;
}

Test(ib_dmabuf, host_memory_is_registered_directly)
{
    char buf[64];
    struct ac_ib_reg_plan p = plan_for(&fake_host, true, buf, sizeof(buf));
    cr_assert_eq(p.path, AC_IB_REG_HOST);
    cr_assert_eq(p.fd, -1);
    cr_assert_eq(nexports, 0);
    p = plan_for(&fake_host, false, buf, sizeof(buf));
    cr_assert_eq(p.path, AC_IB_REG_HOST);
}

Test(ib_dmabuf, device_memory_with_export_and_verbs_support_uses_dmabuf)
{
    void *dptr = (void *)(uintptr_t)0x7f0000201234;
    struct ac_ib_reg_plan p = plan_for(&fake_cuda, true, dptr, 1 << 20);
    cr_assert_eq(p.path, AC_IB_REG_DMABUF);
    cr_assert_geq(p.fd, 0);
    cr_assert_eq(p.offset, 0x234);
    cr_assert_eq(nexports, 1);
    cr_assert_eq(exported_ptr, dptr);
    cr_assert_eq(exported_bytes, (size_t)1 << 20);
    cr_assert_str_eq(p.backend, "cuda");
    close(p.fd);
}

Test(ib_dmabuf, old_rdma_core_stages_without_asking_the_backend)
{
    struct ac_ib_reg_plan p = plan_for(&fake_cuda, false, (void *)0x1000, 4096);
    cr_assert_eq(p.path, AC_IB_REG_STAGE);
    cr_assert_eq(p.fd, -1);
    cr_assert_eq(nexports, 0);
    cr_assert(strstr(p.why, "ibv_reg_dmabuf_mr") != NULL, "why: %s", p.why);
}

Test(ib_dmabuf, backend_without_the_op_stages)
{
    struct ac_ib_reg_plan p = plan_for(&fake_cuda_no_op, true, (void *)0x1000, 4096);
    cr_assert_eq(p.path, AC_IB_REG_STAGE);
    cr_assert(strstr(p.why, "cuda backend cannot export") != NULL, "why: %s", p.why);
}

Test(ib_dmabuf, table_older_than_the_op_is_not_read_past_its_size)
{
    struct ac_ib_reg_plan p = plan_for(&fake_cuda_old_table, true, (void *)0x1000, 4096);
    cr_assert_eq(p.path, AC_IB_REG_STAGE);
    cr_assert_eq(nexports, 0);
}

Test(ib_dmabuf, refused_export_stages_and_keeps_the_last_error)
{
    ac_set_error(ncclRemoteError, __FILE__, __LINE__, "an earlier error the caller reports");
    struct ac_ib_reg_plan p = plan_for(&fake_hip_refusing, true, (void *)0x1000, 4096);
    cr_assert_eq(p.path, AC_IB_REG_STAGE);
    cr_assert_eq(p.fd, -1);
    cr_assert_eq(nexports, 1);
    cr_assert(strstr(p.why, "cannot export dma-bufs") != NULL, "why: %s", p.why);
    cr_assert_str_eq(ac_last_error(), "an earlier error the caller reports");
}
