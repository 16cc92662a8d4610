#include "common/procfd.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

int ac_fd_of_process(int pid, int fd)
{
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), copy, err;

    if (pidfd < 0)
        return -1;
    copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    err = errno;
    close(pidfd);
    errno = err;
    return copy;
#else
    (void)pid;
    (void)fd;
    errno = ENOSYS;
    return -1;
#endif
}
