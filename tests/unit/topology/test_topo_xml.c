/* Malformed topology files: every case fails with ncclInvalidUsage and a message naming the line
 * and the problem, never crashes; truncations and byte mutations of a real file either load or
 * fail cleanly (a small deterministic fuzz). */
#include "common/check.h"
#include "topology/topo.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

/* Arrays, not pointers: Criterion runs each case in a new process image. */
struct bad_case {
    char text[256];
    char message[96]; /* a substring of the error message */
};

#define SYS_OPEN "<system version=\"1\">"
#define CPU0 "<cpu numaid=\"0\">"
#define GPU_PCI(bus, dev) "<pci busid=\"" bus "\"><gpu dev=\"" dev "\"/></pci>"

static struct bad_case bad_cases[] = {
    {"", "no element"},
    {"   \n\n  ", "line 3: no element"},
    {SYS_OPEN CPU0, "line 1: end of file: <cpu> opened at line 1 is not closed"},
    {SYS_OPEN "\n" CPU0 "\n</pci></system>", "line 3: end tag </pci> does not match <cpu>"},
    {"<system", "not closed"},
    {"<system version=\"1", "end of file inside the value"},
    {"<system version=1/>", "must be quoted"},
    {"<system version/>", "expected '='"},
    {"<system version=\"1\"version=\"1\"/>", "expected a space"},
    {"<system version=\"1\" version=\"1\"/>", "given twice"},
    {"<system a=\"&bogus;\"/>", "entity"},
    {"<system a=\"&#1;\"/>", "entity"},
    {"<system a=\"x<y\"/>", "'<' inside the value"},
    {"<system/>junk", "text outside tags"},
    {"<!DOCTYPE system><system/>", "DOCTYPE"},
    {"<!-- never closed <system/>", "comment <!-- is never closed"},
    {"<?xml version=\"1.0\"", "is never closed"},
    {"<system/><system/>", "second top-level element"},
    {"</system>", "without a start tag"},
    {"<1system/>", "expected element name"},
    {"<system></system >x", "text outside tags"},
    {"<topology/>", "must be <system"},
    {"<system version=\"1\"/>", "no <cpu"},
    {"<system version=\"x\"><cpu numaid=\"0\"/></system>", "version=\"x\" is not an integer"},
    {SYS_OPEN "<cpu/></system>", "attribute numaid is missing"},
    {SYS_OPEN "<cpu numaid=\"abc\"/></system>", "numaid=\"abc\" is not an integer from -1 to 4095"},
    {SYS_OPEN "<cpu numaid=\"-2\"/></system>", "numaid=\"-2\""},
    {SYS_OPEN "<cpu numaid=\"99999999999999999999\"/></system>", "is not an integer"},
    {SYS_OPEN "<cpu numaid=\"0\"/><cpu numaid=\"0\"/></system>", "numaid=\"0\" appears twice"},
    {SYS_OPEN CPU0 "<pci/></cpu></system>", "attribute busid is missing or empty"},
    {SYS_OPEN CPU0 "<pci busid=\"0000:01:00.0\" class=\"0xZZ\"/></cpu></system>", "hexadecimal"},
    {SYS_OPEN CPU0 "<pci busid=\"0000:01:00.0\" class=\"0x123456789\"/></cpu></system>",
     "hexadecimal"},
    {SYS_OPEN CPU0 "<pci busid=\"0000:01:00.0\" link_width=\"65\"/></cpu></system>",
     "link_width=\"65\""},
    {SYS_OPEN CPU0 "<pci busid=\"a\"/><pci busid=\"A\"/></cpu></system>", "appears twice"},
    {SYS_OPEN CPU0 "<gpu dev=\"0\"/></cpu></system>", "must be inside the <pci>"},
    {SYS_OPEN CPU0 GPU_PCI("1", "0") GPU_PCI("2", "0") "</cpu></system>", "dev=0 appears twice"},
    {SYS_OPEN CPU0 GPU_PCI("1", "0") GPU_PCI("2", "2") "</cpu></system>", "GPU dev=1 is missing"},
    {SYS_OPEN CPU0 GPU_PCI("1", "32") "</cpu></system>", "dev=\"32\""},
    {SYS_OPEN CPU0 GPU_PCI("1", "1.5") "</cpu></system>", "dev=\"1.5\""},
    {SYS_OPEN CPU0 "<pci busid=\"1\"><gpu dev=\"0\"><xgmi target=\"2\"/></gpu></pci></cpu>"
                   "</system>",
     "no GPU has this bus id"},
    {SYS_OPEN CPU0 "<pci busid=\"1\"><gpu dev=\"0\"><nvlink target=\"1\"/></gpu></pci></cpu>"
                   "</system>",
     "link to itself"},
    {SYS_OPEN CPU0 "<pci busid=\"1\"><gpu dev=\"0\"><nvlink target=\"2\" count=\"0\"/></gpu>"
                   "</pci></cpu></system>",
     "count=\"0\""},
    {SYS_OPEN CPU0 "<nic><net dev=\"0\"/></nic></cpu></system>", "attribute name is missing"},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" dev=\"1\"/><net name=\"b\" dev=\"1\"/></nic></cpu>"
                   "</system>",
     "NIC dev=1 appears twice"},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" latency=\"fast\"/></nic></cpu></system>",
     "latency=\"fast\" is not a number"},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" latency=\"nan\"/></nic></cpu></system>",
     "latency=\"nan\""},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" dev=\"0\" speed=\"1e3\"/></nic></cpu></system>",
     "speed=\"1e3\""},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" dev=\"0\" rdma=\"2\"/></nic></cpu></system>",
     "rdma=\"2\""},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" dev=\"1\"/></nic></cpu></system>",
     "dev=\"0\"> is missing"},
    {SYS_OPEN CPU0 "<nic><net name=\"a\" dev=\"0\"/><net name=\"b\" dev=\"0\"/></nic></cpu>"
                   "</system>",
     "NIC dev=0 appears twice"},
};

ParameterizedTestParameters(topo_xml, malformed)
{
    return cr_make_param_array(struct bad_case, bad_cases,
                               sizeof(bad_cases) / sizeof(bad_cases[0]));
}

ParameterizedTest(struct bad_case *c, topo_xml, malformed, .timeout = 10)
{
    struct ac_topo *t = NULL;
    ncclResult_t res = ac_topo_load_xml(c->text, strlen(c->text), "bad.xml", &t);
    cr_expect_eq(res, ncclInvalidUsage, "input <<%s>>: result %d", c->text, (int)res);
    cr_expect_null(t);
    cr_expect_neq(strstr(ac_last_error(), c->message), NULL,
                  "input <<%s>>: message '%s' lacks '%s'", c->text, ac_last_error(), c->message);
    cr_expect_neq(strstr(ac_last_error(), "bad.xml"), NULL, "message names the file: %s",
                  ac_last_error());
}

TestSuite(topo_xml, .timeout = 10);

Test(topo_xml, huge_attribute)
{
    size_t n = 5000;
    char *text = malloc(n + 64);
    cr_assert_not_null(text);
    int k = sprintf(text, "<system a=\"");
    memset(text + k, 'x', n);
    strcpy(text + k + n, "\"/>");
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, strlen(text), "huge", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "longer than 1024"), NULL, "%s", ac_last_error());
    free(text);
}

Test(topo_xml, long_string_attribute)
{
    /* Within the reader's limit but longer than the field: refused, not truncated. */
    char text[512];
    snprintf(text, sizeof(text), SYS_OPEN "<cpu numaid=\"0\" arch=\"%0100d\"/></system>", 7);
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, strlen(text), "long", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "longer than 63"), NULL, "%s", ac_last_error());
}

Test(topo_xml, too_deep)
{
    char text[4096] = SYS_OPEN CPU0;
    for (int i = 0; i < 40; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "<pci busid=\"%d\">", i);
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, strlen(text), "deep", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "nested deeper than 32"), NULL, "%s", ac_last_error());
}

Test(topo_xml, too_many_attributes)
{
    char text[2048] = "<system";
    for (int i = 0; i < 30; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), " a%d=\"1\"", i);
    strcat(text, "/>");
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, strlen(text), "attrs", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "more than 24 attributes"), NULL, "%s", ac_last_error());
}

Test(topo_xml, nul_byte)
{
    static const char text[] = "<system version=\"1\0\"><cpu numaid=\"0\"/></system>";
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, sizeof(text) - 1, "nul", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "NUL"), NULL, "%s", ac_last_error());
}

Test(topo_xml, entities_and_line_numbers)
{
    static const char text[] = "<?xml version=\"1.0\"?>\n<system version='1'>\n"
                               "  <cpu numaid=\"0\" vendor=\"A&amp;B &lt;&#65;&#x42;&gt;\"/>\n"
                               "  <cpu numaid=\"zero\"/>\n</system>\n";
    struct ac_topo *t = NULL;
    cr_expect_eq(ac_topo_load_xml(text, sizeof(text) - 1, "lines", &t), ncclInvalidUsage);
    cr_expect_neq(strstr(ac_last_error(), "line 4"), NULL, "%s", ac_last_error());
    static const char good[] = "<system version='1'>\n"
                               "  <cpu numaid=\"0\" vendor=\"A&amp;B &lt;&#65;&#x42;&gt;\"/>\n"
                               "</system>\n";
    cr_assert_eq(ac_topo_load_xml(good, sizeof(good) - 1, "good", &t), ncclSuccess, "%s",
                 ac_last_error());
    cr_expect_str_eq(t->nodes[2].vendor, "A&B <AB>");
    /* Written back escaped, and read again the same. */
    char *xml;
    cr_assert_eq(ac_topo_to_xml(t, &xml, NULL), ncclSuccess);
    cr_expect_neq(strstr(xml, "vendor=\"A&amp;B &lt;AB&gt;\""), NULL, "%s", xml);
    free(xml);
    ac_topo_free(t);
}

static char *read_whole(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s (run from the repository root)", path);
    char *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    *len_out = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    return buf;
}

static void expect_clean(const char *text, size_t len, const char *what)
{
    struct ac_topo *t = NULL;
    ncclResult_t res = ac_topo_load_xml(text, len, what, &t);
    cr_assert(res == ncclSuccess || res == ncclInvalidUsage, "%s: result %d", what, (int)res);
    cr_assert((res == ncclSuccess) == (t != NULL));
    if (res != ncclSuccess)
        cr_assert_neq(ac_last_error()[0], '\0');
    ac_topo_free(t);
}

Test(topo_xml, truncations_never_crash, .timeout = 20)
{
    size_t len;
    char *text = read_whole("topologies/mi300x-8.xml", &len);
    for (size_t cut = 0; cut < len; cut += 7)
        expect_clean(text, cut, "truncated");
    free(text);
}

Test(topo_xml, mutations_never_crash, .timeout = 20)
{
    static const char alphabet[] = "<>/=\"'&;#x0123456789 \n\0abz-";
    size_t len;
    char *text = read_whole("topologies/dgx-h100.xml", &len);
    char *copy = malloc(len);
    cr_assert_not_null(copy);
    unsigned seed = 12345;
    for (int round = 0; round < 600; round++) {
        memcpy(copy, text, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            copy[at] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
        }
        expect_clean(copy, len, "mutated");
    }
    free(copy);
    free(text);
}
