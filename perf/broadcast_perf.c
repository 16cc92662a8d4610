/* broadcast_perf: ncclBroadcast from -r root. busbw = algbw. */
#include "perf.h"

static void get_counts(size_t count, int nranks, struct perf_counts *out)
{
    *out = (struct perf_counts){.send_count = count, .recv_count = count, .param_count = count};
}

static ncclResult_t run(const struct perf_call *c)
{
    return ncclBroadcast(c->sendbuff, c->recvbuff, c->count, c->type, c->root, c->comm, NULL);
}

/* Only the root's send buffer is read. */
static bool input_index(const struct perf_call *c, size_t i, size_t *g_out)
{
    *g_out = i;
    return c->rank == c->root;
}

static void expect(const struct perf_call *c, size_t j, struct perf_expect *out)
{
    *out = (struct perf_expect){.kind = PERF_EXPECT_COPY, .src_rank = c->root, .g = j};
}

static const struct perf_coll coll = {
    .name = "broadcast_perf",
    .api = "ncclBroadcast",
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
