/* Pure selection logic of the verbs provider (see ib_select.h): no libibverbs here. */
#include "transport/ib/ib_select.h"

#include "common/check.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_BYTES 4096u

ncclResult_t ac_ib_hca_parse(const char *spec, struct ac_ib_hca_filter *out)
{
    memset(out, 0, sizeof(*out));
    if (spec == NULL)
        return ncclSuccess;
    const char *p = spec;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '^') {
        out->is_exclude = true;
        p++;
    }
    if (*p == '=') {
        out->is_exact = true;
        p++;
    }
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        size_t name_len = colon ? (size_t)(colon - p) : len;
        int port = 0;
        if (colon != NULL) {
            char *end;
            long v = strtol(colon + 1, &end, 10);
            if (end == colon + 1 || end != p + len || v < 1 || v > 255)
                return AC_FAIL(ncclInvalidUsage,
                               "NCCL_IB_HCA=%s: bad port in \"%.*s\" (expected "
                               "name:port with port 1..255)",
                               spec, (int)len, p);
            port = (int)v;
        }
        if (name_len == 0 && len > 0)
            return AC_FAIL(ncclInvalidUsage, "NCCL_IB_HCA=%s: empty device name in \"%.*s\"", spec,
                           (int)len, p);
        if (name_len >= AC_IB_NAME_MAX || out->n == AC_IB_HCA_MAX)
            return AC_FAIL(ncclInvalidUsage,
                           "NCCL_IB_HCA=%s: too long (at most %d devices of "
                           "%d characters)",
                           spec, AC_IB_HCA_MAX, AC_IB_NAME_MAX - 1);
        if (name_len > 0) {
            memcpy(out->items[out->n].name, p, name_len);
            out->items[out->n].name[name_len] = '\0';
            out->items[out->n].port = port;
            out->n++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return ncclSuccess;
}

void ac_ib_device_order(const char *const *names, int n, const char *preferred, int *order_out)
{
    int k = 0;
    for (int i = 0; preferred != NULL && preferred[0] && i < n; i++)
        if (strcmp(names[i], preferred) == 0)
            order_out[k++] = i;
    for (int i = 0; i < n; i++)
        if (preferred == NULL || strcmp(names[i], preferred) != 0)
            order_out[k++] = i;
}

bool ac_ib_hca_match(const struct ac_ib_hca_filter *f, const char *dev, int port)
{
    if (f->n == 0)
        return true; /* unset, or "^" with nothing after it */
    bool is_listed = false;
    for (int i = 0; i < f->n && !is_listed; i++) {
        size_t n = strlen(f->items[i].name);
        bool is_name = f->is_exact ? strcmp(dev, f->items[i].name) == 0
                                   : strncmp(dev, f->items[i].name, n) == 0;
        is_listed = is_name && (f->items[i].port == 0 || f->items[i].port == port);
    }
    return f->is_exclude ? !is_listed : is_listed;
}

enum ac_ib_link ac_ib_link_parse(const char *text)
{
    if (text == NULL)
        return AC_IB_LINK_UNKNOWN;
    if (strncmp(text, "InfiniBand", 10) == 0)
        return AC_IB_LINK_IB;
    if (strncmp(text, "Ethernet", 8) == 0)
        return AC_IB_LINK_ETH;
    return AC_IB_LINK_UNKNOWN;
}

enum ac_ib_gid_type ac_ib_gid_type_parse(const char *text)
{
    if (text == NULL)
        return AC_IB_GID_UNKNOWN;
    if (strncmp(text, "RoCE v2", 7) == 0)
        return AC_IB_GID_ROCE_V2;
    if (strncmp(text, "IB/RoCE v1", 10) == 0 || strncmp(text, "RoCE v1", 7) == 0)
        return AC_IB_GID_IB_ROCE_V1;
    return AC_IB_GID_UNKNOWN;
}

enum ac_ib_gid_type ac_ib_read_gid_type(const char *devname, int port, int index)
{
    char path[256], text[32] = "";
    snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/gid_attrs/types/%d", devname,
             port, index);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return AC_IB_GID_UNKNOWN;
    if (fgets(text, sizeof(text), f) == NULL)
        text[0] = '\0';
    fclose(f);
    return ac_ib_gid_type_parse(text);
}

bool ac_ib_gid_is_zero(const uint8_t raw[16])
{
    for (int i = 0; i < 16; i++)
        if (raw[i] != 0)
            return false;
    return true;
}

bool ac_ib_gid_is_ipv4_mapped(const uint8_t raw[16])
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(raw, prefix, sizeof(prefix)) == 0;
}

static bool is_link_local(const uint8_t raw[16])
{
    return raw[0] == 0xfe && (raw[1] & 0xc0) == 0x80;
}

int ac_ib_gid_pick(const struct ac_ib_gid *gids, int ngids, enum ac_ib_link link, int override)
{
    if (override >= 0)
        return override < ngids && !ac_ib_gid_is_zero(gids[override].raw) ? override : -1;
    if (link == AC_IB_LINK_IB)
        return ngids > 0 ? 0 : -1;
    int v2_global = -1, v1 = -1;
    for (int i = 0; i < ngids; i++) {
        const struct ac_ib_gid *g = &gids[i];
        if (ac_ib_gid_is_zero(g->raw))
            continue;
        if (g->type == AC_IB_GID_ROCE_V2 && ac_ib_gid_is_ipv4_mapped(g->raw))
            return i;
        if (g->type == AC_IB_GID_ROCE_V2 && !is_link_local(g->raw) && v2_global < 0)
            v2_global = i;
        if (g->type == AC_IB_GID_IB_ROCE_V1 && v1 < 0)
            v1 = i;
    }
    return v2_global >= 0 ? v2_global : v1;
}

/* ---- registration cache ----------------------------------------------------------------- */

void ac_ib_mrcache_init(struct ac_ib_mrcache *c, ac_ib_reg_fn reg, ac_ib_dereg_fn dereg, void *ctx,
                        int max_unused)
{
    memset(c, 0, sizeof(*c));
    c->reg = reg;
    c->dereg = dereg;
    c->ctx = ctx;
    c->max_unused = max_unused;
}

static void drop_entry(struct ac_ib_mrcache *c, int i)
{
    c->dereg(c->ctx, c->entries[i].handle);
    c->entries[i] = c->entries[--c->n];
}

/* Deregisters idle entries, oldest first, until at most max_unused remain. */
static void trim(struct ac_ib_mrcache *c)
{
    for (;;) {
        int nidle = 0, oldest = -1;
        for (int i = 0; i < c->n; i++) {
            if (c->entries[i].refs > 0)
                continue;
            nidle++;
            if (oldest < 0 || c->entries[i].last_use < c->entries[oldest].last_use)
                oldest = i;
        }
        if (nidle <= c->max_unused)
            return;
        drop_entry(c, oldest);
    }
}

ncclResult_t ac_ib_mrcache_get(struct ac_ib_mrcache *c, void *addr, size_t len, void **handle_out)
{
    uintptr_t start = (uintptr_t)addr & ~(uintptr_t)(PAGE_BYTES - 1);
    uintptr_t end =
        ((uintptr_t)addr + (len ? len : 1) + PAGE_BYTES - 1) & ~(uintptr_t)(PAGE_BYTES - 1);
    for (int i = 0; i < c->n; i++) {
        struct ac_ib_mr_entry *e = &c->entries[i];
        if (e->start <= start && end <= e->end) {
            e->refs++;
            e->last_use = ++c->clock;
            c->hits++;
            *handle_out = e->handle;
            return ncclSuccess;
        }
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        struct ac_ib_mr_entry *ne = realloc(c->entries, (size_t)cap * sizeof(*ne));
        if (ne == NULL)
            return AC_FAIL(ncclSystemError, "ib: out of memory for the registration cache");
        c->entries = ne;
        c->cap = cap;
    }
    void *h;
    AC_CHECK(c->reg(c->ctx, (void *)start, end - start, &h));
    c->entries[c->n++] = (struct ac_ib_mr_entry){start, end, h, 1, ++c->clock};
    c->misses++;
    *handle_out = h;
    return ncclSuccess;
}

void ac_ib_mrcache_put(struct ac_ib_mrcache *c, void *handle)
{
    for (int i = 0; i < c->n; i++) {
        if (c->entries[i].handle == handle && c->entries[i].refs > 0) {
            c->entries[i].refs--;
            c->entries[i].last_use = ++c->clock;
            break;
        }
    }
    trim(c);
}

void ac_ib_mrcache_clear(struct ac_ib_mrcache *c)
{
    while (c->n > 0)
        drop_entry(c, c->n - 1);
    free(c->entries);
    c->entries = NULL;
    c->cap = 0;
}
