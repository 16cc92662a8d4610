/* A small job for the RAS fault tests (tests/ras/run.sh): forks N ranks that run allreduces with
 * the public API and report what happened on stdout, one line per event:
 *   READY <rank> <pid>            after ncclCommInitRank
 *   ERROR <rank> <unix_ms> <code> <ncclGetLastError text>
 *   DONE <rank> <iterations>
 *   EXIT <rank> <status>          (from the launcher, when a rank's process ends)
 * Modes:
 *   loop   allreduces (checked) until -i iterations or -s seconds; a failing rank waits 2 s
 *          before it exits, so that the only process gone is the one the test killed
 *   abort  2 ranks: both run 5 allreduces; then rank 0 starts a 6th that rank 1 never joins and
 *          a second thread calls ncclCommAbort after 1 s; rank 0 prints ABORTED <ms waited>
 *   poke   loop, and the launcher pokes the bootstrap root (before the ranks join) and every
 *          listening TCP port of every rank (once all are READY) with garbage and with
 *          well-formed messages carrying a wrong secret
 * -p PORT: rank 0 serves RAS clients on 127.0.0.1:PORT (the other ranks serve none). */
#include "nccl.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RANKS 16
#define COUNT 1024

struct opts {
    int nranks;
    long iters;
    double seconds;
    const char *mode;
    int ras_port;
};

static long long unix_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report_error(int rank, ncclResult_t res)
{
    printf("ERROR %d %lld %d %s\n", rank, unix_ms(), (int)res, ncclGetLastError(NULL));
    fflush(stdout);
}

/* The ranks stop together: rank 0 decides (time or iterations) and sums a flag into the last
 * element, so every rank sees the decision after the same allreduce. */
static int run_loop(const struct opts *o, int rank, ncclComm_t comm)
{
    float *buf = malloc((COUNT + 1) * sizeof(float));
    double end = mono_s() + o->seconds;
    long i = 0;
    for (bool is_last = false; !is_last; i++) {
        for (int k = 0; k < COUNT; k++)
            buf[k] = (float)(rank + k % 7);
        buf[COUNT] = rank == 0 && (i + 1 >= o->iters || mono_s() >= end) ? 1.0f : 0.0f;
        ncclResult_t res = ncclAllReduce(buf, buf, COUNT + 1, ncclFloat, ncclSum, comm, NULL);
        if (res != ncclSuccess) {
            report_error(rank, res);
            sleep(2);
            ncclCommAbort(comm);
            return 3;
        }
        for (int k = 0; k < COUNT; k++) {
            float want = (float)(o->nranks * (o->nranks - 1) / 2 + o->nranks * (k % 7));
            if (buf[k] != want) {
                printf("WRONG %d iteration %ld element %d: %g, expected %g\n", rank, i, k, buf[k],
                       want);
                return 4;
            }
        }
        is_last = buf[COUNT] != 0.0f;
        usleep(1000); /* be gentle with shared cores */
    }
    printf("DONE %d %ld\n", rank, i);
    fflush(stdout);
    free(buf);
    return ncclCommDestroy(comm) == ncclSuccess ? 0 : 5;
}

struct aborter {
    ncclComm_t comm;
    double at;
};

static void *abort_later(void *p)
{
    struct aborter *a = p;
    sleep(1);
    a->at = mono_s();
    ncclCommAbort(a->comm);
    return NULL;
}

static int run_abort(int rank, ncclComm_t comm)
{
    float buf[COUNT] = {0};
    for (int i = 0; i < 5; i++)
        if (ncclAllReduce(buf, buf, COUNT, ncclFloat, ncclSum, comm, NULL) != ncclSuccess)
            return report_error(rank, ncclInternalError), 3;
    if (rank != 0) {
        sleep(4); /* never joins the 6th */
        ncclCommAbort(comm);
        return 0;
    }
    struct aborter a = {comm, 0};
    pthread_t t;
    pthread_create(&t, NULL, abort_later, &a);
    ncclResult_t res = ncclAllReduce(buf, buf, COUNT, ncclFloat, ncclSum, comm, NULL);
    double done = mono_s();
    pthread_join(t, NULL);
    printf("ABORTED %d %d %.0f\n", rank, (int)res, (done - a.at) * 1000);
    fflush(stdout);
    return res != ncclSuccess ? 0 : 6;
}

static int run_rank(const struct opts *o, int rank, const ncclUniqueId *id)
{
    char addr[64] = "none";
    if (rank == 0 && o->ras_port > 0)
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", o->ras_port);
    setenv("NCCL_RAS_ADDR", addr, 1);
    ncclComm_t comm;
    ncclResult_t res = ncclCommInitRank(&comm, o->nranks, *id, rank);
    if (res != ncclSuccess) {
        report_error(rank, res);
        return 2;
    }
    printf("READY %d %d\n", rank, (int)getpid());
    fflush(stdout);
    if (!strcmp(o->mode, "abort"))
        return run_abort(rank, comm);
    return run_loop(o, rank, comm);
}

/* ---- poking ---- */

static void poke_addr(const struct sockaddr *sa, socklen_t len, const void *msg, size_t n)
{
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return;
    if (connect(fd, sa, len) == 0 && send(fd, msg, n, MSG_NOSIGNAL) < 0) {
        /* the other end may close first: that is the point */
    }
    usleep(20000);
    close(fd);
}

/* A RAS HELLO with a key nobody has (wire v1: "ACRS", version 1, type 1). */
static size_t bad_ras_hello(uint8_t *m)
{
    memset(m, 0, 24 + 64);
    memcpy(m, "ACRS", 4);
    m[4] = 1;  /* version */
    m[6] = 1;  /* HELLO */
    m[8] = 64; /* payload: key id 8, nonce 16, address 24, mac 16 */
    for (int i = 24; i < 24 + 24; i++)
        m[i] = (uint8_t)(i * 37);
    m[24 + 24] = 4; /* address family v4 */
    m[24 + 26] = 127, m[24 + 29] = 1;
    m[24 + 42] = 0x12; /* port */
    return 24 + 64;
}

/* A bootstrap hello (layout of src/core/bootstrap_wire.h, host order) with a wrong secret. */
static size_t bad_bootstrap_hello(uint8_t *m, int nranks)
{
    uint32_t magic = 0x41434248u, version = 1;
    uint64_t secret = 0x0123456789abcdefull;
    int32_t n = nranks, r = 0;
    memset(m, 0, 24 + sizeof(struct sockaddr_storage));
    memcpy(m, &magic, 4);
    memcpy(m + 4, &version, 4);
    memcpy(m + 8, &secret, 8);
    memcpy(m + 16, &n, 4);
    memcpy(m + 20, &r, 4);
    return 24 + sizeof(struct sockaddr_storage);
}

static void poke_all(const struct sockaddr *sa, socklen_t len, int nranks)
{
    uint8_t m[512];
    const char garbage[] = "GET / HTTP/1.0\r\n\r\n\x01\x02\x03garbage";
    poke_addr(sa, len, garbage, sizeof(garbage));
    poke_addr(sa, len, m, bad_ras_hello(m));
    poke_addr(sa, len, m, bad_bootstrap_hello(m, nranks));
    poke_addr(sa, len, "", 0);
}

/* Every IPv4 listening port of pid, from /proc/<pid>/fd and /proc/net/tcp. */
static int listening_ports(int pid, int *ports, uint32_t *ips, int max)
{
    char path[64], link[64];
    unsigned long inodes[64];
    int ninodes = 0, n = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d)) && ninodes < 64;) {
        char fdp[400];
        snprintf(fdp, sizeof(fdp), "%s/%.300s", path, e->d_name);
        ssize_t k = readlink(fdp, link, sizeof(link) - 1);
        if (k > 0 && (link[k] = '\0', sscanf(link, "socket:[%lu]", &inodes[ninodes]) == 1))
            ninodes++;
    }
    if (d)
        closedir(d);
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f) && n < max) {
        unsigned ip, port, state;
        unsigned long inode;
        if (sscanf(line, " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*d %*d %lu", &ip, &port,
                   &state, &inode) != 4 ||
            state != 0x0A)
            continue;
        for (int i = 0; i < ninodes && n < max; i++) {
            if (inodes[i] == inode) {
                ips[n] = ip ? ip : htonl(INADDR_LOOPBACK); /* as the kernel prints s_addr */
                ports[n++] = (int)port;
            }
        }
    }
    if (f)
        fclose(f);
    return n;
}

static void poke_ranks(const int *pids, int nranks)
{
    for (int r = 0; r < nranks; r++) {
        int ports[32];
        uint32_t ips[32];
        int n = listening_ports(pids[r], ports, ips, 32);
        for (int i = 0; i < n; i++) {
            struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[i])};
            in.sin_addr.s_addr = ips[i];
            poke_all((struct sockaddr *)&in, sizeof(in), nranks);
        }
        printf("POKED %d %d ports\n", r, n);
        fflush(stdout);
    }
}

/* The bootstrap root runs in the process that called ncclGetUniqueId. */
static void poke_root(int root_pid, int nranks)
{
    int ports[8];
    uint32_t ips[8];
    int n = listening_ports(root_pid, ports, ips, 8);
    for (int i = 0; i < n; i++) {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[i])};
        in.sin_addr.s_addr = ips[i];
        poke_all((struct sockaddr *)&in, sizeof(in), nranks);
    }
    printf("POKED root %d ports\n", n);
}

/* ncclGetUniqueId runs in a child that keeps the bootstrap root alive: this process never reads
 * AnyCCL's configuration, so each rank can still set its own NCCL_RAS_ADDR. */
static int start_root(ncclUniqueId *id)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    int pid = fork();
    if (pid == 0) {
        close(fds[0]);
        ncclResult_t res = ncclGetUniqueId(id);
        if (res != ncclSuccess)
            fprintf(stderr, "ncclGetUniqueId failed: %s\n", ncclGetLastError(NULL));
        if (write(fds[1], id, sizeof(*id)) != (ssize_t)sizeof(*id) || res != ncclSuccess)
            _exit(1);
        alarm(120);
        pause(); /* killed by the launcher once the ranks are done */
        _exit(0);
    }
    close(fds[1]);
    ssize_t n = pid > 0 ? read(fds[0], id, sizeof(*id)) : -1;
    close(fds[0]);
    if (n != (ssize_t)sizeof(*id)) {
        fprintf(stderr, "ras_job: could not get a unique id\n");
        return -1;
    }
    return pid;
}

static int parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){4, 1000000000L, 30.0, "loop", 0};
    int c;
    while ((c = getopt(argc, argv, "n:i:s:m:p:")) != -1) {
        if (c == 'n')
            o->nranks = atoi(optarg);
        else if (c == 'i')
            o->iters = atol(optarg);
        else if (c == 's')
            o->seconds = atof(optarg);
        else if (c == 'm')
            o->mode = optarg;
        else if (c == 'p')
            o->ras_port = atoi(optarg);
        else
            return -1;
    }
    return o->nranks >= 1 && o->nranks <= MAX_RANKS ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: ras_job [-n ranks] [-i iters] [-s seconds] [-m loop|abort|poke] "
                        "[-p ras_port]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    ncclUniqueId id;
    int root_pid = start_root(&id);
    if (root_pid < 0)
        return 2;
    bool is_poke = !strcmp(o.mode, "poke");
    if (is_poke)
        poke_root(root_pid, o.nranks);
    int pids[MAX_RANKS];
    for (int r = 0; r < o.nranks; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            fflush(stdout);
            _exit(run_rank(&o, r, &id));
        }
    }
    if (is_poke) {
        sleep(1); /* the ranks are past init by now (READY lines); their ports are open */
        poke_ranks(pids, o.nranks);
    }
    int rc = 0;
    for (int left = o.nranks; left > 0;) {
        int st;
        pid_t p = wait(&st);
        if (p < 0)
            break;
        for (int r = 0; r < o.nranks; r++) {
            if (pids[r] != p)
                continue;
            int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            printf("EXIT %d %d\n", r, code);
            rc |= code != 0;
            left--;
        }
    }
    kill(root_pid, SIGKILL);
    waitpid(root_pid, NULL, 0);
    return rc;
}
