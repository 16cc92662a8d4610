/* Logging: NCCL_DEBUG levels, NCCL_DEBUG_SUBSYS masks (with ^), NCCL_DEBUG_FILE substitutions,
 * the NCCL line format, re-initialization, and whole lines under concurrent writers. */
#include "common/config.h"
#include "common/log.h"
#include "common_test_env.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/redirect.h>
#include <pthread.h>
#include <unistd.h>

static char log_path[64];

/* Every test logs into its own file, so that the expected text is exact. */
static void setup(void)
{
    test_clean_env();
    snprintf(log_path, sizeof(log_path), "/tmp/ac_test_log_%d.txt", (int)getpid());
    setenv("NCCL_DEBUG_FILE", log_path, 1);
}

static void teardown(void)
{
    unlink(log_path);
}

TestSuite(log, .init = setup, .fini = teardown, .timeout = 10);

static void apply(const char *level, const char *subsys)
{
    if (level != NULL)
        setenv("NCCL_DEBUG", level, 1);
    if (subsys != NULL)
        setenv("NCCL_DEBUG_SUBSYS", subsys, 1);
    ac_log_reset();
    ac_log_init();
}

/* gethostname up to the first dot, as NCCL prints it. */
static void short_host(char *buf, size_t len)
{
    char full[256] = "";
    gethostname(full, sizeof(full) - 1);
    full[strcspn(full, ".")] = '\0';
    snprintf(buf, len, "%.63s", full);
}

struct level_case {
    char text[16];
    int expected;
};

ParameterizedTestParameters(log, levels)
{
    static struct level_case cases[] = {
        {"VERSION", AC_LOG_VERSION}, {"warn", AC_LOG_WARN},   {"Info", AC_LOG_INFO},
        {"ABORT", AC_LOG_ABORT},     {"trace", AC_LOG_TRACE}, {"", AC_LOG_NONE},
        {"bogus", AC_LOG_WARN}, /* unknown: reported, and WARN is used */
    };
    return cr_make_param_array(struct level_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct level_case *lc, log, levels, .init = setup, .fini = teardown,
                  .timeout = 10)
{
    apply(lc->text, NULL);
    cr_expect_eq(ac_log_level_now, lc->expected, "NCCL_DEBUG=%s", lc->text);
}

Test(log, unset_level_is_none)
{
    apply(NULL, NULL);
    cr_expect_eq(ac_log_level_now, AC_LOG_NONE);
    cr_expect_not(ac_log_enabled(AC_LOG_WARN, AC_SUB_ALL));
}

struct mask_case {
    char text[40];
    uint64_t expected;
};

ParameterizedTestParameters(log, masks)
{
    static struct mask_case cases[] = {
        {"INIT", 0x1},
        {"INIT,COLL", 0x1 | 0x2},
        {"init,Net", 0x1 | 0x10},
        {"BOOTSTRAP,RAS,PROFILE", 0x1000 | 0x8000 | 0x4000},
        {"ALL", ~(uint64_t)0},
        {"^INIT", ~(uint64_t)0x1},
        {"^INIT,SHM", ~(uint64_t)(0x1 | 0x8)},
        {"^ALL", 0},
        {"foo,SHM", 0x8},            /* unknown names are ignored */
        {"P2P,,GRAPH,", 0x4 | 0x20}, /* empty items too */
        {"TUNING,ENV,ALLOC,CALL", 0x40 | 0x80 | 0x100 | 0x200},
        {"PROXY,NVLS,REG", 0x400 | 0x800 | 0x2000},
        {"", 0x1 | 0x1000 | 0x80}, /* empty counts as unset: INIT,BOOTSTRAP,ENV */
    };
    return cr_make_param_array(struct mask_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct mask_case *mc, log, masks, .init = setup, .fini = teardown, .timeout = 10)
{
    apply("INFO", mc->text);
    cr_expect_eq(ac_log_subsys_mask, mc->expected, "NCCL_DEBUG_SUBSYS=%s: got %#llx", mc->text,
                 (unsigned long long)ac_log_subsys_mask);
}

Test(log, default_mask_is_init_bootstrap_env)
{
    apply("INFO", NULL);
    cr_expect_eq(ac_log_subsys_mask, (uint64_t)(0x1 | 0x1000 | 0x80));
}

Test(log, line_format)
{
    char host[64], expected[1024];
    short_host(host, sizeof(host));
    apply("TRACE", "INIT");
    int pid = (int)getpid(), tid = (int)gettid();
    ac_log_set_rank(-1);
    AC_INFO(AC_SUB_INIT, "hello %d", 7);
    ac_log_set_rank(5);
    int warn_line = __LINE__ + 1;
    AC_WARN("careful %s", "now");
    int trace_line = __LINE__ + 1;
    AC_TRACE(AC_SUB_INIT, "step");
    AC_INFO(AC_SUB_COLL, "filtered out");
    snprintf(expected, sizeof(expected),
             "%s:%d:%d [-] NCCL INFO hello 7\n"
             "%s:%d:%d [5] %s:%d NCCL WARN careful now\n"
             "%s:%d:%d [5] %s:%d NCCL TRACE step\n",
             host, pid, tid, host, pid, tid, __FILE__, warn_line, host, pid, tid, __FILE__,
             trace_line);
    char *text = test_read_file(log_path);
    cr_assert_not_null(text);
    cr_expect_str_eq(text, expected);
    free(text);
}

/* WARN is printed whatever the subsystem mask; INFO only for subsystems in it. */
Test(log, subsystem_filter)
{
    apply("INFO", "COLL");
    cr_expect(ac_log_enabled(AC_LOG_INFO, AC_SUB_COLL));
    cr_expect_not(ac_log_enabled(AC_LOG_INFO, AC_SUB_INIT));
    cr_expect(ac_log_enabled(AC_LOG_INFO, AC_SUB_INIT | AC_SUB_COLL));
    cr_expect(ac_log_enabled(AC_LOG_WARN, AC_SUB_INIT));
    cr_expect_not(ac_log_enabled(AC_LOG_TRACE, AC_SUB_COLL));
}

Test(log, version_level_hides_warnings)
{
    apply("VERSION", NULL);
    cr_expect(ac_log_enabled(AC_LOG_VERSION, AC_SUB_INIT));
    cr_expect_not(ac_log_enabled(AC_LOG_WARN, AC_SUB_ALL));
}

Test(log, file_name_substitutions)
{
    char host[64], pattern[128], expected_path[256];
    short_host(host, sizeof(host));
    snprintf(pattern, sizeof(pattern), "/tmp/ac_test_log_sub.%%h.%%p.%%%%.%d", (int)getpid());
    snprintf(expected_path, sizeof(expected_path), "/tmp/ac_test_log_sub.%s.%d.%%.%d", host,
             (int)getpid(), (int)getpid());
    setenv("NCCL_DEBUG_FILE", pattern, 1);
    apply("WARN", NULL);
    AC_WARN("into the file");
    char *text = test_read_file(expected_path);
    unlink(expected_path);
    cr_assert_not_null(text, "%s was not created", expected_path);
    cr_expect_not_null(strstr(text, "NCCL WARN into the file\n"));
    free(text);
}

Test(log, unwritable_file_falls_back_to_stdout, .init = cr_redirect_stdout)
{
    test_clean_env();
    setenv("NCCL_DEBUG_FILE", "/nonexistent-dir/ac.log", 1);
    apply("WARN", NULL);
    AC_WARN("still visible");
    fflush(stdout);
    fclose(stdout);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, cr_get_redirected_stdout());
    buf[n] = '\0';
    cr_expect_not_null(strstr(buf, "NCCL WARN NCCL_DEBUG_FILE: cannot open /nonexistent-dir/ac.log "
                                   "for writing; logging to stdout\n"),
                       "stdout: %s", buf);
    cr_expect_not_null(strstr(buf, "NCCL WARN still visible\n"));
}

Test(log, reset_rereads_environment)
{
    apply("WARN", NULL);
    cr_expect_eq(ac_log_level_now, AC_LOG_WARN);
    setenv("NCCL_DEBUG", "TRACE", 1);
    ac_log_reset();
    cr_expect_eq(ac_log_level_now, -1);
    AC_INFO(AC_SUB_INIT, "triggers init");
    cr_expect_eq(ac_log_level_now, AC_LOG_TRACE);
}

#define NTHREADS 4
#define NLINES 100

static void *write_lines(void *arg)
{
    ac_log_set_rank((int)(intptr_t)arg);
    for (int i = 0; i < NLINES; i++)
        AC_WARN("line %03d of a thread, padded to make the lines longer than a few words", i);
    return NULL;
}

/* One write per line: lines from different threads never mix. */
Test(log, concurrent_lines_stay_whole)
{
    apply("WARN", NULL);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, write_lines, (void *)(intptr_t)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    char *text = test_read_file(log_path);
    cr_assert_not_null(text);
    int nlines = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        nlines++;
        cr_expect_not_null(strstr(line, " NCCL WARN line "), "mixed line: %s", line);
        cr_expect_not_null(strstr(line, "of a thread, padded to make the lines longer than a few "
                                        "words"),
                           "mixed line: %s", line);
    }
    cr_expect_eq(nlines, NTHREADS * NLINES);
    free(text);
}

Test(log, long_message_is_truncated_with_newline)
{
    apply("WARN", NULL);
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    AC_WARN("%s", big);
    char *text = test_read_file(log_path);
    cr_assert_not_null(text);
    size_t len = strlen(text);
    cr_expect_eq(len, 2047, "a line is at most 2046 bytes plus its newline");
    cr_expect_eq(text[len - 1], '\n');
    free(text);
}
