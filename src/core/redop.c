/* Reduction operators: the built-in ones and those made by ncclRedOpCreatePreMulSum, which live in
 * the communicator that created them (as in NCCL) and are numbered from ncclNumOps. */
#include "common/check.h"
#include "core/api.h"
#include "core/comm.h"

#include <string.h>

static ncclResult_t check_type(ncclDataType_t type)
{
    if ((unsigned)type >= (unsigned)ncclNumTypes)
        return AC_FAIL(ncclInvalidArgument, "datatype is %d: not an ncclDataType_t (0..%d)",
                       (int)type, (int)ncclNumTypes - 1);
    return ncclSuccess;
}

ncclResult_t ac_redop_resolve(struct ncclComm *comm, ncclRedOp_t op, ncclDataType_t type,
                              struct ac_redop *out)
{
    static const enum ac_op_kind builtin[] = {
        [ncclSum] = AC_OP_SUM, [ncclProd] = AC_OP_PROD, [ncclMax] = AC_OP_MAX,
        [ncclMin] = AC_OP_MIN, [ncclAvg] = AC_OP_SUM,
    };
    memset(out, 0, sizeof(*out));
    out->type = type;
    if ((int)op >= 0 && (int)op < (int)ncclNumOps) {
        out->kind = builtin[op];
        out->postdiv = op == ncclAvg ? (uint32_t)comm->nranks : 0;
        return ncclSuccess;
    }
    int idx = (int)op - (int)ncclNumOps;
    if (idx < 0 || idx >= AC_MAX_USER_OPS || !comm->user_ops[idx].is_used)
        return AC_FAIL(ncclInvalidArgument, "op is %d: neither a built-in ncclRedOp_t nor an "
                       "operator created by ncclRedOpCreatePreMulSum on this communicator",
                       (int)op);
    const struct ac_user_op *u = &comm->user_ops[idx];
    if (u->type != type)
        return AC_FAIL(ncclInvalidArgument, "op %d was created for datatype %d but is used with "
                       "datatype %d", (int)op, (int)u->type, (int)type);
    out->kind = AC_OP_SUM;
    out->has_premul = true;
    out->scalar = u->scalar;
    if (u->residence == ncclScalarDevice) /* host memory here: read it now, for this call */
        memcpy(&out->scalar, u->scalar_ptr, ac_type_size(type));
    return ncclSuccess;
}

AC_API(ncclResult_t, ncclRedOpCreatePreMulSum, ncclRedOp_t *op, void *scalar,
       ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm);
ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar, ncclDataType_t datatype,
                                      ncclScalarResidence_t residence, ncclComm_t comm)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    if (!op)
        return AC_FAIL(ncclInvalidArgument, "op is NULL");
    if (!scalar)
        return AC_FAIL(ncclInvalidArgument, "scalar is NULL");
    AC_CHECK(check_type(datatype));
    if (residence != ncclScalarDevice && residence != ncclScalarHostImmediate)
        return AC_FAIL(ncclInvalidArgument, "residence is %d: use ncclScalarDevice or "
                       "ncclScalarHostImmediate", (int)residence);
    for (int i = 0; i < AC_MAX_USER_OPS; i++) {
        struct ac_user_op *u = &comm->user_ops[i];
        if (u->is_used)
            continue;
        memset(u, 0, sizeof(*u));
        u->is_used = true;
        u->type = datatype;
        u->residence = residence;
        u->scalar_ptr = scalar;
        memcpy(&u->scalar, scalar, ac_type_size(datatype));
        *op = (ncclRedOp_t)((int)ncclNumOps + i);
        return ncclSuccess;
    }
    return AC_FAIL(ncclInvalidUsage, "too many reduction operators on this communicator (%d): "
                   "destroy unused ones with ncclRedOpDestroy", AC_MAX_USER_OPS);
}

AC_API(ncclResult_t, ncclRedOpDestroy, ncclRedOp_t op, ncclComm_t comm);
ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm)
{
    AC_CHECK(ac_comm_check(comm, "comm"));
    int idx = (int)op - (int)ncclNumOps;
    if ((int)op >= 0 && (int)op < (int)ncclNumOps)
        return AC_FAIL(ncclInvalidArgument, "op %d is built in and cannot be destroyed", (int)op);
    if (idx < 0 || idx >= AC_MAX_USER_OPS || !comm->user_ops[idx].is_used)
        return AC_FAIL(ncclInvalidArgument, "op %d was not created on this communicator, or was "
                       "already destroyed", (int)op);
    comm->user_ops[idx].is_used = false;
    return ncclSuccess;
}
