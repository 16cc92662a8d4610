/* The one list of transports, in order of preference: the first that can join two ranks carries
 * their connectors. Adding a transport is one line here and one folder beside this file. */
#include "transport/transport.h"

#include "common/log.h"

#include <stddef.h>

const struct ac_transport *const ac_transports_all[] = {
    &ac_shm_transport,
    &ac_socket_transport,
};

const int ac_transports_count = (int)(sizeof(ac_transports_all) / sizeof(ac_transports_all[0]));

const struct ac_transport *ac_transport_pick(const struct ac_peer_info *self,
                                             const struct ac_peer_info *peer)
{
    for (int i = 0; i < ac_transports_count; i++) {
        const struct ac_transport *tp = ac_transports_all[i];
        if (tp->can_connect(self, peer)) {
            AC_INFO(AC_SUB_INIT | (tp == &ac_shm_transport ? AC_SUB_SHM : AC_SUB_NET),
                    "rank %d -> rank %d (host %s) via %s", self->rank, peer->rank, peer->hostname,
                    tp->name);
            return tp;
        }
    }
    AC_INFO(AC_SUB_INIT, "rank %d -> rank %d (host %s): no transport can join them", self->rank,
            peer->rank, peer->hostname);
    return NULL;
}
