/* LD_PRELOAD shim of the multi-node bed: stands for "this rank owns one NIC". With MN_BIND_ADDR
 * set to an IPv4 address of the rank's namespace, every IPv4 TCP socket that connects without a
 * bound source is first bound to that address (port 0), so the kernel's source-based rules (see
 * bed.sh) send it out of that NIC. Without the shim the kernel picks the NIC that sits on the
 * destination's rail, whatever NCCL_SOCKET_IFNAME says, and no traffic would ever cross the spine.
 * Loopback destinations and sockets that are already bound are left alone; a failed bind is
 * reported once and the connect goes on unbound. Test-bed code: not part of the library. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static bool is_unbound_inet(int fd)
{
    struct sockaddr_in self;
    socklen_t len = sizeof(self);
    if (getsockname(fd, (struct sockaddr *)&self, &len) != 0 || self.sin_family != AF_INET)
        return false;
    return self.sin_port == 0 && self.sin_addr.s_addr == htonl(INADDR_ANY);
}

static void bind_source(int fd, const char *addr_str)
{
    static int is_reported;
    struct sockaddr_in src = {.sin_family = AF_INET};
    int saved = errno;
    if (inet_pton(AF_INET, addr_str, &src.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
        if (!is_reported++)
            fprintf(stderr, "bindsrc: cannot bind to MN_BIND_ADDR=%s: %s (connecting unbound)\n",
                    addr_str, strerror(errno));
    }
    errno = saved;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static connect_fn real_connect;
    if (real_connect == NULL)
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    if (real_connect == NULL) {
        errno = ENOSYS;
        return -1;
    }
    const char *want = getenv("MN_BIND_ADDR");
    if (want != NULL && *want != '\0' && addr != NULL && addr->sa_family == AF_INET &&
        len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *dst = (const struct sockaddr_in *)addr;
        bool is_loopback = (ntohl(dst->sin_addr.s_addr) >> 24) == 127;
        if (!is_loopback && is_unbound_inet(fd))
            bind_source(fd, want);
    }
    return real_connect(fd, addr, len);
}
