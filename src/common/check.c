/* The last-error buffers behind ncclGetLastError: one per thread, so that a thread reads its own
 * failure, and one process-wide copy for a thread that asks about an error raised elsewhere (a
 * progress thread, or ncclGetLastError(NULL) after a failure in another thread). */
#include "common/check.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#define ERROR_MAX_BYTES 1024

static __thread char thread_error[ERROR_MAX_BYTES];
static char process_error[ERROR_MAX_BYTES];
static pthread_mutex_t process_error_mutex = PTHREAD_MUTEX_INITIALIZER;

/* Recorded whatever NCCL_DEBUG says (NCCL keeps the last WARN for ncclGetLastError even when it
 * prints nothing); printed only when WARN is enabled. */
ncclResult_t ac_set_error(ncclResult_t res, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(thread_error, sizeof(thread_error), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&process_error_mutex);
    memcpy(process_error, thread_error, sizeof(process_error));
    pthread_mutex_unlock(&process_error_mutex);
    if (ac_log_enabled(AC_LOG_WARN, AC_SUB_ALL))
        ac_log_write(AC_LOG_WARN, AC_SUB_ALL, file, line, "%s", thread_error);
    return res;
}

/* The process-wide buffer is returned without a copy, as NCCL does: a concurrent failure in
 * another thread may overwrite it while the caller reads it. */
const char *ac_last_error(void)
{
    if (thread_error[0] != '\0')
        return thread_error;
    return process_error;
}

void ac_clear_error(void)
{
    thread_error[0] = '\0';
    pthread_mutex_lock(&process_error_mutex);
    process_error[0] = '\0';
    pthread_mutex_unlock(&process_error_mutex);
}

void ac_restore_error(const char *msg)
{
    snprintf(thread_error, sizeof(thread_error), "%s", msg);
    pthread_mutex_lock(&process_error_mutex);
    memcpy(process_error, thread_error, sizeof(process_error));
    pthread_mutex_unlock(&process_error_mutex);
}
