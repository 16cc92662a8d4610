/* The RAS client port (NCCL_RAS_ADDR, localhost:28028 by default): NCCL's RAS text protocol, so
 * that ncclras, `nc` scripts and anyccl-ras work. One command per line, case-insensitive:
 *   CLIENT PROTOCOL <v>   -> "SERVER PROTOCOL 2"
 *   TIMEOUT <seconds>     -> "OK" (how long STATUS waits for the peers' answers; default 5)
 *   SET FORMAT text|json  -> "OK"
 *   STATUS, VERBOSE STATUS -> the report, then the server closes the connection
 * anything else           -> "ERROR: Unknown command ..." (NCCL's MONITOR, DIAGNOSTICS and CONTROL
 * are not implemented). The first process of a host to bind the port serves it. */
#include "common/check.h"
#include "common/config.h"
#include "common/socket.h"
#include "common/time.h"
#include "ras/ras_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define LINE_MAX_BYTES AC_RAS_CLIENT_LINE_MAX

enum client_state { CL_COMMANDS, CL_WAITING, CL_FINISHING, CL_CLOSED };

struct client {
    int fd;
    enum client_state state;
    char in[LINE_MAX_BYTES];
    size_t in_len;
    struct ac_ras_strbuf out;
    size_t out_off;
    bool is_json;
    bool is_verbose;
    double timeout_s;
    uint64_t query_id;
    uint64_t deadline_ns;
    struct client *next;
};

static struct {
    int listen_fd;
    struct client *clients;
    int nclients;
} cl = {.listen_fd = -1};

void ac_ras_clients_open(void)
{
    const char *text = ac_config_get()->ras_addr;
    struct sockaddr_storage sa;
    if (!text || !*text || strcasecmp(text, "none") == 0)
        return;
    if (ac_socket_addr_parse(text, &sa) != ncclSuccess) {
        AC_WARN("RAS: NCCL_RAS_ADDR=%s is not host:port; no RAS client port", text);
        return;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, ac_socket_addr_len(&sa)) != 0 ||
        listen(fd, 16) != 0) {
        /* Usually another process of this host was first: it serves the clients. */
        AC_INFO(AC_SUB_RAS, "RAS: not serving clients on %s (%s)", text, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    cl.listen_fd = fd;
    AC_INFO(AC_SUB_RAS | AC_SUB_INIT, "RAS: serving clients on %s", text);
}

void ac_ras_clients_close_all(void)
{
    while (cl.clients) {
        struct client *c = cl.clients;
        cl.clients = c->next;
        if (c->fd >= 0)
            close(c->fd);
        free(c->out.p);
        free(c);
    }
    cl.nclients = 0;
    if (cl.listen_fd >= 0)
        close(cl.listen_fd);
    cl.listen_fd = -1;
}

int ac_ras_clients_pollfds(struct pollfd *fds, int max)
{
    int n = 0;
    if (cl.listen_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){.fd = cl.listen_fd, .events = POLLIN};
    for (struct client *c = cl.clients; c && n < max; c = c->next) {
        short ev = c->state == CL_COMMANDS ? POLLIN : 0;
        if (c->out_off < c->out.len)
            ev |= POLLOUT;
        fds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    return n;
}

static void reply(struct client *c, const char *text)
{
    ac_ras_sb_printf(&c->out, "%s\n", text);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

void ac_ras_client_parse_cmd(const char *cmd, struct ac_ras_client_cmd *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = AC_RAS_CMD_REPLY;
    if (!*cmd) {
        out->kind = AC_RAS_CMD_NONE;
    } else if (starts_with(cmd, "client protocol ")) {
        snprintf(out->reply, sizeof(out->reply), "SERVER PROTOCOL 2");
    } else if (starts_with(cmd, "timeout ")) {
        char *end;
        errno = 0;
        double t = strtod(cmd + 8, &end);
        bool is_ok = errno == 0 && end != cmd + 8 && *end == '\0' && isfinite(t) && t >= 0;
        if (is_ok) {
            out->kind = AC_RAS_CMD_TIMEOUT;
            out->timeout_s = t;
        }
        snprintf(out->reply, sizeof(out->reply), "%s%s",
                 is_ok ? "OK" : "ERROR: Invalid timeout value ", is_ok ? "" : cmd + 8);
    } else if (starts_with(cmd, "set format ")) {
        const char *f = cmd + 11;
        bool is_json = strcasecmp(f, "json") == 0, is_ok = is_json || strcasecmp(f, "text") == 0;
        if (is_ok) {
            out->kind = AC_RAS_CMD_FORMAT;
            out->is_json = is_json;
        }
        snprintf(out->reply, sizeof(out->reply), "%s%s", is_ok ? "OK" : "ERROR: Invalid format ",
                 is_ok ? "" : f);
    } else if (strcasecmp(cmd, "status") == 0 || strcasecmp(cmd, "verbose status") == 0) {
        out->kind = AC_RAS_CMD_STATUS;
        out->is_verbose = starts_with(cmd, "verbose");
    } else {
        snprintf(out->reply, sizeof(out->reply), "ERROR: Unknown command %s", cmd);
    }
}

size_t ac_ras_client_take_line(char *in, size_t len, char **line_out)
{
    char *nl = memchr(in, '\n', len);
    if (nl == NULL)
        return 0;
    *nl = '\0';
    if (nl > in && nl[-1] == '\r')
        nl[-1] = '\0';
    *line_out = in;
    return (size_t)(nl - in) + 1;
}

static void run_command(struct client *c, const char *line)
{
    struct ac_ras_client_cmd cmd;
    ac_ras_client_parse_cmd(line, &cmd);
    if (cmd.kind == AC_RAS_CMD_NONE)
        return;
    if (cmd.kind == AC_RAS_CMD_TIMEOUT)
        c->timeout_s = cmd.timeout_s;
    if (cmd.kind == AC_RAS_CMD_FORMAT)
        c->is_json = cmd.is_json;
    if (cmd.kind != AC_RAS_CMD_STATUS) {
        reply(c, cmd.reply);
        return;
    }
    c->is_verbose = cmd.is_verbose;
    c->query_id = ac_ras_query_start();
    c->deadline_ns = ac_now_ns() + (uint64_t)(c->timeout_s * 1e9);
    c->state = CL_WAITING;
}

static void client_read(struct client *c)
{
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        c->state = CL_CLOSED;
        return;
    }
    if (n < 0)
        return;
    c->in_len += (size_t)n;
    size_t used = 0, taken;
    char *line;
    while (c->state == CL_COMMANDS &&
           (taken = ac_ras_client_take_line(c->in + used, c->in_len - used, &line)) > 0) {
        run_command(c, line);
        used += taken;
    }
    if (used == 0 && c->in_len == sizeof(c->in)) {
        AC_INFO(AC_SUB_RAS, "RAS: client sent a line over %d bytes; closing it", LINE_MAX_BYTES);
        c->state = CL_CLOSED;
        return;
    }
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
}

static void client_write(struct client *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            c->state = CL_CLOSED;
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->state == CL_FINISHING)
        c->state = CL_CLOSED;
}

static void accept_clients(void)
{
    for (;;) {
        int fd = accept4(cl.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct client *c = cl.nclients < MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->timeout_s = 5;
        c->next = cl.clients;
        cl.clients = c;
        cl.nclients++;
    }
}

static void reap_clients(void)
{
    for (struct client **pp = &cl.clients; *pp;) {
        struct client *c = *pp;
        if (c->state != CL_CLOSED) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        close(c->fd);
        free(c->out.p);
        free(c);
        cl.nclients--;
    }
}

void ac_ras_clients_handle(const struct pollfd *fds, int n)
{
    int i = 0;
    bool is_listen_ready = false;
    if (cl.listen_fd >= 0 && i < n)
        is_listen_ready = (fds[i++].revents & POLLIN) != 0;
    for (struct client *c = cl.clients; c; c = c->next) {
        short rev = i < n ? fds[i++].revents : 0;
        if (c->state == CL_COMMANDS && (rev & (POLLIN | POLLHUP | POLLERR)))
            client_read(c);
        if (c->state == CL_WAITING &&
            (ac_ras_query_complete(c->query_id) || ac_now_ns() >= c->deadline_ns)) {
            ac_ras_report(&c->out, c->is_json, c->is_verbose, c->query_id);
            c->state = CL_FINISHING;
        }
        if (c->state != CL_CLOSED)
            client_write(c);
    }
    if (is_listen_ready)
        accept_clients();
    reap_clients();
}
