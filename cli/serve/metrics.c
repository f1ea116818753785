/* metrics — counters and histograms for GET /metrics (metrics.h). */
#include "metrics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "util.h"

#define MAX_LABELS 24
#define N_BUCKETS 12

/* Upper bounds of the seconds histograms (+Inf is the count). */
static const double buckets[N_BUCKETS] = {0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600};

typedef struct labelled {
    char label[32];
    unsigned long long n;
} labelled;

typedef struct histogram {
    unsigned long long counts[N_BUCKETS];
    unsigned long long count;
    double sum;
} histogram;

struct metrics {
    pthread_mutex_t lock;
    labelled http[MAX_LABELS], runs[MAX_LABELS], refused[MAX_LABELS];
    int in_flight, queued, connections;
    unsigned long long sub_calls, sub_call_errors, prompt_tokens, completion_tokens;
    double cost;
    unsigned long long cost_unknown;   /* runs whose cost was not known */
    histogram run_seconds, queue_seconds;
};

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Counts one under label in table (the last slot takes any overflow). */
static void bump(labelled *table, const char *label)
{
    int i = 0;
    while (i < MAX_LABELS - 1 && table[i].label[0] && strcmp(table[i].label, label) != 0)
        i++;
    if (!table[i].label[0])
        snprintf(table[i].label, sizeof table[i].label, "%s", i == MAX_LABELS - 1 ? "other" : label);
    table[i].n++;
}

static void observe(histogram *h, double v)
{
    for (int i = 0; i < N_BUCKETS; i++)
        if (v <= buckets[i])
            h->counts[i]++;
    h->count++;
    h->sum += v;
}

void metrics_http(metrics *m, int code)
{
    char label[16];
    snprintf(label, sizeof label, "%d", code);
    pthread_mutex_lock(&m->lock);
    bump(m->http, label);
    pthread_mutex_unlock(&m->lock);
}

void metrics_refused(metrics *m, const char *reason)
{
    pthread_mutex_lock(&m->lock);
    bump(m->refused, reason);
    pthread_mutex_unlock(&m->lock);
}

void metrics_gauges(metrics *m, int in_flight, int queued)
{
    pthread_mutex_lock(&m->lock);
    m->in_flight = in_flight;
    m->queued = queued;
    pthread_mutex_unlock(&m->lock);
}

void metrics_connections(metrics *m, int delta)
{
    pthread_mutex_lock(&m->lock);
    m->connections += delta;
    pthread_mutex_unlock(&m->lock);
}

void metrics_run(metrics *m, const char *status, double waited, double seconds, const char *report)
{
    json_t *r = report ? json_loads(report, JSON_ALLOW_NUL, NULL) : NULL;
    json_int_t prompt, completion;
    chat_report_tokens(r, &prompt, &completion);
    json_t *cost = json_object_get(r, "cost_usd");
    pthread_mutex_lock(&m->lock);
    bump(m->runs, status);
    m->sub_calls += (unsigned long long)json_integer_value(json_object_get(r, "sub_calls"));
    m->sub_call_errors += (unsigned long long)json_integer_value(json_object_get(r, "sub_call_errors"));
    m->prompt_tokens += (unsigned long long)prompt;
    m->completion_tokens += (unsigned long long)completion;
    if (json_is_number(cost))
        m->cost += json_number_value(cost);
    else
        m->cost_unknown++;
    observe(&m->queue_seconds, waited);
    observe(&m->run_seconds, seconds);
    pthread_mutex_unlock(&m->lock);
    json_decref(r);
}

static void put_labelled(buf *b, const char *name, const char *help, const char *label,
                         const labelled *table)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int i = 0; i < MAX_LABELS && table[i].label[0]; i++)
        buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, table[i].label, table[i].n);
}

static void put_histogram(buf *b, const char *name, const char *help, const histogram *h)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < N_BUCKETS; i++)
        buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, buckets[i], h->counts[i]);
    buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, h->count, name,
               h->sum, name, h->count);
}

char *metrics_text(metrics *m)
{
    buf b;
    buf_init(&b, 1 << 20);
    pthread_mutex_lock(&m->lock);
    buf_printf(&b, "# HELP rlm_runs_in_flight Runs answering now.\n# TYPE rlm_runs_in_flight gauge\n"
                   "rlm_runs_in_flight %d\n", m->in_flight);
    buf_printf(&b, "# HELP rlm_runs_queued Requests waiting for a run slot.\n"
                   "# TYPE rlm_runs_queued gauge\nrlm_runs_queued %d\n", m->queued);
    buf_printf(&b, "# HELP rlm_connections Open HTTP connections.\n# TYPE rlm_connections gauge\n"
                   "rlm_connections %d\n", m->connections);
    put_labelled(&b, "rlm_runs_total", "Runs ended, by status.", "status", m->runs);
    put_labelled(&b, "rlm_http_responses_total", "HTTP replies, by status code.", "code", m->http);
    put_labelled(&b, "rlm_refused_total", "Requests refused before a run, by reason.", "reason",
                 m->refused);
    buf_printf(&b, "# HELP rlm_sub_calls_total Sub-calls made by the runs.\n"
                   "# TYPE rlm_sub_calls_total counter\nrlm_sub_calls_total %llu\n", m->sub_calls);
    buf_printf(&b, "# HELP rlm_sub_call_errors_total Sub-calls that failed.\n"
                   "# TYPE rlm_sub_call_errors_total counter\nrlm_sub_call_errors_total %llu\n",
               m->sub_call_errors);
    buf_printf(&b, "# HELP rlm_tokens_total Tokens of every model call, by kind.\n"
                   "# TYPE rlm_tokens_total counter\nrlm_tokens_total{kind=\"prompt\"} %llu\n"
                   "rlm_tokens_total{kind=\"completion\"} %llu\n", m->prompt_tokens,
               m->completion_tokens);
    buf_printf(&b, "# HELP rlm_cost_usd_total Dollars spent, over the runs whose cost is known.\n"
                   "# TYPE rlm_cost_usd_total counter\nrlm_cost_usd_total %.6f\n", m->cost);
    buf_printf(&b, "# HELP rlm_runs_cost_unknown_total Runs whose cost is unknown (no price).\n"
                   "# TYPE rlm_runs_cost_unknown_total counter\nrlm_runs_cost_unknown_total %llu\n",
               m->cost_unknown);
    put_histogram(&b, "rlm_run_seconds", "Seconds a run took, from its start to its answer.",
                  &m->run_seconds);
    put_histogram(&b, "rlm_queue_wait_seconds", "Seconds a request waited for a run slot.",
                  &m->queue_seconds);
    pthread_mutex_unlock(&m->lock);
    return b.data ? buf_take(&b) : NULL;
}
