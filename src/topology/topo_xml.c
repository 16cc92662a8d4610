/* The topology file reader: a one-pass scanner over a bounded input that builds an element tree.
 * Every read goes through peek_at (bounds-checked), every copy through arena_put (bounded by the
 * arena, sized from the input), so malformed input can only produce an error message. */
#include "topology/topo_xml.h"

#include "common/check.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct scanner {
    const char *s;
    size_t len, pos;
    int line;
    struct ac_topo_xml_doc *doc;
};

static int peek_at(const struct scanner *sc, size_t ahead)
{
    return sc->pos + ahead < sc->len ? (unsigned char)sc->s[sc->pos + ahead] : -1;
}

static void advance(struct scanner *sc, size_t n)
{
    for (size_t i = 0; i < n && sc->pos < sc->len; i++, sc->pos++) {
        if (sc->s[sc->pos] == '\n')
            sc->line++;
    }
}

static bool starts_with(const struct scanner *sc, const char *lit)
{
    size_t n = strlen(lit);
    return sc->len - sc->pos >= n && memcmp(sc->s + sc->pos, lit, n) == 0;
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_space(struct scanner *sc)
{
    while (is_space(peek_at(sc, 0)))
        advance(sc, 1);
}

static bool is_name_char(int c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':')
        return true;
    return !first && ((c >= '0' && c <= '9') || c == '-' || c == '.');
}

#define SCAN_FAIL(sc, fmt, ...)                                                                    \
    AC_FAIL(ncclInvalidUsage, "topology file %s, line %d: " fmt, (sc)->doc->what, (sc)->line,      \
            __VA_ARGS__)

/* Appends n bytes and a terminator; returns the copy's offset. The arena is sized so that
 * decoded text (never longer than its source) always fits; the check stays as a guard. */
static ncclResult_t arena_put(struct scanner *sc, const char *src, size_t n, size_t *off_out)
{
    struct ac_topo_xml_doc *doc = sc->doc;
    if (doc->arena_len + n + 1 > doc->arena_cap)
        return SCAN_FAIL(sc, "%s", "document too large");
    memcpy(doc->arena + doc->arena_len, src, n);
    doc->arena[doc->arena_len + n] = '\0';
    *off_out = doc->arena_len;
    doc->arena_len += n + 1;
    return ncclSuccess;
}

/* Names are stored as arena offsets while parsing (the arena never moves: it is sized up front)
 * and turned into pointers at once. */
static ncclResult_t scan_name(struct scanner *sc, const char *what, const char **out)
{
    size_t start = sc->pos, n = 0, off;
    if (!is_name_char(peek_at(sc, 0), true))
        return SCAN_FAIL(sc, "expected %s name, found %s", what,
                         peek_at(sc, 0) < 0 ? "end of file" : "another character");
    while (is_name_char(peek_at(sc, 0), false)) {
        if (++n > AC_TOPO_XML_NAME_MAX)
            return SCAN_FAIL(sc, "%s name longer than %d characters", what, AC_TOPO_XML_NAME_MAX);
        advance(sc, 1);
    }
    AC_CHECK(arena_put(sc, sc->s + start, n, &off));
    *out = sc->doc->arena + off;
    return ncclSuccess;
}

static const struct {
    const char *ent;
    char ch;
} entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};

/* Decodes one entity at sc->pos into *ch. Numeric references are accepted for ASCII only. */
static ncclResult_t scan_entity(struct scanner *sc, char *ch)
{
    for (size_t i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
        if (starts_with(sc, entities[i].ent)) {
            advance(sc, strlen(entities[i].ent));
            *ch = entities[i].ch;
            return ncclSuccess;
        }
    }
    if (starts_with(sc, "&#")) {
        bool hex = peek_at(sc, 2) == 'x';
        long v = 0;
        size_t i = hex ? 3 : 2, ndigits = 0;
        for (int c; (c = peek_at(sc, i)) != ';' && ndigits < 8; i++, ndigits++) {
            int d = c >= '0' && c <= '9'          ? c - '0'
                    : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                  : -1;
            if (d < 0)
                break;
            v = v * (hex ? 16 : 10) + d;
        }
        if (peek_at(sc, i) == ';' && ndigits > 0 && v >= 0x20 && v < 0x7f) {
            advance(sc, i + 1);
            *ch = (char)v;
            return ncclSuccess;
        }
    }
    return SCAN_FAIL(sc, "%s",
                     "unknown or malformed entity after '&' (use &amp; &lt; &gt; "
                     "&quot; &apos; or an ASCII &#N;)");
}

static ncclResult_t scan_value(struct scanner *sc, const char *attr, const char **out)
{
    int quote = peek_at(sc, 0);
    char buf[AC_TOPO_XML_VALUE_MAX];
    size_t n = 0, off;
    if (quote != '"' && quote != '\'')
        return SCAN_FAIL(sc, "value of attribute %s must be quoted", attr);
    advance(sc, 1);
    for (int c; (c = peek_at(sc, 0)) != quote;) {
        if (c < 0)
            return SCAN_FAIL(sc, "end of file inside the value of attribute %s", attr);
        if (c == '<' || c == '\0')
            return SCAN_FAIL(sc, "'%s' inside the value of attribute %s", c ? "<" : "NUL", attr);
        if (n == sizeof(buf))
            return SCAN_FAIL(sc, "value of attribute %s longer than %d characters", attr,
                             AC_TOPO_XML_VALUE_MAX);
        if (c == '&') {
            AC_CHECK(scan_entity(sc, &buf[n++]));
        } else {
            buf[n++] = (char)c;
            advance(sc, 1);
        }
    }
    advance(sc, 1);
    AC_CHECK(arena_put(sc, buf, n, &off));
    *out = sc->doc->arena + off;
    return ncclSuccess;
}

static ncclResult_t scan_attrs(struct scanner *sc, struct ac_topo_xml_elem *e)
{
    for (;;) {
        bool had_space = is_space(peek_at(sc, 0));
        skip_space(sc);
        int c = peek_at(sc, 0);
        if (c == '>' || c == '/' || c < 0)
            return ncclSuccess;
        if (!had_space)
            return SCAN_FAIL(sc, "expected a space before an attribute of <%s>", e->name);
        if (e->nattrs == AC_TOPO_XML_MAX_ATTRS)
            return SCAN_FAIL(sc, "<%s> has more than %d attributes", e->name,
                             AC_TOPO_XML_MAX_ATTRS);
        struct ac_topo_xml_attr *a = &e->attrs[e->nattrs];
        AC_CHECK(scan_name(sc, "attribute", &a->name));
        if (ac_topo_xml_attr(e, a->name) != NULL)
            return SCAN_FAIL(sc, "attribute %s given twice in <%s>", a->name, e->name);
        skip_space(sc);
        if (peek_at(sc, 0) != '=')
            return SCAN_FAIL(sc, "expected '=' after attribute %s of <%s>", a->name, e->name);
        advance(sc, 1);
        skip_space(sc);
        AC_CHECK(scan_value(sc, a->name, &a->value));
        e->nattrs++;
    }
}

static ncclResult_t new_elem(struct scanner *sc, int parent, int *index_out)
{
    struct ac_topo_xml_doc *doc = sc->doc;
    if (doc->nelems == AC_TOPO_XML_MAX_ELEMS)
        return SCAN_FAIL(sc, "more than %d elements", AC_TOPO_XML_MAX_ELEMS);
    if (doc->nelems == doc->cap) {
        int cap = doc->cap ? doc->cap * 2 : 64;
        void *p = realloc(doc->elems, sizeof(doc->elems[0]) * (size_t)cap);
        if (p == NULL)
            return AC_FAIL(ncclSystemError, "out of memory reading topology file %s", doc->what);
        doc->elems = p;
        doc->cap = cap;
    }
    int i = doc->nelems++;
    struct ac_topo_xml_elem *e = &doc->elems[i];
    memset(e, 0, sizeof(*e));
    e->line = sc->line;
    e->parent = parent;
    e->first_child = e->last_child = e->next_sibling = -1;
    if (parent >= 0) {
        struct ac_topo_xml_elem *p = &doc->elems[parent];
        if (p->last_child >= 0)
            doc->elems[p->last_child].next_sibling = i;
        else
            p->first_child = i;
        p->last_child = i;
    }
    *index_out = i;
    return ncclSuccess;
}

/* At '<' of a start tag. *cur is the open element, updated when this one stays open. */
static ncclResult_t scan_start_tag(struct scanner *sc, int *cur, int *depth)
{
    int i = -1;
    if (*cur < 0 && sc->doc->nelems > 0)
        return SCAN_FAIL(sc, "%s", "a second top-level element (only one <system> is allowed)");
    if (*depth == AC_TOPO_XML_MAX_DEPTH)
        return SCAN_FAIL(sc, "elements nested deeper than %d", AC_TOPO_XML_MAX_DEPTH);
    AC_CHECK(new_elem(sc, *cur, &i));
    advance(sc, 1);
    struct ac_topo_xml_elem *e = &sc->doc->elems[i];
    AC_CHECK(scan_name(sc, "element", &e->name));
    AC_CHECK(scan_attrs(sc, e));
    if (starts_with(sc, "/>")) {
        advance(sc, 2);
        return ncclSuccess;
    }
    if (peek_at(sc, 0) != '>')
        return SCAN_FAIL(sc, "start tag <%s> is not closed with '>' or '/>'", e->name);
    advance(sc, 1);
    *cur = i;
    (*depth)++;
    return ncclSuccess;
}

static ncclResult_t scan_end_tag(struct scanner *sc, int *cur, int *depth)
{
    const char *name;
    advance(sc, 2);
    AC_CHECK(scan_name(sc, "element", &name));
    skip_space(sc);
    if (peek_at(sc, 0) != '>')
        return SCAN_FAIL(sc, "end tag </%s> is not closed with '>'", name);
    if (*cur < 0)
        return SCAN_FAIL(sc, "end tag </%s> without a start tag", name);
    const struct ac_topo_xml_elem *open = &sc->doc->elems[*cur];
    if (strcmp(open->name, name) != 0)
        return SCAN_FAIL(sc, "end tag </%s> does not match <%s> opened at line %d", name,
                         open->name, open->line);
    advance(sc, 1);
    *cur = open->parent;
    (*depth)--;
    return ncclSuccess;
}

static ncclResult_t skip_until(struct scanner *sc, const char *end, const char *what)
{
    int line = sc->line;
    while (!starts_with(sc, end)) {
        if (sc->pos >= sc->len)
            return AC_FAIL(ncclInvalidUsage, "topology file %s, line %d: %s is never closed",
                           sc->doc->what, line, what);
        advance(sc, 1);
    }
    advance(sc, strlen(end));
    return ncclSuccess;
}

static ncclResult_t scan_markup(struct scanner *sc, int *cur, int *depth)
{
    if (starts_with(sc, "<?"))
        return skip_until(sc, "?>", "processing instruction <?");
    if (starts_with(sc, "<!--"))
        return skip_until(sc, "-->", "comment <!--");
    if (starts_with(sc, "<!"))
        return SCAN_FAIL(sc, "%s", "DOCTYPE and CDATA are not supported");
    if (starts_with(sc, "</"))
        return scan_end_tag(sc, cur, depth);
    return scan_start_tag(sc, cur, depth);
}

static ncclResult_t scan_document(struct scanner *sc)
{
    int cur = -1, depth = 0;
    while (sc->pos < sc->len) {
        int c = peek_at(sc, 0);
        if (is_space(c)) {
            advance(sc, 1);
        } else if (c == '<') {
            AC_CHECK(scan_markup(sc, &cur, &depth));
        } else {
            return SCAN_FAIL(sc, "%s",
                             "text outside tags (only elements and attributes are "
                             "allowed)");
        }
    }
    if (cur >= 0) {
        const struct ac_topo_xml_elem *open = &sc->doc->elems[cur];
        return SCAN_FAIL(sc, "end of file: <%s> opened at line %d is not closed", open->name,
                         open->line);
    }
    if (sc->doc->nelems == 0)
        return SCAN_FAIL(sc, "%s", "no element (expected <system version=\"1\">)");
    return ncclSuccess;
}

ncclResult_t ac_topo_xml_parse(const char *text, size_t len, const char *what,
                               struct ac_topo_xml_doc *doc)
{
    memset(doc, 0, sizeof(*doc));
    doc->what = what != NULL ? what : "(memory)";
    if (text == NULL)
        return AC_FAIL(ncclInvalidArgument, "topology text of %s is NULL", doc->what);
    if (len > AC_TOPO_XML_MAX_BYTES)
        return AC_FAIL(ncclInvalidUsage, "topology file %s is %zu bytes; at most %u are read",
                       doc->what, len, AC_TOPO_XML_MAX_BYTES);
    doc->arena_cap = len + 1;
    doc->arena = malloc(doc->arena_cap);
    if (doc->arena == NULL)
        return AC_FAIL(ncclSystemError, "out of memory reading topology file %s", doc->what);
    struct scanner sc = {.s = text, .len = len, .pos = 0, .line = 1, .doc = doc};
    ncclResult_t res = scan_document(&sc);
    if (res != ncclSuccess) {
        const char *w = doc->what;
        ac_topo_xml_free(doc);
        doc->what = w;
    }
    return res;
}

void ac_topo_xml_free(struct ac_topo_xml_doc *doc)
{
    free(doc->elems);
    free(doc->arena);
    memset(doc, 0, sizeof(*doc));
}

const char *ac_topo_xml_attr(const struct ac_topo_xml_elem *e, const char *name)
{
    for (int i = 0; i < e->nattrs; i++) {
        if (e->attrs[i].name != NULL && strcmp(e->attrs[i].name, name) == 0)
            return e->attrs[i].value;
    }
    return NULL;
}
