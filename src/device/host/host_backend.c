/* The host backend: plain memory, and every "asynchronous" call done before it returns, so that
 * streams and events are trivial (the only stream is NULL; an event is always complete). It owns
 * every pointer that no GPU backend claims. */
#include "device/backend.h"

#include "common/check.h"

#include <stdlib.h>
#include <string.h>

/* Events and streams carry no state: any non-NULL value the caller can tell apart from "none". */
static char host_event;

static void host_init(bool *usable_out, char *why, size_t why_len)
{
    *usable_out = true;
}

static void host_fini(void) {}

static ncclResult_t host_classify(const void *ptr, bool *is_mine_out, struct ac_ptr_info *info_out)
{
    info_out->kind = AC_MEM_HOST;
    info_out->device = -1;
    info_out->is_managed = false;
    *is_mine_out = true;
    return ncclSuccess;
}

static ncclResult_t host_alloc(int device, size_t bytes, void **ptr_out)
{
    void *p = NULL;
    int err = posix_memalign(&p, 64, bytes ? bytes : 1);

    if (err != 0) {
        errno = err;
        return AC_SYSFAIL("host backend: allocating device memory in host memory");
    }
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t host_free(void *ptr)
{
    free(ptr);
    return ncclSuccess;
}

static ncclResult_t host_memcpy(void *dst, const void *src, size_t bytes, void *stream)
{
    if (bytes && dst != src)
        memmove(dst, src, bytes);
    return ncclSuccess;
}

static ncclResult_t host_memset(void *dst, int value, size_t bytes, void *stream)
{
    memset(dst, value, bytes);
    return ncclSuccess;
}

static ncclResult_t host_stream_create(void **stream_out)
{
    *stream_out = NULL;
    return ncclSuccess;
}

static ncclResult_t host_no_stream(void *stream)
{
    return ncclSuccess;
}

static ncclResult_t host_event_create(void **event_out)
{
    *event_out = &host_event;
    return ncclSuccess;
}

static ncclResult_t host_event_record(void *event, void *stream)
{
    return ncclSuccess;
}

static ncclResult_t host_event_query(void *event, bool *done_out)
{
    *done_out = true;
    return ncclSuccess;
}

static ncclResult_t host_stream_wait_event(void *stream, void *event)
{
    return ncclSuccess;
}

static ncclResult_t host_ipc_export(void *ptr, struct ac_ipc_handle *handle_out)
{
    return AC_FAIL(ncclInvalidUsage,
                   "host backend: memory at %p has no IPC handle (host memory "
                   "is shared between processes by the shm transport)",
                   ptr);
}

static ncclResult_t host_ipc_import(const struct ac_ipc_handle *handle, void **ptr_out)
{
    return AC_FAIL(ncclInvalidUsage, "host backend: cannot import an IPC handle (host memory is "
                                     "shared between processes by the shm transport)");
}

static ncclResult_t host_copy(void *dst, const void *src, size_t bytes, void *stream)
{
    if (bytes && dst != src)
        ac_kern_copy_out(dst, src, bytes);
    return ncclSuccess;
}

static ncclResult_t host_reduce(const struct ac_redop *op, void *dst, const void *a, const void *b,
                                size_t count, bool is_final, void *stream)
{
    if (a)
        ac_kern_reduce(op, dst, a, b, count, is_final);
    else
        ac_kern_load(op, dst, b, count, is_final);
    return ncclSuccess;
}

static ncclResult_t host_pinned_alloc(size_t bytes, void **ptr_out)
{
    void *p = NULL;

    AC_CHECK(host_alloc(-1, bytes, &p));
    memset(p, 0, bytes ? bytes : 1);
    *ptr_out = p;
    return ncclSuccess;
}

static ncclResult_t host_pinned_free(void *ptr)
{
    free(ptr);
    return ncclSuccess;
}

static ncclResult_t host_stream_signal(void *stream, volatile uint32_t *flag, uint32_t value)
{
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
    return ncclSuccess;
}

/* Host "streams" run each call as it is made: a flag not set yet can only be set by another
 * thread, which a synchronous wait here could deadlock against. */
static ncclResult_t host_stream_wait(void *stream, volatile uint32_t *flag, uint32_t value)
{
    if ((int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) >= 0)
        return ncclSuccess;
    return AC_FAIL(ncclInvalidUsage, "host backend: cannot make a stream wait for a flag (host "
                   "calls complete when they are made)");
}

const struct ac_backend ac_host_backend = {
    .size = sizeof(struct ac_backend),
    .name = "host",
    .kind = AC_MEM_HOST,
    .init = host_init,
    .fini = host_fini,
    .classify = host_classify,
    .alloc = host_alloc,
    .free = host_free,
    .memcpy_async = host_memcpy,
    .memset_async = host_memset,
    .stream_create = host_stream_create,
    .stream_destroy = host_no_stream,
    .stream_sync = host_no_stream,
    .event_create = host_event_create,
    .event_destroy = host_no_stream,
    .event_record = host_event_record,
    .event_query = host_event_query,
    .event_sync = host_no_stream,
    .stream_wait_event = host_stream_wait_event,
    .ipc_export = host_ipc_export,
    .ipc_import = host_ipc_import,
    .ipc_close = host_no_stream,
    .copy = host_copy,
    .reduce = host_reduce,
    .host_alloc = host_pinned_alloc,
    .host_free = host_pinned_free,
    .stream_signal = host_stream_signal,
    .stream_wait = host_stream_wait,
};
