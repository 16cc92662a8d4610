/* alltoall_perf: ncclAlltoAll. Sizes are the bytes each rank sends (count * nranks elements);
 * busbw = algbw * (n-1)/n. The in-place run (sendbuff == recvbuff) is timed but, as in
 * nccl-tests, not checked (#wrong N/A). */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    size_t per_peer = count / (size_t)nranks;
    *out = (struct perf_counts){
        .send_count = per_peer * (size_t)nranks,
        .recv_count = per_peer * (size_t)nranks,
        .param_count = per_peer,
    };
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclAlltoAll(c->sendbuff, c->recvbuff, c->count, c->type, c->comm, NULL);
}

/* Block d of rank r's send buffer goes to rank d. */
static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return true;
}

/* Block s of the receive buffer is block <rank> of rank s's send buffer. */
static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){
        .kind = PERF_EXPECT_COPY,
        .src_rank = (int)(j / c->count),
        .g = (size_t)c->rank * c->count + j % c->count,
    };
}

static const struct perf_coll coll = {
    .name = "alltoall_perf",
    .api = "ncclAlltoAll",
    .bw_times_nranks = true,
    .bus_factor = perf_factor_gather,
    .get_counts = get_counts,
    .run = run,
    .input_index = input_index,
    .expect = expect,
};

int main(int argc, char **argv)
{
    return perf_main(argc, argv, &coll);
}
