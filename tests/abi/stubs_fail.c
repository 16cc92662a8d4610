/* Links against the shared library as a user program would and calls every entry point that
 * AnyCCL exports but does not implement (docs/api.md): each must fail cleanly, with
 * ncclInvalidUsage or its neutral value, a ncclGetLastError message naming the function, and its
 * outputs untouched. Prints one line per problem; exits 1 if any. */
#include <nccl.h>

#include <stdio.h>
#include <string.h>

static int problems;

static void expect_message(const char *func)
{
    const char *msg = ncclGetLastError(NULL);
    char want[128];

    snprintf(want, sizeof(want), "%s is not implemented in AnyCCL", func);
    if (msg == NULL || strstr(msg, want) == NULL) {
        printf("%s: last error is \"%s\", want it to contain \"%s\"\n", func, msg ? msg : "(null)",
               want);
        problems++;
    }
}

static void expect_usage(const char *func, ncclResult_t res)
{
    if (res != ncclInvalidUsage) {
        printf("%s returned %d, want ncclInvalidUsage\n", func, (int)res);
        problems++;
    }
    expect_message(func);
}

static void expect_int(const char *func, long long got, long long want)
{
    if (got != want) {
        printf("%s returned %lld, want %lld\n", func, got, want);
        problems++;
    }
    expect_message(func);
}

static void expect_untouched(const char *what, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (((const unsigned char *)p)[i] != 0xa5) {
            printf("%s: output written by a failing call\n", what);
            problems++;
            return;
        }
    }
}

#define FILL(x) memset(&(x), 0xa5, sizeof(x))

static void check_host_api(void)
{
    ncclComm_t comm;
    ncclUniqueId id;
    uint64_t u64;
    void *ptr;
    ncclParamHandle_t h;
    const char *str;
    int len;

    FILL(comm), FILL(id), FILL(u64), FILL(ptr), FILL(h), FILL(str), FILL(len);
    expect_usage("ncclCommGetUniqueId", ncclCommGetUniqueId(NULL, &id));
    expect_usage("ncclCommGrow", ncclCommGrow(NULL, 2, &id, 1, &comm, NULL));
    expect_usage("ncclCommSuspend", ncclCommSuspend(NULL, NCCL_SUSPEND_MEM));
    expect_usage("ncclCommResume", ncclCommResume(NULL));
    expect_usage("ncclCommMemStats", ncclCommMemStats(NULL, ncclStatGpuMemTotal, &u64));
    expect_usage("ncclWinGetUserPtr", ncclWinGetUserPtr(NULL, NULL, &ptr));
    expect_usage("ncclPutSignal",
                 ncclPutSignal(&u64, 1, ncclUint64, 0, NULL, 0, 0, 0, 0, NULL, NULL));
    expect_usage("ncclSignal", ncclSignal(0, 0, 0, 0, NULL, NULL));
    expect_usage("ncclWaitSignal", ncclWaitSignal(0, NULL, NULL, NULL));
    expect_usage("ncclParamBind", ncclParamBind(&h, "NCCL_DEBUG"));
    expect_usage("ncclParamGetStr", ncclParamGetStr(h, &str));
    expect_usage("ncclParamGetU64", ncclParamGetU64(h, &u64));
    expect_usage("ncclParamGetParameter", ncclParamGetParameter("NCCL_DEBUG", &str, &len));
    expect_usage("ncclParamGetAllParameterKeys", ncclParamGetAllParameterKeys(NULL, &len));
    ncclParamDumpAll();
    expect_message("ncclParamDumpAll");
    /* The profiling aliases are the same functions. */
    expect_usage("ncclCommGrow", pncclCommGrow(NULL, 2, &id, 1, &comm, NULL));
    expect_untouched("ncclCommGetUniqueId/ncclCommGrow uniqueId", &id, sizeof(id));
    expect_untouched("ncclCommGrow newcomm", &comm, sizeof(comm));
    expect_untouched("ncclCommMemStats value / ncclParamGetU64 out", &u64, sizeof(u64));
    expect_untouched("ncclWinGetUserPtr outUserPtr", &ptr, sizeof(ptr));
    expect_untouched("ncclParamBind out", &h, sizeof(h));
    expect_untouched("ncclParamGetStr out", &str, sizeof(str));
    expect_untouched("ncclParamGetAllParameterKeys tableLen", &len, sizeof(len));
}

static void check_device_api(void)
{
    ncclTeam_t team = {4, 1, 1};
    ncclTeam_t got;

    expect_usage("ncclDevCommCreate", ncclDevCommCreate(NULL, NULL, NULL));
    expect_usage("ncclDevCommDestroy", ncclDevCommDestroy(NULL, NULL));
    expect_usage("ncclLsaBarrierCreateRequirement",
                 ncclLsaBarrierCreateRequirement(team, 1, NULL, NULL));
    expect_usage("ncclGinBarrierCreateRequirement",
                 ncclGinBarrierCreateRequirement(NULL, team, 1, NULL, NULL));
    expect_usage("ncclLLA2ACreateRequirement", ncclLLA2ACreateRequirement(1, 1, NULL, NULL));
    expect_int("ncclLLA2ACalcSlots", ncclLLA2ACalcSlots(16, 8), 0);
    expect_int("ncclTeamRankToWorld", ncclTeamRankToWorld(NULL, team, 0), -1);
    expect_int("ncclTeamRankToLsa", ncclTeamRankToLsa(NULL, team, 0), -1);
    got = ncclTeamWorld(NULL);
    expect_int("ncclTeamWorld", got.nRanks | got.rank | got.stride, 0);
    got = ncclTeamLsa(NULL);
    expect_int("ncclTeamLsa", got.nRanks | got.rank | got.stride, 0);
    got = ncclTeamRail(NULL);
    expect_int("ncclTeamRail", got.nRanks | got.rank | got.stride, 0);
}

int main(void)
{
    ncclResetDebugInit();
    pncclResetDebugInit();
    check_host_api();
    check_device_api();
    return problems == 0 ? 0 : 1;
}
