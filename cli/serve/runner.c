/* runner — run slots, the queue in front of them, a thread per run, and the
 * drain (runner.h).
 *
 * Design note. The queue is a list of waiters in arrival order. A slot
 * that frees up goes to the head waiter directly (it is marked granted and
 * woken), never back into a pool the waiters race for: so the queue is
 * first come, first served, and a waiter that gives up (timeout, client
 * gone) either leaves the list before any grant or finds it was granted
 * meanwhile and keeps the slot. The drain refuses the waiters, waits for
 * the runs with their own deadline, then cancels what is left: a
 * cancelled run ends within a second or so (the library stops the cell
 * and abandons the requests in flight). */
#include "runner.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

typedef struct waiter {
    struct waiter *next;
    int granted;
} waiter;

struct runner {
    pthread_mutex_t lock;
    pthread_cond_t changed;    /* a slot freed, a grant, a run ended, the drain began */
    runner_options o;
    int busy;                  /* slots taken (granted or running) */
    int queued;
    waiter *head, *tail;
    int draining;
    job *active;               /* runs in flight, for the drain */
    double mean_seconds;       /* of recent runs, for Retry-After */
};

struct job {
    runner *rn;
    rlm *r;
    char *question;
    job_event_fn event;
    void *ctx;
    pthread_t thread;
    int started;               /* the thread exists (join it) */
    int done;                  /* under rn->lock */
    atomic_int cancel;
    rlm_status status;
    char *answer;
    size_t answer_len;
    char *report, *error, *warnings;
    double t0, seconds;
    job *prev, *next;          /* the runner's active list */
};

runner *runner_new(const runner_options *o)
{
    runner *rn = calloc(1, sizeof *rn);
    if (!rn)
        return NULL;
    pthread_mutex_init(&rn->lock, NULL);
    pthread_cond_init(&rn->changed, NULL);
    rn->o = *o;
    if (rn->o.max_runs < 1)
        rn->o.max_runs = 1;
    rn->mean_seconds = 5;
    return rn;
}

void runner_free(runner *rn)
{
    if (!rn)
        return;
    pthread_cond_destroy(&rn->changed);
    pthread_mutex_destroy(&rn->lock);
    free(rn);
}

static void deadline_in(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long ns = ts->tv_nsec + (long)((seconds - (double)(long)seconds) * 1e9);
    ts->tv_sec += (time_t)seconds + ns / 1000000000L;
    ts->tv_nsec = ns % 1000000000L;
}

/* Under the lock: a Retry-After from how long runs take and how many are
 * ahead. */
static int retry_after_locked(const runner *rn)
{
    double ahead = (double)(rn->queued + 1) / rn->o.max_runs;
    double s = rn->mean_seconds * (ahead < 1 ? 1 : ahead);
    return s < 1 ? 1 : s > 60 ? 60 : (int)(s + 0.5);
}

static void unlink_waiter(runner *rn, waiter *w)
{
    waiter **p = &rn->head;
    waiter *prev = NULL;
    while (*p && *p != w) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = w->next;
        if (rn->tail == w)
            rn->tail = prev;
        rn->queued--;
    }
}

runner_admit runner_acquire(runner *rn, const atomic_int *gone, double *waited, int *retry_after)
{
    double t0 = clock_now();
    *waited = 0;
    pthread_mutex_lock(&rn->lock);
    *retry_after = retry_after_locked(rn);
    if (rn->draining) {
        pthread_mutex_unlock(&rn->lock);
        return RUNNER_DRAINING;
    }
    if (rn->busy < rn->o.max_runs && !rn->head) {
        rn->busy++;
        pthread_mutex_unlock(&rn->lock);
        return RUNNER_ADMITTED;
    }
    if (rn->queued >= rn->o.max_queue) {
        pthread_mutex_unlock(&rn->lock);
        return RUNNER_FULL;
    }
    waiter w = {0};
    if (rn->tail)
        rn->tail->next = &w;
    else
        rn->head = &w;
    rn->tail = &w;
    rn->queued++;
    runner_admit result = RUNNER_ADMITTED;
    while (!w.granted) {
        if (rn->draining) {
            result = RUNNER_DRAINING;
            break;
        }
        if (gone && *gone) {
            result = RUNNER_GONE;
            break;
        }
        if (clock_now() - t0 >= rn->o.queue_timeout) {
            result = RUNNER_TIMEOUT;
            break;
        }
        struct timespec ts;
        deadline_in(&ts, 0.1);
        pthread_cond_timedwait(&rn->changed, &rn->lock, &ts);
    }
    if (w.granted)
        result = RUNNER_ADMITTED;   /* granted as it gave up: it keeps the slot */
    else
        unlink_waiter(rn, &w);
    *retry_after = retry_after_locked(rn);
    pthread_mutex_unlock(&rn->lock);
    *waited = clock_now() - t0;
    return result;
}

/* Under the lock: a freed slot goes to the head waiter, else back. */
static void free_slot_locked(runner *rn)
{
    if (rn->head && !rn->draining) {
        waiter *w = rn->head;
        rn->head = w->next;
        if (!rn->head)
            rn->tail = NULL;
        rn->queued--;
        w->granted = 1;
    } else {
        rn->busy--;
    }
    pthread_cond_broadcast(&rn->changed);
}

void runner_release(runner *rn)
{
    pthread_mutex_lock(&rn->lock);
    free_slot_locked(rn);
    pthread_mutex_unlock(&rn->lock);
}

int runner_draining(runner *rn)
{
    pthread_mutex_lock(&rn->lock);
    int d = rn->draining;
    pthread_mutex_unlock(&rn->lock);
    return d;
}

void runner_counts(runner *rn, int *in_flight, int *queued)
{
    pthread_mutex_lock(&rn->lock);
    *in_flight = rn->busy;
    *queued = rn->queued;
    pthread_mutex_unlock(&rn->lock);
}

/* Under the lock: j leaves the runs in flight. */
static void active_unlink_locked(runner *rn, job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        rn->active = j->next;
    if (j->next)
        j->next->prev = j->prev;
}

/* Every event passes here first: a cancel that came before rlm_ask started
 * (and was cleared by it) is applied again. */
static void job_on_event(void *ctx, const rlm_event *ev)
{
    job *j = ctx;
    if (j->cancel)
        rlm_cancel(j->r);
    if (j->event)
        j->event(j->ctx, ev);
}

static void *job_main(void *arg)
{
    job *j = arg;
    char *answer = NULL;
    size_t len = 0;
    rlm_set_event_callback(j->r, job_on_event, j);
    rlm_status st = j->cancel ? RLM_NO_ANSWER : rlm_ask_len(j->r, j->question, &answer, &len);
    const char *report = rlm_report_json(j->r);
    j->status = st;
    j->answer = answer;
    j->answer_len = len;
    j->report = report ? strdup(report) : NULL;
    j->error = strdup(j->cancel && st != RLM_OK ? "cancelled" : rlm_errmsg(j->r));
    j->warnings = strdup(rlm_warnings(j->r));
    j->seconds = clock_now() - j->t0;
    runner *rn = j->rn;
    pthread_mutex_lock(&rn->lock);
    active_unlink_locked(rn, j);
    rn->mean_seconds = 0.8 * rn->mean_seconds + 0.2 * j->seconds;
    j->done = 1;
    free_slot_locked(rn);
    pthread_mutex_unlock(&rn->lock);
    return NULL;
}

job *job_start(runner *rn, rlm *r, const char *question, job_event_fn event, void *ctx)
{
    job *j = calloc(1, sizeof *j);
    if (j)
        j->question = strdup(question);
    if (!j || !j->question) {
        if (j)
            free(j);
        rlm_free(r);
        runner_release(rn);
        return NULL;
    }
    j->rn = rn;
    j->r = r;
    j->event = event;
    j->ctx = ctx;
    j->t0 = clock_now();
    pthread_mutex_lock(&rn->lock);
    if (rn->draining) {
        /* The drain began while the caller prepared the run. */
        free_slot_locked(rn);
        pthread_mutex_unlock(&rn->lock);
        rlm_free(r);
        free(j->question);
        free(j);
        return NULL;
    }
    j->next = rn->active;
    if (rn->active)
        rn->active->prev = j;
    rn->active = j;
    pthread_mutex_unlock(&rn->lock);
    if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
        pthread_mutex_lock(&rn->lock);
        active_unlink_locked(rn, j);
        free_slot_locked(rn);
        pthread_mutex_unlock(&rn->lock);
        rlm_free(r);
        free(j->question);
        free(j);
        return NULL;
    }
    j->started = 1;
    return j;
}

int job_wait(job *j, double seconds)
{
    runner *rn = j->rn;
    struct timespec ts;
    if (seconds >= 0)
        deadline_in(&ts, seconds);
    pthread_mutex_lock(&rn->lock);
    while (!j->done) {
        if (seconds < 0) {
            pthread_cond_wait(&rn->changed, &rn->lock);
        } else if (pthread_cond_timedwait(&rn->changed, &rn->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    int done = j->done;
    pthread_mutex_unlock(&rn->lock);
    return done;
}

void job_cancel(job *j)
{
    j->cancel = 1;
    rlm_cancel(j->r);
}

int job_cancelled(const job *j)
{
    return j->cancel != 0;
}

rlm_status job_status(const job *j) { return j->status; }
const char *job_report(const job *j) { return j->report; }
const char *job_error(const job *j) { return j->error ? j->error : "out of memory"; }
const char *job_warnings(const job *j) { return j->warnings ? j->warnings : ""; }
double job_seconds(const job *j) { return j->seconds; }

const char *job_answer(const job *j, size_t *len)
{
    if (len)
        *len = j->answer_len;
    return j->answer;
}

void job_free(job *j)
{
    if (!j)
        return;
    if (j->started)
        pthread_join(j->thread, NULL);
    rlm_free(j->r);
    rlm_string_free(j->answer);
    free(j->question);
    free(j->report);
    free(j->error);
    free(j->warnings);
    free(j);
}

void runner_begin_drain(runner *rn)
{
    pthread_mutex_lock(&rn->lock);
    rn->draining = 1;
    pthread_cond_broadcast(&rn->changed);
    pthread_mutex_unlock(&rn->lock);
}

int runner_drain(runner *rn, double timeout)
{
    double until = clock_now() + timeout;
    pthread_mutex_lock(&rn->lock);
    rn->draining = 1;
    pthread_cond_broadcast(&rn->changed);
    while (rn->active && clock_now() < until) {
        struct timespec ts;
        deadline_in(&ts, 0.1);
        pthread_cond_timedwait(&rn->changed, &rn->lock, &ts);
    }
    int cancelled = 0;
    for (job *j = rn->active; j; j = j->next) {
        job_cancel(j);
        cancelled++;
    }
    while (rn->active)
        pthread_cond_wait(&rn->changed, &rn->lock);
    pthread_mutex_unlock(&rn->lock);
    return cancelled;
}
