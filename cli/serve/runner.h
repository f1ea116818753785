/* runner — runs for the servers (`rlm serve`, `rlm mcp`): at most max_runs
 * at once, later requests waiting in a bounded queue (first come, first
 * served, each at most queue_timeout), every run on a thread of its own
 * with its events handed to a hook, cancellation from any thread that
 * holds until the run ends, and a drain that refuses new runs, lets the
 * running ones finish and cancels what is left at a deadline. Built on the
 * public API (include/rlm.h) only.
 *
 * Ownership: runner_new's runner is freed by runner_free once every job is
 * freed. job_start takes the rlm handle; job_free joins the run's thread
 * and frees the handle. Strings a job returns are borrowed from it. */
#ifndef RLM_SERVE_RUNNER_H
#define RLM_SERVE_RUNNER_H

#include <stdatomic.h>
#include <stddef.h>

#include "rlm.h"

typedef struct runner runner;

typedef struct runner_options {
    int max_runs;              /* runs at once (>= 1) */
    int max_queue;             /* requests waiting for a slot at most (>= 0) */
    double queue_timeout;      /* seconds one may wait (> 0) */
} runner_options;

runner *runner_new(const runner_options *o);
void runner_free(runner *rn);

typedef enum runner_admit {
    RUNNER_ADMITTED = 0,       /* a slot is the caller's: job_start or runner_release */
    RUNNER_FULL,               /* every slot busy and the queue full */
    RUNNER_TIMEOUT,            /* waited queue_timeout without a slot */
    RUNNER_DRAINING,           /* the server is shutting down */
    RUNNER_GONE,               /* *gone turned non-zero while waiting */
} runner_admit;

/* Takes a run slot, waiting in the queue for one when all are busy. gone
 * (may be NULL) is looked at every 100 ms: the client left. *waited is set
 * to the seconds waited; *retry_after to a sensible Retry-After for a
 * refusal (whole seconds, 1-60, from how long runs take). */
runner_admit runner_acquire(runner *rn, const atomic_int *gone, double *waited, int *retry_after);
/* Gives back a slot that no job took. */
void runner_release(runner *rn);

/* 1 once runner_drain has begun. */
int runner_draining(runner *rn);

/* Runs in flight and requests queued, now. */
void runner_counts(runner *rn, int *in_flight, int *queued);

typedef struct job job;

/* Called for every event of the job's run, on the run's threads (rlm.h's
 * rule: quick, nothing kept past the call). */
typedef void (*job_event_fn)(void *ctx, const rlm_event *ev);

/* Asks question (copied) on r, on a new thread, in the slot the caller
 * took with runner_acquire (given back when the run ends). Takes r. event
 * may be NULL. NULL when the drain has begun (runner_draining) or no thread
 * can be started: the slot and r are released. */
job *job_start(runner *rn, rlm *r, const char *question, job_event_fn event, void *ctx);

/* Waits at most seconds (< 0: for ever) for the run to end: 1 when it has. */
int job_wait(job *j, double seconds);

/* Cancels the run (rlm_cancel), from any thread, and keeps it cancelled
 * until it ends: a cancel that comes just before rlm_ask starts is applied
 * again at its first event. */
void job_cancel(job *j);
int job_cancelled(const job *j);

/* After job_wait returned 1: the outcome. The answer (NULL without one)
 * and its length, the report (rlm_report_json's text, or NULL), the error
 * message, the warnings, and how long the run took. */
rlm_status job_status(const job *j);
const char *job_answer(const job *j, size_t *len);
const char *job_report(const job *j);
const char *job_error(const job *j);
const char *job_warnings(const job *j);
double job_seconds(const job *j);

/* Waits for the run to end (cancel it first to hurry it), joins its thread
 * and frees everything. NULL is a no-op. */
void job_free(job *j);

/* Refuses new runs from now on (RUNNER_DRAINING, also for those queued);
 * the runs in flight go on. */
void runner_begin_drain(runner *rn);

/* Refuses new runs (RUNNER_DRAINING, also for those queued), waits up to
 * timeout seconds for the running ones to finish, then cancels the rest
 * and waits for them. Returns how many were cancelled. */
int runner_drain(runner *rn, double timeout);

#endif
