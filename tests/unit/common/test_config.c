/* The config table: defaults, value parsing (booleans, integers with K/M/G suffixes), malformed
 * values keeping the default with a warning, and ANYCCL_X winning over NCCL_X. */
#include "common/config.h"
#include "common/log.h"
#include "common_test_env.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <unistd.h>

static void fresh_env(void)
{
    test_clean_env();
    ac_config_reload();
}

TestSuite(config, .init = fresh_env, .timeout = 10);

Test(config, defaults)
{
    const struct ac_config *c = ac_config_get();
    cr_expect_null(c->debug);
    cr_expect_null(c->debug_subsys);
    cr_expect_null(c->debug_file);
    cr_expect_null(c->comm_id);
    cr_expect_null(c->socket_ifname);
    cr_expect_null(c->socket_family);
    cr_expect_eq(c->init_timeout_s, 300);
    cr_expect_eq(c->timeout_s, 0);
    cr_expect_eq(c->shm_disable, false);
    cr_expect_eq(c->p2p_disable, false);
    cr_expect_str_eq(c->shm_dir, "/dev/shm");
    cr_expect_eq(c->buffsize, 4 * 1024 * 1024);
    cr_expect_eq(c->nslots, 8);
    cr_expect_eq(c->socket_nthreads, 1);
    cr_expect_null(c->algo);
    cr_expect_null(c->proto);
    cr_expect_eq(c->min_nchannels, 1);
    cr_expect_eq(c->max_nchannels, 2);
    cr_expect_eq(c->spin_count, 2000);
    cr_expect_eq(c->peer_check_ms, 200);
}

struct bool_case {
    char text[8];
    bool expected;
};

ParameterizedTestParameters(config, bool_values)
{
    static struct bool_case cases[] = {
        {"1", true},   {"0", false},   {"true", true}, {"false", false}, {"yes", true},
        {"no", false}, {"TRUE", true}, {"No", false},  {"YES", true},
    };
    return cr_make_param_array(struct bool_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bool_case *bc, config, bool_values, .timeout = 10)
{
    test_clean_env();
    setenv("NCCL_SHM_DISABLE", bc->text, 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->shm_disable, bc->expected, "NCCL_SHM_DISABLE=%s", bc->text);
}

struct int_case {
    char text[24];
    int64_t expected;
};

/* NCCL_BUFFSIZE accepts 1024 .. 2^30; anything else keeps the default 4 MiB. */
ParameterizedTestParameters(config, int_values)
{
    static struct int_case cases[] = {
        {"12345", 12345},
        {"8M", 8LL * 1024 * 1024},
        {"8m", 8LL * 1024 * 1024},
        {"64K", 64LL * 1024},
        {"1G", 1LL << 30},
        {"1024", 1024},
        {"+2048", 2048},
        {"abc", 4194304},                  /* garbage */
        {"8MB", 4194304},                  /* trailing garbage */
        {"12 ", 4194304},                  /* trailing space */
        {"0x100", 4194304},                /* not decimal */
        {"1023", 4194304},                 /* below the minimum */
        {"2G", 4194304},                   /* above the maximum */
        {"-1", 4194304},                   /* negative */
        {"99999999999999999999", 4194304}, /* overflows int64 */
        {"9007199254740992G", 4194304},    /* overflows once scaled */
        {"", 4194304},                     /* empty counts as unset */
    };
    return cr_make_param_array(struct int_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct int_case *ic, config, int_values, .timeout = 10)
{
    test_clean_env();
    setenv("NCCL_BUFFSIZE", ic->text, 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->buffsize, ic->expected, "NCCL_BUFFSIZE='%s': got %lld", ic->text,
                 (long long)ac_config_get()->buffsize);
}

Test(config, garbage_bool_keeps_default)
{
    setenv("NCCL_P2P_DISABLE", "maybe", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->p2p_disable, false);
}

Test(config, range_of_nslots)
{
    setenv("ANYCCL_NSLOTS", "0", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->nslots, 8);
    setenv("ANYCCL_NSLOTS", "64", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->nslots, 64);
    setenv("ANYCCL_NSLOTS", "65", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->nslots, 8);
}

Test(config, anyccl_wins_over_nccl)
{
    setenv("NCCL_BUFFSIZE", "1M", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->buffsize, 1 << 20);
    setenv("ANYCCL_BUFFSIZE", "2M", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->buffsize, 2 << 20);
    setenv("NCCL_SOCKET_IFNAME", "eth", 1);
    setenv("ANYCCL_SOCKET_IFNAME", "=ib0", 1);
    ac_config_reload();
    cr_expect_str_eq(ac_config_get()->socket_ifname, "=ib0");
}

/* A set but malformed ANYCCL_X does not fall back to NCCL_X: the user's most specific setting is
 * wrong, so the default is used and the warning names ANYCCL_X. */
Test(config, malformed_anyccl_keeps_default_not_nccl)
{
    setenv("NCCL_BUFFSIZE", "1M", 1);
    setenv("ANYCCL_BUFFSIZE", "lots", 1);
    ac_config_reload();
    cr_expect_eq(ac_config_get()->buffsize, 4194304);
}

Test(config, strings_and_anyccl_only_names)
{
    setenv("NCCL_COMM_ID", "10.0.0.1:5000", 1);
    setenv("ANYCCL_SHM_DIR", "/tmp", 1);
    setenv("ANYCCL_DEBUG", "warn", 1);
    setenv("ANYCCL_INIT_TIMEOUT", "5", 1);
    ac_config_reload();
    const struct ac_config *c = ac_config_get();
    cr_expect_str_eq(c->comm_id, "10.0.0.1:5000");
    cr_expect_str_eq(c->shm_dir, "/tmp");
    cr_expect_str_eq(c->debug, "warn");
    cr_expect_eq(c->init_timeout_s, 5);
}

/* Tables handed out before a reload stay valid: another thread may still be reading one. */
Test(config, old_table_stays_valid_after_reload)
{
    setenv("NCCL_SOCKET_IFNAME", "eth0", 1);
    ac_config_reload();
    const struct ac_config *old = ac_config_get();
    setenv("NCCL_SOCKET_IFNAME", "eth1", 1);
    ac_config_reload();
    cr_expect_str_eq(old->socket_ifname, "eth0");
    cr_expect_str_eq(ac_config_get()->socket_ifname, "eth1");
}

/* The warning goes through the log (deferred until logging is set up, since logging reads its own
 * settings from this table) and names the variable, the value and what is accepted. */
Test(config, malformed_value_is_warned)
{
    char path[] = "/tmp/ac_test_config_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    setenv("NCCL_DEBUG", "WARN", 1);
    setenv("NCCL_DEBUG_FILE", path, 1);
    setenv("ANYCCL_NSLOTS", "abc", 1);
    ac_log_reset();
    AC_WARN("marker");
    char *text = test_read_file(path);
    unlink(path);
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, "NCCL WARN ANYCCL_NSLOTS=abc is not valid: use an integer from "
                                    "1 to 64, optionally with a K, M or G suffix (x1024); keeping "
                                    "the default 8\n"),
                       "log was: %s", text);
    cr_expect_not_null(strstr(text, "NCCL WARN marker\n"));
    free(text);
}

static void *get_in_thread(void *arg)
{
    return (void *)ac_config_get();
}

Test(config, concurrent_first_get_returns_one_table)
{
    pthread_t t[4];
    void *got[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, get_in_thread, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], &got[i]);
    for (int i = 1; i < 4; i++)
        cr_expect_eq(got[i], got[0]);
}

static char *capture(void (*print)(FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    print(f);
    fclose(f);
    return buf;
}

static const char *const all_names[] = {
    "ANYCCL_DEBUG",         "ANYCCL_DEBUG_SUBSYS",    "ANYCCL_DEBUG_FILE",   "ANYCCL_COMM_ID",
    "ANYCCL_SOCKET_IFNAME", "ANYCCL_SOCKET_FAMILY",   "ANYCCL_INIT_TIMEOUT", "ANYCCL_TIMEOUT",
    "ANYCCL_SHM_DISABLE",   "ANYCCL_P2P_DISABLE",     "ANYCCL_SHM_DIR",      "ANYCCL_BUFFSIZE",
    "ANYCCL_NSLOTS",        "ANYCCL_SOCKET_NTHREADS", "ANYCCL_ALGO",         "ANYCCL_PROTO",
    "ANYCCL_MIN_NCHANNELS", "ANYCCL_MAX_NCHANNELS",   "ANYCCL_SPIN_COUNT",   "ANYCCL_PEER_CHECK_MS",
    "ANYCCL_HOSTID",        "ANYCCL_TOPO_FILE",       "ANYCCL_TOPO_DUMP_FILE", "ANYCCL_RAS_ENABLE",
    "ANYCCL_RAS_ADDR",      "ANYCCL_RAS_HEARTBEAT_MS", "ANYCCL_RAS_DEAD_MS",  "ANYCCL_FLIGHT_RECORDER",
    "ANYCCL_FLIGHT_RECORDER_FILE", "ANYCCL_RAS_SIGUSR1", "ANYCCL_CMA_ENABLE", "ANYCCL_CMA_MIN_BYTES",
};
#define NNAMES (sizeof(all_names) / sizeof(all_names[0]))

Test(config, markdown_has_one_row_per_variable)
{
    char *md = capture(ac_config_print_markdown);
    int nlines = 0;
    for (const char *p = md; *p != '\0'; p++)
        nlines += *p == '\n';
    int nrows = 0;
    for (size_t at = 0; md[at] != '\0'; at++)
        nrows += strncmp(md + at, "\n| `ANYCCL_", 11) == 0;
    /* Every line is a row of a variable (the list below names those that must be there). */
    cr_expect_eq(nlines, 2 + nrows, "header, separator, one row per variable");
    cr_expect_geq(nrows, (int)NNAMES);
    cr_expect_eq(strncmp(md, "| Variable | Also read as | Type | Default | Meaning |\n", 55), 0);
    for (size_t i = 0; i < NNAMES; i++) {
        char cell[64];
        snprintf(cell, sizeof(cell), "| `%s` |", all_names[i]);
        cr_expect_not_null(strstr(md, cell), "%s missing", all_names[i]);
    }
    cr_expect_not_null(strstr(md, "| `ANYCCL_BUFFSIZE` | `NCCL_BUFFSIZE` |"));
    cr_expect_not_null(strstr(md, "| `ANYCCL_NSLOTS` | - |"));
    free(md);
}

Test(config, print_shows_value_source_and_default)
{
    setenv("NCCL_BUFFSIZE", "8M", 1);
    ac_config_reload();
    char *text = capture(ac_config_print);
    cr_expect_not_null(strstr(text, "ANYCCL_BUFFSIZE (or NCCL_BUFFSIZE) = 8388608  [set by "
                                    "NCCL_BUFFSIZE; default 4194304]\n"),
                       "%s", text);
    cr_expect_not_null(strstr(text, "ANYCCL_NSLOTS = 8  [default]\n"));
    free(text);
}
