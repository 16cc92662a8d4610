/* reduce_scatter_perf: ncclReduceScatter. Sizes are the total sent bytes (count * nranks
 * elements); busbw = algbw * (n-1)/n. In place, rank r receives at sendbuff + r * count. */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    size_t per_rank = count / (size_t)nranks;
    *out = (struct perf_counts){
        .send_count = per_rank * (size_t)nranks,
        .recv_count = per_rank,
        .param_count = per_rank,
        .recv_inplace_off = per_rank,
    };
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclReduceScatter(c->sendbuff, c->recvbuff, c->count, c->type, c->op, c->comm, NULL);
}

static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return true;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){
        .kind = PERF_EXPECT_REDUCE,
        .g = (size_t)c->rank * c->count + j,
    };
}

static const struct perf_coll coll = {
    .name = "reduce_scatter_perf",
    .api = "ncclReduceScatter",
    .has_op = true,
    .check_inplace = true,
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
