/* fakelm_proc — the fake model server as a child process of the CLI, for
 * `rlm bench --fake` and `rlm demo` (simulated runs; the engine talks to it
 * over HTTP exactly as to a real provider). */
#ifndef RLM_CLI_FAKELM_PROC_H
#define RLM_CLI_FAKELM_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct fakelm_proc {
    pid_t pid;      /* 0 when nothing runs */
    long port;      /* on 127.0.0.1 */
} fakelm_proc;

/* Starts fakelm with dir/script.json, its output in dir/fakelm.log, and
 * waits for its port file. latency_ms < 0 keeps the script's own latency.
 * Returns 0, or -1 with err set (not found, exited at start-up, too slow). */
int fakelm_proc_start(fakelm_proc *fs, const char *dir, long latency_ms, char *err, size_t errlen);

/* SIGTERM, then SIGKILL if it is still there after 5 s. No-op when pid is 0. */
void fakelm_proc_stop(fakelm_proc *fs);

#endif
