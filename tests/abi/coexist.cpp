// C++ programs include cuda_runtime.h and nccl.h in either order: both typedef cudaStream_t
// identically. AC_OURS_FIRST picks the order.
#ifdef AC_OURS_FIRST
#include <nccl.h>
#include <cuda_runtime.h>
#else
#include <cuda_runtime.h>
#include <nccl.h>
#endif

#ifndef ANYCCL_VERSION_CODE
#error "nccl.h is not AnyCCL's: put AnyCCL's include/ first on the include path"
#endif

ncclResult_t launch(const float *in, float *out, size_t n, ncclComm_t comm, cudaStream_t s);
ncclResult_t launch(const float *in, float *out, size_t n, ncclComm_t comm, cudaStream_t s)
{
    return ncclAllReduce(in, out, n, ncclFloat, ncclSum, comm, s);
}
