/* New communicators from an existing one: split by color and key, shrink by excluding ranks, and
 * revoke, which stops a communicator so that it can be shrunk. The new communicator gets a fresh
 * unique id (created by its first member) and goes through the ordinary init. */
#include "common/check.h"
#include "core/api.h"
#include "core/enqueue.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AC_TAG_SHRINK_BASE 0x53480000u

struct split_entry {
    int color;
    int key;
    int rank;
};

static int compare_entries(const void *a, const void *b)
{
    const struct split_entry *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->rank - y->rank;
}

/* Members of `color`, ordered by (key, parent rank); returns their number. */
static int members_of(const struct split_entry *all, int n, int color, struct split_entry *out)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (all[i].color == color)
            out[m++] = all[i];
    qsort(out, (size_t)m, sizeof(*out), compare_entries);
    return m;
}

static ncclResult_t split_exchange(struct ncclComm *comm, int color, int key,
                                   struct split_entry *all, ncclUniqueId *ids, int *newrank,
                                   int *newn, int *leader)
{
    all[comm->rank] = (struct split_entry){color, key, comm->rank};
    AC_CHECK(ac_bootstrap_allgather(comm->bs, all, sizeof(*all)));
    struct split_entry *mine = calloc((size_t)comm->nranks, sizeof(*mine));
    if (!mine)
        return AC_FAIL(ncclSystemError, "out of memory");
    int m = color == NCCL_SPLIT_NOCOLOR ? 0 : members_of(all, comm->nranks, color, mine);
    *newn = m;
    *leader = m > 0 ? mine[0].rank : -1;
    for (int i = 0; i < m; i++)
        if (mine[i].rank == comm->rank)
            *newrank = i;
    free(mine);
    memset(&ids[comm->rank], 0, sizeof(*ids));
    if (*leader == comm->rank)
        AC_CHECK(ac_bootstrap_create_private_root(&ids[comm->rank]));
    return ac_bootstrap_allgather(comm->bs, ids, sizeof(*ids));
}

AC_API(ncclResult_t, ncclCommSplit, ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
       ncclConfig_t *config);
ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
                           ncclConfig_t *config)
{
    AC_CHECK(ac_comm_check_usable(comm, "comm"));
    if (!newcomm)
        return AC_FAIL(ncclInvalidArgument, "newcomm is NULL");
    if (color < 0 && color != NCCL_SPLIT_NOCOLOR)
        return AC_FAIL(ncclInvalidArgument, "color is %d: must be >= 0 or NCCL_SPLIT_NOCOLOR",
                       color);
    *newcomm = NULL;
    struct split_entry *all = calloc((size_t)comm->nranks, sizeof(*all));
    ncclUniqueId *ids = calloc((size_t)comm->nranks, sizeof(*ids));
    int newrank = -1, newn = 0, leader = -1;
    ncclResult_t res;
    if (!all || !ids) {
        res = AC_FAIL(ncclSystemError, "out of memory");
        goto out;
    }
    AC_CHECK_GOTO(split_exchange(comm, color, key, all, ids, &newrank, &newn, &leader), res, out);
    if (color != NCCL_SPLIT_NOCOLOR)
        res = ac_comm_create(newcomm, newn, &ids[leader], newrank, config);
out:
    free(all);
    free(ids);
    return res;
}

/* Stops other threads' calls on the communicator, then lets it be used for set-up again. */
static void drain(struct ncclComm *comm)
{
    comm->abort_flag = 1;
    while (atomic_load(&comm->nactive) > 0)
        usleep(1000);
    comm->abort_flag = 0;
}

static ncclResult_t shrink_id(struct ncclComm *comm, const bool *is_excluded, ncclUniqueId *id)
{
    uint32_t tag = AC_TAG_SHRINK_BASE + (uint32_t)(comm->nops_issued & 0xffff);
    int leader = 0;
    while (is_excluded[leader])
        leader++;
    if (leader != comm->rank)
        return ac_bootstrap_recv(comm->bs, leader, tag, id, sizeof(*id));
    AC_CHECK(ac_bootstrap_create_private_root(id));
    for (int r = 0; r < comm->nranks; r++)
        if (!is_excluded[r] && r != comm->rank)
            AC_CHECK(ac_bootstrap_send(comm->bs, r, tag, id, sizeof(*id)));
    return ncclSuccess;
}

/* The excluded ranks do not take part (they may be dead); the others call it together. */
AC_API(ncclResult_t, ncclCommShrink, ncclComm_t comm, int *excludeRanksList,
       int excludeRanksCount, ncclComm_t *newcomm, ncclConfig_t *config, int shrinkFlags);
ncclResult_t ncclCommShrink(ncclComm_t comm, int *excludeRanksList, int excludeRanksCount,
                            ncclComm_t *newcomm, ncclConfig_t *config, int shrinkFlags)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!newcomm)
        return AC_FAIL(ncclInvalidArgument, "newcomm is NULL");
    if (excludeRanksCount < 0 || (excludeRanksCount > 0 && !excludeRanksList))
        return AC_FAIL(ncclInvalidArgument, "excludeRanksList is NULL or excludeRanksCount (%d) "
                       "is negative", excludeRanksCount);
    if (shrinkFlags & ~(NCCL_SHRINK_DEFAULT | NCCL_SHRINK_ABORT))
        return AC_FAIL(ncclInvalidArgument, "shrinkFlags is 0x%x: unknown flags", shrinkFlags);
    *newcomm = NULL;
    bool *is_excluded = calloc((size_t)comm->nranks, sizeof(*is_excluded));
    if (!is_excluded)
        return AC_FAIL(ncclSystemError, "out of memory");
    ncclResult_t res = ncclSuccess;
    for (int i = 0; i < excludeRanksCount && res == ncclSuccess; i++) {
        int r = excludeRanksList[i];
        if (r < 0 || r >= comm->nranks || r == comm->rank)
            res = AC_FAIL(ncclInvalidArgument, "excludeRanksList[%d] is %d: must be a rank of "
                          "the communicator other than the caller (%d)", i, r, comm->rank);
        else
            is_excluded[r] = true;
    }
    int newrank = 0, newn = 0;
    for (int r = 0; r < comm->nranks; r++) {
        if (r == comm->rank)
            newrank = newn;
        newn += !is_excluded[r];
    }
    if (res == ncclSuccess && (shrinkFlags & NCCL_SHRINK_ABORT))
        drain(comm);
    ncclUniqueId id;
    if (res == ncclSuccess)
        res = shrink_id(comm, is_excluded, &id);
    comm->nops_issued++;
    if (res == ncclSuccess)
        res = ac_comm_create(newcomm, newn, &id, newrank, config);
    free(is_excluded);
    return res;
}

AC_API(ncclResult_t, ncclCommRevoke, ncclComm_t comm, int revokeFlags);
ncclResult_t ncclCommRevoke(ncclComm_t comm, int revokeFlags)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (revokeFlags != NCCL_REVOKE_DEFAULT)
        return AC_FAIL(ncclInvalidArgument, "revokeFlags is 0x%x: must be NCCL_REVOKE_DEFAULT",
                       revokeFlags);
    comm->is_revoked = true;
    drain(comm);
    return ncclSuccess;
}
