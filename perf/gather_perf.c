/* gather_perf: ncclGather to -r root. Sizes are the bytes the root receives (count * nranks
 * elements); busbw = algbw * (n-1)/n. In place, rank r sends from recvbuff + r * count. Only the
 * root's receive buffer is checked. */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    size_t per_rank = count / (size_t)nranks;
    *out = (struct perf_counts){
        .send_count = per_rank,
        .recv_count = per_rank * (size_t)nranks,
        .param_count = per_rank,
        .send_inplace_off = per_rank,
    };
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclGather(c->sendbuff, c->recvbuff, c->count, c->type, c->root, c->comm, NULL);
}

static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = (size_t)c->rank * c->count + i;
    return true;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){
        .kind = c->rank == c->root ? PERF_EXPECT_COPY : PERF_EXPECT_NONE,
        .src_rank = c->count != 0 ? (int)(j / c->count) : 0,
        .g = j,
    };
}

static const struct perf_coll coll = {
    .name = "gather_perf",
    .api = "ncclGather",
    .has_root = true,
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
