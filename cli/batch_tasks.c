/* batch_tasks — the task file of rlm batch read and checked (each bad line
 * reported with its number, the good tasks kept), the shard a line belongs
 * to, from a flag or the scheduler's environment, and the scoring of an
 * answer against a task's gold answer. */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "batch.h"
#include "util.h"

/* The options that belong to the whole process (one pool: its dispatchers
 * and sandbox, include/rlm.h's list), which a task cannot change, and the
 * ones a batch task has no use for. */
static const char *const process_keys[] = {
    "base_url", "api_key", "provider", "sub_base_url", "sub_api_key", "sub_provider",
    "concurrency", "request_timeout", "max_retries", "rpm", "tpm", "stall_timeout",
    "max_output_tokens", "reasoning_effort", "temperature", "sandbox_exe", "unsafe_no_sandbox",
    "session", "session_db", "log", "log_db", "log_max", "log_command", "roots",
};

static const char *const task_keys[] = {"id", "question", "inputs", "options", "gold", "meta"};

static void add_error(batch_taskfile *tf, size_t *cap, long line, size_t ordinal, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add_error(batch_taskfile *tf, size_t *cap, long line, size_t ordinal, const char *fmt, ...)
{
    if (tf->n_errors == *cap) {
        size_t n = *cap ? *cap * 2 : 16;
        batch_line_error *e = realloc(tf->errors, n * sizeof *e);
        if (!e)
            return;
        tf->errors = e;
        *cap = n;
    }
    buf b;
    buf_init(&b, 4096);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    tf->errors[tf->n_errors++] = (batch_line_error){.line = line, .ordinal = ordinal,
                                                     .message = buf_take(&b)};
}

static void task_clear(batch_task *t)
{
    free(t->id);
    free(t->question);
    for (size_t i = 0; i < t->n_inputs; i++) {
        free(t->inputs[i].arg);
        free(t->inputs[i].text);
    }
    free(t->inputs);
    json_decref(t->options);
    json_decref(t->gold);
    json_decref(t->meta);
    free(t->input_error);
    memset(t, 0, sizeof *t);
}

void batch_taskfile_free(batch_taskfile *tf)
{
    if (!tf)
        return;
    for (size_t i = 0; i < tf->n_tasks; i++)
        task_clear(&tf->tasks[i]);
    free(tf->tasks);
    for (size_t i = 0; i < tf->n_errors; i++)
        free(tf->errors[i].message);
    free(tf->errors);
    free(tf->dir);
    memset(tf, 0, sizeof *tf);
}

/* FNV-1a: the ids' table and the lines' digests need spread, not secrecy. */
static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The digest of a task line: notices a task edited between two runs. */
static void line_digest(const char *line, size_t len, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)fnv1a(line, len));
}

/* The task's id as text: a non-empty string of printable characters, or an
 * integer. NULL with why. */
static char *task_id(const json_t *v, const char **why)
{
    char text[BATCH_MAX_ID + 1];
    if (json_is_integer(v)) {
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
        return str_dup_len(text, strlen(text));
    }
    if (!json_is_string(v)) {
        *why = v ? "\"id\" must be a string or an integer" : "no \"id\"";
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > BATCH_MAX_ID) {
        *why = "\"id\" must be 1 to 256 characters";
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            *why = "\"id\" holds a control character";
            return NULL;
        }
    }
    return str_dup_len(s, n);
}

/* A path relative to the task file's directory; absolute ones as given. */
static char *resolve_path(const char *dir, const char *path)
{
    if (path[0] == '/' || !dir || !dir[0] || strcmp(dir, ".") == 0)
        return str_dup_len(path, strlen(path));
    buf b;
    buf_init(&b, strlen(dir) + strlen(path) + 2);
    buf_printf(&b, "%s/%s", dir, path);
    return buf_take(&b);
}

/* Whether arg names something now (a path that exists, a glob that
 * matches); the message when not. */
static int input_exists(const char *arg, char *why, size_t whylen)
{
    if (strpbrk(arg, "*?[")) {
        glob_t g;
        int rc = glob(arg, GLOB_NOSORT, NULL, &g);
        size_t n = rc == 0 ? g.gl_pathc : 0;
        globfree(&g);
        if (n == 0) {
            snprintf(why, whylen, "input '%s' matches no file", arg);
            return 0;
        }
        return 1;
    }
    struct stat st;
    if (stat(arg, &st) != 0) {
        snprintf(why, whylen, "input '%s': %s", arg, strerror(errno));
        return 0;
    }
    return 1;
}

/* The task's inputs: a string, or an array of strings and {"text": ...}. */
static int read_inputs(batch_task *t, const json_t *v, const char *dir, const char **why)
{
    if (!v)
        return 0;
    json_t *one = NULL;
    if (json_is_string(v) || json_is_object(v)) {
        one = json_array();
        json_array_append(one, (json_t *)v);
        v = one;
    }
    int rc = -1;
    if (!json_is_array(v)) {
        *why = "\"inputs\" must be a path, a glob, {\"text\": ...} or an array of them";
        goto done;
    }
    size_t n = json_array_size(v);
    if (n > BATCH_MAX_TASK_INPUTS) {
        *why = "more than 256 inputs in one task (use a directory or a glob)";
        goto done;
    }
    t->inputs = calloc(n ? n : 1, sizeof *t->inputs);
    if (!t->inputs) {
        *why = "out of memory";
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(v, i);
        batch_input *in = &t->inputs[i];
        if (json_is_string(item) && json_string_length(item) > 0) {
            if (strcmp(json_string_value(item), "-") == 0) {
                *why = "an input cannot be stdin (\"-\")";
                goto done;
            }
            in->arg = resolve_path(dir, json_string_value(item));
        } else if (json_is_object(item) && json_is_string(json_object_get(item, "text")) &&
                   json_object_size(item) == 1) {
            json_t *text = json_object_get(item, "text");
            in->text_len = json_string_length(text);
            in->text = str_dup_len(json_string_value(text), in->text_len);
            if (in->text_len == 0) {
                *why = "an inline {\"text\": ...} input is empty";
                goto done;
            }
        } else {
            *why = "each input must be a non-empty path or glob, or {\"text\": \"...\"}";
            goto done;
        }
        if (!in->arg && !in->text) {
            *why = "out of memory";
            goto done;
        }
        t->n_inputs = i + 1;
    }
    rc = 0;
done:
    json_decref(one);
    return rc;
}

/* The task's options as {"key": "text"}: keys with '-' or '_', values
 * strings, numbers or booleans, each checked by a scratch config. */
static int read_options(batch_task *t, const json_t *v, char *why, size_t whylen)
{
    if (!v)
        return 0;
    if (!json_is_object(v)) {
        snprintf(why, whylen, "\"options\" must be an object of rlm options");
        return -1;
    }
    t->options = json_object();
    rlm_config *scratch = rlm_config_new();
    int rc = -1;
    if (!t->options || !scratch) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)v, name, value) {
        char key[64];
        size_t n = 0;
        for (; name[n] && n + 1 < sizeof key; n++)
            key[n] = name[n] == '-' ? '_' : name[n];
        key[n] = '\0';
        for (size_t i = 0; i < sizeof process_keys / sizeof process_keys[0]; i++) {
            if (strcmp(key, process_keys[i]) == 0) {
                snprintf(why, whylen, "option \"%s\" is the whole batch's, not a task's (give it "
                         "to rlm batch)", name);
                goto done;
            }
        }
        char text[64];
        const char *s = text;
        if (json_is_string(value))
            s = json_string_value(value);
        else if (json_is_integer(value))
            snprintf(text, sizeof text, "%lld", (long long)json_integer_value(value));
        else if (json_is_real(value))
            snprintf(text, sizeof text, "%.17g", json_real_value(value));
        else if (json_is_boolean(value))
            snprintf(text, sizeof text, "%s", json_is_true(value) ? "1" : "0");
        else {
            snprintf(why, whylen, "option \"%s\" must be a string, a number or a boolean", name);
            goto done;
        }
        if (rlm_config_set(scratch, key, s) != RLM_OK) {
            snprintf(why, whylen, "option %s", rlm_config_errmsg(scratch));
            goto done;
        }
        json_object_set_new(t->options, key, json_string(s));
    }
    rc = 0;
done:
    rlm_config_free(scratch);
    return rc;
}

/* One non-blank line into t; -1 with why (why is the line's error). */
static int read_task(const char *line, size_t len, const char *dir, batch_task *t, char *why,
                     size_t whylen)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *msg = NULL;
    int rc = -1;
    if (!root) {
        snprintf(why, whylen, "not JSON: %s (column %d)", jerr.text, jerr.column);
        return -1;
    }
    if (!json_is_object(root)) {
        snprintf(why, whylen, "a task must be a JSON object");
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        size_t i = 0;
        while (i < sizeof task_keys / sizeof task_keys[0] && strcmp(key, task_keys[i]) != 0)
            i++;
        if (i == sizeof task_keys / sizeof task_keys[0]) {
            snprintf(why, whylen, "unknown key \"%.64s\" (a task has id, question, inputs, "
                     "options, gold, meta)", key);
            goto done;
        }
    }
    if (!(t->id = task_id(json_object_get(root, "id"), &msg))) {
        snprintf(why, whylen, "%s", msg ? msg : "out of memory");
        goto done;
    }
    json_t *q = json_object_get(root, "question");
    if (!json_is_string(q) || strspn(json_string_value(q), " \t\r\n") == json_string_length(q)) {
        snprintf(why, whylen, "task %s: \"question\" must be a non-empty string", t->id);
        goto done;
    }
    if (memchr(json_string_value(q), '\0', json_string_length(q))) {
        snprintf(why, whylen, "task %s: \"question\" holds a NUL character", t->id);
        goto done;
    }
    t->question = str_dup_len(json_string_value(q), json_string_length(q));
    if (read_inputs(t, json_object_get(root, "inputs"), dir, &msg) != 0) {
        snprintf(why, whylen, "task %s: %s", t->id, msg);
        goto done;
    }
    char owhy[512];
    if (read_options(t, json_object_get(root, "options"), owhy, sizeof owhy) != 0) {
        snprintf(why, whylen, "task %s: %s", t->id, owhy);
        goto done;
    }
    json_t *gold = json_object_get(root, "gold");
    if (gold && !json_is_string(gold) && !json_is_number(gold)) {
        snprintf(why, whylen, "task %s: \"gold\" must be a string or a number", t->id);
        goto done;
    }
    t->gold = json_incref(gold);
    t->meta = json_incref(json_object_get(root, "meta"));
    for (size_t i = 0; i < t->n_inputs && !t->input_error; i++) {
        char iwhy[4200];
        if (t->inputs[i].arg && !input_exists(t->inputs[i].arg, iwhy, sizeof iwhy))
            t->input_error = str_dup_len(iwhy, strlen(iwhy));
    }
    line_digest(line, len, t->digest);
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* Open addressing over the ids seen: the line of each, to name the first
 * when a duplicate comes. */
typedef struct id_seen {
    const char *id;
    long line;
} id_seen;

static uint64_t id_hash(const char *s)
{
    return fnv1a(s, strlen(s));
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return str_dup_len(".", 1);
    if (slash == path)
        return str_dup_len("/", 1);
    return str_dup_len(path, (size_t)(slash - path));
}

int batch_taskfile_read(const char *path, batch_taskfile *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strcmp(path, "-") == 0) {
        snprintf(err, errlen, "the task file cannot be stdin: a rerun reads it again to resume");
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open the task file '%s': %s", path, strerror(errno));
        return -1;
    }
    out->dir = dir_of(path);
    size_t task_cap = 0, err_cap = 0, seen_cap = 1024, ordinal = 0;
    id_seen *seen = calloc(seen_cap, sizeof *seen);
    char *line = NULL;
    size_t line_cap = 0;
    long lineno = 0;
    int rc = -1;
    ssize_t got;
    if (!out->dir || !seen) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (strspn(line, " \t") >= len)
            continue;
        size_t ord = ordinal++;
        if (len > BATCH_MAX_LINE) {
            add_error(out, &err_cap, lineno, ord, "longer than %zu MiB", BATCH_MAX_LINE >> 20);
            continue;
        }
        if (out->n_tasks == BATCH_MAX_TASKS) {
            snprintf(err, errlen, "more than %d tasks in '%s'", BATCH_MAX_TASKS, path);
            goto done;
        }
        if (out->n_tasks == task_cap) {
            size_t n = task_cap ? task_cap * 2 : 64;
            batch_task *t = realloc(out->tasks, n * sizeof *t);
            if (!t) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            out->tasks = t;
            task_cap = n;
        }
        batch_task *t = &out->tasks[out->n_tasks];
        memset(t, 0, sizeof *t);
        t->line = lineno;
        t->ordinal = ord;
        char why[8192];
        if (read_task(line, len, out->dir, t, why, sizeof why) != 0) {
            add_error(out, &err_cap, lineno, ord, "%s", why);
            task_clear(t);
            continue;
        }
        /* Keep the table at most half full. */
        if ((out->n_tasks + 1) * 2 > seen_cap) {
            size_t n = seen_cap * 2;
            id_seen *grown = calloc(n, sizeof *grown);
            if (!grown) {
                task_clear(t);
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            for (size_t i = 0; i < seen_cap; i++) {
                if (!seen[i].id)
                    continue;
                size_t k = id_hash(seen[i].id) & (n - 1);
                while (grown[k].id)
                    k = (k + 1) & (n - 1);
                grown[k] = seen[i];
            }
            free(seen);
            seen = grown;
            seen_cap = n;
        }
        size_t k = id_hash(t->id) & (seen_cap - 1);
        while (seen[k].id && strcmp(seen[k].id, t->id) != 0)
            k = (k + 1) & (seen_cap - 1);
        if (seen[k].id) {
            add_error(out, &err_cap, lineno, ord, "duplicate id \"%s\" (first on line %ld; this "
                      "line is not run)", t->id, seen[k].line);
            task_clear(t);
            continue;
        }
        out->n_tasks++;
        seen[k] = (id_seen){.id = t->id, .line = lineno};
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read the task file '%s': %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(line);
    free(seen);
    fclose(f);
    if (rc != 0)
        batch_taskfile_free(out);
    return rc;
}

int batch_in_shard(size_t ordinal, int index, int count)
{
    return count <= 1 || (long long)(ordinal % (size_t)count) == index;
}

static int parse_int_env(const char *name, long *out)
{
    const char *v = getenv(name);
    return v && v[0] && parse_long(v, out) == 0 ? 1 : 0;
}

int batch_shard_resolve(const char *spec, long count, int *index, int *total, const char **source,
                        char *err, size_t errlen)
{
    long i = 0, n = 1;
    *source = "none";
    const char *env_spec = getenv("RLM_SHARD");
    if (!spec && env_spec && env_spec[0]) {
        spec = env_spec;
        *source = "RLM_SHARD";
    }
    if (spec) {
        const char *slash = strchr(spec, '/');
        char head[32];
        size_t hl = slash ? (size_t)(slash - spec) : 0;
        if (!slash || hl == 0 || hl >= sizeof head) {
            snprintf(err, errlen, "--shard must be I/N (0 <= I < N), e.g. 0/4");
            return -1;
        }
        memcpy(head, spec, hl);
        head[hl] = '\0';
        if (parse_long(head, &i) != 0 || parse_long(slash + 1, &n) != 0) {
            snprintf(err, errlen, "--shard must be I/N (0 <= I < N), e.g. 0/4");
            return -1;
        }
        if (spec != env_spec)
            *source = "--shard";
    } else {
        long id, min = 0, cnt;
        if (parse_int_env("SLURM_ARRAY_TASK_ID", &id) && count > 0) {
            /* The array's index itself: a shard resubmitted alone
             * (sbatch --array=2) keeps its number. */
            i = id;
            n = count;
            *source = "Slurm array (SLURM_ARRAY_TASK_ID of --shards)";
        } else if (parse_int_env("SLURM_ARRAY_TASK_ID", &id)) {
            if (!parse_int_env("SLURM_ARRAY_TASK_COUNT", &cnt)) {
                snprintf(err, errlen, "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT");
                return -1;
            }
            parse_int_env("SLURM_ARRAY_TASK_MIN", &min);
            i = id - min;
            n = cnt;
            *source = "Slurm array (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT)";
        } else if (parse_int_env("JOB_COMPLETION_INDEX", &id)) {
            if (count <= 0 && !parse_int_env("RLM_SHARDS", &count)) {
                snprintf(err, errlen, "JOB_COMPLETION_INDEX is set: give the number of shards "
                         "(--shards N or RLM_SHARDS, the Job's completions)");
                return -1;
            }
            i = id;
            n = count;
            *source = "Kubernetes indexed Job (JOB_COMPLETION_INDEX)";
        } else if (count > 1) {
            snprintf(err, errlen, "--shards N without an index: give --shard I/N, or run under a "
                     "Slurm array or a Kubernetes indexed Job");
            return -1;
        }
    }
    if (n < 1 || n > 1000000 || i < 0 || i >= n) {
        snprintf(err, errlen, "shard %ld/%ld: the index must be from 0 to N-1 (N from 1 to 1000000)", i, n);
        return -1;
    }
    *index = (int)i;
    *total = (int)n;
    return 0;
}

/* Lower case, punctuation to spaces, runs of spaces to one, trimmed. */
static char *normalise(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    int space = 1;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !isalnum(c)) {
            if (!space)
                out[n++] = ' ';
            space = 1;
            continue;
        }
        out[n++] = c < 0x80 ? (char)tolower(c) : (char)c;
        space = 0;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return out;
}

int batch_answer_correct(const char *answer, const json_t *gold)
{
    char text[64];
    const char *g = text;
    if (!answer || !gold)
        return 0;
    if (json_is_string(gold))
        g = json_string_value(gold);
    else if (json_is_integer(gold))
        snprintf(text, sizeof text, "%lld", (long long)json_integer_value(gold));
    else if (json_is_real(gold))
        snprintf(text, sizeof text, "%g", json_real_value(gold));
    else
        return 0;
    char *a = normalise(answer, strlen(answer)), *w = normalise(g, strlen(g));
    int ok = 0;
    if (a && w && w[0]) {
        size_t wl = strlen(w);
        for (const char *p = a; (p = strstr(p, w)); p++) {
            int starts = p == a || p[-1] == ' ';
            int ends = p[wl] == '\0' || p[wl] == ' ';
            if (starts && ends) {
                ok = 1;
                break;
            }
        }
    }
    free(a);
    free(w);
    return ok;
}
