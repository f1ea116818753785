/* sandbox — host side of the Python sandbox: spawns rlm-sandbox, hands it the
 * context and settings, runs cells with a wall timeout, serves sub-calls, and
 * replaces the child whenever it dies, hangs or breaks the protocol.
 *
 * Design note. The child is untrusted once model code has run: every frame it
 * sends is size-checked before it is read, anything unexpected (garbage, an
 * unknown type, a truncated frame) ends that child, and no wait is without a
 * deadline — reads go through poll(), writes have SO_SNDTIMEO. The cell clock
 * stops while the sub-call callback runs. A timeout first sends SIGINT (the
 * cell gets a TimeoutError and the namespace survives); if the child has not
 * answered kill_grace seconds later it is killed and a fresh one started from
 * the same context fd. The child runs in its own process group so a
 * terminal's Ctrl-C does not reach it, with only fds 3 (socket) and 4
 * (context) open besides /dev/null. A cancel works like a timeout, with
 * SIGUSR1 instead of SIGINT so that the child can tell the model why.
 *
 * Inputs. The first input is the child's fd 4 (and 5); later ones (a
 * session's context_1, ...) are passed over the channel with SCM_RIGHTS.
 * The host keeps its own duplicate of every input's descriptors and every
 * variable it set, and hands them all to a restarted child, in order: a
 * restart loses the model's variables, never what the host gave.
 *
 * Namespaces. The child runs in new user, network, IPC and PID namespaces
 * when the kernel allows: no network interface but a down lo, no System V
 * IPC shared with anyone, no process visible or signalable but itself. A
 * process cannot move itself into a new PID namespace, so the child gets them
 * when it is started: spawned (clone into them), or forked by a factory's
 * zygote (sandbox/sandbox_spawn.c), which is the cheaper start when there are many
 * children; either way the protocol from the init frame on is the same. */
#include "sandbox.h"

#include "fdpass.h"
#include "frame.h"
#include "layers.h"
#include "sandbox_cache.h"
#include "sandbox_policy.h"
#include "sandbox_spawn.h"
#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define SANDBOX_SEND_TIMEOUT 10    /* seconds a blocked write to the child may take */
#define SANDBOX_MAX_BATCH 65536    /* prompts in one sub-call frame */
#define SANDBOX_RAW_STALL_MS 30000 /* a raw frame that stops arriving this long is dropped */
#define SANDBOX_NAME_MAX 64        /* characters of a name the host binds */
#define SANDBOX_MAX_INPUTS 4096    /* inputs of one sandbox, the first included */
#define SANDBOX_MAX_VARS 65536     /* variables the host sets (kept for restarts) */
#define SANDBOX_CANCEL_POLL_MS 100 /* how often *cancel is read while a cell runs */
#define SANDBOX_PROTOCOL_VERSION 2 /* the init frame's "version" */

/* An input and the name it is bound to; the descriptors are our CLOEXEC
 * duplicates (-1: none). inputs[0] is the first, bound to `context`. */
typedef struct input_slot {
    char name[SANDBOX_NAME_MAX + 1];
    sandbox_input in;
    json_t *summary;    /* what the child parsed (a JSON input), or NULL */
} input_slot;

/* A variable the host set, set again in a restarted child: a str
 * (sandbox_set_var), or a protected JSON value (sandbox_set_value). */
typedef struct var_slot {
    char name[SANDBOX_NAME_MAX + 1];
    char *value;
    json_t *json;
} var_slot;

struct sandbox {
    char *exe_path;
    char first_alias[SANDBOX_NAME_MAX + 1]; /* another name of the first input, or "" */
    input_slot *inputs; /* at least one: the first input */
    size_t n_inputs;
    var_slot *vars;
    size_t n_vars;
    const atomic_int *cancel;
    char *search_cache_dir;
    sandbox_cache *cache;  /* the current child's search-index service, or NULL */
    size_t memory_limit;
    int memory_auto;     /* memory_limit follows the inputs (counted at each start) */
    double cell_timeout;
    double kill_grace;
    size_t output_limit;
    int unsafe_no_sandbox;
    int no_namespaces;
    int no_landlock;
    int floor_only;       /* RLM_SANDBOX_FLOOR_ONLY was set: the two above are forced */
    sandbox_factory *factory; /* a reference; NULL: always spawn */
    int forked;           /* the current child came from the factory */
    int ns_index;         /* the spawn's namespace set that worked; -1 before the first try */
    sandbox_namespaces ns; /* the current child's */
    unsigned long long next_id; /* request ids: random start, then counting */
    pid_t pid;  /* -1 when there is no child */
    int sock;   /* -1 when there is no child */
    frame_reader reader;
    char layers[256];
    char warnings[512];
    char python[64];      /* the child's Py_GetVersion(), first word */
    char *layers_json;    /* [{"name","active","detail"}], strongest first */
    int input_error;      /* the last start failed on the first input itself */
    size_t from_factory;  /* inputs[0 .. from_factory) are the factory's (factory_inputs) */
    size_t preloaded;     /* the current child got that many from its zygote's memory */
    int snapshot_fd;      /* the data the child starts with (sandbox_load_snapshot), or -1 */
    size_t snapshot_len;
    sandbox_batch_fn batch_call; /* serves plain batches as their prompts arrive, or NULL */
};

/* A batch of prompts on its way from the child (sandbox_batch_fn): read
 * piece by piece as the callee asks for more. */
struct sandbox_batch {
    int sock;
    frame_pieces pieces;
    size_t *lens;        /* announced, then each arrived prompt's own (repaired) */
    size_t arrived;      /* prompts checked and handed on */
    int stall_ms;        /* waiting this long without a byte breaks the batch */
    int stalled_ms;
    int broken;          /* the child stopped sending or broke the protocol: why */
    char why[256];
};

/* How a request ended. */
enum {
    WAIT_REPLY,       /* the expected frame arrived */
    WAIT_KILLED,      /* timed out and ignored SIGINT for kill_grace */
    WAIT_DIED,        /* the child closed the socket or could not be written to */
    WAIT_PROTOCOL     /* the child sent something it must not send */
};

/* State of one request (a cell or a variable read). */
typedef struct wait_state {
    double started;
    double timeout;      /* seconds of child time allowed; sub-calls excluded */
    double call_seconds; /* time spent in the callback */
    size_t n_calls;
    int interrupted;     /* SIGINT (or, cancelling, SIGUSR1) was sent */
    int cancelled;       /* the interrupt was the user's cancel */
    double kill_at;
    int stopped;         /* the callback asked to stop the run */
    sandbox_call_fn call;
    void *userdata;
    long long id;        /* the request id the reply must carry; -1: none (start-up) */
    int input_error;     /* the child's "error" frame blamed the input (a bad .json) */
} wait_state;

/* ---- child processes ---- */

/* Kills and reaps the child (no zombie) and closes our end of its socket.
 * Returns its wait status, or -1 if there was none. */
static int stop_child(sandbox *sb)
{
    int status = -1;
    if (sb->pid > 0) {
        kill(sb->pid, SIGKILL);
        while (waitpid(sb->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (sb->sock >= 0)
        close(sb->sock);
    sb->pid = -1;
    sb->sock = -1;
    frame_reader_reset(&sb->reader);
    sandbox_cache_stop(sb->cache);
    sb->cache = NULL;
    return status;
}

/* The exit status of a child that is going away by itself: waits a moment
 * for it to finish dying before killing it, so the report says what really
 * happened (a crash, an exit code) rather than our SIGKILL. */
static int collect_child(sandbox *sb)
{
    int status = sandbox_reap_within(&sb->pid, 50);
    int killed = stop_child(sb);
    return status != -1 ? status : killed;
}

static int spawn_child(sandbox *sb, char *err, size_t errlen)
{
    int sv[2] = {-1, -1}, child_end = -1, rc = -1;
    int cache_pair[2] = {-1, -1}, cache_child = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        goto fail;
    }
    /* Above 3 and 4 so the dup2 calls in the child cannot overwrite each other. */
    child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    if (child_end < 0) {
        snprintf(err, errlen, "fcntl: %s", strerror(errno));
        goto fail;
    }
    if (sb->search_cache_dir &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cache_pair) == 0) {
        cache_child = fcntl(cache_pair[1], F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
        close(cache_pair[1]);
        cache_pair[1] = -1;
        if (cache_child < 0) {
            close(cache_pair[0]);
            cache_pair[0] = -1;
        }
    }
    sandbox_fds fds = {.channel = child_end, .context = sb->inputs[0].in.context_fd,
                       .data = sb->inputs[0].in.data_fd, .cache = cache_child};
    int use_namespaces = !sb->unsafe_no_sandbox && !sb->no_namespaces;
    pid_t pid = -1;
    sb->preloaded = 0;
    if (sandbox_factory_fits(sb->factory, sb->exe_path, use_namespaces)) {
        /* A failed fork is no failure: the spawn below is the fallback. The
         * factory's inputs are in its zygote's memory already: the child
         * gets them there, not from fds 4 and 5. */
        char why[512];
        sandbox_fds forked = fds;
        if (sb->from_factory)
            forked.context = forked.data = -1;
        pid = sandbox_factory_fork(sb->factory, &forked, sb->from_factory, &sb->ns, why,
                                   sizeof why);
        if (pid > 0)
            sb->preloaded = sb->from_factory;
    }
    sb->forked = pid > 0;
    if (pid <= 0)
        pid = sandbox_spawn(sb->exe_path, &fds, use_namespaces,
                            sb->unsafe_no_sandbox ? "unsafe_no_sandbox"
                            : sb->floor_only      ? SANDBOX_FLOOR_ONLY_WHY
                                                  : "switched off by the caller",
                            &sb->ns_index, &sb->ns, err, errlen);
    if (pid <= 0)
        goto fail;
    sb->pid = pid;
    sb->sock = sv[0];
    sv[0] = -1;
    if (cache_pair[0] >= 0 &&
        sandbox_cache_start(sb->search_cache_dir, &sb->inputs[0].in, cache_pair[0],
                            &sb->cache) == 0)
        cache_pair[0] = -1;
    struct timeval send_timeout = {SANDBOX_SEND_TIMEOUT, 0};
    setsockopt(sb->sock, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
    rc = 0;
fail:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    if (child_end >= 0)
        close(child_end);
    if (cache_child >= 0)
        close(cache_child);
    if (cache_pair[0] >= 0)
        close(cache_pair[0]);
    return rc;
}

/* ---- waiting for frames ---- */

static int send_frame(sandbox *sb, json_t *frame, char *why, size_t whylen)
{
    if (!frame) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int rc = frame_write(sb->sock, frame, FRAME_MAX, why, whylen);
    json_decref(frame);
    return rc;
}

/* Answers every prompt of a call with the same error, e.g. after a stop
 * (result_lens may be NULL). */
static void fill_errors(char **results, size_t *result_lens, size_t n, const char *message)
{
    for (size_t i = 0; i < n; i++) {
        free(results[i]);
        results[i] = strdup(message);
        if (result_lens)
            result_lens[i] = SIZE_MAX;
    }
}

static int poll_timeout_ms(double seconds)
{
    if (seconds <= 0)
        return 0;
    double ms = ceil(seconds * 1000.0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Reads the raw frame that follows a call frame with "prompt_lengths". The
 * child writes it right after the call frame, so this waits only while bytes
 * keep coming: a child that stalls mid-frame is a protocol error. */
static int read_raw_frame(sandbox *sb, const wait_state *ws, char **data, size_t *len, char *why,
                          size_t whylen)
{
    for (;;) {
        /* Bounded by the cell's wall time too, so a stalled child costs no more
         * than any other cell would. */
        int wait_ms = SANDBOX_RAW_STALL_MS;
        if (ws->interrupted || ws->timeout > 0) {
            double now = clock_now();
            double left = ws->interrupted ? ws->kill_at - now
                                          : ws->timeout - (now - ws->started - ws->call_seconds);
            int left_ms = poll_timeout_ms(left);
            wait_ms = left_ms < wait_ms ? left_ms : wait_ms;
        }
        struct pollfd p = {.fd = sb->sock, .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, whylen, "the prompts of a call did not arrive");
            return -1;
        }
        int rc = frame_reader_step_raw(&sb->reader, sb->sock, data, len, why, whylen);
        if (rc == FRAME_READY)
            return 0;
        if (rc != FRAME_MORE)
            return -1;
    }
}

/* Points texts[i] into the raw frame from *off on: piece i is lengths[i]
 * bytes followed by a NUL, back to back; a null length (allowed for
 * contexts) is no piece and texts[i] stays NULL. Invalid UTF-8 (only a
 * hostile child sends it) is repaired into owned[i]. 0, or -1 when the
 * lengths do not describe the frame. */
static int split_raw_pieces(json_t *lengths, int allow_null, const char *data, size_t len,
                            size_t *off, const char **texts, size_t *text_lens, char **owned)
{
    for (size_t i = 0; i < json_array_size(lengths); i++) {
        json_t *l = json_array_get(lengths, i);
        if (allow_null && json_is_null(l))
            continue;
        if (!json_is_integer(l) || json_integer_value(l) < 0)
            return -1;
        size_t n = (size_t)json_integer_value(l);
        if (*off >= len || n >= len - *off || data[*off + n] != '\0')
            return -1;
        texts[i] = data + *off;
        text_lens[i] = n;
        if (!utf8_valid(data + *off, n)) {
            owned[i] = utf8_sanitize(data + *off, n, &text_lens[i]);
            if (!owned[i])
                return -1;
            texts[i] = owned[i];
        }
        *off += n + 1;
    }
    return 0;
}

/* The message every prompt of a batch gets when it is not served. */
static const char *unserved_message(const wait_state *ws)
{
    if (ws->cancelled)
        return "Error: the cell was cancelled by the user";
    if (ws->interrupted)
        return "Error: the cell was interrupted (wall time exceeded)";
    if (ws->stopped)
        return "Error: the run was stopped (a budget is exhausted or the run was cancelled)";
    return "Error: sub-calls are not available here";
}

static int send_call_result(sandbox *sb, const wait_state *ws, char **results,
                            const size_t *result_lens, size_t n, char *why, size_t whylen);

/* Checks the prompts that arrived since the last look: invalid UTF-8 (only
 * a hostile child sends it) is repaired into a buffer of its own. */
static void batch_check_arrived(sandbox_batch *b)
{
    for (; !b->broken && b->arrived < b->pieces.cur; b->arrived++) {
        size_t i = b->arrived;
        char *text = b->pieces.data[i];
        if (!text || utf8_valid(text, b->lens[i]))
            continue;
        size_t fixed_len = 0;
        char *fixed = utf8_sanitize(text, b->lens[i], &fixed_len);
        if (!fixed) {
            b->broken = 1;
            snprintf(b->why, sizeof b->why, "out of memory");
            return;
        }
        free(text);
        b->pieces.data[i] = fixed;
        b->lens[i] = fixed_len;
    }
}

size_t sandbox_batch_more(sandbox_batch *b, int timeout_ms, int *last)
{
    size_t before = b->arrived;
    double started = clock_now();
    for (;;) {
        batch_check_arrived(b);
        *last = b->broken || b->arrived == b->pieces.n;
        if (*last || b->arrived > before)
            return b->arrived;
        int waited_ms = (int)((clock_now() - started) * 1000.0);
        if (timeout_ms >= 0 && waited_ms >= timeout_ms)
            return b->arrived;
        int wait_ms = b->stall_ms - b->stalled_ms;
        if (timeout_ms >= 0 && timeout_ms - waited_ms < wait_ms)
            wait_ms = timeout_ms - waited_ms;
        struct pollfd p = {.fd = b->sock, .events = POLLIN};
        double t0 = clock_now();
        int n = poll(&p, 1, wait_ms < 0 ? 0 : wait_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            b->stalled_ms += (int)((clock_now() - t0) * 1000.0) + (n == 0 ? 1 : 0);
            if (n < 0 || b->stalled_ms >= b->stall_ms) {
                b->broken = 1;
                snprintf(b->why, sizeof b->why, "the prompts of a call did not arrive");
            }
            continue;
        }
        int rc = frame_pieces_step(&b->pieces, b->sock, b->why, sizeof b->why);
        if (rc == FRAME_ERROR || rc == FRAME_IO_ERROR)
            b->broken = 1;
        else
            b->stalled_ms = 0;
    }
}

size_t sandbox_batch_length(const sandbox_batch *b, size_t i)
{
    return i < b->pieces.n ? b->lens[i] : 0;
}

const char *sandbox_batch_prompt(const sandbox_batch *b, size_t i, size_t *len)
{
    if (i >= b->arrived || !b->pieces.data[i])
        return NULL;
    *len = b->lens[i];
    return b->pieces.data[i];
}

void sandbox_batch_release(sandbox_batch *b, size_t i)
{
    /* Not b->arrived: the callback's thread moves it while another thread
     * releases (the contract allows only prompts that have arrived). */
    if (i < b->pieces.n) {
        free(b->pieces.data[i]);
        b->pieces.data[i] = NULL;
    }
}


/* Serves a plain batch (prompts only, sent as raw pieces) through the batch
 * callback, which sends each prompt's request as soon as it arrived.
 * Returns 0, -1 with why (a protocol error, or the reply could not be
 * sent), or 1 when the callback declined: nothing was read, and the caller
 * serves the batch whole. */
static int serve_call_batch(sandbox *sb, wait_state *ws, int kind, const char *model,
                            json_t *lengths, char *why, size_t whylen)
{
    size_t n = json_array_size(lengths);
    sandbox_batch b = {.sock = sb->sock, .stall_ms = SANDBOX_RAW_STALL_MS};
    char **results = calloc(n, sizeof *results);
    size_t *result_lens = calloc(n, sizeof *result_lens);
    b.lens = calloc(n, sizeof *b.lens);
    int rc = -1;
    if (!results || !result_lens || !b.lens) {
        snprintf(why, whylen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *l = json_array_get(lengths, i);
        if (!json_is_integer(l) || json_integer_value(l) < 0 ||
            (unsigned long long)json_integer_value(l) >= FRAME_MAX) {
            snprintf(why, whylen, "malformed call frame (prompt lengths)");
            goto done;
        }
        b.lens[i] = (size_t)json_integer_value(l);
        result_lens[i] = SIZE_MAX;
    }
    if (frame_pieces_init(&b.pieces, b.lens, n, FRAME_MAX, why, whylen) != 0)
        goto done;
    /* Bounded by the cell's wall time too, as read_raw_frame is. */
    if (ws->timeout > 0) {
        int left_ms = poll_timeout_ms(ws->timeout - (clock_now() - ws->started - ws->call_seconds));
        b.stall_ms = left_ms < b.stall_ms ? left_ms : b.stall_ms;
    }
    double t0 = clock_now();
    int call_rc = sb->batch_call(ws->userdata, kind, model, &b, n, results, result_lens);
    if (call_rc == SANDBOX_BATCH_DECLINE) {
        rc = 1;
        goto done;
    }
    /* What the callee did not read is read now (and dropped): the stream
     * stays in step for the reply. */
    size_t dropped = b.arrived;
    for (int last = 0; !last;) {
        size_t upto = sandbox_batch_more(&b, -1, &last);
        for (; dropped < upto; dropped++)
            sandbox_batch_release(&b, dropped);
    }
    ws->call_seconds += clock_now() - t0;
    ws->n_calls += n;
    if (b.broken) {
        snprintf(why, whylen, "%s", b.why);
        goto done;
    }
    ws->stopped |= call_rc != 0;
    rc = send_call_result(sb, ws, results, result_lens, n, why, whylen);
done:
    for (size_t i = 0; results && i < n; i++)
        free(results[i]);
    free(results);
    free(result_lens);
    frame_pieces_free(&b.pieces);
    free(b.lens);
    return rc;
}

/* Serves one "call" frame. Returns 0, or -1 with why set when the frame is
 * malformed (a protocol error) or the reply cannot be sent. Prompts and
 * contexts come in the frame ("prompts", "contexts") or in a raw frame right
 * after it ("prompt_lengths", "context_lengths";
 * docs/internals/sandbox-protocol.md): that skips a JSON parse and a copy of
 * a batch that may hold the whole input, and the callback reads the raw
 * frame in place. */
static int serve_call(sandbox *sb, json_t *frame, wait_state *ws, char *why, size_t whylen)
{
    const char *kind_text = json_string_value(json_object_get(frame, "kind"));
    json_t *prompts = json_object_get(frame, "prompts");
    json_t *lengths = json_object_get(frame, "prompt_lengths");
    json_t *contexts = json_object_get(frame, "contexts");
    json_t *ctx_lengths = json_object_get(frame, "context_lengths");
    json_t *model = json_object_get(frame, "model");
    char *raw = NULL;
    size_t raw_len = 0;
    if (json_is_array(lengths) && !ctx_lengths && !contexts && sb->batch_call && ws->call &&
        !ws->interrupted && !ws->stopped && kind_text &&
        (strcmp(kind_text, "llm") == 0 || strcmp(kind_text, "rlm") == 0) &&
        json_array_size(lengths) > 0 && json_array_size(lengths) <= SANDBOX_MAX_BATCH &&
        (!model || json_is_null(model) || json_is_string(model))) {
        int rc = serve_call_batch(sb, ws, strcmp(kind_text, "rlm") == 0 ? SANDBOX_CALL_RLM : SANDBOX_CALL_LLM,
                                  json_string_value(model), lengths, why, whylen);
        if (rc != 1)
            return rc;
    }
    if (json_is_array(lengths)) {
        if (read_raw_frame(sb, ws, &raw, &raw_len, why, whylen) != 0)
            return -1;
        prompts = lengths;    /* the same count and bounds checks apply */
        contexts = ctx_lengths;
    } else if (ctx_lengths) {
        contexts = ctx_lengths; /* refused below: lengths without a raw frame */
    }
    size_t n = json_array_size(prompts);
    int kind = kind_text && strcmp(kind_text, "rlm") == 0   ? SANDBOX_CALL_RLM
               : kind_text && strcmp(kind_text, "llm") == 0 ? SANDBOX_CALL_LLM
                                                            : -1;
    int has_contexts = contexts && !json_is_null(contexts);
    if (kind < 0 || !json_is_array(prompts) || n == 0 || n > SANDBOX_MAX_BATCH ||
        (model && !json_is_null(model) && !json_is_string(model)) ||
        (has_contexts && (kind != SANDBOX_CALL_RLM || !json_is_array(contexts) ||
                          json_array_size(contexts) != n || (ctx_lengths && !raw)))) {
        snprintf(why, whylen, "malformed call frame");
        free(raw);
        return -1;
    }
    int rc = -1;
    const char **texts = calloc(n, sizeof *texts);
    const char **ctx = has_contexts ? calloc(n, sizeof *ctx) : NULL;
    /* lens: the prompts' lengths, then the contexts', then the results' */
    size_t *lens = calloc(3 * n, sizeof *lens);
    char **owned = calloc(2 * n, sizeof *owned);
    char **results = calloc(n, sizeof *results);
    if (!texts || (has_contexts && !ctx) || !lens || !owned || !results) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    size_t *result_lens = lens + 2 * n;
    for (size_t i = 0; i < n; i++)
        result_lens[i] = SIZE_MAX;
    if (raw) {
        size_t off = 0;
        if (split_raw_pieces(lengths, 0, raw, raw_len, &off, texts, lens, owned) != 0 ||
            (has_contexts &&
             split_raw_pieces(contexts, 1, raw, raw_len, &off, ctx, lens + n, owned + n) != 0) ||
            off != raw_len) {
            snprintf(why, whylen, "malformed call frame (prompt lengths do not match)");
            goto fail;
        }
    }
    for (size_t i = 0; !raw && i < n; i++) {
        json_t *p = json_array_get(prompts, i);
        json_t *c = has_contexts ? json_array_get(contexts, i) : NULL;
        if (!json_is_string(p) || (c && !json_is_null(c) && !json_is_string(c))) {
            snprintf(why, whylen, "malformed call frame");
            goto fail;
        }
        texts[i] = json_string_value(p);
        lens[i] = json_string_length(p);
        if (c && json_is_string(c)) {
            ctx[i] = json_string_value(c);
            lens[n + i] = json_string_length(c);
        }
    }
    /* A list of contexts that are all None is no context at all. */
    size_t given = 0;
    for (size_t i = 0; ctx && i < n; i++)
        given += ctx[i] != NULL;
    if (ws->interrupted || ws->stopped || !ws->call) {
        fill_errors(results, result_lens, n, unserved_message(ws));
    } else {
        double t0 = clock_now();
        int call_rc = ws->call(ws->userdata, kind, json_string_value(model), texts, lens,
                               given ? ctx : NULL, given ? lens + n : NULL, n, results,
                               result_lens);
        ws->call_seconds += clock_now() - t0;
        ws->n_calls += n;
        ws->stopped |= call_rc != 0;
    }
    rc = send_call_result(sb, ws, results, result_lens, n, why, whylen);
fail:
    for (size_t i = 0; i < n && results; i++)
        free(results[i]);
    for (size_t i = 0; i < 2 * n && owned; i++)
        free(owned[i]);
    free(results);
    free(owned);
    free(lens);
    free(texts);
    free(ctx);
    free(raw);
    return rc;
}

/* Sends a call's results, bounded by the frame limit. When the callee
 * stopped the run its error strings say why (a budget, the wall limit, a
 * cancel); a prompt it left without one gets ours. 0, or -1 with why when
 * the child cannot be written to. */
static int send_call_result(sandbox *sb, const wait_state *ws, char **results,
                            const size_t *result_lens, size_t n, char *why, size_t whylen)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const char *r = results[i] ? results[i] : ws->stopped ? unserved_message(ws) : "Error: no result";
        size_t r_len = results[i] && result_lens[i] != SIZE_MAX ? result_lens[i] : strlen(r);
        if (json_array_append_new(list, frame_string(r, r_len)) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *reply = list ? json_pack("{s:s, s:o, s:b}", "type", "call_result", "results", list,
                                     "stop", ws->interrupted || ws->stopped)
                         : NULL;
    list = NULL; /* json_pack took it, or failed and freed it */
    if (reply && frame_encoded_size(reply) > FRAME_MAX) {
        json_t *small = json_array();
        for (size_t i = 0; small && i < n; i++)
            json_array_append_new(small, json_string("Error: the results are too large to "
                                                     "return to the sandbox"));
        json_object_set_new(reply, "results", small);
    }
    return send_frame(sb, reply, why, whylen);
}

/* Reads frames until one of type `want`, serving calls meanwhile and
 * enforcing the timeout and the cancel flag (read at least every
 * SANDBOX_CANCEL_POLL_MS, and after every signal). *reply is set only for
 * WAIT_REPLY. */
static int wait_reply(sandbox *sb, const char *want, wait_state *ws, json_t **reply, char *why,
                      size_t whylen)
{
    *reply = NULL;
    for (;;) {
        double now = clock_now();
        double used = now - ws->started - ws->call_seconds;
        int cancel = !ws->interrupted && sb->cancel && *sb->cancel;
        if (cancel || (!ws->interrupted && ws->timeout > 0 && used >= ws->timeout)) {
            kill(sb->pid, cancel ? SIGUSR1 : SIGINT);
            ws->interrupted = 1;
            ws->cancelled = cancel;
            ws->kill_at = now + sb->kill_grace;
        }
        if (ws->interrupted && now >= ws->kill_at)
            return WAIT_KILLED;
        double left = ws->interrupted ? ws->kill_at - now
                      : ws->timeout > 0 ? ws->timeout - used
                                        : 3600;
        int wait_ms = poll_timeout_ms(left);
        if (!ws->interrupted && sb->cancel && wait_ms > SANDBOX_CANCEL_POLL_MS)
            wait_ms = SANDBOX_CANCEL_POLL_MS;
        struct pollfd p = {.fd = sb->sock, .events = POLLIN};
        int n = poll(&p, 1, wait_ms);
        if (n < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return WAIT_DIED;
        }
        if (n <= 0)
            continue;
        json_t *frame = NULL;
        int rc = frame_reader_step(&sb->reader, sb->sock, &frame, why, whylen);
        if (rc == FRAME_MORE)
            continue;
        if (rc == FRAME_EOF || rc == FRAME_IO_ERROR) {
            if (rc == FRAME_EOF)
                snprintf(why, whylen, "closed its end of the socket");
            return WAIT_DIED;
        }
        if (rc == FRAME_ERROR)
            return WAIT_PROTOCOL;
        const char *type = json_string_value(json_object_get(frame, "type"));
        if (type && strcmp(type, want) == 0) {
            json_t *id = json_object_get(frame, "id");
            if (ws->id >= 0 && (!json_is_integer(id) || json_integer_value(id) != ws->id)) {
                /* Model code wrote a frame to fd 3 itself. */
                snprintf(why, whylen, "a '%s' frame that does not answer the request (forged "
                                      "on the channel by model code?)", want);
                json_decref(frame);
                return WAIT_PROTOCOL;
            }
            *reply = frame;
            return WAIT_REPLY;
        }
        if (type && strcmp(type, "call") == 0) {
            rc = serve_call(sb, frame, ws, why, whylen);
            json_decref(frame);
            if (rc != 0)
                return WAIT_PROTOCOL;
            continue;
        }
        const char *message = json_string_value(json_object_get(frame, "message"));
        if (type && strcmp(type, "error") == 0 && message) {
            snprintf(why, whylen, "%s", message); /* a start-up failure, explained */
            ws->input_error = json_is_true(json_object_get(frame, "input_error"));
        } else
            snprintf(why, whylen, "unexpected frame of type '%.40s'", type ? type : "(none)");
        json_decref(frame);
        return WAIT_PROTOCOL;
    }
}

/* ---- start-up ---- */

/* The layers of the new child (layers.c): fills layers, warnings and
 * layers_json, or refuses a child without the floor. */
static int compose_layers(sandbox *sb, json_t *ready, char *err, size_t errlen)
{
    char *json = NULL;
    if (sandbox_compose_layers(json_object_get(ready, "layer_details"), &sb->ns,
                               sb->unsafe_no_sandbox, sb->layers, sizeof sb->layers, sb->warnings,
                               sizeof sb->warnings, &json, err, errlen) != 0)
        return -1;
    free(sb->layers_json);
    sb->layers_json = json;
    return 0;
}

static int handshake(sandbox *sb, char *err, size_t errlen)
{
    char why[512] = "";
    const sandbox_input *first = &sb->inputs[0].in;
    json_t *init = json_pack("{s:s, s:i, s:I, s:I, s:f, s:b}", "type", "init", "version",
                             SANDBOX_PROTOCOL_VERSION, "output_limit",
                             (json_int_t)sb->output_limit, "memory_limit",
                             (json_int_t)sb->memory_limit, "cell_timeout", sb->cell_timeout,
                             "unsafe_no_sandbox", sb->unsafe_no_sandbox);
    const sandbox_input none = {.context_fd = -1, .data_fd = -1};
    if (sb->preloaded)
        first = &none; /* the child has them from its zygote */
    if (init)
        sandbox_input_describe(init, first);
    if (init && sb->preloaded)
        json_object_set_new(init, "preloaded", json_integer((json_int_t)sb->preloaded));
    if (init && sb->no_landlock)
        json_object_set_new(init, "skip_landlock", json_true());
    if (init && sb->first_alias[0])
        json_object_set_new(init, "first_alias", json_string(sb->first_alias));
    if (init && sb->cache)
        json_object_set_new(init, "has_search_cache", json_true());
    if (send_frame(sb, init, why, sizeof why) != 0) {
        int status = collect_child(sb);
        char how[160] = "could not be reached";
        if (status != -1)
            sandbox_describe_status(status, how, sizeof how);
        snprintf(err, errlen, "the sandbox process %s during start-up", how);
        return -1;
    }
    /* No SIGINT during start-up: the deadline ends it with SIGKILL. */
    double start_limit = sandbox_input_seconds(first);
    wait_state ws = {.started = clock_now(), .timeout = 0, .interrupted = 1,
                     .kill_at = clock_now() + start_limit, .id = -1};
    json_t *reply = NULL;
    int rc = wait_reply(sb, "ready", &ws, &reply, why, sizeof why);
    if (rc == WAIT_REPLY) {
        const char *python = json_string_value(json_object_get(reply, "python"));
        snprintf(sb->python, sizeof sb->python, "%.*s", python ? (int)strcspn(python, " ") : 0,
                 python ? python : "");
        if (!sb->preloaded) {
            json_decref(sb->inputs[0].summary);
            sb->inputs[0].summary = json_incref(json_object_get(reply, "summary"));
        }
        int ok = compose_layers(sb, reply, err, errlen);
        json_decref(reply);
        if (ok != 0)
            stop_child(sb);
        return ok;
    }
    if (rc == WAIT_KILLED) {
        stop_child(sb);
        snprintf(err, errlen, "the sandbox was not ready after %.0f s", start_limit);
        return -1;
    }
    /* Start-up failures arrive as an "error" frame; why holds its message. */
    int status = collect_child(sb);
    char how[160] = "";
    if (status != -1)
        sandbox_describe_status(status, how, sizeof how);
    sb->input_error = ws.input_error;
    if (ws.input_error)
        snprintf(err, errlen, "%s", why);
    else
        snprintf(err, errlen, "the sandbox process failed during start-up: %s%s%s", why,
                 how[0] ? "; it " : "", how);
    return -1;
}

/* ---- requests that run no model code ---- */

/* Sends a request that runs no model code (add_input, set_var) and waits
 * for its reply of type `want`, without a SIGINT: a child that has not
 * answered within `seconds` is killed (WAIT_KILLED). With fds (n_fds may be
 * 0) the byte carrying them follows the frame. Takes the frame. */
static int host_request(sandbox *sb, json_t *frame, const int *fds, int n_fds, const char *want,
                        double seconds, json_t **reply, char *why, size_t whylen)
{
    *reply = NULL;
    long long id = (long long)sb->next_id++;
    if (frame)
        json_object_set_new(frame, "id", json_integer((json_int_t)id));
    if (send_frame(sb, frame, why, whylen) != 0 ||
        (fds && fd_send(sb->sock, 0, fds, n_fds, why, whylen) != 0))
        return WAIT_DIED;
    double now = clock_now();
    wait_state ws = {.started = now, .interrupted = 1, .kill_at = now + seconds, .id = id};
    return wait_reply(sb, want, &ws, reply, why, whylen);
}

/* Ends a child that did not answer a request that runs no model code, and
 * says why in err. */
static void drop_child(sandbox *sb, int how, const char *why, const char *what, char *err,
                       size_t errlen)
{
    char status_text[160] = "";
    int status = how == WAIT_DIED ? collect_child(sb) : stop_child(sb);
    if (how == WAIT_DIED && status != -1)
        sandbox_describe_status(status, status_text, sizeof status_text);
    snprintf(err, errlen, "the sandbox process %s while %s (%s)",
             how == WAIT_KILLED ? "did not answer in time" : "failed", what,
             status_text[0] ? status_text : why);
}

/* Asks the child to load and bind an input (its summary, for a parsed one,
 * goes into the slot). Returns 0; 1 when the child refused it (err says why;
 * the child is fine), 2 when the input itself is at fault (a .json that does
 * not parse); -1 when the child is gone (err says why). */
static int load_input(sandbox *sb, input_slot *slot, char *err, size_t errlen)
{
    const sandbox_input *in = &slot->in;
    char why[512] = "";
    int fds[2], n_fds = 0;
    if (in->context_fd >= 0)
        fds[n_fds++] = in->context_fd;
    if (in->context_fd >= 0 && in->data_fd >= 0)
        fds[n_fds++] = in->data_fd;
    json_t *frame = json_pack("{s:s, s:s}", "type", "add_input", "name", slot->name);
    if (frame)
        sandbox_input_describe(frame, in);
    json_t *reply = NULL;
    int how = host_request(sb, frame, fds, n_fds, "input_added", sandbox_input_seconds(in), &reply, why,
                           sizeof why);
    if (how != WAIT_REPLY) {
        char what[128];
        snprintf(what, sizeof what, "loading input '%s'", slot->name);
        drop_child(sb, how, why, what, err, errlen);
        return -1;
    }
    int ok = json_is_true(json_object_get(reply, "ok"));
    int input_error = !ok && json_is_true(json_object_get(reply, "input_error"));
    if (!ok) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        if (input_error)
            snprintf(err, errlen, "%s", message ? message : "the input cannot be read");
        else
            snprintf(err, errlen, "the sandbox could not load input '%s': %s", slot->name,
                     message && message[0] ? message : "no reason given");
    }
    json_decref(slot->summary);
    slot->summary = ok ? json_incref(json_object_get(reply, "summary")) : NULL;
    json_decref(reply);
    return ok ? 0 : input_error ? 2 : 1;
}

/* Asks the child to set a variable: the str value, or the protected JSON
 * value json when it is not NULL. Returns 0; 1 when the child refused it;
 * -1 when the child is gone. */
static int send_var(sandbox *sb, const char *name, const char *value, json_t *json, char *err,
                    size_t errlen)
{
    char why[512] = "";
    json_t *value_json = json ? json_incref(json) : frame_string(value, strlen(value));
    json_t *frame = value_json ? json_pack("{s:s, s:s, s:o}", "type", "set_var", "name", name,
                                           "value", value_json)
                               : NULL;
    if (frame && json) {
        json_object_set_new(frame, "json", json_true());
        json_object_set_new(frame, "protected", json_true());
    }
    size_t size = frame ? frame_encoded_size(frame) : 0;
    if (frame && (size == 0 || size > FRAME_MAX)) {
        json_decref(frame);
        snprintf(err, errlen, "the value of '%s' is too large for the sandbox (%zu bytes)",
                 name, size ? size : json ? (size_t)0 : strlen(value));
        return 1;
    }
    json_t *reply = NULL;
    int how = host_request(sb, frame, NULL, 0, "var_set", SANDBOX_START_TIMEOUT, &reply, why,
                           sizeof why);
    if (how != WAIT_REPLY) {
        char what[128];
        snprintf(what, sizeof what, "setting variable '%s'", name);
        drop_child(sb, how, why, what, err, errlen);
        return -1;
    }
    int ok = json_is_true(json_object_get(reply, "ok"));
    if (!ok) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        snprintf(err, errlen, "the sandbox could not set '%s': %s", name,
                 message && message[0] ? message : "no reason given");
    }
    json_decref(reply);
    return ok ? 0 : 1;
}

/* Asks the child to bind the variables of the snapshot in fd (len bytes).
 * Returns 0 (*variables, may be NULL, gets how many); 1 when the child
 * refused it (err says why: a flawed snapshot, out of memory; the child is
 * fine); -1 when the child is gone. */
static int send_snapshot(sandbox *sb, int fd, size_t len, size_t *variables, char *err,
                         size_t errlen)
{
    char why[512] = "";
    json_t *frame = json_pack("{s:s, s:I}", "type", "load_snapshot", "bytes", (json_int_t)len);
    json_t *reply = NULL;
    double seconds = SANDBOX_START_TIMEOUT + SANDBOX_PARSE_SECONDS_PER_GB * (double)len / 1e9;
    int how = host_request(sb, frame, &fd, 1, "snapshot_loaded", seconds, &reply, why, sizeof why);
    if (how != WAIT_REPLY) {
        drop_child(sb, how, why, "loading the data of earlier questions", err, errlen);
        return -1;
    }
    int ok = json_is_true(json_object_get(reply, "ok"));
    json_t *count = json_object_get(reply, "variables");
    if (variables)
        *variables = json_is_integer(count) && json_integer_value(count) > 0
                         ? (size_t)json_integer_value(count)
                         : 0;
    if (!ok) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        snprintf(err, errlen, "%s", message && message[0] ? message : "no reason given");
    }
    json_decref(reply);
    return ok ? 0 : 1;
}

/* ---- start-up and restarts ---- */

/* 4 GiB plus 4 x the bytes of every input. */
static size_t default_memory_limit(const sandbox *sb)
{
    const size_t base = (size_t)4 << 30;
    size_t input = 0;
    for (size_t i = 0; i < sb->n_inputs; i++) {
        size_t bytes = sb->inputs[i].in.context_len + sb->inputs[i].in.data_len;
        input = bytes > SIZE_MAX - input ? SIZE_MAX : input + bytes;
    }
    return input > (SIZE_MAX - base) / 4 ? SIZE_MAX : base + input * 4;
}

/* A fresh child with everything the host gave: the first input at spawn,
 * then every later input and every variable, in order. */
static int start_child(sandbox *sb, char *err, size_t errlen)
{
    frame_reader_reset(&sb->reader);
    if (sb->memory_auto)
        sb->memory_limit = default_memory_limit(sb);
    if (spawn_child(sb, err, errlen) != 0 || handshake(sb, err, errlen) != 0)
        return -1;
    for (size_t i = sb->preloaded ? sb->preloaded : 1; i < sb->n_inputs; i++)
        if (load_input(sb, &sb->inputs[i], err, errlen) != 0) {
            stop_child(sb);
            return -1;
        }
    /* A snapshot the child refuses now was accepted by the first child
     * (the same bytes): only a child that is gone stops the start. */
    if (sb->snapshot_fd >= 0 && send_snapshot(sb, sb->snapshot_fd, sb->snapshot_len, NULL, err,
                                              errlen) < 0)
        return -1;
    for (size_t i = 0; i < sb->n_vars; i++)
        if (send_var(sb, sb->vars[i].name, sb->vars[i].value, sb->vars[i].json, err, errlen) != 0) {
            stop_child(sb);
            return -1;
        }
    return 0;
}

int sandbox_start(const sandbox_options *opts, sandbox **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!opts || !opts->exe_path || !*opts->exe_path) {
        snprintf(err, errlen, "no sandbox executable given");
        return -1;
    }
    sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sb->pid = -1;
    sb->sock = -1;
    sb->ns_index = -1;
    sb->snapshot_fd = -1;
    sb->floor_only = sandbox_floor_only();
    sb->no_namespaces = opts->no_namespaces != 0 || sb->floor_only;
    sb->no_landlock = opts->no_landlock != 0 || sb->floor_only;
    sb->cancel = opts->cancel;
    sb->factory = sandbox_factory_hold(opts->factory);
    if (getrandom(&sb->next_id, sizeof sb->next_id, 0) != (ssize_t)sizeof sb->next_id)
        sb->next_id = (unsigned long long)(clock_wall() * 1e6) ^ (unsigned long long)getpid();
    sb->next_id &= (1ULL << 52) - 1; /* ids stay exact integers in any JSON reader */
    frame_reader_init(&sb->reader, FRAME_MAX);
    sb->exe_path = strdup(opts->exe_path);
    sb->inputs = calloc(1, sizeof *sb->inputs);
    if (!sb->exe_path || !sb->inputs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    sb->inputs[0].in = (sandbox_input){.context_fd = -1, .data_fd = -1};
    sb->n_inputs = 1;
    snprintf(sb->inputs[0].name, sizeof sb->inputs[0].name, "context");
    if (opts->first_alias && opts->first_alias[0]) {
        const sandbox_repl_name *entry = sandbox_policy_find(opts->first_alias);
        if (!entry || !entry->numbered || strlen(opts->first_alias) > SANDBOX_NAME_MAX) {
            snprintf(err, errlen, "'%.80s' cannot name the first input", opts->first_alias);
            goto fail;
        }
        snprintf(sb->first_alias, sizeof sb->first_alias, "%s", opts->first_alias);
    }
    sandbox_input first = {.context_fd = opts->context_fd, .context_len = opts->context_len,
                           .context_pack = opts->context_pack, .data_fd = opts->data_fd,
                           .data_len = opts->data_len, .parsed = opts->parsed};
    size_t given = opts->factory_inputs && opts->factory ? sandbox_factory_input_count(opts->factory)
                                                         : 0;
    if (given) {
        /* The factory's inputs, in order, as this sandbox's own: a fork gets
         * them from the zygote, a spawn (the fallback) loads them. */
        input_slot *all = calloc(given, sizeof *all);
        if (!all) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        free(sb->inputs);
        sb->inputs = all;
        sb->n_inputs = 0;
        for (size_t i = 0; i < given; i++, sb->n_inputs++)
            if (sandbox_factory_input_copy(opts->factory, i, all[i].name, sizeof all[i].name,
                                           &all[i].in, &all[i].summary, err, errlen) != 0)
                goto fail;
        sb->from_factory = given;
    } else if (sandbox_input_copy(&first, &sb->inputs[0].in, err, errlen) != 0) {
        goto fail;
    }
    if (opts->search_cache_dir && opts->search_cache_dir[0] &&
        !(sb->search_cache_dir = strdup(opts->search_cache_dir))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    sb->memory_limit = opts->memory_limit;
    sb->memory_auto = opts->memory_limit == 0;
    sb->cell_timeout = opts->cell_timeout > 0 ? opts->cell_timeout : 120;
    sb->kill_grace = opts->kill_grace > 0 ? opts->kill_grace : 2;
    sb->output_limit = opts->output_limit ? opts->output_limit : 20000;
    if (sb->output_limit > FRAME_MAX / 8)
        sb->output_limit = FRAME_MAX / 8;
    sb->unsafe_no_sandbox = opts->unsafe_no_sandbox != 0;
    if (start_child(sb, err, errlen) != 0) {
        int input_error = sb->input_error;
        sandbox_free(sb);
        return input_error ? -2 : -1;
    }
    *out = sb;
    return 0;
fail:
    sandbox_free(sb);
    return -1;
}

/* ---- cells ---- */

static int restart(sandbox *sb, char *err, size_t errlen)
{
    stop_child(sb);
    return start_child(sb, err, errlen);
}

/* Ends a request that did not get its reply: learns how the child went,
 * restarts it, and writes a message for the model into out. Returns 0, or
 * -1 when no new child could be started (err says why). */
static int recover(sandbox *sb, int how, const wait_state *ws, const char *why, buf *out,
                   char *err, size_t errlen)
{
    char status_text[160] = "";
    if (how == WAIT_KILLED && ws->cancelled) {
        stop_child(sb);
        buf_puts(out, "Cancelled: the cell was cancelled by the user and did not stop when "
                      "interrupted; the sandbox was killed and restarted.");
    } else if (how == WAIT_KILLED) {
        stop_child(sb);
        buf_printf(out, "TimeoutError: cell exceeded %g s wall time and did not stop when "
                        "interrupted; the sandbox was killed and restarted.",
                   sb->cell_timeout);
    } else if (how == WAIT_DIED) {
        int status = collect_child(sb);
        if (status != -1)
            sandbox_describe_status(status, status_text, sizeof status_text);
        buf_printf(out, "[sandbox] the Python process died while running this (%s)%s",
                   status_text[0] ? status_text : why,
                   ws->cancelled     ? " after the user cancelled it"
                   : ws->interrupted ? " after the wall-time interrupt"
                                     : "");
        buf_puts(out, "; it was restarted.");
    } else {
        stop_child(sb);
        buf_printf(out, "[sandbox] the Python process broke the protocol (%s) and was "
                        "restarted.",
                   why);
    }
    /* What the host gave comes back; the model's own variables do not. */
    buf_puts(out, " All variables were lost; `context`");
    for (size_t i = 1; i < sb->n_inputs && i <= 8; i++)
        buf_printf(out, ", `%s`", sb->inputs[i].name);
    if (sb->n_inputs > 9)
        buf_puts(out, ", the other inputs");
    for (size_t i = 0; i < sb->n_vars && i < 8; i++)
        buf_printf(out, ", `%s`", sb->vars[i].name);
    if (sb->n_vars > 8)
        buf_puts(out, ", the other variables rlm set");
    if (sb->snapshot_fd >= 0)
        buf_puts(out, ", the data of earlier questions");
    buf_puts(out, " and the REPL functions are loaded again.\n");
    return start_child(sb, err, errlen);
}

/* A copy of a JSON string, NUL bytes and all; *len (may be NULL) gets its
 * length. NULL when s is not a string. */
static char *json_strdup(json_t *s, size_t *len)
{
    if (len)
        *len = json_is_string(s) ? json_string_length(s) : 0;
    return json_is_string(s) ? str_dup_len(json_string_value(s), json_string_length(s)) : NULL;
}

static void fill_cell(sandbox_cell *cell, json_t *reply, const wait_state *ws)
{
    cell->output = json_strdup(json_object_get(reply, "output"), &cell->output_len);
    if (!cell->output)
        cell->output = strdup("");
    json_t *chars = json_object_get(reply, "output_chars");
    cell->output_chars = json_is_integer(chars) && json_integer_value(chars) >= 0
                             ? (size_t)json_integer_value(chars)
                             : strlen(cell->output ? cell->output : "");
    cell->raised = json_is_true(json_object_get(reply, "raised"));
    int interrupted = ws->interrupted && json_is_true(json_object_get(reply, "interrupted"));
    cell->timed_out = interrupted && !ws->cancelled;
    cell->cancelled = interrupted && ws->cancelled;
    cell->final_answer = json_strdup(json_object_get(reply, "final_answer"),
                                     &cell->final_answer_len);
    cell->variables = json_strdup(json_object_get(reply, "variables"), NULL);
    const char *how = json_string_value(json_object_get(reply, "final_how"));
    cell->final_literal = cell->final_answer && how && strcmp(how, "final_literal") == 0;
}

static void set_cell_message(sandbox_cell *cell, const char *text)
{
    free(cell->output);
    cell->output = strdup(text);
    cell->output_chars = cell->output_len = cell->output ? strlen(text) : 0;
}

int sandbox_exec_batched(sandbox *sb, const char *code, sandbox_call_fn call,
                         sandbox_batch_fn batch_call, void *userdata, sandbox_cell *cell, char *err,
                         size_t errlen)
{
    sb->batch_call = batch_call;
    int rc = sandbox_exec(sb, code, call, userdata, cell, err, errlen);
    sb->batch_call = NULL;
    return rc;
}

int sandbox_exec(sandbox *sb, const char *code, sandbox_call_fn call, void *userdata,
                 sandbox_cell *cell, char *err, size_t errlen)
{
    memset(cell, 0, sizeof *cell);
    double t0 = clock_now();
    if (sb->cancel && *sb->cancel) {
        set_cell_message(cell, "Cancelled: the cell was cancelled by the user before it ran.\n");
        cell->raised = 1;
        cell->cancelled = 1;
        return 0;
    }
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0) {
        set_cell_message(cell, "[sandbox] the Python sandbox is not available.\n");
        cell->raised = 1;
        return -1;
    }
    char why[512] = "";
    json_t *code_json = frame_string(code ? code : "", code ? strlen(code) : 0);
    long long id = (long long)sb->next_id++;
    json_t *request = code_json ? json_pack("{s:s, s:o, s:I}", "type", "exec", "code", code_json,
                                            "id", (json_int_t)id)
                                : NULL;
    if (request && frame_encoded_size(request) > FRAME_MAX) {
        json_decref(request);
        set_cell_message(cell, "[sandbox] the code is too large to run.\n");
        cell->raised = 1;
        return 0;
    }
    wait_state ws = {.started = clock_now(), .timeout = sb->cell_timeout, .call = call,
                     .userdata = userdata, .id = id};
    json_t *reply = NULL;
    int how = send_frame(sb, request, why, sizeof why) == 0
                  ? wait_reply(sb, "result", &ws, &reply, why, sizeof why)
                  : WAIT_DIED;
    int rc = 0;
    if (how == WAIT_REPLY) {
        fill_cell(cell, reply, &ws);
        json_decref(reply);
    } else {
        buf out;
        buf_init(&out, 4096);
        rc = recover(sb, how, &ws, why, &out, err, errlen);
        cell->output_len = out.len;
        cell->output = buf_take(&out);
        cell->output_chars = strlen(cell->output ? cell->output : "");
        cell->raised = 1;
        cell->restarted = 1;
        int interrupted = how == WAIT_KILLED || (ws.interrupted && how == WAIT_DIED);
        cell->timed_out = interrupted && !ws.cancelled;
        cell->cancelled = interrupted && ws.cancelled;
    }
    cell->call_seconds = ws.call_seconds;
    cell->n_calls = ws.n_calls;
    cell->seconds = clock_now() - t0 - ws.call_seconds;
    if (cell->seconds < 0)
        cell->seconds = 0;
    return rc;
}

int sandbox_get_var(sandbox *sb, const char *name, char **value, size_t *value_len, char *err,
                    size_t errlen)
{
    *value = NULL;
    size_t ignored;
    if (!value_len)
        value_len = &ignored;
    *value_len = 0;
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0)
        return -1;
    char why[512] = "";
    json_t *name_json = frame_string(name ? name : "", name ? strlen(name) : 0);
    long long id = (long long)sb->next_id++;
    json_t *request = name_json ? json_pack("{s:s, s:o, s:I}", "type", "get_var", "name",
                                            name_json, "id", (json_int_t)id)
                                : NULL;
    wait_state ws = {.started = clock_now(), .timeout = sb->cell_timeout, .id = id};
    json_t *reply = NULL;
    int how = send_frame(sb, request, why, sizeof why) == 0
                  ? wait_reply(sb, "var", &ws, &reply, why, sizeof why)
                  : WAIT_DIED;
    if (how == WAIT_REPLY) {
        int found = json_is_true(json_object_get(reply, "found"));
        *value = json_strdup(json_object_get(reply, "value"), value_len);
        json_decref(reply);
        if (!*value) {
            *value = strdup(found ? "" : "Error: no such variable");
            *value_len = *value ? strlen(*value) : 0;
        }
        if (!*value) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return found ? 0 : 1;
    }
    buf out;
    buf_init(&out, 4096);
    buf_puts(&out, "Error: reading the variable failed. ");
    if (recover(sb, how, &ws, why, &out, err, errlen) != 0) {
        buf_free(&out);
        return -1;
    }
    *value_len = out.len;
    *value = buf_take(&out);
    return 1;
}

/* ---- inputs and variables ---- */

/* A name the host may bind: an ASCII identifier of at most SANDBOX_NAME_MAX
 * characters, not a dunder, none of the policy table's fixed names (numbered
 * ones such as context_1 are the host's to bind), no input's (the child
 * checks again, against what its namespace really protects). */
static int check_name(const sandbox *sb, const char *name, char *err, size_t errlen)
{
    size_t len = name ? strlen(name) : 0;
    int ok = len > 0 && len <= SANDBOX_NAME_MAX && !(name[0] >= '0' && name[0] <= '9') &&
             strncmp(name, "__", 2) != 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = name[i] == '_' || (name[i] >= 'a' && name[i] <= 'z') ||
             (name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= '0' && name[i] <= '9');
    if (!ok) {
        snprintf(err, errlen, "'%.80s' is not a name the sandbox can bind (a Python identifier "
                              "of at most %d characters, not a dunder)",
                 name ? name : "", SANDBOX_NAME_MAX);
        return -1;
    }
    const sandbox_repl_name *entry = sandbox_policy_find(name);
    if (entry && !entry->numbered) {
        snprintf(err, errlen, "'%s' is a name of the REPL", name);
        return -1;
    }
    int first = strcmp(name, "context_0") == 0 || strcmp(name, sb->first_alias) == 0;
    for (size_t i = 0; !first && i < sb->n_inputs; i++)
        first = strcmp(name, sb->inputs[i].name) == 0;
    if (first) {
        snprintf(err, errlen, "'%s' is already an input", name);
        return -1;
    }
    return 0;
}

static var_slot *find_var(sandbox *sb, const char *name)
{
    for (size_t i = 0; i < sb->n_vars; i++)
        if (strcmp(sb->vars[i].name, name) == 0)
            return &sb->vars[i];
    return NULL;
}

/* After a request found the child gone (err says why): a fresh one, with
 * everything the host gave so far. Returns -1 for the caller to pass on. */
static int restart_after(sandbox *sb, char *err, size_t errlen)
{
    char first[512], again[512] = "";
    snprintf(first, sizeof first, "%s", err);
    if (start_child(sb, again, sizeof again) == 0)
        snprintf(err, errlen, "%s; the sandbox was restarted and its variables were lost",
                 first);
    else
        snprintf(err, errlen, "%s; restarting the sandbox failed too: %s", first, again);
    return -1;
}

int sandbox_add_input(sandbox *sb, const char *name, const sandbox_input *in, char *err,
                      size_t errlen)
{
    if (!sb || !in) {
        snprintf(err, errlen, "no sandbox or no input");
        return -1;
    }
    if (check_name(sb, name, err, errlen) != 0)
        return -1;
    if (find_var(sb, name)) {
        snprintf(err, errlen, "'%s' is already a variable set by the host", name);
        return -1;
    }
    if (sb->n_inputs >= SANDBOX_MAX_INPUTS) {
        snprintf(err, errlen, "too many inputs (at most %d)", SANDBOX_MAX_INPUTS);
        return -1;
    }
    input_slot *grown = realloc(sb->inputs, (sb->n_inputs + 1) * sizeof *grown);
    if (!grown) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sb->inputs = grown;
    input_slot slot = {.summary = NULL};
    snprintf(slot.name, sizeof slot.name, "%s", name);
    if (sandbox_input_copy(in, &slot.in, err, errlen) != 0)
        return -1;
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0) {
        sandbox_input_close(&slot.in);
        return -1;
    }
    int rc = load_input(sb, &slot, err, errlen);
    if (rc != 0) {
        sandbox_input_close(&slot.in);
        return rc < 0 ? restart_after(sb, err, errlen) : rc == 2 ? -2 : -1;
    }
    sb->inputs[sb->n_inputs++] = slot;
    return 0;
}

const json_t *sandbox_input_summary(const sandbox *sb, size_t i)
{
    return sb && i < sb->n_inputs ? sb->inputs[i].summary : NULL;
}

/* sandbox_set_var (value) and sandbox_set_value (json): sends the variable
 * and keeps it for restarts. */
static int set_slot(sandbox *sb, const char *name, const char *value, json_t *json, char *err,
                    size_t errlen)
{
    if (check_name(sb, name, err, errlen) != 0)
        return -1;
    var_slot *slot = find_var(sb, name);
    if (slot && (json || slot->json)) {
        snprintf(err, errlen, "'%s' is a value the sandbox protects; it cannot be set again",
                 name);
        return -1;
    }
    if (!slot && sb->n_vars >= SANDBOX_MAX_VARS) {
        snprintf(err, errlen, "too many variables set by the host (at most %d)",
                 SANDBOX_MAX_VARS);
        return -1;
    }
    char *copy = value ? strdup(value) : NULL;
    var_slot *grown = slot ? sb->vars : realloc(sb->vars, (sb->n_vars + 1) * sizeof *grown);
    if ((value && !copy) || !grown) {
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sb->vars = grown;
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0) {
        free(copy);
        return -1;
    }
    int rc = send_var(sb, name, value, json, err, errlen);
    if (rc != 0) {
        free(copy);
        return rc < 0 ? restart_after(sb, err, errlen) : -1;
    }
    if (!slot) {
        slot = &sb->vars[sb->n_vars++];
        *slot = (var_slot){.value = NULL};
        snprintf(slot->name, sizeof slot->name, "%s", name);
    } else {
        free(slot->value);
    }
    slot->value = copy;
    slot->json = json ? json_incref(json) : NULL;
    return 0;
}

int sandbox_set_var(sandbox *sb, const char *name, const char *value, char *err, size_t errlen)
{
    if (!sb || !value) {
        snprintf(err, errlen, "no sandbox or no value");
        return -1;
    }
    return set_slot(sb, name, value, NULL, err, errlen);
}

int sandbox_set_value(sandbox *sb, const char *name, json_t *value, char *err, size_t errlen)
{
    if (!sb || !value) {
        snprintf(err, errlen, "no sandbox or no value");
        return -1;
    }
    return set_slot(sb, name, NULL, value, err, errlen);
}

/* ---- snapshots ---- */

/* The child's list of what it left out, kept only as far as it is what it
 * claims to be (it goes into a prompt): known reasons, counts, and names
 * that are ASCII identifiers of at most SANDBOX_NAME_MAX characters. */
static json_t *checked_not_carried(json_t *given)
{
    static const char *const reasons[] = {"not_data", "too_large", "too_deep", "cycle"};
    json_t *list = json_array();
    for (size_t i = 0; list && i < json_array_size(given) && i < 4; i++) {
        json_t *item = json_array_get(given, i), *names = json_array();
        const char *reason = json_string_value(json_object_get(item, "reason"));
        json_int_t count = json_integer_value(json_object_get(item, "count"));
        int known = 0;
        for (size_t r = 0; reason && r < sizeof reasons / sizeof reasons[0]; r++)
            known |= strcmp(reason, reasons[r]) == 0;
        json_t *listed = json_object_get(item, "names");
        for (size_t k = 0; names && k < json_array_size(listed) && k < 40; k++) {
            const char *name = json_string_value(json_array_get(listed, k));
            size_t len = name ? strlen(name) : 0;
            int ok = len > 0 && len <= SANDBOX_NAME_MAX && !(name[0] >= '0' && name[0] <= '9');
            for (size_t c = 0; ok && c < len; c++)
                ok = name[c] == '_' || (name[c] >= 'a' && name[c] <= 'z') ||
                     (name[c] >= 'A' && name[c] <= 'Z') || (name[c] >= '0' && name[c] <= '9');
            if (ok)
                json_array_append_new(names, json_string(name));
        }
        if (known && count > 0 && count < ((json_int_t)1 << 40) && names)
            json_array_append_new(list, json_pack("{s:s, s:I, s:o}", "reason", reason, "count",
                                                  count, "names", names));
        else
            json_decref(names);
    }
    return list;
}

int sandbox_take_snapshot(sandbox *sb, size_t max_bytes, sandbox_snapshot *out, char *err,
                          size_t errlen)
{
    *out = (sandbox_snapshot){.fd = -1};
    if (!sb || sb->pid <= 0) {
        snprintf(err, errlen, "the sandbox has no process to take the data from");
        return -1;
    }
    if (max_bytes < 64 || max_bytes > (size_t)INT64_MAX) {
        snprintf(err, errlen, "a snapshot limit of %zu bytes", max_bytes);
        return 1;
    }
    char why[512] = "";
    int fd = memfd_create("rlm-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, (off_t)max_bytes) != 0) {
        snprintf(err, errlen, "cannot make room for the snapshot: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    json_t *frame = json_pack("{s:s, s:I}", "type", "snapshot", "max_bytes", (json_int_t)max_bytes);
    json_t *reply = NULL;
    double seconds = SANDBOX_START_TIMEOUT + SANDBOX_PARSE_SECONDS_PER_GB * (double)max_bytes / 1e9;
    int how = host_request(sb, frame, &fd, 1, "snapshot_taken", seconds, &reply, why, sizeof why);
    if (how != WAIT_REPLY) {
        close(fd);
        drop_child(sb, how, why, "writing the data for the next question", err, errlen);
        return -1;
    }
    json_t *bytes = json_object_get(reply, "bytes"), *carried = json_object_get(reply, "carried");
    int ok = json_is_true(json_object_get(reply, "ok")) && json_is_integer(bytes) &&
             json_integer_value(bytes) >= 16 && (uint64_t)json_integer_value(bytes) <= max_bytes &&
             json_is_integer(carried) && json_integer_value(carried) >= 0;
    if (!ok) {
        const char *message = json_string_value(json_object_get(reply, "message"));
        snprintf(err, errlen, "the sandbox could not write the data: %s",
                 message && message[0] ? message : "a bad reply");
        json_decref(reply);
        close(fd);
        return 1;
    }
    out->len = (size_t)json_integer_value(bytes);
    out->variables = (size_t)json_integer_value(carried);
    out->not_carried = checked_not_carried(json_object_get(reply, "not_carried"));
    json_decref(reply);
    /* The bytes stay as the child wrote them: the next child reads them
     * (and checks them), the host only keeps them. */
    if (ftruncate(fd, (off_t)out->len) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        snprintf(err, errlen, "cannot seal the snapshot: %s", strerror(errno));
        close(fd);
        sandbox_snapshot_clear(out);
        return 1;
    }
    out->fd = fd;
    return 0;
}

int sandbox_load_snapshot(sandbox *sb, int fd, size_t len, size_t *variables, char *err,
                          size_t errlen)
{
    if (variables)
        *variables = 0;
    if (!sb || fd < 0 || sb->snapshot_fd >= 0) {
        snprintf(err, errlen, sb && sb->snapshot_fd >= 0 ? "the sandbox has a snapshot already"
                                                         : "no sandbox or no snapshot");
        return -1;
    }
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, SANDBOX_FD_FLOOR);
    if (copy < 0) {
        snprintf(err, errlen, "cannot duplicate the snapshot's fd: %s", strerror(errno));
        return -1;
    }
    if (sb->pid <= 0 && restart(sb, err, errlen) != 0) {
        close(copy);
        return -1;
    }
    int rc = send_snapshot(sb, copy, len, variables, err, errlen);
    if (rc != 0) {
        close(copy);
        return rc < 0 ? restart_after(sb, err, errlen) : 1;
    }
    sb->snapshot_fd = copy;
    sb->snapshot_len = len;
    return 0;
}

void sandbox_snapshot_clear(sandbox_snapshot *snap)
{
    if (!snap)
        return;
    if (snap->fd >= 0)
        close(snap->fd);
    json_decref(snap->not_carried);
    *snap = (sandbox_snapshot){.fd = -1};
}

const char *sandbox_layers(const sandbox *sb)
{
    return sb ? sb->layers : "";
}

const char *sandbox_warnings(const sandbox *sb)
{
    return sb ? sb->warnings : "";
}

const char *sandbox_layers_json(const sandbox *sb)
{
    return sb && sb->layers_json ? sb->layers_json : "[]";
}

const char *sandbox_python_version(const sandbox *sb)
{
    return sb ? sb->python : "";
}

int sandbox_pid(const sandbox *sb)
{
    return sb ? (int)sb->pid : -1;
}

int sandbox_forked(const sandbox *sb)
{
    return sb && sb->pid > 0 && sb->forked;
}

void sandbox_cell_clear(sandbox_cell *cell)
{
    if (!cell)
        return;
    free(cell->output);
    free(cell->final_answer);
    free(cell->variables);
    memset(cell, 0, sizeof *cell);
}

void sandbox_free(sandbox *sb)
{
    if (!sb)
        return;
    stop_child(sb);
    for (size_t i = 0; i < sb->n_inputs; i++) {
        sandbox_input_close(&sb->inputs[i].in);
        json_decref(sb->inputs[i].summary);
    }
    free(sb->inputs);
    for (size_t i = 0; i < sb->n_vars; i++) {
        free(sb->vars[i].value);
        json_decref(sb->vars[i].json);
    }
    free(sb->vars);
    if (sb->snapshot_fd >= 0)
        close(sb->snapshot_fd);
    free(sb->search_cache_dir);
    free(sb->exe_path);
    free(sb->layers_json);
    sandbox_factory_release(sb->factory);
    free(sb);
}
