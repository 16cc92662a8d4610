/* TCP loopback probe for perf/compare.sh: one sender thread and one receiver thread stream
 * -t bytes over one connection on 127.0.0.1 with -b byte send/recv calls; the receiver answers
 * one byte once it has everything, and the sender times from its first byte to that answer.
 * Best and median of -r runs, in GB/s (payload bytes per second).
 *
 * Usage: probe_tcp [-t total bytes (default 1G)] [-b bytes per call (default 4M)] [-r runs]
 * Prints one line: "tcp <best GB/s> <median GB/s>". */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 64

struct probe {
    size_t total, chunk;
    int runs;
    int listen_fd;
    int rc; /* receiver's status */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int xfer(int fd, char *buf, size_t len, int sending)
{
    while (len > 0) {
        ssize_t n = sending ? send(fd, buf, len, MSG_NOSIGNAL) : recv(fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives -t bytes per run and answers one byte. */
static void *receiver(void *arg)
{
    struct probe *p = arg;
    char *buf = malloc(p->chunk);
    int fd = accept(p->listen_fd, NULL, NULL);
    p->rc = buf == NULL || fd < 0 ? -1 : 0;
    for (int r = 0; r < p->runs && p->rc == 0; r++) {
        for (size_t left = p->total; left > 0 && p->rc == 0;) {
            size_t len = left < p->chunk ? left : p->chunk;
            p->rc = xfer(fd, buf, len, 0);
            left -= len;
        }
        if (p->rc == 0)
            p->rc = xfer(fd, buf, 1, 1);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static int listen_loopback(struct sockaddr_in *addr)
{
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    *addr = (struct sockaddr_in){.sin_family = AF_INET};
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) != 0) {
        perror("probe_tcp: listen on 127.0.0.1");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Sends the runs; fills gbps[] with each run's rate. */
static int send_runs(struct probe *p, const struct sockaddr_in *addr, double *gbps)
{
    char *buf = calloc(1, p->chunk);
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc = 0;
    if (buf == NULL || fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0) {
        perror("probe_tcp: connect to 127.0.0.1");
        rc = -1;
    }
    for (int r = 0; r < p->runs && rc == 0; r++) {
        double t0 = now();
        for (size_t left = p->total; left > 0 && rc == 0;) {
            size_t len = left < p->chunk ? left : p->chunk;
            rc = xfer(fd, buf, len, 1);
            left -= len;
        }
        if (rc == 0)
            rc = xfer(fd, buf, 1, 0);
        gbps[r] = (double)p->total / (now() - t0) / 1e9;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse(int argc, char **argv, struct probe *p)
{
    int c;
    *p = (struct probe){.total = 1UL << 30, .chunk = 4UL << 20, .runs = 5};
    while ((c = getopt(argc, argv, "t:b:r:")) != -1) {
        char *end = NULL;
        unsigned long long v = strtoull(optarg != NULL ? optarg : "", &end, 10);
        if (c == '?' || end == optarg)
            return -1;
        if (*end == 'M' || *end == 'm')
            v <<= 20;
        else if (*end == 'K' || *end == 'k')
            v <<= 10;
        else if (*end == 'G' || *end == 'g')
            v <<= 30;
        if (c == 't')
            p->total = v;
        else if (c == 'b')
            p->chunk = v;
        else
            p->runs = (int)v;
    }
    return p->total > 0 && p->chunk > 0 && p->runs >= 1 && p->runs <= MAX_RUNS ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct probe p;
    struct sockaddr_in addr;
    pthread_t thread;
    double gbps[MAX_RUNS];
    if (parse(argc, argv, &p) != 0) {
        fprintf(stderr, "usage: probe_tcp [-t total bytes] [-b bytes per call] [-r runs 1-%d]\n",
                MAX_RUNS);
        return 2;
    }
    if ((p.listen_fd = listen_loopback(&addr)) < 0)
        return 1;
    if (pthread_create(&thread, NULL, receiver, &p) != 0) {
        fprintf(stderr, "probe_tcp: cannot start the receiver thread\n");
        return 1;
    }
    int rc = send_runs(&p, &addr, gbps);
    if (rc != 0)
        shutdown(p.listen_fd, SHUT_RDWR); /* a receiver still in accept() returns */
    pthread_join(thread, NULL);
    close(p.listen_fd);
    if (rc != 0 || p.rc != 0) {
        fprintf(stderr, "probe_tcp: transfer over 127.0.0.1 failed\n");
        return 1;
    }
    qsort(gbps, (size_t)p.runs, sizeof(gbps[0]), cmp_double);
    double median = p.runs % 2 ? gbps[p.runs / 2] : (gbps[p.runs / 2 - 1] + gbps[p.runs / 2]) / 2;
    printf("tcp %.3f %.3f\n", gbps[p.runs - 1], median);
    return 0;
}
