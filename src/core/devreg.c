/* Registered GPU buffers and peers' imported GPU memory, per communicator: see devreg.h.
 * Exports are keyed by the allocation (base and size from the backend's mem_range), imports by
 * (peer, handle): a handle names one allocation for its life (CUDA's legacy handles do; the cuMem
 * POSIX fd handles carry the exporter's serial number), so a buffer freed and allocated again
 * gets a new entry rather than a stale mapping. */
#include "core/devreg.h"

#include "common/check.h"
#include "common/log.h"
#include "core/comm.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct export {
    uintptr_t base;
    size_t size;
    struct ac_ipc_handle h;
    bool has_handle;
    int refs; /* registrations */
    struct export *next;
};

struct ac_devreg_reg {
    uintptr_t buff;
    size_t size;
    struct export *ex;
    struct ac_devreg_reg *next;
};

struct import {
    int peer;
    struct ac_ipc_handle h;
    void *base;
    const struct ac_backend *be;
    int refs;
    bool is_closing; /* ac_devreg_close_peer: closed at its last release */
    uint64_t idle_since;
    struct import *next;
};

struct ac_devreg {
    pthread_mutex_t lock;
    struct ac_devreg_reg *regs;
    struct export *exports;
    struct import *imports;
    uint64_t tick;
};

static struct ac_devreg *get(struct ncclComm *comm, bool is_create)
{
    struct ac_devreg *d;

    pthread_mutex_lock(&comm->reg_lock);
    if (!comm->devreg && is_create && (comm->devreg = calloc(1, sizeof *comm->devreg)))
        pthread_mutex_init(&comm->devreg->lock, NULL);
    d = comm->devreg;
    pthread_mutex_unlock(&comm->reg_lock);
    return d;
}

ncclResult_t ac_devreg_register(struct ncclComm *comm, const struct ac_backend *be, void *buff,
                                size_t size, struct ac_devreg_reg **reg_out)
{
    struct ac_devreg *d;
    struct ac_devreg_reg *reg;
    struct export *ex;
    void *base = NULL;
    size_t asize = 0;
    uintptr_t p = (uintptr_t)buff;

    if (!be->mem_range || !be->ipc_export)
        return AC_FAIL(ncclInvalidUsage, "%s backend: no device allocation ranges", be->name);
    AC_CHECK(be->mem_range(buff, &base, &asize));
    if (p < (uintptr_t)base || size > asize || p - (uintptr_t)base > asize - size)
        return AC_FAIL(ncclInvalidArgument,
                       "buffer %p of %zu bytes is not inside one device allocation (the "
                       "allocation at %p has %zu bytes): register each allocation's part "
                       "separately",
                       buff, size, base, asize);
    if (!(d = get(comm, true)) || !(reg = calloc(1, sizeof *reg)))
        return AC_FAIL(ncclSystemError, "out of memory");
    pthread_mutex_lock(&d->lock);
    for (ex = d->exports; ex && !(ex->base == (uintptr_t)base && ex->size == asize); ex = ex->next)
        ;
    if (!ex) {
        if (!(ex = calloc(1, sizeof *ex))) {
            pthread_mutex_unlock(&d->lock);
            free(reg);
            return AC_FAIL(ncclSystemError, "out of memory");
        }
        ex->base = (uintptr_t)base;
        ex->size = asize;
        ex->has_handle = be->ipc_export(base, &ex->h) == ncclSuccess;
        if (!ex->has_handle) {
            AC_INFO(AC_SUB_REG, "ncclCommRegister: allocation %p (%zu bytes) cannot be shared "
                    "with other processes (%s): registered without a handle", base, asize,
                    ac_last_error());
            ac_clear_error();
        }
        ex->next = d->exports;
        d->exports = ex;
    }
    int nrefs = ++ex->refs;
    *reg = (struct ac_devreg_reg){p, size, ex, d->regs};
    d->regs = reg;
    pthread_mutex_unlock(&d->lock);
    AC_INFO(AC_SUB_REG, "ncclCommRegister: GPU buffer %p (%zu bytes) in allocation %p (%zu bytes), "
            "%d registration(s) of it", buff, size, base, asize, nrefs);
    *reg_out = reg;
    return ncclSuccess;
}

ncclResult_t ac_devreg_deregister(struct ncclComm *comm, struct ac_devreg_reg *reg)
{
    struct ac_devreg *d = get(comm, false);
    bool is_found = false;

    if (!d)
        return AC_FAIL(ncclInvalidArgument, "no GPU buffer is registered on this communicator");
    pthread_mutex_lock(&d->lock);
    for (struct ac_devreg_reg **at = &d->regs; *at; at = &(*at)->next)
        if (*at == reg) {
            *at = reg->next;
            is_found = true;
            break;
        }
    if (is_found && --reg->ex->refs == 0) {
        for (struct export **at = &d->exports; *at; at = &(*at)->next)
            if (*at == reg->ex) {
                *at = reg->ex->next;
                break;
            }
        free(reg->ex);
    }
    pthread_mutex_unlock(&d->lock);
    if (!is_found)
        return AC_FAIL(ncclInvalidArgument, "GPU registration %p is not on this communicator",
                       (void *)reg);
    free(reg);
    return ncclSuccess;
}

ncclResult_t ac_devreg_lookup(struct ncclComm *comm, const void *ptr, size_t bytes,
                              struct ac_ipc_handle *h_out, size_t *offset_out)
{
    struct ac_devreg *d = get(comm, false);
    uintptr_t p = (uintptr_t)ptr;
    ncclResult_t res = ncclInvalidArgument;

    if (!d)
        return res;
    pthread_mutex_lock(&d->lock);
    for (struct ac_devreg_reg *r = d->regs; r; r = r->next) {
        if (!r->ex->has_handle || p < r->buff || bytes > r->size || p - r->buff > r->size - bytes)
            continue;
        *h_out = r->ex->h;
        *offset_out = p - r->ex->base;
        res = ncclSuccess;
        break;
    }
    pthread_mutex_unlock(&d->lock);
    return res;
}

/* Under d->lock: unlinks and closes im. */
static void close_import(struct ac_devreg *d, struct import *im)
{
    for (struct import **at = &d->imports; *at; at = &(*at)->next)
        if (*at == im) {
            *at = im->next;
            break;
        }
    if (im->be->ipc_close(im->base) != ncclSuccess) {
        AC_WARN("closing the mapping %p of rank %d's GPU memory failed: %s", im->base, im->peer,
                ac_last_error());
        ac_clear_error();
    }
    free(im);
}

ncclResult_t ac_devreg_import(struct ncclComm *comm, int peer, const struct ac_ipc_handle *h,
                              void **base_out)
{
    char why[256] = "";
    const struct ac_backend *be = ac_backend_first_gpu(why, sizeof why);
    struct ac_devreg *d;
    struct import *im;
    ncclResult_t res;

    if (!be)
        return AC_FAIL(ncclInvalidUsage, "no GPU backend to import a peer's memory: %s", why);
    if (peer < 0 || peer >= comm->nranks)
        return AC_FAIL(ncclInvalidArgument, "peer %d is not a rank of this communicator", peer);
    if (!(d = get(comm, true)))
        return AC_FAIL(ncclSystemError, "out of memory");
    pthread_mutex_lock(&d->lock);
    for (im = d->imports; im; im = im->next)
        if (im->peer == peer && !im->is_closing && memcmp(&im->h, h, sizeof *h) == 0)
            break;
    if (im) {
        im->refs++;
        *base_out = im->base;
        pthread_mutex_unlock(&d->lock);
        return ncclSuccess;
    }
    if (!(im = calloc(1, sizeof *im))) {
        pthread_mutex_unlock(&d->lock);
        return AC_FAIL(ncclSystemError, "out of memory");
    }
    if ((res = be->ipc_import(h, &im->base)) != ncclSuccess) {
        pthread_mutex_unlock(&d->lock);
        free(im);
        return res;
    }
    im->peer = peer;
    im->h = *h;
    im->be = be;
    im->refs = 1;
    im->next = d->imports;
    d->imports = im;
    *base_out = im->base;
    pthread_mutex_unlock(&d->lock);
    AC_INFO(AC_SUB_REG, "rank %d's GPU allocation mapped at %p", peer, im->base);
    return ncclSuccess;
}

ncclResult_t ac_devreg_release(struct ncclComm *comm, int peer, void *base)
{
    struct ac_devreg *d = get(comm, false);
    struct import *im = NULL;
    int nidle = 0;

    if (d) {
        pthread_mutex_lock(&d->lock);
        for (im = d->imports; im && !(im->peer == peer && im->base == base && im->refs > 0);
             im = im->next)
            ;
        if (im && --im->refs == 0) {
            if (im->is_closing)
                close_import(d, im);
            else
                im->idle_since = ++d->tick;
        }
        /* Beyond the bound, the import unused for the longest time goes. */
        for (struct import *i = d->imports; i; i = i->next)
            nidle += i->refs == 0;
        while (nidle-- > AC_DEVREG_MAX_IDLE) {
            struct import *oldest = NULL;
            for (struct import *i = d->imports; i; i = i->next)
                if (i->refs == 0 && (!oldest || i->idle_since < oldest->idle_since))
                    oldest = i;
            close_import(d, oldest);
        }
        pthread_mutex_unlock(&d->lock);
    }
    if (!im)
        return AC_FAIL(ncclInvalidArgument, "%p is not an import of rank %d's memory with a "
                       "reference to give back", base, peer);
    return ncclSuccess;
}

void ac_devreg_close_peer(struct ncclComm *comm, int peer)
{
    struct ac_devreg *d = get(comm, false);

    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    for (struct import *im = d->imports, *next; im; im = next) {
        next = im->next;
        if (im->peer != peer)
            continue;
        if (im->refs == 0)
            close_import(d, im);
        else
            im->is_closing = true;
    }
    pthread_mutex_unlock(&d->lock);
}

void ac_devreg_free(struct ncclComm *comm)
{
    struct ac_devreg *d = comm->devreg;

    if (!d)
        return;
    comm->devreg = NULL;
    while (d->imports)
        close_import(d, d->imports);
    while (d->regs) {
        struct ac_devreg_reg *r = d->regs;
        d->regs = r->next;
        free(r);
    }
    while (d->exports) {
        struct export *ex = d->exports;
        d->exports = ex->next;
        free(ex);
    }
    pthread_mutex_destroy(&d->lock);
    free(d);
}

void ac_devreg_get_stats(struct ncclComm *comm, struct ac_devreg_stats *out)
{
    struct ac_devreg *d = get(comm, false);

    memset(out, 0, sizeof *out);
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    for (struct ac_devreg_reg *r = d->regs; r; r = r->next)
        out->nregs++;
    for (struct export *ex = d->exports; ex; ex = ex->next)
        out->nexports++;
    for (struct import *im = d->imports; im; im = im->next) {
        out->nimports++;
        out->nidle += im->refs == 0;
        out->nrefs += im->refs;
    }
    pthread_mutex_unlock(&d->lock);
}
