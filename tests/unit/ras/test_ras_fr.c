/* The per-communicator record and flight recorder: hook counters, ring wrap-around, the text of a
 * dump, the dump on ncclRemoteError. */
#include "core/comm.h"
#include "common/config.h"
#include "ras/ras_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ncclComm *fake_comm(int rank, int nranks)
{
    struct ncclComm *c = calloc(1, sizeof(*c));
    c->rank = rank;
    c->nranks = nranks;
    c->comm_hash = 0xabcdef0123456789ull;
    c->ras = ac_ras_rec_alloc(c);
    cr_assert_not_null(c->ras);
    return c;
}

static char *dump_text(struct ac_ras_comm *rec)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ac_ras_fr_write(rec, "unit test", f);
    fclose(f);
    return text;
}

Test(ras_fr, counters_and_snapshot, .timeout = 10)
{
    struct ncclComm *c = fake_comm(3, 8);
    uint64_t a = ac_ras_op_enqueue(c, 0 /* allreduce */, 100, ncclFloat32, 0, -1);
    uint64_t b = ac_ras_op_enqueue(c, 3 /* broadcast */, 7, ncclInt32, 0, 2);
    cr_expect_eq(a, 1u);
    cr_expect_eq(b, 2u);
    ac_ras_op_start(c, a);
    ac_ras_op_end(c, a, ncclSuccess);
    ac_ras_op_start(c, b);
    struct ac_ras_record r;
    ac_ras_rec_snapshot(c->ras, &r, 0);
    cr_expect_eq(r.nenqueued, 2u);
    cr_expect_eq(r.nstarted, 2u);
    cr_expect_eq(r.nfinished, 1u);
    cr_expect_eq(r.cur_coll, 3);
    cr_expect_eq(r.rank, 3u);
    cr_expect_eq(r.nranks, 8u);
    cr_expect_eq(r.last_error, 0);
    char *t = dump_text(c->ras);
    cr_expect_not_null(strstr(t, "comm 0xabcdef0123456789 rank 3 of 8"));
    cr_expect_not_null(strstr(t, "seq=1 AllReduce count=100 type=float op=sum - state=finished"));
    cr_expect_not_null(strstr(t, "seq=2 Broadcast count=7 type=int32 op=- root=2 state=started"));
    free(t);
    ac_ras_rec_free(c->ras);
    free(c);
}

Test(ras_fr, ring_keeps_the_last_n, .timeout = 10)
{
    setenv("ANYCCL_FLIGHT_RECORDER", "4", 1);
    ac_config_reload();
    struct ncclComm *c = fake_comm(0, 2);
    for (int i = 0; i < 10; i++) {
        uint64_t s = ac_ras_op_enqueue(c, 8 /* send */, (size_t)i, ncclInt8, 0, 1);
        ac_ras_op_start(c, s);
        ac_ras_op_end(c, s, ncclSuccess);
    }
    char *t = dump_text(c->ras);
    cr_expect_null(strstr(t, "seq=6 "));
    for (int s = 7; s <= 10; s++) {
        char want[64];
        snprintf(want, sizeof(want), "seq=%d Send count=%d type=int8 op=- peer=1", s, s - 1);
        cr_expect_not_null(strstr(t, want), "missing '%s' in:\n%s", want, t);
    }
    free(t);
    ac_ras_rec_free(c->ras);
    free(c);
    unsetenv("ANYCCL_FLIGHT_RECORDER");
    ac_config_reload();
}

Test(ras_fr, remote_error_dumps_once, .timeout = 10)
{
    char path[] = "/tmp/anyccl-fr-unit-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    setenv("ANYCCL_FLIGHT_RECORDER_FILE", path, 1);
    ac_config_reload();
    struct ncclComm *c = fake_comm(1, 2);
    for (int i = 0; i < 2; i++) {
        uint64_t s = ac_ras_op_enqueue(c, 0, 8, ncclFloat32, 0, -1);
        ac_ras_op_start(c, s);
        ac_ras_op_end(c, s, ncclRemoteError);
    }
    FILE *f = fopen(path, "r");
    char line[512];
    int nheaders = 0;
    while (f && fgets(line, sizeof(line), f))
        nheaders += strstr(line, "reason: operation failed (ncclRemoteError)") != NULL;
    if (f)
        fclose(f);
    cr_expect_eq(nheaders, 1);
    struct ac_ras_record r;
    ac_ras_rec_snapshot(c->ras, &r, 0);
    cr_expect_eq(r.last_error, (int)ncclRemoteError);
    unlink(path);
    unsetenv("ANYCCL_FLIGHT_RECORDER_FILE");
    ac_config_reload();
    ac_ras_rec_free(c->ras);
    free(c);
}
