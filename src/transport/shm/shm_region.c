#include "transport/shm/shm_region.h"

#include "common/check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct region {
    void *base;
    size_t bytes;
    int fd;
    uint64_t id;
    struct region *next;
};

static struct region *regions;
static uint64_t next_id = 1;
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;

ncclResult_t ac_region_alloc(size_t bytes, void **ptr_out)
{
    int fd = memfd_create("anyccl-mem", MFD_CLOEXEC);
    if (fd < 0)
        return AC_SYSFAIL("memfd_create for ncclMemAlloc");
    if (ftruncate(fd, (off_t)bytes) != 0) {
        ncclResult_t res = AC_FAIL(ncclSystemError, "ncclMemAlloc of %zu bytes: ftruncate of its "
                                   "memfd failed: %s", bytes, strerror(errno));
        close(fd);
        return res;
    }
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    struct region *r = base == MAP_FAILED ? NULL : calloc(1, sizeof(*r));
    if (!r) {
        ncclResult_t res = AC_FAIL(ncclSystemError, "ncclMemAlloc cannot map %zu bytes: %s",
                                   bytes, strerror(errno));
        if (base != MAP_FAILED)
            munmap(base, bytes);
        close(fd);
        return res;
    }
    pthread_mutex_lock(&regions_lock);
    *r = (struct region){base, bytes, fd, next_id++, regions};
    regions = r;
    pthread_mutex_unlock(&regions_lock);
    *ptr_out = base;
    return ncclSuccess;
}

bool ac_region_free(void *ptr)
{
    pthread_mutex_lock(&regions_lock);
    struct region **at = &regions;
    while (*at && (*at)->base != ptr)
        at = &(*at)->next;
    struct region *r = *at;
    if (r)
        *at = r->next;
    pthread_mutex_unlock(&regions_lock);
    if (!r)
        return false;
    munmap(r->base, r->bytes);
    close(r->fd);
    free(r);
    return true;
}

bool ac_region_find(const void *ptr, size_t bytes, struct ac_region_ref *out)
{
    uintptr_t p = (uintptr_t)ptr;
    bool found = false;
    pthread_mutex_lock(&regions_lock);
    for (struct region *r = regions; r && !found; r = r->next) {
        uintptr_t b = (uintptr_t)r->base;
        if (p >= b && p - b <= r->bytes && bytes <= r->bytes - (p - b)) {
            *out = (struct ac_region_ref){r->fd, r->id, r->bytes, p - b};
            found = true;
        }
    }
    pthread_mutex_unlock(&regions_lock);
    return found;
}

/* ---- receiver side ---- */

struct ac_region_cache {
    int pid;
    int fd;
    uint64_t id;
    const char *base;
    size_t bytes;
    struct ac_region_cache *next;
};

void ac_region_cache_free(struct ac_region_cache *cache)
{
    while (cache) {
        struct ac_region_cache *next = cache->next;
        munmap((void *)cache->base, cache->bytes);
        free(cache);
        cache = next;
    }
}

ncclResult_t ac_region_map(struct ac_region_cache **cache, int pid, int peer_rank,
                           const char *peer_host, const struct ac_region_ref *ref,
                           const void **addr_out)
{
    struct ac_region_cache **at = cache, *found = NULL;
    while (*at && !found) {
        struct ac_region_cache *e = *at;
        if (e->pid == pid && e->fd == ref->fd && e->id == ref->id &&
            e->bytes == ref->region_bytes) {
            found = e;
        } else if (e->pid == pid && e->fd == ref->fd) {
            /* the peer freed that region and its fd number was reused: drop the old mapping */
            *at = e->next;
            munmap((void *)e->base, e->bytes);
            free(e);
        } else {
            at = &e->next;
        }
    }
    if (!found) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, ref->fd);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        void *base = fd < 0 ? MAP_FAILED
                            : mmap(NULL, ref->region_bytes, PROT_READ, MAP_SHARED, fd, 0);
        int err = errno;
        if (fd >= 0)
            close(fd);
        struct ac_region_cache *e = base == MAP_FAILED ? NULL : calloc(1, sizeof(*e));
        if (!e) {
            if (base != MAP_FAILED)
                munmap(base, ref->region_bytes);
            return AC_FAIL(err == ENOENT ? ncclRemoteError : ncclSystemError,
                           "cannot map the registered buffer of rank %d (pid %d on %s) through "
                           "%s: %s", peer_rank, pid, peer_host, path, strerror(err));
        }
        *e = (struct ac_region_cache){pid, ref->fd, ref->id, base, ref->region_bytes, *cache};
        *cache = e;
        found = e;
    }
    *addr_out = found->base + ref->offset;
    return ncclSuccess;
}
