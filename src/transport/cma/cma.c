#include "transport/cma/cma.h"

#include "common/check.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static uint64_t probe_value;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void init_probe(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^
                 (uint64_t)ts.tv_sec;
    probe_value = v | 1; /* never 0, so an unreadable zero page cannot pass */
}

void ac_cma_probe_word(uint64_t *addr_out, uint64_t *value_out)
{
    pthread_once(&probe_once, init_probe);
    *addr_out = (uint64_t)(uintptr_t)&probe_value;
    *value_out = probe_value;
}

bool ac_cma_probe(int pid, uint64_t addr, uint64_t value)
{
    uint64_t got = 0;
    struct iovec local = {.iov_base = &got, .iov_len = sizeof(got)};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = sizeof(got)};
    return addr != 0 && process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)sizeof(got) &&
           got == value;
}

/* One call moves at most this much, so that a huge buffer does not pin all of its pages at once
 * and the kernel's per-call limits (IOV_MAX aside, MAX_RW_COUNT) are never reached. */
#define CMA_CALL_BYTES ((size_t)64 << 20)

ncclResult_t ac_cma_read(int pid, int peer_rank, const char *peer_host, void *local,
                         uint64_t remote, size_t bytes)
{
    size_t done = 0;
    while (done < bytes) {
        size_t n = bytes - done < CMA_CALL_BYTES ? bytes - done : CMA_CALL_BYTES;
        struct iovec l = {.iov_base = (char *)local + done, .iov_len = n};
        struct iovec r = {.iov_base = (void *)(uintptr_t)(remote + done), .iov_len = n};
        ssize_t got = process_vm_readv(pid, &l, 1, &r, 1, 0);
        if (got > 0) {
            done += (size_t)got;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        int err = got < 0 ? errno : EIO;
        if (err == ESRCH)
            return AC_FAIL(ncclRemoteError, "rank %d (pid %d on %s) exited while its buffer was "
                           "being read", peer_rank, pid, peer_host);
        /* EFAULT: the owner's buffer is shorter than its call says, or already freed because
         * that rank failed and returned: either way the fault lies with the other rank. */
        return AC_FAIL(err == EFAULT ? ncclRemoteError : ncclSystemError,
                       "reading %zu bytes at %#llx of rank %d (pid %d on %s) by cross-memory "
                       "attach failed after %zu bytes: %s%s", bytes,
                       (unsigned long long)remote, peer_rank, pid, peer_host, done, strerror(err),
                       err == EFAULT ? " (that rank's buffer is smaller than its count says, or "
                                       "was freed after that rank failed)" : "");
    }
    return ncclSuccess;
}
