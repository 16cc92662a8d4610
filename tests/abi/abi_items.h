/* The ABI facts compared between AnyCCL's header and NVIDIA's nccl.h. Each X(name, expr) is
 * evaluated once against each header: gen_values.c prints ours, check_values.c compares NVIDIA's
 * with them. Plain C, so that it reads the same under either header. */
#ifndef AC_TESTS_ABI_ITEMS_H
#define AC_TESTS_ABI_ITEMS_H

#include <stddef.h>

#define CFG_OFF(X, f) X(offsetof_ncclConfig_t_##f, offsetof(ncclConfig_t, f))
#define SIM_OFF(X, f) X(offsetof_ncclSimInfo_t_##f, offsetof(ncclSimInfo_t, f))

/* Integer constant expressions: checked with _Static_assert. */
#define ABI_CONST_ITEMS(X)                                                                    \
    X(NCCL_MAJOR, NCCL_MAJOR)                                                                 \
    X(NCCL_MINOR, NCCL_MINOR)                                                                 \
    X(NCCL_PATCH, NCCL_PATCH)                                                                 \
    X(NCCL_VERSION_CODE, NCCL_VERSION_CODE)                                                   \
    X(sizeof_NCCL_SUFFIX, sizeof(NCCL_SUFFIX))                                                \
    X(NCCL_VERSION_2_8_4, NCCL_VERSION(2, 8, 4))                                              \
    X(NCCL_VERSION_2_9_0, NCCL_VERSION(2, 9, 0))                                              \
    X(NCCL_VERSION_2_28_9, NCCL_VERSION(2, 28, 9))                                            \
    X(NCCL_VERSION_3_0_1, NCCL_VERSION(3, 0, 1))                                              \
    X(NCCL_UNIQUE_ID_BYTES, NCCL_UNIQUE_ID_BYTES)                                             \
    X(sizeof_ncclUniqueId, sizeof(ncclUniqueId))                                              \
    X(sizeof_ncclComm_t, sizeof(ncclComm_t))                                                  \
    X(sizeof_ncclWindow_t, sizeof(ncclWindow_t))                                              \
    X(sizeof_cudaStream_t, sizeof(cudaStream_t))                                              \
    X(NCCL_COMM_NULL_is_null, NCCL_COMM_NULL == 0)                                            \
    X(NCCL_CONFIG_UNDEF_INT, NCCL_CONFIG_UNDEF_INT)                                           \
    X(NCCL_CONFIG_UNDEF_PTR_is_null, NCCL_CONFIG_UNDEF_PTR == 0)                              \
    X(NCCL_SPLIT_NOCOLOR, NCCL_SPLIT_NOCOLOR)                                                 \
    X(NCCL_WIN_DEFAULT, NCCL_WIN_DEFAULT)                                                     \
    X(NCCL_WIN_COLL_SYMMETRIC, NCCL_WIN_COLL_SYMMETRIC)                                       \
    X(NCCL_WIN_REQUIRED_ALIGNMENT, NCCL_WIN_REQUIRED_ALIGNMENT)                               \
    X(NCCL_CTA_POLICY_DEFAULT, NCCL_CTA_POLICY_DEFAULT)                                       \
    X(NCCL_CTA_POLICY_EFFICIENCY, NCCL_CTA_POLICY_EFFICIENCY)                                 \
    X(NCCL_CTA_POLICY_ZERO, NCCL_CTA_POLICY_ZERO)                                             \
    X(NCCL_SHRINK_DEFAULT, NCCL_SHRINK_DEFAULT)                                               \
    X(NCCL_SHRINK_ABORT, NCCL_SHRINK_ABORT)                                                   \
    X(NCCL_REVOKE_DEFAULT, NCCL_REVOKE_DEFAULT)                                               \
    X(sizeof_ncclResult_t, sizeof(ncclResult_t))                                              \
    X(ncclSuccess, ncclSuccess)                                                               \
    X(ncclUnhandledCudaError, ncclUnhandledCudaError)                                         \
    X(ncclSystemError, ncclSystemError)                                                       \
    X(ncclInternalError, ncclInternalError)                                                   \
    X(ncclInvalidArgument, ncclInvalidArgument)                                               \
    X(ncclInvalidUsage, ncclInvalidUsage)                                                     \
    X(ncclRemoteError, ncclRemoteError)                                                       \
    X(ncclInProgress, ncclInProgress)                                                         \
    X(ncclNumResults, ncclNumResults)                                                         \
    X(sizeof_ncclRedOp_dummy_t, sizeof(ncclRedOp_dummy_t))                                    \
    X(ncclNumOps_dummy, ncclNumOps_dummy)                                                     \
    X(sizeof_ncclRedOp_t, sizeof(ncclRedOp_t))                                                \
    X(ncclSum, ncclSum)                                                                       \
    X(ncclProd, ncclProd)                                                                     \
    X(ncclMax, ncclMax)                                                                       \
    X(ncclMin, ncclMin)                                                                       \
    X(ncclAvg, ncclAvg)                                                                       \
    X(ncclNumOps, ncclNumOps)                                                                 \
    X(ncclMaxRedOp, ncclMaxRedOp)                                                             \
    X(sizeof_ncclDataType_t, sizeof(ncclDataType_t))                                          \
    X(ncclInt8, ncclInt8)                                                                     \
    X(ncclChar, ncclChar)                                                                     \
    X(ncclUint8, ncclUint8)                                                                   \
    X(ncclInt32, ncclInt32)                                                                   \
    X(ncclInt, ncclInt)                                                                       \
    X(ncclUint32, ncclUint32)                                                                 \
    X(ncclInt64, ncclInt64)                                                                   \
    X(ncclUint64, ncclUint64)                                                                 \
    X(ncclFloat16, ncclFloat16)                                                               \
    X(ncclHalf, ncclHalf)                                                                     \
    X(ncclFloat32, ncclFloat32)                                                               \
    X(ncclFloat, ncclFloat)                                                                   \
    X(ncclFloat64, ncclFloat64)                                                               \
    X(ncclDouble, ncclDouble)                                                                 \
    X(ncclBfloat16, ncclBfloat16)                                                             \
    X(ncclFloat8e4m3, ncclFloat8e4m3)                                                         \
    X(ncclFloat8e5m2, ncclFloat8e5m2)                                                         \
    X(ncclNumTypes, ncclNumTypes)                                                             \
    X(sizeof_ncclScalarResidence_t, sizeof(ncclScalarResidence_t))                            \
    X(ncclScalarDevice, ncclScalarDevice)                                                     \
    X(ncclScalarHostImmediate, ncclScalarHostImmediate)                                       \
    X(sizeof_ncclConfig_t, sizeof(ncclConfig_t))                                              \
    X(alignof_ncclConfig_t, _Alignof(ncclConfig_t))                                           \
    CFG_OFF(X, size)                                                                          \
    CFG_OFF(X, magic)                                                                         \
    CFG_OFF(X, version)                                                                       \
    CFG_OFF(X, blocking)                                                                      \
    CFG_OFF(X, cgaClusterSize)                                                                \
    CFG_OFF(X, minCTAs)                                                                       \
    CFG_OFF(X, maxCTAs)                                                                       \
    CFG_OFF(X, netName)                                                                       \
    CFG_OFF(X, splitShare)                                                                    \
    CFG_OFF(X, trafficClass)                                                                  \
    CFG_OFF(X, commName)                                                                      \
    CFG_OFF(X, collnetEnable)                                                                 \
    CFG_OFF(X, CTAPolicy)                                                                     \
    CFG_OFF(X, shrinkShare)                                                                   \
    CFG_OFF(X, nvlsCTAs)                                                                      \
    CFG_OFF(X, nChannelsPerNetPeer)                                                           \
    CFG_OFF(X, nvlinkCentricSched)                                                            \
    X(sizeof_ncclSimInfo_t, sizeof(ncclSimInfo_t))                                            \
    X(alignof_ncclSimInfo_t, _Alignof(ncclSimInfo_t))                                         \
    SIM_OFF(X, size)                                                                          \
    SIM_OFF(X, magic)                                                                         \
    SIM_OFF(X, version)                                                                       \
    SIM_OFF(X, estimatedTime)

/* Values an initializer or a float produces: compared at run time. `cfg` and `sim` are locals
 * initialized with NCCL_CONFIG_INITIALIZER and NCCL_SIM_INFO_INITIALIZER. Floats are compared
 * scaled by 1e6 (both are exact small values). */
#define CFG_VAL(X, f) X(config_initializer_##f, cfg.f)
#define ABI_RUNTIME_ITEMS(X)                                                                  \
    CFG_VAL(X, size)                                                                          \
    CFG_VAL(X, magic)                                                                         \
    CFG_VAL(X, version)                                                                       \
    CFG_VAL(X, blocking)                                                                      \
    CFG_VAL(X, cgaClusterSize)                                                                \
    CFG_VAL(X, minCTAs)                                                                       \
    CFG_VAL(X, maxCTAs)                                                                       \
    X(config_initializer_netName, cfg.netName == NULL)                                        \
    CFG_VAL(X, splitShare)                                                                    \
    CFG_VAL(X, trafficClass)                                                                  \
    X(config_initializer_commName, cfg.commName == NULL)                                      \
    CFG_VAL(X, collnetEnable)                                                                 \
    CFG_VAL(X, CTAPolicy)                                                                     \
    CFG_VAL(X, shrinkShare)                                                                   \
    CFG_VAL(X, nvlsCTAs)                                                                      \
    CFG_VAL(X, nChannelsPerNetPeer)                                                           \
    CFG_VAL(X, nvlinkCentricSched)                                                            \
    X(sim_initializer_size, sim.size)                                                         \
    X(sim_initializer_magic, sim.magic)                                                       \
    X(sim_initializer_version, sim.version)                                                   \
    X(sim_initializer_estimatedTime_x1e6, (long long)(sim.estimatedTime * 1e6))               \
    X(NCCL_UNDEF_FLOAT_x1e6, (long long)(NCCL_UNDEF_FLOAT * 1e6))                             \
    X(NCCL_SUFFIX_first_char, NCCL_SUFFIX[0])

#endif
