/* A small XML reader for topology files: elements, attributes, comments and the <?xml?> prolog;
 * no text content, DTDs or namespaces. Everything is bounds-checked (input size, nesting depth,
 * name and value lengths, element and attribute counts) so that any input, malformed or hostile,
 * gives ncclInvalidUsage with a line number instead of a crash. Internal to src/topology. */
#ifndef AC_TOPOLOGY_TOPO_XML_H
#define AC_TOPOLOGY_TOPO_XML_H

#include "nccl.h"

#include <stddef.h>

#define AC_TOPO_XML_MAX_BYTES (4u << 20)
#define AC_TOPO_XML_MAX_ELEMS 8192
#define AC_TOPO_XML_MAX_ATTRS 24
#define AC_TOPO_XML_MAX_DEPTH 32
#define AC_TOPO_XML_NAME_MAX 64
#define AC_TOPO_XML_VALUE_MAX 1024

struct ac_topo_xml_attr {
    const char *name, *value; /* point into the document's arena, terminated */
};

struct ac_topo_xml_elem {
    const char *name;
    int line;                              /* where the start tag begins, 1-based */
    int parent, first_child, next_sibling; /* indices in elems[]; -1: none */
    int last_child;
    int nattrs;
    struct ac_topo_xml_attr attrs[AC_TOPO_XML_MAX_ATTRS];
};

struct ac_topo_xml_doc {
    struct ac_topo_xml_elem *elems; /* elems[0] is the root */
    int nelems, cap;
    char *arena; /* decoded names and values */
    size_t arena_len, arena_cap;
    const char *what; /* names the input in messages */
};

/* Parses len bytes of text into doc (exactly one root element). On failure the message names
 * `what` and the line; doc is left empty. */
ncclResult_t ac_topo_xml_parse(const char *text, size_t len, const char *what,
                               struct ac_topo_xml_doc *doc);
void ac_topo_xml_free(struct ac_topo_xml_doc *doc);
/* The value of attribute name, or NULL. */
const char *ac_topo_xml_attr(const struct ac_topo_xml_elem *e, const char *name);

#endif
