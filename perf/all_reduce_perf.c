/* all_reduce_perf: ncclAllReduce. busbw = algbw * 2(n-1)/n: each rank sends and receives
 * 2(n-1)/n of the buffer in a ring. */
#include "perf.h"

static double bus_factor(int nranks)
{
    return 2.0 * (nranks - 1) / nranks;
}

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    *out = (struct perf_counts){.send_count = count, .recv_count = count, .param_count = count};
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclAllReduce(c->sendbuff, c->recvbuff, c->count, c->type, c->op, c->comm, NULL);
}

static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return true;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){.kind = PERF_EXPECT_REDUCE, .g = j};
}

static const struct perf_coll coll = {
    .name = "all_reduce_perf",
    .api = "ncclAllReduce",
    .has_op = true,
    .check_inplace = true,
    .bus_factor = bus_factor,
    .get_counts = get_counts,
    .run = run,
    .input_index = input_index,
    .expect = expect,
};

int main(int argc, char **argv)
{
    return perf_main(argc, argv, &coll);
}
