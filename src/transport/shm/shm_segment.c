/* Shared-memory segments: named in /dev/shm through shm_open (or a file under ANYCCL_SHM_DIR),
 * created by the receiver with their memory reserved up front (posix_fallocate: tmpfs would
 * otherwise overcommit and kill the process with SIGBUS on first touch), mapped by both sides. */
#include "transport/shm/shm.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"
#include "device/kernels/ll.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_DIR "/dev/shm"
#define NAME_TRIES 8

static size_t round_up(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

ncclResult_t ac_shm_layout_compute(int nslots, size_t slot_bytes, struct ac_shm_layout *out)
{
    struct ac_shm_layout l = {0};
    size_t slots_bytes, ll_bytes, ll128_bytes;

    if (nslots <= 0 || slot_bytes == 0 || slot_bytes > SIZE_MAX / 2)
        return AC_FAIL(ncclInternalError, "shm connector: invalid geometry %d slots of %zu bytes",
                       nslots, slot_bytes);
    l.nslots = (uint32_t)nslots;
    l.slot_bytes = slot_bytes;
    l.slot_stride = round_up(slot_bytes, AC_SHM_PAGE);
    l.ctrl_bytes =
        round_up(sizeof(struct ac_shm_ctrl) + (size_t)nslots * sizeof(uint64_t), AC_SHM_PAGE);
    l.ll_max_bytes = slot_bytes < AC_LL_MAX_BYTES ? slot_bytes : AC_LL_MAX_BYTES;
    l.ll128_max_bytes = slot_bytes < AC_LL128_MAX_BYTES ? slot_bytes : AC_LL128_MAX_BYTES;
    l.ll_stride = round_up(ac_ll_slot_bytes((uint32_t)l.ll_max_bytes), AC_SHM_LINE);
    l.ll128_stride = round_up(ac_ll128_slot_bytes((uint32_t)l.ll128_max_bytes), AC_SHM_LINE);
    if (__builtin_mul_overflow(l.slot_stride, (size_t)nslots, &slots_bytes) ||
        __builtin_add_overflow(slots_bytes, l.ctrl_bytes, &l.ll_offset))
        goto overflow;
    ll_bytes = l.ll_stride * (size_t)nslots;
    ll128_bytes = l.ll128_stride * (size_t)nslots;
    l.ll128_offset = l.ll_offset + ll_bytes;
    if (__builtin_add_overflow(l.ll128_offset, ll128_bytes, &l.total_bytes) ||
        l.total_bytes > (size_t)INT64_MAX)
        goto overflow;
    l.total_bytes = round_up(l.total_bytes, AC_SHM_PAGE);
    *out = l;
    return ncclSuccess;

overflow:
    return AC_FAIL(ncclInvalidArgument,
                   "shm connector: %d slots of %zu bytes overflow a "
                   "segment size; lower NCCL_BUFFSIZE or ANYCCL_NSLOTS",
                   nslots, slot_bytes);
}

/* ANYCCL_SHM_DIR, where "/dev/shm" (the default) means the shm_open namespace. */
static const char *shm_dir(bool *is_shm_open_out)
{
    const char *dir = ac_config_get()->shm_dir;

    if (dir == NULL || dir[0] == '\0' || strcmp(dir, DEFAULT_DIR) == 0 ||
        strcmp(dir, DEFAULT_DIR "/") == 0)
        dir = DEFAULT_DIR;
    *is_shm_open_out = strcmp(dir, DEFAULT_DIR) == 0;
    return dir;
}

static uint32_t random_u32(void)
{
    uint32_t r;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
        return r;
    return (uint32_t)(ac_now_ns() * 0x9e3779b97f4a7c15ull >> 32) ^ (uint32_t)getpid();
}

/* A zombie still answers kill(pid, 0): a launcher that is itself a rank reaps its children only
 * later, so look at the state in /proc too. */
static bool is_zombie(int pid)
{
    char path[64], buf[512];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "re");
    if (f == NULL)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    return paren != NULL && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

bool ac_shm_pid_is_gone(int pid)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0)
        return errno == ESRCH; /* EPERM: alive, someone else's */
    return is_zombie(pid);
}

/* "/anyccl-<comm hash>-<sender>-<receiver>-<channel>-<pid ns hash>-<creator pid>-<random>",
 * under dir unless shm_open. The creator's pid and namespace let sweep_stale find names whose
 * creator was killed before recv_connect removed them. */
static ncclResult_t make_name(const struct ac_conn *conn, const char *dir, bool is_shm_open,
                              char path_out[AC_SHM_PATH_MAX])
{
    int n = snprintf(path_out, AC_SHM_PATH_MAX,
                     "%s/anyccl-%016" PRIx64 "-%d-%d-%d-%016" PRIx64 "-%d-%08x",
                     is_shm_open ? "" : dir, conn->comm_hash, conn->peer, conn->self_info->rank,
                     conn->channel, conn->self_info->pid_ns_hash, (int)getpid(), random_u32());

    if (n < 0 || n >= AC_SHM_PATH_MAX)
        return AC_FAIL(ncclInvalidUsage,
                       "shm segment directory '%s' is too long (at most %d "
                       "characters); set ANYCCL_SHM_DIR to a shorter path",
                       dir, AC_SHM_PATH_MAX - 80);
    return ncclSuccess;
}

static int open_path(const char *path, bool is_shm_open, int flags)
{
    flags |= O_CLOEXEC;
    return is_shm_open ? shm_open(path, flags, 0600) : open(path, flags, 0600);
}

/* "12.0 MiB", "1.5 GiB": sizes as a person reads them. */
static const char *human_size(double bytes, char buf[32])
{
    if (bytes >= 1024.0 * 1024 * 1024)
        snprintf(buf, 32, "%.1f GiB", bytes / (1024.0 * 1024 * 1024));
    else
        snprintf(buf, 32, "%.1f MiB", bytes / (1024.0 * 1024));
    return buf;
}

static ncclResult_t fail_no_space(const struct ac_conn *conn, const char *dir, const char *path,
                                  size_t bytes)
{
    struct statvfs st;
    char seg_h[32], free_h[32] = "?", fs_h[32] = "?";

    if (statvfs(dir, &st) == 0) {
        human_size((double)st.f_bavail * (double)st.f_frsize, free_h);
        human_size((double)st.f_blocks * (double)st.f_frsize, fs_h);
    }
    return AC_FAIL(ncclSystemError,
                   "rank %d: no space for a %zu-byte (%s) shared-memory segment %s for channel "
                   "%d from rank %d: %s has %s free of %s. Fixes: enlarge /dev/shm (docker run "
                   "--shm-size=1g), lower NCCL_BUFFSIZE, or set NCCL_SHM_DISABLE=1 to use sockets",
                   conn->self_info->rank, bytes, human_size((double)bytes, seg_h), path,
                   conn->channel, conn->peer, dir, free_h, fs_h);
}

/* Cheap refusal before anything is allocated: a doomed fallocate would first fill the
 * filesystem, and tmpfs neighbours touching new pages meanwhile would die of SIGBUS. */
static bool has_room(const char *dir, size_t bytes)
{
    struct statvfs st;

    if (statvfs(dir, &st) != 0)
        return true; /* unknown: let posix_fallocate decide */
    return (double)bytes <= (double)st.f_bavail * (double)st.f_frsize;
}

static ncclResult_t reserve(const struct ac_conn *conn, int fd, const char *dir, const char *path,
                            size_t bytes)
{
    int err;

    do {
        err = posix_fallocate(fd, 0, (off_t)bytes);
    } while (err == EINTR);
    if (err == 0)
        return ncclSuccess;
    if (err == ENOSPC || err == EFBIG)
        return fail_no_space(conn, dir, path, bytes);
    errno = err;
    return AC_FAIL(ncclSystemError,
                   "rank %d: posix_fallocate of %zu bytes for shared-memory "
                   "segment %s failed: %s; set NCCL_SHM_DISABLE=1 to use sockets",
                   conn->self_info->rank, bytes, path, strerror(err));
}

static ncclResult_t map_fd(int fd, const char *path, size_t bytes, void **map_out)
{
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);

    if (map == MAP_FAILED)
        return AC_FAIL(ncclSystemError,
                       "mmap of %zu bytes of shared-memory segment %s failed: "
                       "%s",
                       bytes, path, strerror(errno));
    *map_out = map;
    return ncclSuccess;
}

/* Creates a fresh name (retrying on the unlikely clash). */
static ncclResult_t create_fd(const struct ac_conn *conn, const char *dir, bool is_shm_open,
                              char path_out[AC_SHM_PATH_MAX], int *fd_out)
{
    for (int i = 0; i < NAME_TRIES; i++) {
        AC_CHECK(make_name(conn, dir, is_shm_open, path_out));
        int fd = open_path(path_out, is_shm_open, O_RDWR | O_CREAT | O_EXCL);
        if (fd >= 0) {
            *fd_out = fd;
            return ncclSuccess;
        }
        if (errno != EEXIST)
            return AC_FAIL(ncclSystemError,
                           "rank %d: creating shared-memory segment %s failed: "
                           "%s; check that %s exists and is writable (ANYCCL_SHM_DIR), or set "
                           "NCCL_SHM_DISABLE=1 to use sockets",
                           conn->self_info->rank, path_out, strerror(errno), dir);
    }
    return AC_FAIL(ncclSystemError,
                   "rank %d: no unused shared-memory segment name in %s after "
                   "%d tries",
                   conn->self_info->rank, dir, NAME_TRIES);
}

static void init_ctrl(struct ac_shm_ctrl *ctrl, const struct ac_shm_layout *l)
{
    /* The reserved pages read as zeros: counters, sizes and the attach flag start at 0. */
    ctrl->version = AC_SHM_VERSION;
    ctrl->nslots = l->nslots;
    ctrl->slot_bytes = l->slot_bytes;
    ctrl->slot_stride = l->slot_stride;
    ctrl->total_bytes = l->total_bytes;
    __atomic_store_n(&ctrl->magic, AC_SHM_MAGIC, __ATOMIC_RELEASE);
}

/* Names left in dir by receivers of this pid namespace that were killed between recv_setup and
 * recv_connect (a crash during init): their creator is gone, nobody can use them any more, and on
 * a small /dev/shm they would soon make every new segment fail. Once per process. */
static void sweep_stale(const char *dir, uint64_t pid_ns_hash)
{
    static atomic_flag is_swept = ATOMIC_FLAG_INIT;
    struct dirent *e;
    uint64_t ns;
    int pid, end;

    if (atomic_flag_test_and_set(&is_swept))
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        end = 0;
        if (sscanf(e->d_name, "anyccl-%*16[0-9a-f]-%*d-%*d-%*d-%16" SCNx64 "-%d-%*8[0-9a-f]%n", &ns,
                   &pid, &end) != 2 ||
            end == 0 || e->d_name[end] != '\0' || ns != pid_ns_hash || !ac_shm_pid_is_gone(pid))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            AC_INFO(AC_SUB_SHM, "removed %s/%s, left by pid %d which exited during init", dir,
                    e->d_name, pid);
    }
    closedir(d);
}

ncclResult_t ac_shm_segment_create(const struct ac_conn *conn, struct ac_shm_segment *seg_out)
{
    struct ac_shm_segment seg = {0};
    ncclResult_t res;
    void *map = NULL;
    int fd = -1;

    AC_CHECK(ac_shm_layout_compute(conn->nslots, conn->slot_bytes, &seg.layout));
    const char *dir = shm_dir(&seg.is_shm_open);
    sweep_stale(dir, conn->self_info->pid_ns_hash);
    AC_CHECK(create_fd(conn, dir, seg.is_shm_open, seg.path, &fd));
    seg.is_linked = true;
    if (!has_room(dir, seg.layout.total_bytes)) {
        res = fail_no_space(conn, dir, seg.path, seg.layout.total_bytes);
        goto unlink_name;
    }
    AC_CHECK_GOTO(reserve(conn, fd, dir, seg.path, seg.layout.total_bytes), res, unlink_name);
    AC_CHECK_GOTO(map_fd(fd, seg.path, seg.layout.total_bytes, &map), res, unlink_name);
    close(fd);
    seg.ctrl = map;
    seg.slots = (char *)map + seg.layout.ctrl_bytes;
    seg.ll_slots = (char *)map + seg.layout.ll_offset;
    seg.ll128_slots = (char *)map + seg.layout.ll128_offset;
    init_ctrl(seg.ctrl, &seg.layout);
    *seg_out = seg;
    return ncclSuccess;

unlink_name:
    close(fd);
    ac_shm_segment_unlink(&seg);
    return res;
}

static ncclResult_t check_blob(const struct ac_conn *conn, const struct ac_shm_blob *blob,
                               const struct ac_shm_layout *l)
{
    if (blob->magic != AC_SHM_MAGIC || memchr(blob->path, '\0', sizeof(blob->path)) == NULL)
        return AC_FAIL(ncclInternalError,
                       "rank %d: malformed shm connection info from rank %d "
                       "(channel %d); are both ranks running the same AnyCCL version?",
                       conn->self_info->rank, conn->peer, conn->channel);
    if (blob->nslots != l->nslots || blob->slot_bytes != l->slot_bytes ||
        blob->total_bytes != l->total_bytes)
        return AC_FAIL(ncclInvalidUsage,
                       "rank %d: shm segment %s of rank %d has %u slots of %" PRIu64
                       " bytes, this rank expects %u of %zu; set the same NCCL_BUFFSIZE "
                       "and ANYCCL_NSLOTS on every rank",
                       conn->self_info->rank, blob->path, conn->peer, blob->nslots,
                       blob->slot_bytes, l->nslots, l->slot_bytes);
    return ncclSuccess;
}

static ncclResult_t fail_open(const struct ac_conn *conn, const char *path)
{
    if (errno == ENOENT)
        return AC_FAIL(ncclSystemError,
                       "rank %d: shared-memory segment %s of rank %d (host %s) "
                       "does not exist here although both ranks look like one host: do they see "
                       "the same /dev/shm (containers: --ipc=host or a shared /dev/shm mount)? "
                       "Otherwise set NCCL_SHM_DISABLE=1 to use sockets",
                       conn->self_info->rank, path, conn->peer, conn->peer_info->hostname);
    return AC_FAIL(ncclSystemError,
                   "rank %d: opening shared-memory segment %s of rank %d failed: "
                   "%s; set NCCL_SHM_DISABLE=1 to use sockets",
                   conn->self_info->rank, path, conn->peer, strerror(errno));
}

ncclResult_t ac_shm_segment_attach(const struct ac_conn *conn, const struct ac_shm_blob *blob,
                                   struct ac_shm_segment *seg_out)
{
    struct ac_shm_segment seg = {0};
    struct stat st;
    ncclResult_t res;
    void *map = NULL;

    AC_CHECK(ac_shm_layout_compute(conn->nslots, conn->slot_bytes, &seg.layout));
    AC_CHECK(check_blob(conn, blob, &seg.layout));
    memcpy(seg.path, blob->path, sizeof(seg.path));
    seg.is_shm_open = blob->is_shm_open != 0;
    int fd = open_path(seg.path, seg.is_shm_open, O_RDWR);
    if (fd < 0)
        return fail_open(conn, seg.path);
    if (fstat(fd, &st) != 0) {
        res = AC_FAIL(ncclSystemError, "fstat of shared-memory segment %s failed: %s", seg.path,
                      strerror(errno));
        goto close_fd;
    }
    if ((uint64_t)st.st_size != seg.layout.total_bytes) {
        res = AC_FAIL(ncclSystemError,
                      "rank %d: shared-memory segment %s of rank %d has %lld "
                      "bytes, expected %zu",
                      conn->self_info->rank, seg.path, conn->peer, (long long)st.st_size,
                      seg.layout.total_bytes);
        goto close_fd;
    }
    AC_CHECK_GOTO(map_fd(fd, seg.path, seg.layout.total_bytes, &map), res, close_fd);
    close(fd);
    seg.ctrl = map;
    seg.slots = (char *)map + seg.layout.ctrl_bytes;
    seg.ll_slots = (char *)map + seg.layout.ll_offset;
    seg.ll128_slots = (char *)map + seg.layout.ll128_offset;
    if (__atomic_load_n(&seg.ctrl->magic, __ATOMIC_ACQUIRE) != AC_SHM_MAGIC ||
        seg.ctrl->version != AC_SHM_VERSION) {
        munmap(map, seg.layout.total_bytes);
        return AC_FAIL(ncclInternalError,
                       "rank %d: shared-memory segment %s of rank %d has an "
                       "unknown layout; run the same AnyCCL version on every rank",
                       conn->self_info->rank, seg.path, conn->peer);
    }
    *seg_out = seg;
    return ncclSuccess;

close_fd:
    close(fd);
    return res;
}

void ac_shm_segment_unlink(struct ac_shm_segment *seg)
{
    if (!seg->is_linked)
        return;
    if ((seg->is_shm_open ? shm_unlink(seg->path) : unlink(seg->path)) != 0 && errno != ENOENT)
        AC_INFO(AC_SUB_SHM, "removing shared-memory segment %s failed: %s", seg->path,
                strerror(errno));
    seg->is_linked = false;
}

void ac_shm_segment_close(struct ac_shm_segment *seg)
{
    ac_shm_segment_unlink(seg);
    if (seg->ctrl != NULL)
        munmap(seg->ctrl, seg->layout.total_bytes);
    seg->ctrl = NULL;
    seg->slots = NULL;
}
