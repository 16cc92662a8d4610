/* The CUDA build of the shared kernels (src/device/kernels/kernels.cuh), compiled by mk/device.mk
 * into a fatbin embedded in the library. */
#include "device/kernels/kernels.cuh"
