/* Calls on streams: collectives and point-to-point calls with a cudaStream_t / hipStream_t, or on
 * GPU buffers, with NCCL's semantics (the call returns once the work is ordered on the stream).
 * v1 stages through pinned host memory and runs the host engine in a proxy thread per
 * communicator; see src/core/stream.c and docs/gpu.md. */
#ifndef AC_CORE_STREAM_H
#define AC_CORE_STREAM_H

#include "core/enqueue.h"

/* The backend a call is ordered on: NULL for host buffers with a NULL stream (the host path);
 * the backend of GPU buffers; the first usable GPU backend for host buffers with a stream. Fails
 * (ncclInvalidUsage, with why) for a stream when no GPU backend is usable, or for buffers of two
 * different GPU backends. reads / writes: whether this rank uses sendbuff / recvbuff. */
ncclResult_t ac_stream_pick_backend(const void *sendbuff, bool reads, const void *recvbuff,
                                    bool writes, void *stream, const struct ac_backend **be_out);

/* Orders the operations of ops (a list, every one with a backend; one call or one group) on their
 * streams and queues them for their communicators' proxy threads, which run them together once
 * every input is staged. Returns without waiting for them. The list is copied. */
ncclResult_t ac_stream_submit(const struct ac_op *ops);

/* Waits until the proxy of comm has run every call queued so far (their streams may still be
 * copying results out). For host calls, which must not overlap a call on a stream. */
void ac_stream_drain(struct ncclComm *comm);

/* ncclCommDestroy / ncclCommAbort: runs what is queued (or, after an abort, releases the streams
 * without running it), stops the proxy, frees the staging memory. */
void ac_stream_free(struct ncclComm *comm);

#endif
