/* anyccl-ras: asks a running AnyCCL (or NCCL) job for its RAS status report over the RAS client
 * port (NCCL's text protocol, see docs/ras.md) and prints it.
 *   anyccl-ras [--host H] [--port P] [--json] [--verbose] [--timeout S] [--watch N] */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct opts {
    const char *host;
    const char *port;
    bool is_json;
    bool is_verbose;
    double timeout_s;
    int watch_s;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: anyccl-ras [--host H] [--port P] [--json] [--verbose] [--timeout S] "
                 "[--watch N]\n"
                 "  --host H     host of the RAS client port (default localhost)\n"
                 "  --port P     port (default 28028, NCCL_RAS_ADDR of the job)\n"
                 "  --json       machine-readable report (SET FORMAT json)\n"
                 "  --verbose    per-rank counters (VERBOSE STATUS)\n"
                 "  --timeout S  how long the job waits for its processes' answers (default 5)\n"
                 "  --watch N    print a new report every N seconds until interrupted\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){"localhost", "28028", false, false, 5.0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json"))
            o->is_json = true;
        else if (!strcmp(a, "--verbose"))
            o->is_verbose = true;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 1;
        else if (v && !strcmp(a, "--host"))
            o->host = argv[++i];
        else if (v && !strcmp(a, "--port"))
            o->port = argv[++i];
        else if (v && !strcmp(a, "--timeout"))
            o->timeout_s = atof(argv[++i]);
        else if (v && !strcmp(a, "--watch"))
            o->watch_s = atoi(argv[++i]);
        else
            return usage(stderr), 2;
    }
    return o->timeout_s >= 0 && o->watch_s >= 0 ? 0 : (usage(stderr), 2);
}

static int connect_to(const struct opts *o)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(o->host, o->port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "anyccl-ras: cannot resolve %s: %s\n", o->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr,
                "anyccl-ras: cannot connect to %s:%s (%s): is a job running on this "
                "host, and is NCCL_RAS_ADDR the same?\n",
                o->host, o->port, strerror(errno));
    return fd;
}

/* Sends the commands, then copies everything the server says after the "OK" answers until it
 * closes the connection (it does after a report). */
static int query_once(const struct opts *o)
{
    int fd = connect_to(o);
    if (fd < 0)
        return 1;
    char cmds[256];
    snprintf(cmds, sizeof(cmds), "CLIENT PROTOCOL 2\nTIMEOUT %g\nSET FORMAT %s\n%sSTATUS\n",
             o->timeout_s, o->is_json ? "json" : "text", o->is_verbose ? "VERBOSE " : "");
    if (send(fd, cmds, strlen(cmds), MSG_NOSIGNAL) != (ssize_t)strlen(cmds)) {
        fprintf(stderr, "anyccl-ras: sending to the job failed: %s\n", strerror(errno));
        close(fd);
        return 1;
    }
    int nheader = 3, rc = 0; /* SERVER PROTOCOL, OK, OK */
    char buf[8192], line[1024];
    size_t nline = 0;
    int wait_ms = (int)(o->timeout_s * 1000) + 10000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, wait_ms) <= 0) {
            fprintf(stderr, "anyccl-ras: no answer within %d s\n", wait_ms / 1000);
            rc = 1;
            break;
        }
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (nheader == 0) {
                fputc(buf[i], stdout);
                continue;
            }
            if (nline + 1 < sizeof(line))
                line[nline++] = buf[i];
            if (buf[i] != '\n')
                continue;
            line[nline] = '\0';
            nline = 0;
            nheader--;
            if (!strncmp(line, "ERROR", 5)) {
                fprintf(stderr, "anyccl-ras: the job answered %s", line);
                rc = 1;
            }
        }
    }
    fflush(stdout);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    if (o.watch_s == 0)
        return query_once(&o);
    for (;;) {
        time_t now = time(NULL);
        printf("==== %s", ctime(&now));
        query_once(&o);
        fflush(stdout);
        sleep((unsigned)o.watch_s);
    }
}
