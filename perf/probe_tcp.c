/* TCP loopback probe for perf/compare.sh: one sender thread and one receiver thread stream
 * -t bytes over one connection on 127.0.0.1 with -b byte send/recv calls; the receiver answers
 * one byte once it has everything. With -s S, S such connections (S sender and S receiver
 * threads) stream at once and the rate is their sum: what the cores sustain together, which
 * one stream alone does not show (its two ends leave each other idle part of the time).
 * Each end walks its calls through a -B byte buffer (default: one call's, hot in the caches, as
 * a transport's staging chunks are; -B 256M measures out-of-cache user buffers), written once
 * beforehand so that its pages exist (and are not the shared zero page). Each run is timed from the
 * common start to the last answer. Best and median of -r runs, in GB/s (payload bytes per second,
 * all streams).
 *
 * Usage: probe_tcp [-t bytes per stream (default 1G)] [-b bytes per call (default 4M)]
 *                  [-r runs] [-s streams (default 1)] [-B buffer bytes (default -b)]
 * Prints one line: "tcp <best GB/s> <median GB/s>" ("tcp<S>x" for S > 1 streams). */
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
#define MAX_STREAMS 64

struct probe {
    size_t total, chunk;
    size_t span; /* bytes of each end's buffer the calls walk through (beyond the caches) */
    int runs, streams;
    pthread_barrier_t start, end; /* the senders and the timing thread, per run */
};

struct stream {
    struct probe *p;
    struct sockaddr_in addr;
    int listen_fd;
    int rc;      /* receiver's status */
    int send_rc; /* sender's status */
    pthread_t receiver, sender;
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

static char *touched_buffer(size_t bytes)
{
    char *buf = malloc(bytes);
    if (buf != NULL)
        memset(buf, 1, bytes);
    return buf;
}

/* Receives -t bytes per run and answers one byte. */
static void *receiver(void *arg)
{
    struct stream *st = arg;
    const struct probe *p = st->p;
    char *buf = touched_buffer(p->span);
    int fd = accept(st->listen_fd, NULL, NULL);
    st->rc = buf == NULL || fd < 0 ? -1 : 0;
    for (int r = 0; r < p->runs && st->rc == 0; r++) {
        for (size_t left = p->total; left > 0 && st->rc == 0;) {
            size_t len = left < p->chunk ? left : p->chunk;
            st->rc = xfer(fd, buf + (p->total - left) % (p->span / p->chunk * p->chunk), len, 0);
            left -= len;
        }
        if (st->rc == 0)
            st->rc = xfer(fd, buf, 1, 1);
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

/* Sends each run between the two barriers; a failed stream keeps meeting them, so that the
 * others and the timing thread never wait for it. */
static void *sender(void *arg)
{
    struct stream *st = arg;
    const struct probe *p = st->p;
    char *buf = touched_buffer(p->span);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    st->send_rc = 0;
    if (buf == NULL || fd < 0 ||
        connect(fd, (const struct sockaddr *)&st->addr, sizeof(st->addr)) != 0) {
        perror("probe_tcp: connect to 127.0.0.1");
        st->send_rc = -1;
    }
    for (int r = 0; r < p->runs; r++) {
        pthread_barrier_wait(&st->p->start);
        for (size_t left = p->total; left > 0 && st->send_rc == 0;) {
            size_t len = left < p->chunk ? left : p->chunk;
            st->send_rc =
                xfer(fd, buf + (p->total - left) % (p->span / p->chunk * p->chunk), len, 1);
            left -= len;
        }
        if (st->send_rc == 0)
            st->send_rc = xfer(fd, buf, 1, 0);
        pthread_barrier_wait(&st->p->end);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse(int argc, char **argv, struct probe *p)
{
    int c;
    *p = (struct probe){.total = 1UL << 30, .chunk = 4UL << 20, .runs = 5, .streams = 1, .span = 0};
    while ((c = getopt(argc, argv, "t:b:r:s:B:")) != -1) {
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
        else if (c == 's')
            p->streams = (int)v;
        else if (c == 'B')
            p->span = v;
        else
            p->runs = (int)v;
    }
    if (p->streams < 1 || p->streams > MAX_STREAMS || p->chunk == 0)
        return -1;
    if (p->span < p->chunk)
        p->span = p->chunk;
    return p->total > 0 && p->chunk > 0 && p->runs >= 1 && p->runs <= MAX_RUNS ? 0 : -1;
}

/* Starts the receiver and the sender of every stream; returns the number started. */
static int start_streams(struct probe *p, struct stream *st)
{
    for (int i = 0; i < p->streams; i++) {
        st[i] = (struct stream){.p = p};
        if ((st[i].listen_fd = listen_loopback(&st[i].addr)) < 0)
            return i;
        if (pthread_create(&st[i].receiver, NULL, receiver, &st[i]) != 0) {
            close(st[i].listen_fd);
            return i;
        }
        if (pthread_create(&st[i].sender, NULL, sender, &st[i]) != 0) {
            shutdown(st[i].listen_fd, SHUT_RDWR);
            pthread_join(st[i].receiver, NULL);
            close(st[i].listen_fd);
            return i;
        }
    }
    return p->streams;
}

static void report(const struct probe *p, double *gbps)
{
    qsort(gbps, (size_t)p->runs, sizeof(gbps[0]), cmp_double);
    double median =
        p->runs % 2 ? gbps[p->runs / 2] : (gbps[p->runs / 2 - 1] + gbps[p->runs / 2]) / 2;
    if (p->streams > 1)
        printf("tcp%dx %.3f %.3f\n", p->streams, gbps[p->runs - 1], median);
    else
        printf("tcp %.3f %.3f\n", gbps[p->runs - 1], median);
}

int main(int argc, char **argv)
{
    struct probe p;
    static struct stream st[MAX_STREAMS];
    double gbps[MAX_RUNS];
    int rc = 0;
    if (parse(argc, argv, &p) != 0) {
        fprintf(stderr,
                "usage: probe_tcp [-t bytes per stream] [-b bytes per call] [-r runs 1-%d] "
                "[-s streams 1-%d] [-B buffer bytes]\n",
                MAX_RUNS, MAX_STREAMS);
        return 2;
    }
    pthread_barrier_init(&p.start, NULL, (unsigned)p.streams + 1);
    pthread_barrier_init(&p.end, NULL, (unsigned)p.streams + 1);
    if (start_streams(&p, st) != p.streams) {
        /* The streams started wait at the first barrier forever: exit without joining. */
        fprintf(stderr, "probe_tcp: cannot start %d streams on 127.0.0.1\n", p.streams);
        return 1;
    }
    for (int r = 0; r < p.runs; r++) {
        pthread_barrier_wait(&p.start);
        double t0 = now();
        pthread_barrier_wait(&p.end);
        gbps[r] = (double)p.total * p.streams / (now() - t0) / 1e9;
    }
    for (int i = 0; i < p.streams; i++) {
        pthread_join(st[i].sender, NULL);
        if (st[i].send_rc != 0)
            shutdown(st[i].listen_fd, SHUT_RDWR); /* a receiver still in accept() returns */
        pthread_join(st[i].receiver, NULL);
        close(st[i].listen_fd);
        rc |= st[i].send_rc | st[i].rc;
    }
    if (rc != 0) {
        fprintf(stderr, "probe_tcp: transfer over 127.0.0.1 failed\n");
        return 1;
    }
    report(&p, gbps);
    return 0;
}
