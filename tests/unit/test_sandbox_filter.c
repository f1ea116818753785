/* test_sandbox_filter — the seccomp floor on its own, called with raw system
 * calls in a forked process that loads it (no Python in the way): every way
 * to have the kernel signal another process is refused — fcntl F_SETOWN,
 * F_SETOWN_EX, F_SETSIG, F_SETLEASE, F_NOTIFY, O_ASYNC through F_SETFL;
 * ioctl FIOSETOWN, SIOCSPGRP, FIOASYNC and the terminal's job-control and
 * signal requests, even with high bits set in the command word (the kernel
 * reads an unsigned int) — as are renicing or pinning other processes and
 * System V IPC objects, while the same calls on this process, and the
 * harmless commands, still work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lockdown.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kd.h>
#include <linux/seccomp.h>
#include <linux/sockios.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The result of one call in the filtered process: 0, or its errno. */
typedef long (*probe_fn)(int arg);

static int fds[4]; /* a pipe's ends, then a socketpair's */

static long errno_of(long rc) { return rc < 0 ? errno : 0; }

static long p_setown(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_SETOWN, (long)getppid())); }
static long p_setown_ex(int a)
{
    struct f_owner_ex owner = {.type = F_OWNER_PID, .pid = getppid()};
    return errno_of(syscall(SYS_fcntl, fds[a], F_SETOWN_EX, &owner));
}
static long p_setsig(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_SETSIG, (long)SIGKILL)); }
static long p_async(int a)
{
    long fl = syscall(SYS_fcntl, fds[a], F_GETFL);
    return errno_of(syscall(SYS_fcntl, fds[a], F_SETFL, fl | O_ASYNC));
}
static long p_setown_high(int a)
{
    return errno_of(syscall(SYS_fcntl, fds[a], (1UL << 32) | F_SETOWN, (long)getppid()));
}
static long p_lease(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_SETLEASE, (long)F_RDLCK)); }
static long p_notify(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_NOTIFY, (long)DN_ACCESS)); }
static long p_fiosetown(int a)
{
    int pid = getppid();
    return errno_of(syscall(SYS_ioctl, fds[a], FIOSETOWN, &pid));
}
static long p_siocspgrp(int a)
{
    int pid = getppid();
    return errno_of(syscall(SYS_ioctl, fds[a], SIOCSPGRP, &pid));
}
static long p_fioasync(int a)
{
    int on = 1;
    return errno_of(syscall(SYS_ioctl, fds[a], FIOASYNC, &on));
}
static long p_fioasync_high(int a)
{
    int on = 1;
    return errno_of(syscall(SYS_ioctl, fds[a], (1UL << 32) | FIOASYNC, &on));
}
static long p_tty(int request)
{
    int arg = 0;
    return errno_of(syscall(SYS_ioctl, 2, (unsigned long)(unsigned)request, &arg));
}
static long p_setpriority_other(int a)
{
    return errno_of(syscall(SYS_setpriority, PRIO_PROCESS, getppid(), 19));
}
static long p_setpriority_user(int a) { return errno_of(syscall(SYS_setpriority, PRIO_USER, 0, 19)); }
static long p_affinity_other(int a)
{
    unsigned long mask = 1;
    return errno_of(syscall(SYS_sched_setaffinity, getppid(), sizeof mask, &mask));
}
static long p_shmctl(int a) { return errno_of(syscall(SYS_shmctl, 0, IPC_RMID, NULL)); }
static long p_shmat(int a) { return errno_of(syscall(SYS_shmat, 0, NULL, SHM_RDONLY)); }
static long p_kill_parent(int a) { return errno_of(syscall(SYS_kill, getppid(), 0)); }

/* What must keep working. */
static long p_getfl(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_GETFL)); }
static long p_nonblock(int a)
{
    long fl = syscall(SYS_fcntl, fds[a], F_GETFL);
    return errno_of(syscall(SYS_fcntl, fds[a], F_SETFL, fl | O_NONBLOCK));
}
static long p_getown(int a) { return errno_of(syscall(SYS_fcntl, fds[a], F_GETOWN)); }
static long p_fionread(int a)
{
    int n;
    return errno_of(syscall(SYS_ioctl, fds[a], FIONREAD, &n));
}
static long p_kill_self(int a) { return errno_of(syscall(SYS_kill, getpid(), 0)); }
static long p_nice_self(int a) { return errno_of(syscall(SYS_setpriority, PRIO_PROCESS, 0, 1)); }

/* Runs probe(arg) in a child that loads the filter first; returns what the
 * probe returned (0 or an errno), or -1 if the child died another way. */
static long filtered(probe_fn probe, int arg)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        sandbox_filter filter;
        char err[256];
        if (sandbox_filter_build(getpid(), &filter, err, sizeof err) != 0 ||
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            _exit(90);
        struct sock_fprog prog = {.len = filter.len, .filter = filter.code};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
            _exit(91);
        long result = probe(arg);
        if (write(pipefd[1], &result, sizeof result) != sizeof result)
            _exit(92);
        _exit(0);
    }
    close(pipefd[1]);
    long result = -1;
    if (read(pipefd[0], &result, sizeof result) != sizeof result)
        result = -1;
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? result : -1;
}

static int setup(void **state)
{
    if (pipe(fds) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds + 2) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    return 0;
}

static void test_signal_owners_refused(void **state)
{
    static const probe_fn refused[] = {p_setown, p_setown_ex, p_setsig, p_async, p_setown_high,
                                       p_lease,  p_notify,    p_fiosetown, p_siocspgrp,
                                       p_fioasync, p_fioasync_high};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        for (int fd = 0; fd < 4; fd++) {
            long rc = filtered(refused[i], fd);
            if (rc != EPERM)
                print_message("probe %zu on fd %d: %ld\n", i, fd, rc);
            assert_int_equal(rc, EPERM);
        }
}

static void test_terminal_requests_refused(void **state)
{
    static const unsigned requests[] = {TIOCSPGRP, TIOCSCTTY, TIOCNOTTY, TIOCSIG,  TIOCSTI,
                                        TIOCSWINSZ, TIOCVHANGUP, TIOCCONS, TIOCLINUX, TIOCSETD,
                                        KDSIGACCEPT};
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++)
        assert_int_equal(filtered(p_tty, (int)requests[i]), EPERM);
}

static void test_other_processes_refused(void **state)
{
    assert_int_equal(filtered(p_setpriority_other, 0), EPERM);
    assert_int_equal(filtered(p_setpriority_user, 0), EPERM);
    assert_int_equal(filtered(p_affinity_other, 0), EPERM);
    assert_int_equal(filtered(p_kill_parent, 0), EPERM);
    assert_int_equal(filtered(p_shmctl, 0), EPERM);
    assert_int_equal(filtered(p_shmat, 0), EPERM);
}

static void test_harmless_calls_work(void **state)
{
    for (int fd = 0; fd < 4; fd++) {
        assert_int_equal(filtered(p_getfl, fd), 0);
        assert_int_equal(filtered(p_nonblock, fd), 0);
        assert_int_equal(filtered(p_getown, fd), 0);
        assert_int_equal(filtered(p_fionread, fd), 0);
    }
    assert_int_equal(filtered(p_kill_self, 0), 0);
    assert_int_equal(filtered(p_nice_self, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_owners_refused),
        cmocka_unit_test(test_terminal_requests_refused),
        cmocka_unit_test(test_other_processes_refused),
        cmocka_unit_test(test_harmless_calls_work),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
