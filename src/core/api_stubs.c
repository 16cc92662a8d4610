/* Entry points that AnyCCL exports for link compatibility with NCCL but does not implement yet:
 * the NCCL 2.30 host API and the host side of NCCL's device API. Each one fails cleanly, with a
 * message saying what to use instead, so that a program built against a newer NCCL loads and gets
 * an error it can report rather than an unresolved symbol. Also ncclResetDebugInit.
 *
 * Contract (docs/api.md): functions returning ncclResult_t return ncclInvalidUsage and record the
 * message for ncclGetLastError; the others record the same message (logged at WARN) and return a
 * neutral value: an empty team {0, 0, 0}, rank -1, 0 slots. Outputs are never written. */
#include "core/api.h"

#include "common/check.h"
#include "common/log.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define NOT_IN_THIS_RELEASE "is not implemented in AnyCCL " STR(ANYCCL_MAJOR) "." STR(ANYCCL_MINOR)
#define PLANNED NOT_IN_THIS_RELEASE " (planned)"
#define NO_DEVICE_API                                                                         \
    NOT_IN_THIS_RELEASE " (NCCL's device API needs device kernels, which it does not provide)"

static const char use_host_collectives[] =
    "use the host API collectives (ncclAllReduce, ncclSend/ncclRecv, ...) instead";
static const char use_env[] =
    "AnyCCL's settings are environment variables (ANYCCL_X or NCCL_X), listed in docs/env.md";

static ncclResult_t not_implemented(const char *func, const char *why, const char *instead)
{
    return AC_FAIL(ncclInvalidUsage, "%s %s; %s", func, why, instead);
}

/* ---- logging ---- */

AC_API(void, ncclResetDebugInit, void);
void ncclResetDebugInit(void)
{
    ac_log_reset();
}

/* NCCL 2.28's library exports this name too, though no header declares it. */
AC_API(void, ncclResetDebugInitInternal, void);
void ncclResetDebugInitInternal(void)
{
    ac_log_reset();
}

/* ---- NCCL 2.30 communicator API ---- */

AC_API(ncclResult_t, ncclCommGetUniqueId, ncclComm_t comm, ncclUniqueId *uniqueId);
ncclResult_t ncclCommGetUniqueId(ncclComm_t comm, ncclUniqueId *uniqueId)
{
    return not_implemented(__func__, PLANNED, "it only serves ncclCommGrow; to add ranks, create a "
                           "new communicator with ncclGetUniqueId and ncclCommInitRankConfig");
}

AC_API(ncclResult_t, ncclCommGrow, ncclComm_t comm, int nRanks, const ncclUniqueId *uniqueId,
       int rank, ncclComm_t *newcomm, ncclConfig_t *config);
ncclResult_t ncclCommGrow(ncclComm_t comm, int nRanks, const ncclUniqueId *uniqueId, int rank,
                          ncclComm_t *newcomm, ncclConfig_t *config)
{
    return not_implemented(__func__, PLANNED, "create a new communicator over all the ranks "
                           "with ncclGetUniqueId and ncclCommInitRankConfig instead");
}

AC_API(ncclResult_t, ncclCommSuspend, ncclComm_t comm, int flags);
ncclResult_t ncclCommSuspend(ncclComm_t comm, int flags)
{
    return not_implemented(__func__, PLANNED, "to release a communicator's memory, destroy it "
                           "with ncclCommDestroy and create a new one later");
}

AC_API(ncclResult_t, ncclCommResume, ncclComm_t comm);
ncclResult_t ncclCommResume(ncclComm_t comm)
{
    return not_implemented(__func__, PLANNED, "communicators cannot be suspended in this "
                           "release, so there is nothing to resume");
}

AC_API(ncclResult_t, ncclCommMemStats, ncclComm_t comm, ncclCommMemStat_t stat, uint64_t *value);
ncclResult_t ncclCommMemStats(ncclComm_t comm, ncclCommMemStat_t stat, uint64_t *value)
{
    return not_implemented(__func__, PLANNED, "per-communicator memory is not accounted "
                           "in this release");
}

AC_API(ncclResult_t, ncclWinGetUserPtr, ncclComm_t comm, ncclWindow_t win, void **outUserPtr);
ncclResult_t ncclWinGetUserPtr(ncclComm_t comm, ncclWindow_t win, void **outUserPtr)
{
    return not_implemented(__func__, PLANNED, "keep the buffer pointer that was passed to "
                           "ncclCommWindowRegister");
}

/* ---- NCCL 2.30 one-sided API ---- */

AC_API(ncclResult_t, ncclPutSignal, const void *localbuff, size_t count, ncclDataType_t datatype,
       int peer, ncclWindow_t peerWin, size_t peerWinOffset, int sigIdx, int ctx,
       unsigned int flags, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclPutSignal(const void *localbuff, size_t count, ncclDataType_t datatype, int peer,
                           ncclWindow_t peerWin, size_t peerWinOffset, int sigIdx, int ctx,
                           unsigned int flags, ncclComm_t comm, cudaStream_t stream)
{
    return not_implemented(__func__, PLANNED, "use ncclSend/ncclRecv in a group instead");
}

AC_API(ncclResult_t, ncclSignal, int peer, int sigIdx, int ctx, unsigned int flags,
       ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclSignal(int peer, int sigIdx, int ctx, unsigned int flags, ncclComm_t comm,
                        cudaStream_t stream)
{
    return not_implemented(__func__, PLANNED, "use a zero-byte ncclSend/ncclRecv pair instead");
}

AC_API(ncclResult_t, ncclWaitSignal, int nDesc, ncclWaitSignalDesc_t *signalDescs,
       ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclWaitSignal(int nDesc, ncclWaitSignalDesc_t *signalDescs, ncclComm_t comm,
                            cudaStream_t stream)
{
    return not_implemented(__func__, PLANNED, "use a zero-byte ncclSend/ncclRecv pair instead");
}

/* ---- NCCL 2.30 parameter API ---- */

AC_API(ncclResult_t, ncclParamBind, ncclParamHandle_t *out, const char *key);
ncclResult_t ncclParamBind(ncclParamHandle_t *out, const char *key)
{
    return not_implemented(__func__, PLANNED, use_env);
}

/* The typed getters differ only in the output type. */
#define PARAM_GETTER(suffix, type)                                                            \
    AC_API(ncclResult_t, ncclParamGet##suffix, ncclParamHandle_t h, type *out);               \
    ncclResult_t ncclParamGet##suffix(ncclParamHandle_t h, type *out)                         \
    {                                                                                         \
        return not_implemented(__func__, PLANNED, use_env);                                   \
    }

PARAM_GETTER(I8, int8_t)
PARAM_GETTER(I16, int16_t)
PARAM_GETTER(I32, int32_t)
PARAM_GETTER(I64, int64_t)
PARAM_GETTER(U8, uint8_t)
PARAM_GETTER(U16, uint16_t)
PARAM_GETTER(U32, uint32_t)
PARAM_GETTER(U64, uint64_t)
PARAM_GETTER(Str, const char *)

AC_API(ncclResult_t, ncclParamGet, ncclParamHandle_t h, void *out, int maxLen, int *len);
ncclResult_t ncclParamGet(ncclParamHandle_t h, void *out, int maxLen, int *len)
{
    return not_implemented(__func__, PLANNED, use_env);
}

AC_API(ncclResult_t, ncclParamGetParameter, const char *key, const char **value, int *valueLen);
ncclResult_t ncclParamGetParameter(const char *key, const char **value, int *valueLen)
{
    return not_implemented(__func__, PLANNED, use_env);
}

AC_API(ncclResult_t, ncclParamGetAllParameterKeys, const char ***table, int *tableLen);
ncclResult_t ncclParamGetAllParameterKeys(const char ***table, int *tableLen)
{
    return not_implemented(__func__, PLANNED, use_env);
}

AC_API(void, ncclParamDumpAll, void);
void ncclParamDumpAll(void)
{
    (void)not_implemented(__func__, PLANNED, use_env);
}

/* ---- host side of the device API ---- */

AC_API(ncclResult_t, ncclDevCommCreate, ncclComm_t comm, const ncclDevCommRequirements_t *reqs,
       ncclDevComm_t *outDevComm);
ncclResult_t ncclDevCommCreate(ncclComm_t comm, const ncclDevCommRequirements_t *reqs,
                               ncclDevComm_t *outDevComm)
{
    return not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
}

AC_API(ncclResult_t, ncclDevCommDestroy, ncclComm_t comm, const ncclDevComm_t *devComm);
ncclResult_t ncclDevCommDestroy(ncclComm_t comm, const ncclDevComm_t *devComm)
{
    return not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
}

/* The team queries return the empty team: nRanks 0 makes every loop over it a no-op. */
#define TEAM_QUERY(name)                                                                      \
    AC_API(ncclTeam_t, name, ncclComm_t comm);                                                \
    ncclTeam_t name(ncclComm_t comm)                                                          \
    {                                                                                         \
        ncclTeam_t empty = {0, 0, 0};                                                         \
        (void)not_implemented(__func__, NO_DEVICE_API, use_host_collectives);                 \
        return empty;                                                                         \
    }

TEAM_QUERY(ncclTeamWorld)
TEAM_QUERY(ncclTeamLsa)
TEAM_QUERY(ncclTeamRail)

AC_API(int, ncclTeamRankToWorld, ncclComm_t comm, ncclTeam_t team, int rank);
int ncclTeamRankToWorld(ncclComm_t comm, ncclTeam_t team, int rank)
{
    (void)not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
    return -1;
}

AC_API(int, ncclTeamRankToLsa, ncclComm_t comm, ncclTeam_t team, int rank);
int ncclTeamRankToLsa(ncclComm_t comm, ncclTeam_t team, int rank)
{
    (void)not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
    return -1;
}

AC_API(ncclResult_t, ncclLsaBarrierCreateRequirement, ncclTeam_t team, int nBarriers,
       ncclLsaBarrierHandle_t *outHandle, ncclDevResourceRequirements_t *outReq);
ncclResult_t ncclLsaBarrierCreateRequirement(ncclTeam_t team, int nBarriers,
                                             ncclLsaBarrierHandle_t *outHandle,
                                             ncclDevResourceRequirements_t *outReq)
{
    return not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
}

AC_API(ncclResult_t, ncclGinBarrierCreateRequirement, ncclComm_t comm, ncclTeam_t team,
       int nBarriers, ncclGinBarrierHandle_t *outHandle, ncclDevResourceRequirements_t *outReq);
ncclResult_t ncclGinBarrierCreateRequirement(ncclComm_t comm, ncclTeam_t team, int nBarriers,
                                             ncclGinBarrierHandle_t *outHandle,
                                             ncclDevResourceRequirements_t *outReq)
{
    return not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
}

AC_API(int, ncclLLA2ACalcSlots, int maxElts, int maxEltSize);
int ncclLLA2ACalcSlots(int maxElts, int maxEltSize)
{
    (void)not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
    return 0;
}

AC_API(ncclResult_t, ncclLLA2ACreateRequirement, int nBlocks, int nSlots,
       ncclLLA2AHandle_t *outHandle, ncclDevResourceRequirements_t *outReq);
ncclResult_t ncclLLA2ACreateRequirement(int nBlocks, int nSlots, ncclLLA2AHandle_t *outHandle,
                                        ncclDevResourceRequirements_t *outReq)
{
    return not_implemented(__func__, NO_DEVICE_API, use_host_collectives);
}
