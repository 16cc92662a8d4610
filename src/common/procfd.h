/* Another process's file descriptor, copied into this one (pidfd_getfd(2), Linux 5.6): how ranks
 * of one host share memory they made with memfd_create without a helper thread on the exporting
 * side. Needs ptrace access to that process (same user with kernel.yama.ptrace_scope 0, or
 * CAP_SYS_PTRACE). */
#ifndef AC_COMMON_PROCFD_H
#define AC_COMMON_PROCFD_H

/* A new descriptor for process pid's descriptor fd, or -1 with errno. */
int ac_fd_of_process(int pid, int fd);

#endif
