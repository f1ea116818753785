/* fakelm_spawn — starting the fake model server from a unit test, shared by
 * the tests that talk to it over HTTP. Include after cmocka.h. */
#ifndef RLM_TEST_FAKELM_SPAWN_H
#define RLM_TEST_FAKELM_SPAWN_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Starts fakelm with argv (argv[0] is its path; the arguments must include
 * --port-file port_path) and waits until it has written its port. The
 * child gets SIGTERM if this process dies, so a crashed test leaves no
 * server behind; its stderr goes to log_path, shown when it fails to
 * start. Returns its pid with *port set; fails the test otherwise. */
static pid_t fakelm_spawn(const char *const *argv, const char *port_path, const char *log_path,
                          int *port)
{
    *port = 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int out = open("/dev/null", O_WRONLY);
        int err = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
            _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 1000 && *port == 0; i++) {
        FILE *f = fopen(port_path, "r");
        if (f) {
            if (fscanf(f, "%d", port) != 1)
                *port = 0;
            fclose(f);
        }
        if (*port != 0)
            break;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            char text[512] = "";
            FILE *e = fopen(log_path, "r");
            if (e) {
                size_t n = fread(text, 1, sizeof text - 1, e);
                text[n] = '\0';
                fclose(e);
            }
            fail_msg("fakelm exited early (status %d): %s", status, text);
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000000L}, NULL);
    }
    assert_true(*port > 0);
    return pid;
}

#endif
