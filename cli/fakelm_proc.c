/* fakelm_proc — starting and stopping the fake model server for `rlm bench
 * --fake` and `rlm demo`: found next to the rlm executable (or in the
 * installed libexec/rlm), spawned with posix_spawn, ready once it has
 * written its port file. */
#include "fakelm_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

#define FAKE_START_SECONDS 60.0 /* a 100M-token key takes a while to index */

#ifndef RLM_HELPERS_FROM_BINDIR
#define RLM_HELPERS_FROM_BINDIR "../libexec/rlm"
#endif

/* fakelm lives next to the rlm executable (the build directory), or in the
 * installed tree's libexec/rlm relative to it. */
static int helper_exe(const char *name, char *out, size_t outlen)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    int w = snprintf(out, outlen, "%s/%s", self, name);
    if (w >= 0 && (size_t)w < outlen && access(out, X_OK) == 0)
        return 0;
    w = snprintf(out, outlen, "%s/%s/%s", self, RLM_HELPERS_FROM_BINDIR, name);
    return w < 0 || (size_t)w >= outlen || access(out, X_OK) != 0 ? -1 : 0;
}

int fakelm_proc_start(fakelm_proc *fs, const char *dir, long latency_ms, char *err, size_t errlen)
{
    char exe[4096], script[4096], port_file[4096], log[4096], latency[32];
    posix_spawn_file_actions_t actions;
    fs->pid = 0;
    if (helper_exe("fakelm", exe, sizeof exe) != 0) {
        snprintf(err, errlen, "fakelm not found next to the rlm executable nor in %s beside it",
                 RLM_HELPERS_FROM_BINDIR);
        return -1;
    }
    snprintf(script, sizeof script, "%s/script.json", dir);
    snprintf(port_file, sizeof port_file, "%s/fakelm.port", dir);
    snprintf(log, sizeof log, "%s/fakelm.log", dir);
    snprintf(latency, sizeof latency, "%ld", latency_ms);
    unlink(port_file);
    char *argv[] = {exe, "--script", script, "--port-file", port_file, "--latency-ms", latency, NULL};
    if (latency_ms < 0)
        argv[5] = NULL;   /* the script's own latency */
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    int rc = posix_spawn(&fs->pid, exe, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start fakelm: %s", strerror(rc));
        fs->pid = 0;
        return -1;
    }
    double deadline = clock_now() + FAKE_START_SECONDS;
    while (clock_now() < deadline) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            char line[32] = "";
            if (fgets(line, sizeof line, f))
                line[strcspn(line, "\n")] = '\0';
            fclose(f);
            if (parse_long(line, &fs->port) == 0)
                return 0;
        }
        if (waitpid(fs->pid, NULL, WNOHANG) == fs->pid) {
            snprintf(err, errlen, "fakelm exited at start-up (see %.700s)", log);
            fs->pid = 0;
            return -1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    snprintf(err, errlen, "fakelm did not start within %.0f s (see %.700s)", FAKE_START_SECONDS, log);
    kill(fs->pid, SIGKILL);
    waitpid(fs->pid, NULL, 0);
    fs->pid = 0;
    return -1;
}

void fakelm_proc_stop(fakelm_proc *fs)
{
    if (fs->pid <= 0)
        return;
    kill(fs->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(fs->pid, NULL, WNOHANG) == fs->pid) {
            fs->pid = 0;
            return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(fs->pid, SIGKILL);
    waitpid(fs->pid, NULL, 0);
    fs->pid = 0;
}

