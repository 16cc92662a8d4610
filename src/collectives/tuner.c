/* The cost model: time = steps x per-step latency + bytes on the busiest link / bandwidth. Its
 * parameters describe the host backend on one machine (shared memory) or across a network
 * (sockets); the topology work will replace them with figures from the discovered graph. */
#include "collectives/coll.h"

struct link_model {
    double step_us;      /* per slot hand-off */
    double gbps;         /* bytes per ns, i.e. GB/s, of one link */
};

static const struct link_model shm_link = {.step_us = 1.0, .gbps = 6.0};
static const struct link_model net_link = {.step_us = 20.0, .gbps = 1.0};

/* Bytes each rank sends, as a multiple of the user's per-rank bytes, and the number of
 * sequential steps, per collective (ring / chain algorithms). */
static void ring_factors(enum ac_coll coll, int n, double *traffic, double *steps)
{
    double dn = n;
    switch (coll) {
    case AC_COLL_ALLREDUCE:
        *traffic = 2.0 * (dn - 1) / dn;
        *steps = 2.0 * (dn - 1);
        break;
    case AC_COLL_ALLGATHER:
    case AC_COLL_REDUCESCATTER:
    case AC_COLL_ALLTOALL:
    case AC_COLL_GATHER:
    case AC_COLL_SCATTER:
        *traffic = dn - 1;
        *steps = dn - 1;
        break;
    case AC_COLL_BROADCAST:
    case AC_COLL_REDUCE:
        *traffic = 1.0;
        *steps = dn - 1;
        break;
    default:
        *traffic = 1.0;
        *steps = 1.0;
        break;
    }
}

double ac_tuner_estimate_us(enum ac_coll coll, size_t bytes, int nranks, bool is_same_host)
{
    const struct link_model *m = is_same_host ? &shm_link : &net_link;
    double traffic, steps;
    if (nranks <= 1)
        return m->step_us;
    ring_factors(coll, nranks, &traffic, &steps);
    return steps * m->step_us + traffic * (double)bytes / (m->gbps * 1e3);
}
