/* How an entry point is defined. As in NCCL, the strong symbol is the pnccl alias and the nccl name
 * is weak, so that a profiling library can interpose ncclX and call pncclX. Both are exported;
 * everything else in the library has hidden visibility.
 *
 *   AC_API(ncclResult_t, ncclCommCount, const ncclComm_t comm, int *count);
 *   ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) { ... }
 */
#ifndef AC_CORE_API_H
#define AC_CORE_API_H

#include "nccl.h"

#define AC_API(ret, func, ...)                                                                \
    __attribute__((visibility("default"), alias(#func))) ret p##func(__VA_ARGS__);           \
    __attribute__((visibility("default"), weak)) ret func(__VA_ARGS__)

/* For AnyCCL's own extensions, which have no profiling alias. */
#define AC_EXPORT __attribute__((visibility("default")))

#endif
