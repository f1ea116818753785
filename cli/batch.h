/* batch — `rlm batch`: many questions from a task file, run in one process,
 * resumable and sharded. Three parts share this header:
 *   batch_tasks.c  the task file (one JSON task per line) read and checked,
 *                  every bad line reported with its number; the shard a
 *                  task belongs to; the result line of a task; scoring;
 *   batch_ledger.c the SQLite ledger next to the output: each task's state
 *                  and result line, committed as it finishes, and the output
 *                  file rebuilt from it so that a crash at any moment loses
 *                  nothing and duplicates nothing;
 *   batch.c        the command (flags, the pool and its worker threads,
 *                  SIGTERM, progress) and batch_merge.c `rlm batch merge`.
 * docs/cluster.md is the user's guide.
 *
 * Ownership: a batch_taskfile owns every task, string and error in it until
 * batch_taskfile_free; the tasks' pointers are borrowed by everyone else. A
 * batch_ledger is opened by batch_ledger_open and closed by
 * batch_ledger_close; the lines it hands out are the caller's (free). */
#ifndef RLM_CLI_BATCH_H
#define RLM_CLI_BATCH_H

#include <jansson.h>
#include <stddef.h>

#include "rlm.h"

/* Largest task file line, and most tasks and inputs of one task: bounds, so
 * a wrong file fails with a message instead of exhausting memory. */
#define BATCH_MAX_LINE ((size_t)16 << 20)
#define BATCH_MAX_TASKS 10000000
#define BATCH_MAX_TASK_INPUTS 256
#define BATCH_MAX_ID 256

/* Exit codes of rlm batch (documented in its --help and docs/cluster.md). */
enum {
    BATCH_EXIT_DONE = 0,         /* every task of the shard answered */
    BATCH_EXIT_UNANSWERED = 1,   /* every task finished; some without an answer or failed for good */
    BATCH_EXIT_USAGE = 2,        /* bad flags or task lines (the good tasks still ran) */
    BATCH_EXIT_RETRY = 3,        /* some tasks failed with a model error: rerun to retry them */
    BATCH_EXIT_INTERNAL = 4,     /* the ledger or the output could not be written, sandbox failure */
    BATCH_EXIT_STOPPED = 5,      /* stopped by SIGTERM/SIGINT: rerun the same command to resume */
};

/* One input of a task: a path or glob (resolved against the task file's
 * directory), or inline text. */
typedef struct batch_input {
    char *arg;                   /* path or glob as it will be given to rlm_add_context */
    char *text;                  /* inline text (arg NULL), text_len bytes */
    size_t text_len;
} batch_input;

typedef struct batch_task {
    char *id;
    long line;                   /* 1-based line of the task file */
    size_t ordinal;              /* 0-based among the file's non-blank lines: its shard */
    char *question;
    batch_input *inputs;
    size_t n_inputs;
    json_t *options;             /* {"key": "text value"} config options, or NULL */
    json_t *gold;                /* the expected answer (string or number), or NULL */
    json_t *meta;                /* copied to the result line, or NULL */
    char *input_error;           /* an input that names nothing: the task is an error
                                  * line, never run; NULL when all resolve */
    char digest[17];             /* hash of the line: a changed task is noticed */
} batch_task;

/* A line that is not a task, with why. */
typedef struct batch_line_error {
    long line;
    size_t ordinal;
    char *message;
} batch_line_error;

typedef struct batch_taskfile {
    batch_task *tasks;
    size_t n_tasks;
    batch_line_error *errors;
    size_t n_errors;
    char *dir;                   /* the file's directory: relative inputs are from there */
} batch_taskfile;

/* Reads path (a JSONL task file; "-" is refused: resuming needs the file
 * again). Each non-blank line is {"id", "question", "inputs", "options",
 * "gold", "meta"} (docs/cluster.md); a line that is not is an error with its
 * number, as is a second task with an id already seen (naming the first's
 * line); the tasks that are good are kept. Each task's options are
 * checked on a scratch config: a value rlm_config_set refuses, or a key
 * that is the whole process's (an endpoint, the concurrency, the sandbox,
 * the run log), is an error of its line. 0 with *out filled, or -1 with err
 * saying why the file cannot be read at all. */
int batch_taskfile_read(const char *path, batch_taskfile *out, char *err, size_t errlen);
void batch_taskfile_free(batch_taskfile *tf);

/* Whether the task (or line) of this ordinal is shard index of count. */
int batch_in_shard(size_t ordinal, int index, int count);

/* The shard from the flags or the scheduler's environment: spec "I/N"
 * (--shard; may be NULL), else $RLM_SHARD "I/N"; else a Slurm array's
 * SLURM_ARRAY_TASK_ID of `count` (--shards, > 0: a shard resubmitted alone
 * with sbatch --array=I keeps its index) or, without a count,
 * SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT;
 * else JOB_COMPLETION_INDEX of `count` (or $RLM_SHARDS: Kubernetes'
 * indexed Jobs). No shard at all is 0/1. 0, or -1 with err saying what is
 * wrong. *source names where it came from. */
int batch_shard_resolve(const char *spec, long count, int *index, int *total, const char **source,
                        char *err, size_t errlen);

/* Normalised comparison of an answer with a gold answer: case, surrounding
 * whitespace and punctuation, and runs of spaces ignored; correct when equal
 * or when the gold appears in the answer as whole words. */
int batch_answer_correct(const char *answer, const json_t *gold);

/* ---- the ledger ------------------------------------------------------------ */

typedef struct batch_ledger batch_ledger;

/* Where a task stands in the ledger. */
typedef enum batch_state {
    BATCH_PENDING = 0,           /* never finished (or only cancelled) */
    BATCH_DONE,                  /* final: its line is in the output */
    BATCH_FAILED,                /* failed, may be retried: attempts so far */
} batch_state;

/* Opens (creating) the ledger for output file out: out + ".ledger", WAL,
 * and brings out to what the ledger holds — every done task's line once,
 * in the order they finished (a line torn by a crash, a line appended twice
 * or a line missing after a crash between the commit and the append are
 * all mended by rewriting out from the ledger, atomically). shard "I/N" is
 * recorded; a ledger of another shard is refused, as is an output that
 * exists without a ledger. NULL with err saying why. */
batch_ledger *batch_ledger_open(const char *out, const char *shard, char *err, size_t errlen);
void batch_ledger_close(batch_ledger *l);

/* The state of task id: its attempts so far, the digest of its task line
 * and its result's status ("answered", "no_answer", "error") as recorded. */
batch_state batch_ledger_state(batch_ledger *l, const char *id, int *attempts, char *digest,
                               size_t digestlen, char *status, size_t statuslen);

/* Records that task id is done with result `line` (one JSON object, no
 * newline) of the given status: committed, then appended to the output. Or,
 * with final 0, that it failed (attempts counted, `line` kept as its last
 * error). 0, or -1 with err saying what could not be written (a full
 * disk): the ledger then has not changed, or the output can be rebuilt
 * from it on the next run. */
int batch_ledger_record(batch_ledger *l, const char *id, const char *digest, int final,
                        const char *status, const char *line, char *err, size_t errlen);

/* Drops task id's record (an input error that the task file has since
 * fixed). 0 or -1 with err. */
int batch_ledger_forget(batch_ledger *l, const char *id, char *err, size_t errlen);

/* Seconds spent in batch_ledger_record so far, and how many calls: the
 * ledger's cost per task. */
void batch_ledger_cost(const batch_ledger *l, double *seconds, size_t *records);

/* ---- merge ----------------------------------------------------------------- */

/* rlm batch merge [--tasks FILE] [-o OUT] [--json] SHARD.jsonl... */
int cmd_batch_merge(int argc, char **argv);

#endif
