/* sendrecv_perf: every rank sends to rank+1 and receives from rank-1 (ncclSend/ncclRecv in one
 * group). busbw = algbw. The in-place run (sendbuff == recvbuff) is timed but, as in nccl-tests,
 * not checked (#wrong N/A). */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    *out = (struct perf_counts){.send_count = count, .recv_count = count, .param_count = count};
}

static ncclResult_t run(const struct perf_call *c)
{
    int send_peer = (c->rank + 1) % c->nranks;
    int recv_peer = (c->rank - 1 + c->nranks) % c->nranks;
    ncclResult_t res = ncclGroupStart();
    if (res != ncclSuccess)
        return res;
    res = ncclSend(c->sendbuff, c->count, c->type, send_peer, c->comm, NULL);
    if (res == ncclSuccess)
        res = ncclRecv(c->recvbuff, c->count, c->type, recv_peer, c->comm, NULL);
    ncclResult_t end = ncclGroupEnd(); /* always close the group we opened */
    return res != ncclSuccess ? res : end;
}

static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return true;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){
        .kind = PERF_EXPECT_COPY,
        .src_rank = (c->rank - 1 + c->nranks) % c->nranks,
        .g = j,
    };
}

static const struct perf_coll coll = {
    .name = "sendrecv_perf",
    .api = "ncclSend/ncclRecv",
    .bus_factor = perf_factor_one,
    .get_counts = get_counts,
    .run = run,
    .input_index = input_index,
    .expect = expect,
};

int main(int argc, char **argv)
{
    return perf_main(argc, argv, &coll);
}
