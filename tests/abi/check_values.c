/* Compiled against NVIDIA's nccl.h and the OURS_* values that gen_values.c printed from AnyCCL's
 * header: every constant must agree at compile time, every initializer value at run time. */
#include <nccl.h>

#include <stdio.h>
#include <string.h>

#include "abi_items.h"
#include "ours_values.h"

#define ASSERT_SAME(name, expr)                                                               \
    _Static_assert((long long)(expr) == OURS_##name, #name ": AnyCCL differs from NVIDIA's nccl.h");

ABI_CONST_ITEMS(ASSERT_SAME)

static int mismatches;

static void compare(const char *name, long long nvidia, long long ours)
{
    if (nvidia == ours)
        return;
    printf("%s: NVIDIA %lld, AnyCCL %lld\n", name, nvidia, ours);
    mismatches++;
}

#define COMPARE(name, expr) compare(#name, (long long)(expr), OURS_##name);

int main(void)
{
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;

    ABI_RUNTIME_ITEMS(COMPARE)
    return mismatches == 0 ? 0 : 1;
}
