/* Versions, error strings, memory allocation and buffer registration. */
#include "common/check.h"
#include "core/api.h"
#include "core/comm.h"
#include "core/devreg.h"
#include "device/backend.h"
#include "transport/shm/shm_region.h"

#include <stdlib.h>
#include <string.h>

AC_API(ncclResult_t, ncclGetVersion, int *version);
ncclResult_t ncclGetVersion(int *version)
{
    if (!version)
        return AC_FAIL(ncclInvalidArgument, "version is NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

AC_EXPORT ncclResult_t anycclGetVersion(int *version)
{
    if (!version)
        return AC_FAIL(ncclInvalidArgument, "version is NULL");
    *version = ANYCCL_VERSION_CODE;
    return ncclSuccess;
}

AC_API(const char *, ncclGetErrorString, ncclResult_t result);
const char *ncclGetErrorString(ncclResult_t result)
{
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the AnyCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

AC_API(const char *, ncclGetLastError, ncclComm_t comm);
const char *ncclGetLastError(ncclComm_t comm)
{
    (void)comm;
    return ac_last_error();
}

/* With a usable GPU backend, device memory of the calling thread's current device that other
 * processes can map (the backend's mem_alloc_shareable: cuMem with POSIX fd handles, as NCCL, or
 * cuMemAlloc / hipMalloc). Otherwise host memory, page aligned (so that it can be registered and
 * mapped by transports). */
AC_API(ncclResult_t, ncclMemAlloc, void **ptr, size_t size);
ncclResult_t ncclMemAlloc(void **ptr, size_t size)
{
    if (!ptr)
        return AC_FAIL(ncclInvalidArgument, "ptr is NULL");
    if (size == 0)
        return AC_FAIL(ncclInvalidArgument, "size is 0");
    if (ac_backends_have_gpu()) {
        const struct ac_backend *be = ac_backend_first_gpu(NULL, 0);
        if (be && be->mem_alloc_shareable)
            return be->mem_alloc_shareable(size, ptr);
    }
    /* Shared memory (a memfd), so that peers of this host can read registered buffers in it
     * directly (src/transport/shm/shm_region.h); plain memory if that is not possible. */
    if (ac_region_alloc(size, ptr) == ncclSuccess)
        return ncclSuccess;
    AC_INFO(AC_SUB_ALLOC, "ncclMemAlloc: shared memory of %zu bytes unavailable (%s): plain "
            "memory, transfers from it go through slots", size, ac_last_error());
    ac_clear_error();
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0)
        return AC_FAIL(ncclSystemError, "cannot allocate %zu bytes of host memory", size);
    *ptr = p;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclMemFree, void *ptr);
ncclResult_t ncclMemFree(void *ptr)
{
    if (!ptr)
        return ncclSuccess;
    if (ac_backends_have_gpu()) {
        const struct ac_backend *be = ac_backend_first_gpu(NULL, 0);
        bool is_mine = false;
        if (be && be->mem_free_shareable) {
            AC_CHECK(be->mem_free_shareable(ptr, &is_mine));
            if (is_mine)
                return ncclSuccess;
        }
    }
    if (!ac_region_free(ptr))
        free(ptr);
    return ncclSuccess;
}

/* Registered buffers are listed on their communicator: a transfer from a registered buffer in
 * memory from ncclMemAlloc is read by a receiver of the same host straight from it (exec.c).
 * GPU buffers go to the communicator's registration cache instead (devreg.c, dev set). */
struct ac_registration {
    uint64_t magic;
    struct ncclComm *comm;
    struct ac_reg_range range;
    struct ac_devreg_reg *dev;
    struct ac_registration *next_live;
};

/* Every live handle of the process: ncclCommDeregister finds its handle here before it reads
 * it, so that a handle deregistered twice (or never returned) is refused without touching freed
 * memory. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ac_registration *live;

static void live_add(struct ac_registration *r)
{
    pthread_mutex_lock(&live_lock);
    r->next_live = live;
    live = r;
    pthread_mutex_unlock(&live_lock);
}

/* Unlinks handle when it is a live handle of comm; false otherwise (nothing is read from it). */
static bool live_take(struct ncclComm *comm, const void *handle)
{
    bool found = false;
    pthread_mutex_lock(&live_lock);
    for (struct ac_registration **at = &live; *at; at = &(*at)->next_live)
        if (*at == handle && (*at)->comm == comm) {
            *at = (*at)->next_live;
            found = true;
            break;
        }
    pthread_mutex_unlock(&live_lock);
    return found;
}

static void reg_add(struct ncclComm *comm, struct ac_reg_range *range)
{
    pthread_mutex_lock(&comm->reg_lock);
    range->next = comm->regs;
    comm->regs = range;
    pthread_mutex_unlock(&comm->reg_lock);
}

static void reg_remove(struct ncclComm *comm, struct ac_reg_range *range)
{
    pthread_mutex_lock(&comm->reg_lock);
    struct ac_reg_range **at = &comm->regs;
    while (*at && *at != range)
        at = &(*at)->next;
    if (*at)
        *at = range->next;
    pthread_mutex_unlock(&comm->reg_lock);
}

bool ac_comm_is_registered(struct ncclComm *comm, const void *buff, size_t bytes)
{
    uintptr_t p = (uintptr_t)buff;
    bool found = false;
    pthread_mutex_lock(&comm->reg_lock);
    for (struct ac_reg_range *r = comm->regs; r && !found; r = r->next) {
        uintptr_t b = (uintptr_t)r->buff;
        found = p >= b && p - b <= r->size && bytes <= r->size - (p - b);
    }
    pthread_mutex_unlock(&comm->reg_lock);
    return found;
}
#define AC_REG_MAGIC 0x7265676973746572ull

/* Whose memory a registered buffer is: a GPU backend's goes to its cache (devreg.h). Without a
 * usable GPU no runtime is asked. */
static const struct ac_backend *backend_of(const void *buff)
{
    return buff && ac_backends_have_gpu() ? ac_backend_for_pointer(buff) : &ac_host_backend;
}

AC_API(ncclResult_t, ncclCommRegister, const ncclComm_t comm, void *buff, size_t size,
       void **handle);
ncclResult_t ncclCommRegister(const ncclComm_t comm, void *buff, size_t size, void **handle)
{
    AC_CHECK(ac_comm_check_usable(comm, "comm"));
    if (!handle)
        return AC_FAIL(ncclInvalidArgument, "handle is NULL");
    if (!buff && size > 0)
        return AC_FAIL(ncclInvalidArgument, "buff is NULL with size %zu", size);
    struct ac_registration *r = calloc(1, sizeof(*r));
    if (!r)
        return AC_FAIL(ncclSystemError, "out of memory");
    *r = (struct ac_registration){AC_REG_MAGIC, comm, {buff, size, NULL}, NULL, NULL};
    const struct ac_backend *be = backend_of(buff);
    if (be != &ac_host_backend) {
        ncclResult_t res = ac_devreg_register(comm, be, buff, size, &r->dev);
        if (res != ncclSuccess) {
            free(r);
            return res;
        }
        live_add(r);
        *handle = r;
        return ncclSuccess;
    }
    reg_add(comm, &r->range);
    live_add(r);
    *handle = r;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommDeregister, const ncclComm_t comm, void *handle);
ncclResult_t ncclCommDeregister(const ncclComm_t comm, void *handle)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    struct ac_registration *r = handle;
    if (!r || !live_take(comm, r) || r->magic != AC_REG_MAGIC)
        return AC_FAIL(ncclInvalidArgument, "handle was not returned by ncclCommRegister on this "
                       "communicator (or was already deregistered)");
    ncclResult_t res = ncclSuccess;
    if (r->dev)
        res = ac_devreg_deregister(comm, r->dev);
    else
        reg_remove(comm, &r->range);
    r->magic = 0;
    free(r);
    return res;
}

/* Windows: a collective registration in NCCL; here each rank records its own buffer, and the
 * ranks synchronize so that the call has NCCL's collective semantics. A window on GPU memory is
 * a registration of the GPU cache (devreg.h), so that collectives on it work in place as on a
 * ncclCommRegister'ed buffer; host memory goes to the host list. */
struct ncclWindow_vidmem {
    uint64_t magic;
    struct ncclComm *comm;
    struct ac_reg_range range;
    int flags;
    struct ac_devreg_reg *dev;
};
#define AC_WIN_MAGIC 0x77696e646f777321ull

AC_API(ncclResult_t, ncclCommWindowRegister, ncclComm_t comm, void *buff, size_t size,
       ncclWindow_t *win, int winFlags);
ncclResult_t ncclCommWindowRegister(ncclComm_t comm, void *buff, size_t size, ncclWindow_t *win,
                                    int winFlags)
{
    AC_CHECK(ac_comm_check_usable(comm, "comm"));
    if (!win)
        return AC_FAIL(ncclInvalidArgument, "win is NULL");
    if (!buff && size > 0)
        return AC_FAIL(ncclInvalidArgument, "buff is NULL with size %zu", size);
    if (winFlags & ~(NCCL_WIN_DEFAULT | NCCL_WIN_COLL_SYMMETRIC))
        return AC_FAIL(ncclInvalidArgument, "winFlags is 0x%x: unknown flags", winFlags);
    struct ncclWindow_vidmem *w = calloc(1, sizeof(*w));
    if (!w)
        return AC_FAIL(ncclSystemError, "out of memory");
    *w = (struct ncclWindow_vidmem){AC_WIN_MAGIC, comm, {buff, size, NULL}, winFlags, NULL};
    const struct ac_backend *be = backend_of(buff);
    ncclResult_t res =
        be != &ac_host_backend ? ac_devreg_register(comm, be, buff, size, &w->dev) : ncclSuccess;
    /* the barrier whatever the outcome here: no rank waits for one that failed */
    ncclResult_t all = ac_bootstrap_barrier(comm->bs);
    if (res == ncclSuccess)
        res = all;
    if (res != ncclSuccess) {
        if (w->dev)
            ac_devreg_deregister(comm, w->dev);
        free(w);
        return res;
    }
    if (!w->dev)
        reg_add(comm, &w->range);
    *win = w;
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclCommWindowDeregister, ncclComm_t comm, ncclWindow_t win);
ncclResult_t ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!win || win->magic != AC_WIN_MAGIC || win->comm != comm)
        return AC_FAIL(ncclInvalidArgument, "win was not returned by ncclCommWindowRegister on "
                       "this communicator (or was already deregistered)");
    ncclResult_t res = ncclSuccess;
    if (win->dev)
        res = ac_devreg_deregister(comm, win->dev);
    else
        reg_remove(comm, &win->range);
    win->magic = 0;
    free(win);
    return res;
}
