/* AnyCCL: a vendor-neutral collective communication library.
 *
 * This header declares the NCCL 2.28 host API with NCCL's names, types, enum values and struct
 * layouts, so that a program written for NCCL compiles and runs against AnyCCL unchanged, and
 * AnyCCL's own extensions, all prefixed `anyccl`. Every function also exists as a `pnccl` alias
 * (the profiling interface). The stream argument is an opaque handle: a cudaStream_t, a hipStream_t,
 * or NULL for collectives on host memory run by the calling thread. */
#ifndef ANYCCL_H_
#define ANYCCL_H_

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* The NCCL API level this library implements. */
#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 9
#define NCCL_SUFFIX ""
#define NCCL_VERSION_CODE 22809
#define NCCL_VERSION(X, Y, Z)                                                                 \
    (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))

/* AnyCCL's own version. */
#define ANYCCL_MAJOR 0
#define ANYCCL_MINOR 1
#define ANYCCL_PATCH 0
#define ANYCCL_VERSION_CODE (ANYCCL_MAJOR * 10000 + ANYCCL_MINOR * 100 + ANYCCL_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The same typedef as CUDA's runtime headers: repeating an identical typedef is valid C11 and C++,
 * so this header may come before or after cuda_runtime.h. HIP streams are passed as this type. */
typedef struct CUstream_st *cudaStream_t;

typedef struct ncclComm *ncclComm_t;
typedef struct ncclWindow_vidmem *ncclWindow_t;
#define NCCL_COMM_NULL NULL

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_UNDEF_PTR NULL
#define NCCL_SPLIT_NOCOLOR -1
#define NCCL_UNDEF_FLOAT -1.0f

#define NCCL_WIN_DEFAULT 0x00
#define NCCL_WIN_COLL_SYMMETRIC 0x01
#define NCCL_WIN_REQUIRED_ALIGNMENT 4096

#define NCCL_CTA_POLICY_DEFAULT 0x00
#define NCCL_CTA_POLICY_EFFICIENCY 0x01
#define NCCL_CTA_POLICY_ZERO 0x02

#define NCCL_SHRINK_DEFAULT 0x00
#define NCCL_SHRINK_ABORT 0x01

#define NCCL_REVOKE_DEFAULT 0x00

/* Communicator options; initialize with NCCL_CONFIG_INITIALIZER, then set what you need. */
typedef struct ncclConfig_v22800 {
    size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
    int cgaClusterSize;
    int minCTAs;
    int maxCTAs;
    const char *netName;
    int splitShare;
    int trafficClass;
    const char *commName;
    int collnetEnable;
    int CTAPolicy;
    int shrinkShare;
    int nvlsCTAs;
    int nChannelsPerNetPeer;
    int nvlinkCentricSched;
} ncclConfig_t;

#define NCCL_CONFIG_INITIALIZER                                                               \
    {                                                                                         \
        sizeof(ncclConfig_t), 0xcafebeef, NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH),   \
            NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT,              \
            NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_PTR, NCCL_CONFIG_UNDEF_INT,              \
            NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_PTR, NCCL_CONFIG_UNDEF_INT,              \
            NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT,              \
            NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT,                                     \
    }

/* Filled by ncclGroupSimulateEnd; initialize with NCCL_SIM_INFO_INITIALIZER. */
typedef struct ncclSimInfo_v22200 {
    size_t size;
    unsigned int magic;
    unsigned int version;
    float estimatedTime;
} ncclSimInfo_t;

#define NCCL_SIM_INFO_INITIALIZER                                                             \
    {                                                                                         \
        sizeof(ncclSimInfo_t), 0x74685283, NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH),  \
            NCCL_UNDEF_FLOAT                                                                  \
    }

typedef enum { ncclNumOps_dummy = 5 } ncclRedOp_dummy_t;
typedef enum {
    ncclSum = 0,
    ncclProd = 1,
    ncclMax = 2,
    ncclMin = 3,
    ncclAvg = 4,
    ncclNumOps = 5, /* first value handed out by ncclRedOpCreate* */
    ncclMaxRedOp = 0x7fffffff >> (32 - 8 * sizeof(ncclRedOp_dummy_t))
} ncclRedOp_t;

typedef enum {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclInt = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclHalf = 6,
    ncclFloat32 = 7,
    ncclFloat = 7,
    ncclFloat64 = 8,
    ncclDouble = 8,
    ncclBfloat16 = 9,
    ncclFloat8e4m3 = 10,
    ncclFloat8e5m2 = 11,
    ncclNumTypes = 12
} ncclDataType_t;

typedef enum {
    ncclScalarDevice = 0,        /* the scalar is read while the collective runs */
    ncclScalarHostImmediate = 1  /* the scalar is read before ncclRedOpCreate* returns */
} ncclScalarResidence_t;

/* Declares f and its profiling alias pf with one signature. */
#define ANYCCL_DECL(ret, name, args) ret name args; ret p##name args;

ANYCCL_DECL(ncclResult_t, ncclMemAlloc, (void **ptr, size_t size))
ANYCCL_DECL(ncclResult_t, ncclMemFree, (void *ptr))
ANYCCL_DECL(ncclResult_t, ncclGetVersion, (int *version))
ANYCCL_DECL(ncclResult_t, ncclGetUniqueId, (ncclUniqueId *uniqueId))
ANYCCL_DECL(ncclResult_t, ncclCommInitRankConfig,
            (ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t *config))
ANYCCL_DECL(ncclResult_t, ncclCommInitRank,
            (ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank))
ANYCCL_DECL(ncclResult_t, ncclCommInitAll, (ncclComm_t *comm, int ndev, const int *devlist))
ANYCCL_DECL(ncclResult_t, ncclCommFinalize, (ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclCommDestroy, (ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclCommAbort, (ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclCommRevoke, (ncclComm_t comm, int revokeFlags))
ANYCCL_DECL(ncclResult_t, ncclCommSplit,
            (ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config))
ANYCCL_DECL(ncclResult_t, ncclCommShrink,
            (ncclComm_t comm, int *excludeRanksList, int excludeRanksCount, ncclComm_t *newcomm,
             ncclConfig_t *config, int shrinkFlags))
ANYCCL_DECL(ncclResult_t, ncclCommInitRankScalable,
            (ncclComm_t *newcomm, int nranks, int myrank, int nId, ncclUniqueId *commIds,
             ncclConfig_t *config))
ANYCCL_DECL(const char *, ncclGetErrorString, (ncclResult_t result))
ANYCCL_DECL(const char *, ncclGetLastError, (ncclComm_t comm))
ANYCCL_DECL(void, ncclResetDebugInit, (void))
ANYCCL_DECL(ncclResult_t, ncclCommGetAsyncError, (ncclComm_t comm, ncclResult_t *asyncError))
ANYCCL_DECL(ncclResult_t, ncclCommCount, (const ncclComm_t comm, int *count))
ANYCCL_DECL(ncclResult_t, ncclCommCuDevice, (const ncclComm_t comm, int *device))
ANYCCL_DECL(ncclResult_t, ncclCommUserRank, (const ncclComm_t comm, int *rank))
ANYCCL_DECL(ncclResult_t, ncclCommRegister,
            (const ncclComm_t comm, void *buff, size_t size, void **handle))
ANYCCL_DECL(ncclResult_t, ncclCommDeregister, (const ncclComm_t comm, void *handle))
ANYCCL_DECL(ncclResult_t, ncclCommWindowRegister,
            (ncclComm_t comm, void *buff, size_t size, ncclWindow_t *win, int winFlags))
ANYCCL_DECL(ncclResult_t, ncclCommWindowDeregister, (ncclComm_t comm, ncclWindow_t win))
ANYCCL_DECL(ncclResult_t, ncclRedOpCreatePreMulSum,
            (ncclRedOp_t *op, void *scalar, ncclDataType_t datatype,
             ncclScalarResidence_t residence, ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclRedOpDestroy, (ncclRedOp_t op, ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclReduce,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
             ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclBcast,
            (void *buff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,
             cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclBroadcast,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclAllReduce,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
             ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclReduceScatter,
            (const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
             ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclAllGather,
            (const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclAlltoAll,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclGather,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclScatter,
            (const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclSend,
            (const void *sendbuff, size_t count, ncclDataType_t datatype, int peer,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclRecv,
            (void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
             cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclGroupStart, (void))
ANYCCL_DECL(ncclResult_t, ncclGroupEnd, (void))
ANYCCL_DECL(ncclResult_t, ncclGroupSimulateEnd, (ncclSimInfo_t * simInfo))

/* Later NCCL host API (2.30), with NCCL's signatures, so that programs written for it compile and
 * link; AnyCCL 0.1 answers every one with ncclInvalidUsage (see docs/api.md). */
#define NCCL_SUSPEND_MEM 0x01

typedef enum {
    ncclStatGpuMemSuspend = 0,
    ncclStatGpuMemSuspended = 1,
    ncclStatGpuMemPersist = 2,
    ncclStatGpuMemTotal = 3
} ncclCommMemStat_t;

/* One entry of ncclWaitSignal's list: wait for opCnt signals from peer on (sigIdx, ctx). */
typedef struct {
    int opCnt;
    int peer;
    int sigIdx;
    int ctx;
} ncclWaitSignalDesc_t;

typedef struct ncclParamHandle *ncclParamHandle_t;

ANYCCL_DECL(ncclResult_t, ncclCommGetUniqueId, (ncclComm_t comm, ncclUniqueId *uniqueId))
ANYCCL_DECL(ncclResult_t, ncclCommGrow,
            (ncclComm_t comm, int nRanks, const ncclUniqueId *uniqueId, int rank,
             ncclComm_t *newcomm, ncclConfig_t *config))
ANYCCL_DECL(ncclResult_t, ncclCommSuspend, (ncclComm_t comm, int flags))
ANYCCL_DECL(ncclResult_t, ncclCommResume, (ncclComm_t comm))
ANYCCL_DECL(ncclResult_t, ncclCommMemStats,
            (ncclComm_t comm, ncclCommMemStat_t stat, uint64_t *value))
ANYCCL_DECL(ncclResult_t, ncclWinGetUserPtr, (ncclComm_t comm, ncclWindow_t win, void **outUserPtr))
ANYCCL_DECL(ncclResult_t, ncclPutSignal,
            (const void *localbuff, size_t count, ncclDataType_t datatype, int peer,
             ncclWindow_t peerWin, size_t peerWinOffset, int sigIdx, int ctx, unsigned int flags,
             ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclSignal,
            (int peer, int sigIdx, int ctx, unsigned int flags, ncclComm_t comm,
             cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclWaitSignal,
            (int nDesc, ncclWaitSignalDesc_t *signalDescs, ncclComm_t comm, cudaStream_t stream))
ANYCCL_DECL(ncclResult_t, ncclParamBind, (ncclParamHandle_t *out, const char *key))
ANYCCL_DECL(ncclResult_t, ncclParamGetI8, (ncclParamHandle_t h, int8_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetI16, (ncclParamHandle_t h, int16_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetI32, (ncclParamHandle_t h, int32_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetI64, (ncclParamHandle_t h, int64_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetU8, (ncclParamHandle_t h, uint8_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetU16, (ncclParamHandle_t h, uint16_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetU32, (ncclParamHandle_t h, uint32_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetU64, (ncclParamHandle_t h, uint64_t *out))
ANYCCL_DECL(ncclResult_t, ncclParamGetStr, (ncclParamHandle_t h, const char **out))
ANYCCL_DECL(ncclResult_t, ncclParamGet, (ncclParamHandle_t h, void *out, int maxLen, int *len))
ANYCCL_DECL(ncclResult_t, ncclParamGetParameter,
            (const char *key, const char **value, int *valueLen))
ANYCCL_DECL(ncclResult_t, ncclParamGetAllParameterKeys, (const char ***table, int *tableLen))
ANYCCL_DECL(void, ncclParamDumpAll, (void))

/* Host side of NCCL's device API (the nccl_device headers), with NCCL's types. AnyCCL 0.1 has no
 * device API: these exist for linking only (see docs/api.md). Skipped while NVIDIA's nccl_device
 * headers are read (they include <nccl.h>, then declare the same types themselves); a program that
 * includes <nccl.h> before them must define ANYCCL_NO_DEVICE_API. */
#if !defined(ANYCCL_NO_DEVICE_API) && !defined(_NCCL_DEVICE_CORE_H_)
typedef struct ncclDevComm ncclDevComm_t;
typedef struct ncclDevCommRequirements ncclDevCommRequirements_t;
typedef struct ncclDevResourceRequirements ncclDevResourceRequirements_t;
typedef struct ncclLsaBarrierHandle ncclLsaBarrierHandle_t;
typedef struct ncclGinBarrierHandle ncclGinBarrierHandle_t;
typedef struct ncclLLA2AHandle ncclLLA2AHandle_t;

/* A strided set of ranks; passed by value, so its layout is ABI. */
typedef struct ncclTeam {
    int nRanks, rank, stride;
} ncclTeam_t;

ANYCCL_DECL(ncclResult_t, ncclDevCommCreate,
            (ncclComm_t comm, const ncclDevCommRequirements_t *reqs, ncclDevComm_t *outDevComm))
ANYCCL_DECL(ncclResult_t, ncclDevCommDestroy, (ncclComm_t comm, const ncclDevComm_t *devComm))
ANYCCL_DECL(ncclTeam_t, ncclTeamWorld, (ncclComm_t comm))
ANYCCL_DECL(ncclTeam_t, ncclTeamLsa, (ncclComm_t comm))
ANYCCL_DECL(ncclTeam_t, ncclTeamRail, (ncclComm_t comm))
ANYCCL_DECL(int, ncclTeamRankToWorld, (ncclComm_t comm, ncclTeam_t team, int rank))
ANYCCL_DECL(int, ncclTeamRankToLsa, (ncclComm_t comm, ncclTeam_t team, int rank))
ANYCCL_DECL(ncclResult_t, ncclLsaBarrierCreateRequirement,
            (ncclTeam_t team, int nBarriers, ncclLsaBarrierHandle_t *outHandle,
             ncclDevResourceRequirements_t *outReq))
ANYCCL_DECL(ncclResult_t, ncclGinBarrierCreateRequirement,
            (ncclComm_t comm, ncclTeam_t team, int nBarriers, ncclGinBarrierHandle_t *outHandle,
             ncclDevResourceRequirements_t *outReq))
ANYCCL_DECL(int, ncclLLA2ACalcSlots, (int maxElts, int maxEltSize))
ANYCCL_DECL(ncclResult_t, ncclLLA2ACreateRequirement,
            (int nBlocks, int nSlots, ncclLLA2AHandle_t *outHandle,
             ncclDevResourceRequirements_t *outReq))
#endif

/* AnyCCL extensions. */

/* AnyCCL's own version code (ANYCCL_VERSION_CODE of the library actually loaded). */
ncclResult_t anycclGetVersion(int *version);

#undef ANYCCL_DECL

#ifdef __cplusplus
}
#endif

#endif
