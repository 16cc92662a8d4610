/* Collective and point-to-point entry points: check every argument, naming the bad one, then
 * describe the operation and hand it to the group/executor. A refused call changes nothing: the
 * communicator stays usable. */
#include "common/check.h"
#include "core/api.h"
#include "core/enqueue.h"
#include "core/stream.h"
#include "device/backend.h"

#include <string.h>

struct call {
    enum ac_coll coll;
    ncclComm_t comm;
    const void *sendbuff;
    void *recvbuff;
    size_t count;
    ncclDataType_t type;
    ncclRedOp_t op;
    bool has_op;
    int root;                 /* -1 when the call has none */
    int peer;                 /* -1 when the call has none */
    cudaStream_t stream;
};

static ncclResult_t check_rank_arg(const struct ncclComm *comm, int value, const char *what)
{
    if (value < 0 || value >= comm->nranks)
        return AC_FAIL(ncclInvalidArgument, "%s is %d: must be in [0, %d) for this communicator",
                       what, value, comm->nranks);
    return ncclSuccess;
}

/* Which buffers the call reads and writes on this rank (NCCL: only the root's recvbuff for
 * reduce and gather, only the root's sendbuff for broadcast and scatter). */
static void buffer_use(const struct call *c, int rank, bool *reads, bool *writes)
{
    bool is_root = rank == c->root;
    *reads = c->coll != AC_COLL_RECV && (c->coll != AC_COLL_BROADCAST || is_root) &&
             (c->coll != AC_COLL_SCATTER || is_root);
    *writes = c->coll != AC_COLL_SEND && (c->coll != AC_COLL_REDUCE || is_root) &&
              (c->coll != AC_COLL_GATHER || is_root);
}

static ncclResult_t check_call(const struct call *c, struct ac_op *op)
{
    AC_CHECK(ac_comm_check_usable(c->comm, "comm"));
    ac_log_set_rank(c->comm->rank);
    if ((unsigned)c->type >= (unsigned)ncclNumTypes)
        return AC_FAIL(ncclInvalidArgument, "datatype is %d: not an ncclDataType_t (0..%d)",
                       (int)c->type, (int)ncclNumTypes - 1);
    if (c->root >= 0 || c->coll == AC_COLL_BROADCAST || c->coll == AC_COLL_REDUCE ||
        c->coll == AC_COLL_GATHER || c->coll == AC_COLL_SCATTER)
        AC_CHECK(check_rank_arg(c->comm, c->root, "root"));
    if (c->coll == AC_COLL_SEND || c->coll == AC_COLL_RECV)
        AC_CHECK(check_rank_arg(c->comm, c->peer, "peer"));
    bool reads, writes;
    buffer_use(c, c->comm->rank, &reads, &writes);
    if (c->count > 0 && reads && !c->sendbuff)
        return AC_FAIL(ncclInvalidArgument, "sendbuff is NULL with count %zu", c->count);
    if (c->count > 0 && writes && !c->recvbuff)
        return AC_FAIL(ncclInvalidArgument, "recvbuff is NULL with count %zu", c->count);
    /* Host buffers with a NULL stream skip this after the first call of the process when no GPU
     * backend is usable: one load. */
    const struct ac_backend *be = NULL;
    if (c->stream || ac_backends_have_gpu())
        AC_CHECK(ac_stream_pick_backend(c->sendbuff, reads, c->recvbuff, writes, c->stream, &be));
    memset(op, 0, sizeof(*op));
    if (c->has_op)
        AC_CHECK(ac_redop_resolve(c->comm, c->op, c->type, &op->redop));
    else
        op->redop.type = c->type;
    op->coll = c->coll;
    op->comm = c->comm;
    op->sendbuff = c->sendbuff;
    op->recvbuff = c->recvbuff;
    op->count = c->count;
    op->type = c->type;
    op->root = c->root;
    op->peer = c->peer;
    op->backend = be;
    op->stream = c->stream;
    return ncclSuccess;
}

static ncclResult_t issue(const struct call *c)
{
    struct ac_op op;
    ncclResult_t res = check_call(c, &op);
    if (res == ncclSuccess) {
        AC_INFO(AC_SUB_COLL, "%s: opCount %llx sendbuff %p recvbuff %p count %zu datatype %d "
                "op %d root %d peer %d comm %p [nranks=%d]", ac_coll_name(c->coll),
                (unsigned long long)c->comm->nops_issued, c->sendbuff, c->recvbuff, c->count,
                (int)c->type, (int)c->op, c->root, c->peer, (void *)c->comm, c->comm->nranks);
        res = ac_enqueue(&op);
    }
    if (res != ncclSuccess)
        ac_group_note_error(res);
    return res;
}

AC_API(ncclResult_t, ncclAllReduce, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream)
{
    struct call c = {AC_COLL_ALLREDUCE, comm, sendbuff, recvbuff, count, datatype, op, true, -1,
                     -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclReduceScatter, const void *sendbuff, void *recvbuff, size_t recvcount,
       ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream)
{
    struct call c = {AC_COLL_REDUCESCATTER, comm, sendbuff, recvbuff, recvcount, datatype, op,
                     true, -1, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclAllGather, const void *sendbuff, void *recvbuff, size_t sendcount,
       ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_ALLGATHER, comm, sendbuff, recvbuff, sendcount, datatype, ncclSum,
                     false, -1, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclBroadcast, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_BROADCAST, comm, sendbuff, recvbuff, count, datatype, ncclSum, false,
                     root, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclBcast, void *buff, size_t count, ncclDataType_t datatype, int root,
       ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBcast(void *buff, size_t count, ncclDataType_t datatype, int root,
                       ncclComm_t comm, cudaStream_t stream)
{
    return ncclBroadcast(buff, buff, count, datatype, root, comm, stream);
}

AC_API(ncclResult_t, ncclReduce, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduce(const void *sendbuff, void *recvbuff, size_t count,
                        ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm,
                        cudaStream_t stream)
{
    struct call c = {AC_COLL_REDUCE, comm, sendbuff, recvbuff, count, datatype, op, true, root,
                     -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclAlltoAll, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAlltoAll(const void *sendbuff, void *recvbuff, size_t count,
                          ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_ALLTOALL, comm, sendbuff, recvbuff, count, datatype, ncclSum, false,
                     -1, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclGather, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclGather(const void *sendbuff, void *recvbuff, size_t count,
                        ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_GATHER, comm, sendbuff, recvbuff, count, datatype, ncclSum, false,
                     root, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclScatter, const void *sendbuff, void *recvbuff, size_t count,
       ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclScatter(const void *sendbuff, void *recvbuff, size_t count,
                         ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_SCATTER, comm, sendbuff, recvbuff, count, datatype, ncclSum, false,
                     root, -1, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclSend, const void *sendbuff, size_t count, ncclDataType_t datatype,
       int peer, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_SEND, comm, sendbuff, NULL, count, datatype, ncclSum, false, -1,
                     peer, stream};
    return issue(&c);
}

AC_API(ncclResult_t, ncclRecv, void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
       ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream)
{
    struct call c = {AC_COLL_RECV, comm, NULL, recvbuff, count, datatype, ncclSum, false, -1,
                     peer, stream};
    return issue(&c);
}
