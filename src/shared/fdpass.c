/* fdpass — one byte and up to FDPASS_MAX descriptors per message, sent and
 * received with sendmsg/recvmsg (fdpass.h). */
#include "fdpass.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Room for FDPASS_MAX descriptors, aligned as a cmsghdr must be. */
typedef union fd_control {
    char buf[CMSG_SPACE(FDPASS_MAX * sizeof(int))];
    struct cmsghdr align;
} fd_control;

int fd_send(int sock, char tag, const int *fds, int n, char *err, size_t errlen)
{
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    fd_control control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n < 0 || n > FDPASS_MAX) {
        snprintf(err, errlen, "cannot pass %d descriptors at once", n);
        return -1;
    }
    if (n > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE((size_t)n * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)n * sizeof(int));
    }
    ssize_t sent;
    while ((sent = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (sent != 1) {
        snprintf(err, errlen, "cannot pass descriptors: %s",
                 sent < 0 ? strerror(errno) : "short write");
        return -1;
    }
    return 0;
}

int fd_recv(int sock, char *tag, int *fds, int max)
{
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    fd_control control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return -1;
    if (tag)
        *tag = byte;
    int count = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (count < max)
                fds[count++] = fd;
            else
                close(fd);
        }
    }
    return count;
}
