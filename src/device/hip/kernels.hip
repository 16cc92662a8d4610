/* The HIP build of the shared kernels (src/device/kernels/kernels.cuh), compiled by mk/device.mk
 * into a code object bundle embedded in the library. */
#include <hip/hip_runtime.h>

#include "device/kernels/kernels.cuh"
