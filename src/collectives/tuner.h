/* The cost model's parameters and the model itself, shared by the library's tuner (ac_tuner_pick
 * in coll.h) and anyccl-sim (tools/anyccl-sim.c), which predicts clusters that do not exist. */
#ifndef AC_COLLECTIVES_TUNER_H
#define AC_COLLECTIVES_TUNER_H

#include "collectives/coll.h"

struct ac_tuner_params {
    double net_hop_us;   /* one step between nodes: wire, switch, TCP stack, progress */
    double net_gbs;      /* GB/s through one NIC in one direction, as a transport achieves it */
    double intra_hop_us; /* one step between ranks of a node */
    double intra_gbs;    /* GB/s of one rank-to-rank path inside a node */
    double chunk_bytes;  /* slot size: a tree's turn-around at its root waits for one */
    double burst_bytes;  /* token bucket of a tc-capped link (anyccl-sim --burst); 0 otherwise */
};

/* Calibrated on the multi-node bed (docs/topology.md, "Calibration"): what a link of line rate
 * gbit Gb/s gives TCP payload, as a fraction. */
#define AC_TUNER_NET_EFFICIENCY 0.94

/* The library's parameters for a layout: calibrated defaults; the network term is the socket
 * transport's ceiling, lowered to the NICs' line rate (layout nic_gbit) when that is lower. */
void ac_tuner_params_for(const struct ac_layout *l, struct ac_tuner_params *out);

/* Estimated microseconds of a collective of `bytes` (the user's count x type size) with algo on
 * layout l under params p. Ring collectives count the bytes through the busiest NIC of the
 * rail-aware snake ring, trees those of the busiest head of the double binary trees (two
 * channels, spread over rails), all-to-all / gather / scatter their pairwise transfers. */
double ac_tuner_model_us(enum ac_coll coll, enum ac_algo algo, size_t bytes,
                         const struct ac_layout *l, const struct ac_tuner_params *p);

/* Whether algo implements coll (trees: allreduce, broadcast, reduce). */
bool ac_tuner_algo_applies(enum ac_coll coll, enum ac_algo algo);

/* nccl-tests' bus bandwidth factor: busbw = algbw x factor. */
double ac_tuner_busbw_factor(enum ac_coll coll, int nranks);

#endif
