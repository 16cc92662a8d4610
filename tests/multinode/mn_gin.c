/* One rank of the GIN runs on the multi-node bed (tests/multinode/gin.sh): the ranks are processes
 * in different network namespaces, so every GIN backend but cma crosses a (virtual) network.
 *
 *   mn_gin check RANK NRANKS IDFILE
 *       all-to-all (whatever ANYCCL_GPU_INITIATED says) for 3 types x 5 counts, exact; prints
 *       "PASS <what>" or "FAIL <what>: ..." from every rank
 *   mn_gin lat RANK NRANKS IDFILE MIN MAX ITERS
 *       all-to-all of MIN..MAX bytes per peer (x2): ITERS calls after ITERS/4 warm-up calls; rank 0
 *       prints "LAT <bytes per peer> <us>" (mean per call, the slowest rank's)
 *   mn_gin bw RANK NRANKS IDFILE BYTES ITERS
 *       rank 0 sends BYTES to rank 1 (ncclSend/ncclRecv) ITERS times; rank 1 prints
 *       "BW <bytes> <GB/s>" (the best of 3 rounds)
 *   mn_gin tcpsink PORT BYTES          a plain TCP stream, the network's own ceiling: accepts one
 *   mn_gin tcpsource ADDR PORT BYTES   connection, reads BYTES in 4 MiB calls (the source prints
 *                                      "TCP <bytes> <GB/s>", the best of 3 streams) */
#include "nccl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TCP_CALL (4u << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(ncclResult_t res, const char *what)
{
    if (res != ncclSuccess) {
        printf("FAIL mn_gin: %s failed: %s (%s)\n", what, ncclGetErrorString(res),
               ncclGetLastError(NULL));
        exit(1);
    }
}

static int exchange_id(int rank, const char *path, ncclUniqueId *id)
{
    if (rank == 0) {
        char tmp[4096];
        check(ncclGetUniqueId(id), "ncclGetUniqueId");
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (!f || fwrite(id, sizeof(*id), 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
            fprintf(stderr, "mn_gin: cannot write %s: %s\n", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    for (double deadline = now_s() + 30; now_s() < deadline; usleep(20000)) {
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t got = fread(id, sizeof(*id), 1, f);
        fclose(f);
        if (got == 1)
            return 0;
    }
    fprintf(stderr, "mn_gin: no unique id in %s after 30 s\n", path);
    return -1;
}

static uint64_t value_of(int from, int to, size_t i, int call)
{
    return ((uint64_t)from * 1000003u + (uint64_t)to * 7919u + i * 31u + (uint64_t)call) & 0x7f;
}

static int run_check(ncclComm_t comm, int rank, int n)
{
    static const size_t counts[] = {1, 7, 1000, 16384, 100000};
    static const struct {
        ncclDataType_t type;
        size_t bytes;
    } types[] = {{ncclInt8, 1}, {ncclFloat32, 4}, {ncclInt64, 8}};
    int call = 0, bad = 0;
    for (size_t t = 0; t < 3; t++) {
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++, call++) {
            size_t count = counts[c], eb = types[t].bytes, total = count * (size_t)n;
            unsigned char *send = malloc(total * eb), *recv = malloc(total * eb);
            for (size_t k = 0; k < total; k++) {
                uint64_t v = value_of(rank, (int)(k / count), k % count, call);
                memcpy(send + k * eb, &v, eb); /* little-endian: the low bytes */
            }
            memset(recv, 0x55, total * eb);
            check(ncclAlltoAll(send, recv, count, types[t].type, comm, NULL), "ncclAlltoAll");
            for (size_t k = 0; k < total && !bad; k++) {
                uint64_t want = value_of((int)(k / count), rank, k % count, call), got = 0;
                memcpy(&got, recv + k * eb, eb);
                if (got != want) {
                    printf("FAIL alltoall rank %d: call %d (count %zu, %zu-byte type): element "
                           "%zu from rank %zu is %llu, expected %llu\n",
                           rank, call, count, eb, k % count, k / count, (unsigned long long)got,
                           (unsigned long long)want);
                    bad = 1;
                }
            }
            free(send);
            free(recv);
            if (bad)
                return 1;
        }
    }
    printf("PASS alltoall rank %d: %d calls exact\n", rank, call);
    return 0;
}

static int run_lat(ncclComm_t comm, int rank, int n, size_t lo, size_t hi, int iters)
{
    char *sb = calloc(hi * (size_t)n, 1), *rb = calloc(hi * (size_t)n, 1);
    float one = 1, sum;
    if (!sb || !rb)
        return 1;
    for (size_t size = lo; size <= hi; size *= 2) {
        for (int i = 0; i < iters / 4 + 1; i++)
            check(ncclAlltoAll(sb, rb, size, ncclInt8, comm, NULL), "warm-up");
        check(ncclAllReduce(&one, &sum, 1, ncclFloat32, ncclSum, comm, NULL), "barrier");
        double t0 = now_s();
        for (int i = 0; i < iters; i++)
            check(ncclAlltoAll(sb, rb, size, ncclInt8, comm, NULL), "ncclAlltoAll");
        float us = (float)((now_s() - t0) / iters * 1e6), worst;
        check(ncclAllReduce(&us, &worst, 1, ncclFloat32, ncclMax, comm, NULL), "max");
        if (rank == 0)
            printf("LAT %zu %.1f\n", size, worst);
        fflush(stdout);
    }
    free(sb);
    free(rb);
    return 0;
}

static int run_bw(ncclComm_t comm, int rank, size_t bytes, int iters)
{
    char *buf = calloc(bytes, 1);
    float one = 1, sum;
    double best = 0;
    if (!buf)
        return 1;
    for (int round = 0; round < 4; round++) { /* round 0: warm-up (connections) */
        check(ncclAllReduce(&one, &sum, 1, ncclFloat32, ncclSum, comm, NULL), "barrier");
        double t0 = now_s();
        for (int i = 0; i < iters && rank < 2; i++) {
            check(ncclGroupStart(), "ncclGroupStart");
            if (rank == 0)
                check(ncclSend(buf, bytes, ncclInt8, 1, comm, NULL), "ncclSend");
            else
                check(ncclRecv(buf, bytes, ncclInt8, 0, comm, NULL), "ncclRecv");
            check(ncclGroupEnd(), "ncclGroupEnd");
        }
        double gbs = (double)bytes * iters / (now_s() - t0) / 1e9;
        if (round > 0 && gbs > best)
            best = gbs;
    }
    if (rank == 1)
        printf("BW %zu %.3f\n", bytes, best);
    free(buf);
    return 0;
}

static int tcp_sink(int port, size_t bytes)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char *buf = malloc(TCP_CALL);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (!buf || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 4) != 0) {
        perror("mn_gin tcpsink");
        return 1;
    }
    for (int round = 0; round < 3; round++) {
        int s = accept(ls, NULL, NULL);
        size_t got = 0;
        while (got < bytes) {
            ssize_t r = read(s, buf, TCP_CALL);
            if (r <= 0)
                return 1;
            got += (size_t)r;
        }
        char ack = 1;
        if (write(s, &ack, 1) != 1)
            return 1;
        close(s);
    }
    close(ls);
    free(buf);
    return 0;
}

static int tcp_source(const char *addr, int port, size_t bytes)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char *buf = calloc(TCP_CALL, 1);
    double best = 0;
    inet_pton(AF_INET, addr, &a.sin_addr);
    for (int round = 0; round < 3; round++) {
        int s = -1;
        for (double deadline = now_s() + 10; now_s() < deadline; usleep(20000)) {
            s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
                break;
            close(s);
            s = -1;
        }
        if (s < 0 || !buf)
            return 1;
        double t0 = now_s();
        for (size_t sent = 0; sent < bytes;) {
            size_t n = bytes - sent < TCP_CALL ? bytes - sent : TCP_CALL;
            ssize_t w = write(s, buf, n);
            if (w <= 0)
                return 1;
            sent += (size_t)w;
        }
        char ack;
        if (read(s, &ack, 1) != 1)
            return 1;
        double gbs = (double)bytes / (now_s() - t0) / 1e9;
        best = gbs > best ? gbs : best;
        close(s);
    }
    printf("TCP %zu %.3f\n", bytes, best);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "tcpsink") == 0 && argc == 4)
        return tcp_sink(atoi(argv[2]), strtoull(argv[3], NULL, 0));
    if (strcmp(mode, "tcpsource") == 0 && argc == 5)
        return tcp_source(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 0));
    bool ok = (strcmp(mode, "check") == 0 && argc == 5) ||
              (strcmp(mode, "lat") == 0 && argc == 8) || (strcmp(mode, "bw") == 0 && argc == 7);
    if (!ok) {
        fprintf(stderr, "usage: mn_gin check|lat|bw RANK NRANKS IDFILE [MIN MAX ITERS | BYTES "
                        "ITERS] | tcpsink PORT BYTES | tcpsource ADDR PORT BYTES\n");
        return 2;
    }
    int rank = atoi(argv[2]), n = atoi(argv[3]), rc;
    ncclUniqueId id;
    ncclComm_t comm;
    if (n < 2 || rank < 0 || rank >= n || exchange_id(rank, argv[4], &id) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    check(ncclCommInitRank(&comm, n, id, rank), "ncclCommInitRank");
    if (strcmp(mode, "check") == 0)
        rc = run_check(comm, rank, n);
    else if (strcmp(mode, "lat") == 0)
        rc = run_lat(comm, rank, n, strtoull(argv[5], NULL, 0), strtoull(argv[6], NULL, 0),
                     atoi(argv[7]));
    else
        rc = run_bw(comm, rank, strtoull(argv[5], NULL, 0), atoi(argv[6]));
    check(ncclCommDestroy(comm), "ncclCommDestroy");
    return rc;
}
