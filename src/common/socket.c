/* TCP sockets: addresses, interface choice, and transfers bounded by deadlines. Every fd made here
 * is non-blocking and close-on-exec; blocking-style calls wait with poll() in short slices so that
 * an abort flag is noticed within ~50 ms. */
#include "common/socket.h"

#include "common/check.h"
#include "common/config.h"
#include "common/log.h"
#include "common/time.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h */
#endif

#define ABORT_POLL_MS 50
#define CONNECT_RETRY_MAX_MS 100
#define LISTEN_BUSY_WAIT_MS 2000

/* ------------------------------------------------------------------------------------------ */
/* addresses                                                                                    */

const char *ac_socket_addr_str(const struct sockaddr_storage *addr, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%d", host, ntohs(in->sin_port));
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "<address family %d>", (int)addr->ss_family);
    }
    return buf;
}

socklen_t ac_socket_addr_len(const struct sockaddr_storage *addr)
{
    return addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

int ac_socket_addr_port(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)addr)->sin_port);
}

void ac_socket_addr_set_port(struct sockaddr_storage *addr, int port)
{
    if (addr->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
}

static bool addr_host_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

bool ac_socket_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return addr_host_equal(a, b) && ac_socket_addr_port(a) == ac_socket_addr_port(b);
}

bool ac_socket_addr_is_valid(const struct sockaddr_storage *addr)
{
    return addr->ss_family == AF_INET || addr->ss_family == AF_INET6;
}

/* Splits text into host and port; brackets are stripped from "[v6]:port". */
static bool split_host_port(const char *text, char *host, size_t host_len, long *port_out)
{
    const char *colon;
    size_t n;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return false;
        n = (size_t)(close - text - 1);
        colon = close + 1;
        text++;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return false;
        n = (size_t)(colon - text);
    }
    if (n == 0 || n >= host_len)
        return false;
    memcpy(host, text, n);
    host[n] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        return false;
    *port_out = port;
    return true;
}

ncclResult_t ac_socket_addr_parse(const char *text, struct sockaddr_storage *addr_out)
{
    char host[256];
    long port;
    if (text == NULL || !split_host_port(text, host, sizeof(host), &port))
        return AC_FAIL(ncclInvalidArgument,
                       "address '%s' is not host:port, [ipv6]:port or ipv6:port (check "
                       "NCCL_COMM_ID)",
                       text ? text : "(null)");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return AC_FAIL(ncclInvalidArgument, "address '%s': cannot resolve host '%s': %s", text,
                       host, gai_strerror(rc));
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    ac_socket_addr_set_port(&addr, (int)port);
    *addr_out = addr;
    return ncclSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* interface choice                                                                             */

bool ac_socket_ifname_matches(const char *list, const char *ifname)
{
    bool is_exclude = false, is_exact = false, found = false;
    if (*list == '^') {
        is_exclude = true;
        list++;
    }
    if (*list == '=') {
        is_exact = true;
        list++;
    }
    while (*list != '\0' && !found) {
        size_t n = strcspn(list, ",");
        if (n > 0) {
            if (is_exact)
                found = strlen(ifname) == n && strncmp(ifname, list, n) == 0;
            else
                found = strncmp(ifname, list, n) == 0;
        }
        list += n;
        if (*list == ',')
            list++;
    }
    return found != is_exclude;
}

static int wanted_family(void)
{
    const char *f = ac_config_get()->socket_family;
    if (f == NULL || *f == '\0')
        return AF_UNSPEC;
    if (strcmp(f, "AF_INET") == 0)
        return AF_INET;
    if (strcmp(f, "AF_INET6") == 0)
        return AF_INET6;
    AC_WARN("NCCL_SOCKET_FAMILY='%s' is neither AF_INET nor AF_INET6; using any family", f);
    return AF_UNSPEC;
}

static bool is_usable_ifa(const struct ifaddrs *ifa, int family)
{
    if (ifa->ifa_addr == NULL || !(ifa->ifa_flags & IFF_UP))
        return false;
    if (ifa->ifa_addr->sa_family != family)
        return false;
    /* Link-local IPv6 needs a scope id that peers cannot use as given. */
    if (family == AF_INET6 &&
        IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr))
        return false;
    return true;
}

/* The first interface matching list, IPv4 before IPv6 unless family says which. */
static bool find_interface(const struct ifaddrs *all, const char *list, int family,
                           struct sockaddr_storage *addr_out, char *name, size_t name_len)
{
    static const int families[] = {AF_INET, AF_INET6};
    for (int f = 0; f < 2; f++) {
        if (family != AF_UNSPEC && family != families[f])
            continue;
        for (const struct ifaddrs *ifa = all; ifa != NULL; ifa = ifa->ifa_next) {
            if (!is_usable_ifa(ifa, families[f]) || !ac_socket_ifname_matches(list, ifa->ifa_name))
                continue;
            memset(addr_out, 0, sizeof(*addr_out));
            memcpy(addr_out, ifa->ifa_addr,
                   families[f] == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6));
            snprintf(name, name_len, "%s", ifa->ifa_name);
            return true;
        }
    }
    return false;
}

/* The local address the kernel would use to reach remote (a UDP connect sends nothing). */
static bool route_to(const struct sockaddr_storage *remote, struct sockaddr_storage *local_out)
{
    int fd = socket(remote->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    memset(&local, 0, sizeof(local));
    bool ok = connect(fd, (const struct sockaddr *)remote, ac_socket_addr_len(remote)) == 0 &&
              getsockname(fd, (struct sockaddr *)&local, &len) == 0;
    close(fd);
    if (ok) {
        ac_socket_addr_set_port(&local, 0);
        *local_out = local;
    }
    return ok;
}

static bool name_of_local_addr(const struct ifaddrs *all, const struct sockaddr_storage *addr,
                               char *name, size_t name_len)
{
    for (const struct ifaddrs *ifa = all; ifa != NULL; ifa = ifa->ifa_next) {
        struct sockaddr_storage a;
        if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != addr->ss_family)
            continue;
        memset(&a, 0, sizeof(a));
        memcpy(&a, ifa->ifa_addr, ac_socket_addr_len(addr));
        if (addr_host_equal(&a, addr)) {
            snprintf(name, name_len, "%s", ifa->ifa_name);
            return true;
        }
    }
    return false;
}

/* Default order, as NCCL: real interfaces, then docker/virtual bridges, then loopback. */
static bool pick_default(const struct ifaddrs *all, int family, struct sockaddr_storage *addr,
                         char *name, size_t name_len, const char **why)
{
    static const char *const passes[][2] = {
        {"^docker,lo,virbr,veth", "first non-virtual interface that is up"},
        {"docker,virbr,veth", "no other interface is up"},
        {"lo", "only loopback is up"},
    };
    for (int i = 0; i < 3; i++) {
        if (find_interface(all, passes[i][0], family, addr, name, name_len)) {
            *why = passes[i][1];
            return true;
        }
    }
    return false;
}

static bool pick_toward(const struct ifaddrs *all, const struct sockaddr_storage *remote,
                        struct sockaddr_storage *addr, char *name, size_t name_len)
{
    int family = wanted_family();
    if (family != AF_UNSPEC && family != remote->ss_family)
        return false;
    if (!route_to(remote, addr))
        return false;
    if (!name_of_local_addr(all, addr, name, name_len))
        snprintf(name, name_len, "?");
    return true;
}

ncclResult_t ac_socket_pick_addr(const struct sockaddr_storage *remote,
                                 struct sockaddr_storage *addr_out, char *ifname_out,
                                 size_t ifname_len)
{
    const char *list = ac_config_get()->socket_ifname;
    struct ifaddrs *all = NULL;
    struct sockaddr_storage addr;
    char name[AC_IFNAME_MAX] = "";
    char remote_str[AC_SOCKADDR_STRLEN] = "", addr_str[AC_SOCKADDR_STRLEN];
    const char *why = NULL;
    bool found = false;

    if (getifaddrs(&all) != 0)
        return AC_SYSFAIL("getifaddrs (listing network interfaces)");
    if (remote != NULL)
        ac_socket_addr_str(remote, remote_str, sizeof(remote_str));
    if (list != NULL && *list != '\0') {
        found = find_interface(all, list, wanted_family(), &addr, name, sizeof(name));
        why = "matches NCCL_SOCKET_IFNAME";
    } else if (remote != NULL && pick_toward(all, remote, &addr, name, sizeof(name))) {
        found = true;
        why = "the route to the root";
    } else {
        found = pick_default(all, wanted_family(), &addr, name, sizeof(name), &why);
    }
    freeifaddrs(all);
    if (!found)
        return AC_FAIL(ncclSystemError,
                       "no usable network interface (NCCL_SOCKET_IFNAME='%s', "
                       "NCCL_SOCKET_FAMILY='%s'): check that an interface is up and matches",
                       list ? list : "", ac_config_get()->socket_family ?: "");
    ac_socket_addr_set_port(&addr, 0);
    AC_INFO(AC_SUB_INIT | AC_SUB_NET, "socket: using interface %s (%s): %s%s%s", name,
            ac_socket_addr_str(&addr, addr_str, sizeof(addr_str)), why, remote ? ", root at " : "",
            remote_str);
    *addr_out = addr;
    if (ifname_out != NULL)
        snprintf(ifname_out, ifname_len, "%s", name);
    return ncclSuccess;
}

/* ------------------------------------------------------------------------------------------ */
/* binding to a NIC                                                                             */

ncclResult_t ac_socket_ifname_addr(const char *ifname, struct sockaddr_storage *addr_out)
{
    struct ifaddrs *all = NULL;
    char list[AC_IFNAME_MAX + 2], name[AC_IFNAME_MAX];
    struct sockaddr_storage addr;
    if (getifaddrs(&all) != 0)
        return AC_SYSFAIL("getifaddrs (listing network interfaces)");
    snprintf(list, sizeof(list), "=%s", ifname);
    bool found = find_interface(all, list, wanted_family(), &addr, name, sizeof(name));
    freeifaddrs(all);
    if (!found)
        return AC_FAIL(ncclSystemError,
                       "interface %s has no usable address (NCCL_SOCKET_FAMILY='%s'): is it up "
                       "and configured?",
                       ifname, ac_config_get()->socket_family ?: "");
    ac_socket_addr_set_port(&addr, 0);
    *addr_out = addr;
    return ncclSuccess;
}

static const unsigned char *host_bytes(const struct sockaddr *sa, size_t *len)
{
    if (sa->sa_family == AF_INET6) {
        *len = 16;
        return ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    }
    *len = 4;
    return (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
}

/* Whether peer is inside the subnet of interface address ifa. */
static bool on_subnet(const struct ifaddrs *ifa, const struct sockaddr_storage *peer)
{
    size_t n, m;
    if (ifa->ifa_netmask == NULL || ifa->ifa_addr->sa_family != peer->ss_family)
        return false;
    const unsigned char *a = host_bytes(ifa->ifa_addr, &n);
    const unsigned char *mask = host_bytes(ifa->ifa_netmask, &m);
    const unsigned char *p = host_bytes((const struct sockaddr *)(const void *)peer, &m);
    for (size_t i = 0; i < n; i++)
        if ((a[i] & mask[i]) != (p[i] & mask[i]))
            return false;
    return true;
}

bool ac_socket_source_for(const struct sockaddr_storage *peer, const struct sockaddr_storage *own,
                          struct sockaddr_storage *src_out)
{
    const char *list = ac_config_get()->socket_ifname;
    struct ifaddrs *all = NULL;
    bool has_own = own != NULL && own->ss_family == peer->ss_family, found = false;
    if (getifaddrs(&all) != 0)
        return false;
    /* Pass 0: own address, if on the peer's subnet; pass 1: any allowed interface that is. */
    for (int pass = 0; pass < 2 && !found; pass++) {
        for (const struct ifaddrs *ifa = all; ifa != NULL && !found; ifa = ifa->ifa_next) {
            struct sockaddr_storage a;
            if (!is_usable_ifa(ifa, peer->ss_family) || !on_subnet(ifa, peer))
                continue;
            memset(&a, 0, sizeof(a));
            memcpy(&a, ifa->ifa_addr, ac_socket_addr_len(peer));
            bool is_allowed = list == NULL || *list == '\0' ||
                              ac_socket_ifname_matches(list, ifa->ifa_name);
            if (pass == 0 ? has_own && addr_host_equal(&a, own) : is_allowed) {
                *src_out = a;
                found = true;
            }
        }
    }
    freeifaddrs(all);
    if (!found && has_own) {
        *src_out = *own;
        found = true;
    }
    if (found)
        ac_socket_addr_set_port(src_out, 0);
    return found;
}

/* ------------------------------------------------------------------------------------------ */
/* connections                                                                                  */

void ac_socket_init(struct ac_socket *s)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
}

void ac_socket_close(struct ac_socket *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void set_peer(struct ac_socket *s, int fd, const struct sockaddr_storage *addr)
{
    s->fd = fd;
    s->addr = *addr;
    ac_socket_addr_str(addr, s->addr_str, sizeof(s->addr_str));
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

ncclResult_t ac_socket_listen(struct ac_socket *s, const struct sockaddr_storage *addr)
{
    char str[AC_SOCKADDR_STRLEN];
    int one = 1;
    ac_socket_addr_str(addr, str, sizeof(str));
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return AC_FAIL(ncclSystemError, "listen on %s: socket() failed: %s", str, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_storage bound = *addr;
    socklen_t len = sizeof(bound);
    /* A fixed port can be held for a moment by a peer's connect that got it as its own source
     * port (see is_self_connection; the peer drops it at once): wait that out before failing. */
    int bind_rc;
    uint64_t busy_deadline = ac_now_ns() + LISTEN_BUSY_WAIT_MS * 1000000ull;
    while ((bind_rc = bind(fd, (const struct sockaddr *)addr, ac_socket_addr_len(addr))) != 0 &&
           errno == EADDRINUSE && ac_socket_addr_port(addr) != 0 && ac_now_ns() < busy_deadline)
        usleep(10 * 1000);
    if (bind_rc != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &len) != 0) {
        int err = errno;
        close(fd);
        return AC_FAIL(ncclSystemError,
                       "listen on %s failed: %s (is the port in use, or the address not local? "
                       "check NCCL_COMM_ID and NCCL_SOCKET_IFNAME)",
                       str, strerror(err));
    }
    set_peer(s, fd, &bound);
    return ncclSuccess;
}

int ac_socket_wait(int fd, short events, uint64_t deadline_ns, volatile int *abort_flag)
{
    for (;;) {
        if (abort_flag != NULL && *abort_flag)
            return AC_SOCKET_ABORTED;
        int ms = -1;
        if (deadline_ns != 0) {
            uint64_t now = ac_now_ns();
            if (now >= deadline_ns)
                return ETIMEDOUT;
            ms = (int)((deadline_ns - now + 999999) / 1000000);
        }
        if (abort_flag != NULL && (ms < 0 || ms > ABORT_POLL_MS))
            ms = ABORT_POLL_MS;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return errno;
    }
}

static bool is_retryable_connect(int err)
{
    return err == ECONNREFUSED || err == ETIMEDOUT || err == EAGAIN || err == EINTR ||
           err == ECONNRESET;
}

/* A connect to a local port nobody listens on yet, in the ephemeral range, can be given that very
 * port as its source: TCP's simultaneous open then connects the socket to itself. It looks like a
 * success, and it holds the port the listener is about to bind (the root's NCCL_COMM_ID port). */
static bool is_self_connection(int fd)
{
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof(local), plen = sizeof(peer);
    return getsockname(fd, (struct sockaddr *)&local, &llen) == 0 &&
           getpeername(fd, (struct sockaddr *)&peer, &plen) == 0 &&
           ac_socket_addr_equal(&local, &peer);
}

/* One attempt: 0 with *fd_out connected, or an errno (ECONNREFUSED for a self-connection). */
static int try_connect(const struct sockaddr_storage *addr, const struct sockaddr_storage *src,
                       uint64_t deadline_ns, volatile int *abort_flag, int *fd_out)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int err = 0, one = 1;
    if (src != NULL) {
        /* The port is chosen at connect, per destination: no early ephemeral-port exhaustion. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)src, ac_socket_addr_len(src)) != 0) {
            err = errno;
            close(fd);
            return err;
        }
    }
    if (connect(fd, (const struct sockaddr *)addr, ac_socket_addr_len(addr)) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
            err = ac_socket_wait(fd, POLLOUT, deadline_ns, abort_flag);
            socklen_t len = sizeof(int);
            if (err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
        }
    }
    if (err == 0 && is_self_connection(fd))
        err = ECONNREFUSED;
    if (err != 0) {
        /* Abortively: a connect cut off by the deadline may already be a self-connection, and a
         * graceful close would leave it in TIME_WAIT, holding the port. */
        struct linger abortive = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
        close(fd);
        return err;
    }
    set_nodelay(fd);
    *fd_out = fd;
    return 0;
}

ncclResult_t ac_socket_connect(struct ac_socket *s, const struct sockaddr_storage *addr,
                               uint64_t deadline_ns, volatile int *abort_flag)
{
    return ac_socket_connect_from(s, addr, NULL, deadline_ns, abort_flag);
}

ncclResult_t ac_socket_connect_from(struct ac_socket *s, const struct sockaddr_storage *addr,
                                    const struct sockaddr_storage *src, uint64_t deadline_ns,
                                    volatile int *abort_flag)
{
    char str[AC_SOCKADDR_STRLEN];
    uint64_t sleep_ms = 1;
    int fd = -1, err, attempts = 0;
    ac_socket_addr_str(addr, str, sizeof(str));
    for (;;) {
        attempts++;
        err = try_connect(addr, src, deadline_ns, abort_flag, &fd);
        if (err == EADDRNOTAVAIL && src != NULL) { /* the source went away: let the kernel pick */
            char from[AC_SOCKADDR_STRLEN];
            AC_INFO(AC_SUB_NET, "connect to %s: cannot bind to %s (%s); using any source", str,
                    ac_socket_addr_str(src, from, sizeof(from)), strerror(err));
            src = NULL;
            continue;
        }
        if (err == 0 || !is_retryable_connect(err) ||
            (deadline_ns != 0 && ac_now_ns() >= deadline_ns))
            break;
        if (abort_flag != NULL && *abort_flag) {
            err = AC_SOCKET_ABORTED;
            break;
        }
        usleep((useconds_t)(sleep_ms * 1000));
        sleep_ms = sleep_ms * 2 > CONNECT_RETRY_MAX_MS ? CONNECT_RETRY_MAX_MS : sleep_ms * 2;
    }
    if (err == AC_SOCKET_ABORTED)
        return AC_FAIL(ncclRemoteError, "connect to %s: aborted", str);
    if (err != 0)
        return AC_FAIL(is_retryable_connect(err) ? ncclRemoteError : ncclSystemError,
                       "connect to %s failed after %d attempts: %s (is the peer running and "
                       "reachable? check NCCL_SOCKET_IFNAME, firewalls, ANYCCL_INIT_TIMEOUT)",
                       str, attempts, strerror(err));
    set_peer(s, fd, addr);
    return ncclSuccess;
}

ncclResult_t ac_socket_accept(struct ac_socket *listener, struct ac_socket *out,
                              uint64_t deadline_ns, volatile int *abort_flag)
{
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        memset(&peer, 0, sizeof(peer));
        int fd =
            accept4(listener->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            set_nodelay(fd);
            set_peer(out, fd, &peer);
            return ncclSuccess;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            return AC_FAIL(ncclSystemError, "accept on %s failed: %s", listener->addr_str,
                           strerror(errno));
        int err = ac_socket_wait(listener->fd, POLLIN, deadline_ns, abort_flag);
        if (err == ETIMEDOUT) {
            out->fd = -1;
            return ncclSuccess;
        }
        if (err == AC_SOCKET_ABORTED)
            return AC_FAIL(ncclRemoteError, "accept on %s: aborted", listener->addr_str);
        if (err != 0)
            return AC_FAIL(ncclSystemError, "poll on %s failed: %s", listener->addr_str,
                           strerror(err));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* transfers                                                                                    */

int ac_socket_send_some(struct ac_socket *s, const void *buf, size_t len, size_t *moved_inout)
{
    while (*moved_inout < len) {
        ssize_t n = send(s->fd, (const char *)buf + *moved_inout, len - *moved_inout,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            *moved_inout += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return (n < 0 && errno != EPIPE && errno != ECONNRESET) ? errno : AC_SOCKET_CLOSED;
    }
    return 0;
}

int ac_socket_recv_iov(struct ac_socket *s, struct iovec *iov, int iovcnt, size_t *moved_out)
{
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    *moved_out = 0;
    for (;;) {
        ssize_t n = recvmsg(s->fd, &msg, MSG_DONTWAIT);
        if (n > 0) {
            *moved_out = (size_t)n;
            return 0;
        }
        if (n == 0)
            return AC_SOCKET_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return errno == ECONNRESET ? AC_SOCKET_CLOSED : errno;
    }
}

int ac_socket_recv_some(struct ac_socket *s, void *buf, size_t len, size_t *moved_inout)
{
    while (*moved_inout < len) {
        struct iovec iov = {.iov_base = (char *)buf + *moved_inout, .iov_len = len - *moved_inout};
        size_t n = 0;
        int err = ac_socket_recv_iov(s, &iov, 1, &n);
        if (err != 0 || n == 0)
            return err;
        *moved_inout += n;
    }
    return 0;
}

int ac_socket_xfer_quiet(struct ac_socket *s, void *buf, size_t len, bool is_send,
                         uint64_t deadline_ns, volatile int *abort_flag)
{
    size_t moved = 0;
    for (;;) {
        int err = is_send ? ac_socket_send_some(s, buf, len, &moved)
                          : ac_socket_recv_some(s, buf, len, &moved);
        if (err != 0 || moved == len)
            return err;
        err = ac_socket_wait(s->fd, is_send ? POLLOUT : POLLIN, deadline_ns, abort_flag);
        if (err != 0)
            return err;
    }
}

static ncclResult_t xfer_fail(struct ac_socket *s, int err, bool is_send, size_t len)
{
    const char *what = is_send ? "send to" : "receive from";
    if (err == ETIMEDOUT)
        return AC_FAIL(ncclRemoteError,
                       "%s %s: %zu bytes not done before the deadline (peer stuck or gone? "
                       "see ANYCCL_INIT_TIMEOUT / ANYCCL_TIMEOUT)",
                       what, s->addr_str, len);
    if (err == AC_SOCKET_CLOSED)
        return AC_FAIL(ncclRemoteError,
                       "%s %s: connection closed by peer (the peer process probably exited)", what,
                       s->addr_str);
    if (err == AC_SOCKET_ABORTED)
        return AC_FAIL(ncclRemoteError, "%s %s: aborted", what, s->addr_str);
    return AC_FAIL(ncclSystemError, "%s %s failed: %s", what, s->addr_str, strerror(err));
}

ncclResult_t ac_socket_send_all(struct ac_socket *s, const void *buf, size_t len,
                                uint64_t deadline_ns, volatile int *abort_flag)
{
    int err = ac_socket_xfer_quiet(s, (void *)buf, len, true, deadline_ns, abort_flag);
    return err == 0 ? ncclSuccess : xfer_fail(s, err, true, len);
}

ncclResult_t ac_socket_recv_all(struct ac_socket *s, void *buf, size_t len, uint64_t deadline_ns,
                                volatile int *abort_flag)
{
    int err = ac_socket_xfer_quiet(s, buf, len, false, deadline_ns, abort_flag);
    return err == 0 ? ncclSuccess : xfer_fail(s, err, false, len);
}

/* ------------------------------------------------------------------------------------------ */
/* data-path settings                                                                           */

ncclResult_t ac_socket_set_nonblocking(struct ac_socket *s)
{
    int flags = fcntl(s->fd, F_GETFL);
    if (flags < 0 || fcntl(s->fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return AC_FAIL(ncclSystemError, "fcntl(O_NONBLOCK) on the connection to %s failed: %s",
                       s->addr_str, strerror(errno));
    return ncclSuccess;
}

void ac_socket_set_bufsize(struct ac_socket *s, int bytes)
{
    setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}
