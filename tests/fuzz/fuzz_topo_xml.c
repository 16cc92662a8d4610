/* Fuzz target: topology files (NCCL_TOPO_FILE): the XML reader (src/topology/topo_xml.c) and the
 * topology built from it (topo_file.c, ac_topo_load_xml). Oracles: the element tree's indices
 * stay in range; a topology that loads writes canonical XML that loads again and writes the same
 * text (what topo.h promises). */
#include "fuzz.h"
#include "topology/topo.h"
#include "topology/topo_xml.h"

#include <string.h>

FUZZ_QUIET_INIT

static void walk(const struct ac_topo_xml_doc *doc)
{
    FUZZ_CHECK(doc->nelems >= 1 && doc->nelems <= AC_TOPO_XML_MAX_ELEMS);
    for (int i = 0; i < doc->nelems; i++) {
        const struct ac_topo_xml_elem *e = &doc->elems[i];
        FUZZ_CHECK(e->name != NULL && strlen(e->name) < AC_TOPO_XML_NAME_MAX + 1);
        FUZZ_CHECK(e->parent >= -1 && e->parent < doc->nelems && e->parent != i);
        FUZZ_CHECK(e->first_child >= -1 && e->first_child < doc->nelems);
        FUZZ_CHECK(e->next_sibling >= -1 && e->next_sibling < doc->nelems);
        FUZZ_CHECK(e->nattrs >= 0 && e->nattrs <= AC_TOPO_XML_MAX_ATTRS);
        for (int a = 0; a < e->nattrs; a++) {
            FUZZ_CHECK(e->attrs[a].name != NULL && e->attrs[a].value != NULL);
            FUZZ_CHECK(strlen(e->attrs[a].value) <= AC_TOPO_XML_VALUE_MAX);
            FUZZ_CHECK(ac_topo_xml_attr(e, e->attrs[a].name) != NULL);
        }
    }
    FUZZ_CHECK(doc->elems[0].parent == -1);
}

static void roundtrip(const struct ac_topo *t)
{
    char *x1 = NULL, *x2 = NULL;
    size_t n1 = 0, n2 = 0;
    struct ac_topo *t2 = NULL;
    FUZZ_CHECK(ac_topo_to_xml(t, &x1, &n1) == ncclSuccess);
    FUZZ_CHECK(ac_topo_load_xml(x1, n1, "canonical", &t2) == ncclSuccess);
    FUZZ_CHECK(ac_topo_to_xml(t2, &x2, &n2) == ncclSuccess);
    FUZZ_CHECK(n1 == n2 && memcmp(x1, x2, n1) == 0);
    FUZZ_CHECK(t2->nnodes == t->nnodes && t2->ngpus == t->ngpus && t2->nnics == t->nnics);
    ac_topo_free(t2);
    free(x1);
    free(x2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ac_topo_xml_doc doc;
    struct ac_topo *t = NULL;
    if (ac_topo_xml_parse((const char *)data, size, "fuzz", &doc) == ncclSuccess) {
        walk(&doc);
        ac_topo_xml_free(&doc);
    }
    if (ac_topo_load_xml((const char *)data, size, "fuzz", &t) == ncclSuccess) {
        roundtrip(t);
        ac_topo_free(t);
    }
    return 0;
}
