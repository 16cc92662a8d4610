/* TCP sockets for the bootstrap and the socket transport: addresses ("host:port", "[v6]:port"),
 * the choice of interface (NCCL_SOCKET_IFNAME, NCCL_SOCKET_FAMILY, the route to the root), and
 * listen/connect/accept/send/recv with deadlines and an abort flag.
 *
 * Two kinds of calls: those returning ncclResult_t record an error message naming the remote
 * address (AC_FAIL); the "quiet" ones returning an int code (0 or an errno value) record nothing,
 * for callers that expect failures (a root dropping strangers) or word their own message. */
#ifndef AC_COMMON_SOCKET_H
#define AC_COMMON_SOCKET_H

#include "nccl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* "[ffff:...:ffff%scope]:65535" fits. */
#define AC_SOCKADDR_STRLEN 80
#define AC_IFNAME_MAX 64

/* Quiet codes besides plain errno values. */
#define AC_SOCKET_CLOSED ECONNRESET /* EOF or reset: the peer closed the connection */
#define AC_SOCKET_ABORTED ECANCELED /* *abort_flag became non-zero */

struct ac_socket {
    int fd;                            /* -1 when closed */
    struct sockaddr_storage addr;      /* the remote end; for a listener, its bound address */
    char addr_str[AC_SOCKADDR_STRLEN]; /* addr printed, for messages */
};

/* --- addresses --- */

/* Prints "a.b.c.d:port" or "[v6]:port" into buf (always terminated) and returns buf. */
const char *ac_socket_addr_str(const struct sockaddr_storage *addr, char *buf, size_t len);
/* Parses "host:port", "[v6]:port" or "v6addr:port" (last colon); host may be a name. */
ncclResult_t ac_socket_addr_parse(const char *text, struct sockaddr_storage *addr_out);
socklen_t ac_socket_addr_len(const struct sockaddr_storage *addr);
int ac_socket_addr_port(const struct sockaddr_storage *addr);
void ac_socket_addr_set_port(struct sockaddr_storage *addr, int port);
/* Whether family, address and port are equal. */
bool ac_socket_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* Whether addr holds an AF_INET or AF_INET6 address (checks data from the network). */
bool ac_socket_addr_is_valid(const struct sockaddr_storage *addr);

/* The local address (port 0) to listen on. With `remote` (the root's address), the interface
 * through which it is reachable, unless NCCL_SOCKET_IFNAME names interfaces; otherwise the first
 * interface NCCL_SOCKET_IFNAME / NCCL_SOCKET_FAMILY allow, by default a real interface before
 * docker*, virbr*, veth* and lo. Logs the choice and why at INFO. ifname_out may be NULL. */
ncclResult_t ac_socket_pick_addr(const struct sockaddr_storage *remote,
                                 struct sockaddr_storage *addr_out, char *ifname_out,
                                 size_t ifname_len);
/* Whether ifname matches an NCCL_SOCKET_IFNAME-style list ("eth,ib", "^docker", "=eth0"). */
bool ac_socket_ifname_matches(const char *list, const char *ifname);

/* --- binding to a NIC --- */

/* The address (port 0) of interface ifname, IPv4 before IPv6 unless NCCL_SOCKET_FAMILY says. */
ncclResult_t ac_socket_ifname_addr(const char *ifname, struct sockaddr_storage *addr_out);
/* The source address for a connection to peer: own (this rank's NIC) when it is on the peer's
 * subnet, else another interface of this host on that subnet (NCCL_SOCKET_IFNAME allowing), else
 * own. False (leave the choice to the kernel) when own is NULL or of another family and no
 * interface is on the peer's subnet. */
bool ac_socket_source_for(const struct sockaddr_storage *peer, const struct sockaddr_storage *own,
                          struct sockaddr_storage *src_out);

/* --- connections --- */

void ac_socket_init(struct ac_socket *s);
void ac_socket_close(struct ac_socket *s);
/* Listens on addr (port 0: an ephemeral port) with SO_REUSEADDR; s->addr is the bound address. */
ncclResult_t ac_socket_listen(struct ac_socket *s, const struct sockaddr_storage *addr);
/* Connects to addr, retrying while refused or timed out until deadline_ns (ac_now_ns clock; 0:
 * no deadline). Sets TCP_NODELAY. */
ncclResult_t ac_socket_connect(struct ac_socket *s, const struct sockaddr_storage *addr,
                               uint64_t deadline_ns, volatile int *abort_flag);
/* The same from source address src (port 0; NULL: the kernel picks). A source that cannot be
 * bound (EADDRNOTAVAIL) is dropped with an INFO line. */
ncclResult_t ac_socket_connect_from(struct ac_socket *s, const struct sockaddr_storage *addr,
                                    const struct sockaddr_storage *src, uint64_t deadline_ns,
                                    volatile int *abort_flag);
/* Accepts one connection. When the deadline passes first, returns ncclSuccess with
 * out->fd == -1: the caller knows what it was waiting for and words the message. */
ncclResult_t ac_socket_accept(struct ac_socket *listener, struct ac_socket *out,
                              uint64_t deadline_ns, volatile int *abort_flag);
/* Blocking-style transfers of exactly len bytes, bounded by the deadline (0: none). */
ncclResult_t ac_socket_send_all(struct ac_socket *s, const void *buf, size_t len,
                                uint64_t deadline_ns, volatile int *abort_flag);
ncclResult_t ac_socket_recv_all(struct ac_socket *s, void *buf, size_t len, uint64_t deadline_ns,
                                volatile int *abort_flag);
/* Quiet versions: 0, ETIMEDOUT, AC_SOCKET_CLOSED, AC_SOCKET_ABORTED or another errno. */
int ac_socket_xfer_quiet(struct ac_socket *s, void *buf, size_t len, bool is_send,
                         uint64_t deadline_ns, volatile int *abort_flag);
/* Waits until fd is ready for `events` (POLLIN/POLLOUT): 0, ETIMEDOUT or AC_SOCKET_ABORTED. */
int ac_socket_wait(int fd, short events, uint64_t deadline_ns, volatile int *abort_flag);

/* --- non-blocking data path (transport) --- */

ncclResult_t ac_socket_set_nonblocking(struct ac_socket *s);
/* Asks for buffers of `bytes` each way (the kernel may grant less). */
void ac_socket_set_bufsize(struct ac_socket *s, int bytes);
/* Moves buf[*moved_inout .. len) as far as the kernel allows now, advancing *moved_inout; returns
 * 0 also when nothing moved (EAGAIN), AC_SOCKET_CLOSED on EOF/reset, another errno on failure.
 * Never raises SIGPIPE. */
int ac_socket_send_some(struct ac_socket *s, const void *buf, size_t len, size_t *moved_inout);
int ac_socket_recv_some(struct ac_socket *s, void *buf, size_t len, size_t *moved_inout);
/* One receive into the iovecs, in order, without waiting: 0 with *moved_out what came (0 when
 * nothing was there), AC_SOCKET_CLOSED on EOF/reset, another errno on failure. */
int ac_socket_recv_iov(struct ac_socket *s, struct iovec *iov, int iovcnt, size_t *moved_out);

#endif
