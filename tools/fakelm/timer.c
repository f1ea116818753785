/* timer — fakelm's waiting room: connections parked until a deadline (a
 * reply's latency, a stalled body) are resumed by one thread from a
 * min-heap. */
#include "fakelm.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Latency design: MHD runs one event-loop thread; a request that must wait is
 * suspended (MHD_suspend_connection) and its deadline goes into a min-heap
 * served by one timer thread, which resumes it when due. Thousands of waiting
 * requests then cost a heap entry each instead of a thread and a stack each,
 * and one slow request never holds up the others. */

static void heap_push(timer *t, timer_entry e)
{
    size_t i = t->len++;
    while (i > 0 && t->heap[(i - 1) / 2].deadline > e.deadline) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = e;
}

static timer_entry heap_pop(timer *t)
{
    timer_entry top = t->heap[0], last = t->heap[--t->len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= t->len)
            break;
        if (child + 1 < t->len && t->heap[child + 1].deadline < t->heap[child].deadline)
            child++;
        if (t->heap[child].deadline >= last.deadline)
            break;
        t->heap[i] = t->heap[child];
        i = child;
    }
    if (t->len > 0)
        t->heap[i] = last;
    return top;
}

/* Resumes outside the lock: MHD takes its own locks inside resume. On stop,
 * every waiting connection is resumed so MHD_stop_daemon finds none suspended. */
static void *timer_main(void *arg)
{
    timer *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (t->len > 0 && (t->stopping || t->heap[0].deadline <= clock_now())) {
            timer_entry e = heap_pop(t);
            pthread_mutex_unlock(&t->lock);
            MHD_resume_connection(e.conn);
            pthread_mutex_lock(&t->lock);
        } else if (t->stopping) {
            break;
        } else if (t->len == 0) {
            pthread_cond_wait(&t->wake, &t->lock);
        } else {
            double when = t->heap[0].deadline;
            struct timespec ts = {.tv_sec = (time_t)when,
                                  .tv_nsec = (long)((when - (double)(time_t)when) * 1e9)};
            pthread_cond_timedwait(&t->wake, &t->lock, &ts);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int timer_start(timer *t, size_t cap)
{
    pthread_condattr_t attr;

    memset(t, 0, sizeof *t);
    t->heap = calloc(cap, sizeof *t->heap);
    if (!t->heap)
        return -1;
    t->cap = cap;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0)
        return -1;
    t->running = true;
    return 0;
}

int timer_add(timer *t, struct MHD_Connection *conn, double deadline)
{
    int rc = -1;
    pthread_mutex_lock(&t->lock);
    if (t->len < t->cap && !t->stopping) {
        heap_push(t, (timer_entry){deadline, conn});
        pthread_cond_signal(&t->wake);
        rc = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void timer_stop(timer *t)
{
    if (t->running) {
        pthread_mutex_lock(&t->lock);
        t->stopping = true;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        pthread_join(t->thread, NULL);
        t->running = false;
    }
    if (t->heap) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        free(t->heap);
        t->heap = NULL;
    }
}
