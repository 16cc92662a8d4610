/* The one list of transports, in order of preference: the first that can join two ranks carries
 * their connectors. Adding a transport is one line here and one folder beside this file.
 * ANYCCL_NET (ib, ofi, socket) keeps only that network transport; shared memory still joins ranks
 * of one host unless NCCL_SHM_DISABLE=1. */
#include "transport/transport.h"

#include "common/config.h"
#include "common/log.h"
#include "transport/rdma/rdma.h"

#include <stddef.h>
#include <string.h>

const struct ac_transport *const ac_transports_all[] = {
    &ac_shm_transport,
    &ac_ib_transport.tp,
    &ac_ofi_transport.tp,
    &ac_socket_transport,
};

/* Whether ANYCCL_NET rules tp out (it names another network transport). */
static bool is_excluded(const struct ac_transport *tp)
{
    const char *net = ac_config_get()->net;
    if (net == NULL || tp == &ac_shm_transport)
        return false;
    if (strcmp(net, "ib") != 0 && strcmp(net, "ofi") != 0 && strcmp(net, "socket") != 0) {
        static bool is_warned;
        if (!is_warned)
            AC_WARN("ANYCCL_NET=%s is not one of ib, ofi, socket: ignored", net);
        is_warned = true;
        return false;
    }
    return strcmp(net, tp->name) != 0;
}

const int ac_transports_count = (int)(sizeof(ac_transports_all) / sizeof(ac_transports_all[0]));

void ac_transport_rdma_prefer(const char *rdma_dev, int port)
{
    ac_ib_prefer_device(rdma_dev, port);
}

uint8_t ac_transport_rdma_caps(void)
{
    const struct ac_rdma_transport *rts[] = {&ac_ib_transport, &ac_ofi_transport};
    const uint8_t bits[] = {AC_RDMA_CAP_IB, AC_RDMA_CAP_OFI};
    const char *net = ac_config_get()->net;
    uint8_t caps = AC_RDMA_CAP_KNOWN;
    for (int i = 0; i < 2; i++) {
        char why[256];
        bool is_forced = net != NULL && strcmp(net, rts[i]->tp.name) == 0;
        if (!is_excluded(&rts[i]->tp) && rts[i]->pv->is_usable(is_forced, why, sizeof(why)))
            caps |= bits[i];
    }
    return caps;
}

const struct ac_transport *ac_transport_would_pick(const struct ac_peer_info *self,
                                                   const struct ac_peer_info *peer)
{
    for (int i = 0; i < ac_transports_count; i++) {
        const struct ac_transport *tp = ac_transports_all[i];
        if (!is_excluded(tp) && tp->can_connect(self, peer))
            return tp;
    }
    return NULL;
}

const struct ac_transport *ac_transport_pick(const struct ac_peer_info *self,
                                             const struct ac_peer_info *peer)
{
    const struct ac_transport *tp = ac_transport_would_pick(self, peer);
    if (tp) {
        AC_INFO(AC_SUB_INIT | (tp == &ac_shm_transport ? AC_SUB_SHM : AC_SUB_NET),
                "rank %d -> rank %d (host %s) via %s", self->rank, peer->rank, peer->hostname,
                tp->name);
        return tp;
    }
    AC_INFO(AC_SUB_INIT, "rank %d -> rank %d (host %s): no transport can join them%s%s", self->rank,
            peer->rank, peer->hostname, ac_config_get()->net ? " with ANYCCL_NET=" : "",
            ac_config_get()->net ? ac_config_get()->net : "");
    return NULL;
}
