/* fdpass — passing open descriptors over a Unix socket (SCM_RIGHTS), the one
 * way both sides of the sandbox do it: the host hands a child its inputs,
 * snapshots and a zygote's fork requests, and its search-index service
 * answers the child with an index; the child takes them. Each message is one
 * byte (the sender's tag: a status, or 0) with the descriptors attached, so
 * it can follow a frame (frame.h) on the same socket.
 *
 * Ownership: fd_send borrows the descriptors (the receiver gets its own
 * copies); the descriptors fd_recv returns are the caller's to close, and it
 * closes any beyond what the caller asked for. */
#ifndef RLM_FDPASS_H
#define RLM_FDPASS_H

#include <stddef.h>

/* Most descriptors one message carries. */
#define FDPASS_MAX 4

/* Sends the byte `tag` with n (0..FDPASS_MAX) descriptors attached. EINTR is
 * retried; a closed peer is an error, not SIGPIPE. 0, or -1 with err set. */
int fd_send(int sock, char tag, const int *fds, int n, char *err, size_t errlen);

/* Receives one byte into *tag (may be NULL) and the descriptors attached to
 * it (close-on-exec), up to max (at most FDPASS_MAX) into fds; any others
 * are closed. Blocks; EINTR is retried. Returns how many descriptors came
 * (0 or more), or -1 when the byte did not (end of stream or an error). */
int fd_recv(int sock, char *tag, int *fds, int max);

#endif
