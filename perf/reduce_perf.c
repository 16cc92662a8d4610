/* reduce_perf: ncclReduce to -r root. busbw = algbw. Only the root's receive buffer is checked:
 * NCCL leaves the others' undefined. */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    *out = (struct perf_counts){.send_count = count, .recv_count = count, .param_count = count};
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclReduce(c->sendbuff, c->recvbuff, c->count, c->type, c->op, c->root, c->comm, NULL);
}

static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return true;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){
        .kind = c->rank == c->root ? PERF_EXPECT_REDUCE : PERF_EXPECT_NONE,
        .g = j,
    };
}

static const struct perf_coll coll = {
    .name = "reduce_perf",
    .api = "ncclReduce",
    .has_op = true,
    .has_root = true,
    .check_inplace = true,
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
