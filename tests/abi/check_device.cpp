// Compiled (C++) against NVIDIA's nccl_device.h: the one by-value device-API struct, ncclTeam_t,
// must have AnyCCL's layout. run.sh appends AnyCCL's declarations of the device-API host
// functions (in extern "C"), which the compiler rejects if any signature differs from NVIDIA's.
#include <cstddef>
#include <cstdint>
#include <nccl_device.h>

#include "ours_values.h"

static_assert(sizeof(ncclTeam_t) == OURS_sizeof_ncclTeam_t, "sizeof(ncclTeam_t) differs");
static_assert(offsetof(ncclTeam_t, nRanks) == OURS_offsetof_ncclTeam_t_nRanks, "nRanks moved");
static_assert(offsetof(ncclTeam_t, rank) == OURS_offsetof_ncclTeam_t_rank, "rank moved");
static_assert(offsetof(ncclTeam_t, stride) == OURS_offsetof_ncclTeam_t_stride, "stride moved");
