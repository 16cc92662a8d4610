/* The last-error buffers behind ncclGetLastError (a thread's own message first, else the
 * process-wide one) and the propagation macros. */
#include "common/check.h"
#include "common/config.h"
#include "common_test_env.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <unistd.h>

static void setup(void)
{
    test_clean_env();
    ac_log_reset();
    ac_clear_error();
}

TestSuite(check, .init = setup, .timeout = 10);

Test(check, fail_returns_result_and_records_message)
{
    ncclResult_t res = AC_FAIL(ncclInvalidArgument, "count %d is negative on rank %d", -3, 2);
    cr_expect_eq(res, ncclInvalidArgument);
    cr_expect_str_eq(ac_last_error(), "count -3 is negative on rank 2");
}

/* NCCL keeps the message for ncclGetLastError even when NCCL_DEBUG is unset. */
Test(check, recorded_without_logging)
{
    cr_expect_eq(ac_log_enabled(AC_LOG_WARN, AC_SUB_ALL), 0);
    AC_FAIL(ncclSystemError, "quiet failure");
    cr_expect_str_eq(ac_last_error(), "quiet failure");
}

Test(check, clear_empties_both)
{
    AC_FAIL(ncclInternalError, "something");
    ac_clear_error();
    cr_expect_str_eq(ac_last_error(), "");
}

Test(check, sysfail_adds_strerror)
{
    char expected[256];
    snprintf(expected, sizeof(expected), "open /x failed: %s", strerror(ENOENT));
    errno = ENOENT;
    ncclResult_t res = AC_SYSFAIL("open /x");
    cr_expect_eq(res, ncclSystemError);
    cr_expect_str_eq(ac_last_error(), expected);
}

Test(check, long_message_truncated)
{
    char big[3000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    AC_FAIL(ncclInternalError, "%s", big);
    cr_expect_eq(strlen(ac_last_error()), 1023);
}

static void *fail_in_thread(void *arg)
{
    AC_FAIL(ncclRemoteError, "%s", (const char *)arg);
    return NULL;
}

static void *read_in_thread(void *arg)
{
    snprintf(arg, 256, "%s", ac_last_error());
    return NULL;
}

static void run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fn, arg), 0);
    pthread_join(t, NULL);
}

/* A thread without its own error sees the process-wide (latest) one; a thread with its own error
 * keeps seeing it whatever other threads record. */
Test(check, thread_local_before_global)
{
    char seen[256];
    run_thread(fail_in_thread, "from A");
    cr_expect_str_eq(ac_last_error(), "from A");
    AC_FAIL(ncclInvalidUsage, "from main");
    run_thread(fail_in_thread, "from B");
    cr_expect_str_eq(ac_last_error(), "from main");
    run_thread(read_in_thread, seen);
    cr_expect_str_eq(seen, "from B");
}

static ncclResult_t fails(ncclResult_t res)
{
    return res;
}

static ncclResult_t propagate(ncclResult_t inner, int *reached_end)
{
    AC_CHECK(fails(inner));
    *reached_end = 1;
    return ncclSuccess;
}

static ncclResult_t propagate_goto(ncclResult_t inner, int *cleaned)
{
    ncclResult_t res = ncclSuccess;
    AC_CHECK_GOTO(fails(inner), res, undo);
    return res;
undo:
    *cleaned = 1;
    return res;
}

Test(check, check_macros_propagate)
{
    int reached = 0, cleaned = 0;
    cr_expect_eq(propagate(ncclSystemError, &reached), ncclSystemError);
    cr_expect_eq(reached, 0);
    cr_expect_eq(propagate(ncclInProgress, &reached), ncclSuccess, "InProgress is not an error");
    cr_expect_eq(reached, 1);
    cr_expect_eq(propagate_goto(ncclRemoteError, &cleaned), ncclRemoteError);
    cr_expect_eq(cleaned, 1);
    cleaned = 0;
    cr_expect_eq(propagate_goto(ncclSuccess, &cleaned), ncclSuccess);
    cr_expect_eq(cleaned, 0);
}

/* At WARN the message is printed once, with the file:line of the AC_FAIL. */
Test(check, fail_logs_at_warn_with_location)
{
    char path[64], expected[256];
    snprintf(path, sizeof(path), "/tmp/ac_test_check_%d.txt", (int)getpid());
    setenv("NCCL_DEBUG", "WARN", 1);
    setenv("NCCL_DEBUG_FILE", path, 1);
    ac_log_reset();
    int line = __LINE__ + 1;
    AC_FAIL(ncclInvalidArgument, "bad root %d", 9);
    snprintf(expected, sizeof(expected), "%s:%d NCCL WARN bad root 9\n", __FILE__, line);
    char *text = test_read_file(path);
    unlink(path);
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, expected), "log: %s", text);
    free(text);
}
