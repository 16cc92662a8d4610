/* Error propagation for every internal call. ncclResult_t is the one error type inside and out;
 * AC_FAIL is called once, where an error is decided, and writes the user's message into the
 * last-error buffer that ncclGetLastError returns. */
#ifndef AC_COMMON_CHECK_H
#define AC_COMMON_CHECK_H

#include "nccl.h"
#include "common/log.h"

#include <errno.h>
#include <string.h>

/* Records the message for ncclGetLastError (this thread's and the process-wide copy) and logs it
 * at WARN. Returns res so that AC_FAIL can be used as an expression. */
ncclResult_t ac_set_error(ncclResult_t res, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The last message recorded by this thread, else the process-wide one; "" when none. */
const char *ac_last_error(void);
void ac_clear_error(void);
/* Puts back a message saved from ac_last_error() (no log line): clean-up after a failure may
 * raise errors of its own that must not hide the one the caller reports. */
void ac_restore_error(const char *msg);

#define AC_FAIL(res, ...) ac_set_error((res), __FILE__, __LINE__, __VA_ARGS__)

/* what: a short phrase ("connect to 10.0.0.2:4000"); errno is read before anything else runs. */
#define AC_SYSFAIL(what)                                                                     \
    ac_set_error(ncclSystemError, __FILE__, __LINE__, "%s failed: %s", (what), strerror(errno))

#define AC_CHECK(call)                                                                        \
    do {                                                                                      \
        ncclResult_t ac_res_ = (call);                                                        \
        if (ac_res_ != ncclSuccess && ac_res_ != ncclInProgress) {                            \
            AC_TRACE(AC_SUB_ALL, "%s:%d -> %d", __FILE__, __LINE__, (int)ac_res_);            \
            return ac_res_;                                                                   \
        }                                                                                     \
    } while (0)

#define AC_CHECK_GOTO(call, res, label)                                                       \
    do {                                                                                      \
        (res) = (call);                                                                       \
        if ((res) != ncclSuccess && (res) != ncclInProgress) {                                \
            AC_TRACE(AC_SUB_ALL, "%s:%d -> %d", __FILE__, __LINE__, (int)(res));              \
            goto label;                                                                       \
        }                                                                                     \
    } while (0)

#endif
