/* conversation — the questions of one handle that build on each other
 * (rlm_begin_conversation, the session option): every input given so far and
 * the record of each, the engine state that carries the history and the
 * sandbox's data from one question to the next and, for a saved session, the
 * reading back of an earlier process's inputs and history (docs/sessions.md).
 *
 * The facade (rlm.c) keeps the input pending for the next question and the
 * options; it hands each new input over with conversation_add, and the
 * conversation reads a saved input again through the hook it was given
 * (the same reading as rlm_add_context), so it never sees struct rlm.
 *
 * Ownership: conversation_open returns a conversation freed by
 * conversation_free. It owns its session store, its engine state, every
 * input given to conversation_add (kept until it is freed: the engine state
 * borrows them) and their records. Errors are values: a function that can
 * fail returns an rlm_status and writes the message into err. */
#ifndef RLM_CONVERSATION_H
#define RLM_CONVERSATION_H

#include <jansson.h>
#include <stddef.h>

#include "engine.h"
#include "ingest.h"
#include "rlm.h"

/* How input arguments are read (the options rlm_add_context reads them
 * with, as a record keeps them): include and exclude are newline-separated
 * globs ("" for none), jsonl_field "" for none; legacy: a record made
 * before JSON inputs were parsed, read as it was then. */
typedef struct conversation_reading {
    const char *include;
    const char *exclude;
    const char *jsonl_field;
    int json_input;
    int legacy;
} conversation_reading;

typedef struct conversation_hooks {
    /* Reads args[0..n) into a document set as rlm_add_context would: RLM_OK
     * with *out (taken by the caller), or a status with err set. */
    rlm_status (*ingest)(void *data, const char *const *args, size_t n,
                         const conversation_reading *how, ingest_set **out, char *err,
                         size_t errlen);
    /* A warning for the user (rlm_warnings, the trace). */
    void (*warn)(void *data, const char *message);
    void *data;
} conversation_hooks;

typedef struct conversation conversation;

/* A conversation in memory (db NULL), or saved as the session `name` in the
 * database at db (created with its directory when needed; a new session is
 * said through hooks->warn, since a typo would otherwise start an empty
 * conversation unseen). hooks is copied. RLM_OK with *out, or
 * RLM_ERR_INPUT (the database cannot be opened, the session is in use, a
 * bad name) / RLM_ERR_NOMEM with err set and *out NULL. */
rlm_status conversation_open(const char *db, const char *name, const conversation_hooks *hooks,
                             conversation **out, char *err, size_t errlen);

void conversation_free(conversation *c);

/* The engine state to run the next question with (engine_params.state). */
engine_state *conversation_state(conversation *c);

/* 1 when no question was asked yet, here or (a session) by an earlier
 * process. */
int conversation_is_new(const conversation *c);

/* Before each question: an earlier process's inputs and history are read
 * back, once (the models it used, when other than model / sub_model, are
 * warned of). A failure here breaks the conversation: every later call
 * fails too, naming the first error. */
rlm_status conversation_ready(conversation *c, const char *model, const char *sub_model,
                              char *err, size_t errlen);

/* The record of an input read from arguments args[0..n) (fds[i] >= 0: the
 * argument only names data given by descriptor) with `how`: what a saved
 * session reads again and what conversation_has compares. NULL when out of
 * memory. */
json_t *conversation_args_record(const char *const *args, const int *fds, size_t n,
                                 const conversation_reading *how);

/* The record of a file given whole (rlm_set_context_file), by its real path.
 * NULL when out of memory. */
json_t *conversation_file_record(const char *path);

/* *rec = the record of text no later process can read again (a string
 * given to rlm_set_context_text; `what` names it in errors). RLM_ERR_USAGE
 * with err set when a saved session cannot keep it (1 MB or more, or not
 * UTF-8). */
rlm_status conversation_text_record(const conversation *c, const char *what, const char *data,
                                    size_t len, json_t **rec, char *err, size_t errlen);

/* Stdin, a pipe or an input given by descriptor among args[0..n) (read into
 * docs) cannot be read again by a later process: a saved session keeps its
 * text instead (*rec), which it can do only for it alone, read as one str
 * (RLM_ERR_USAGE with err set otherwise). *rec stays NULL when no such
 * argument is there or the conversation is not saved. */
rlm_status conversation_stream_record(const conversation *c, const char *const *args,
                                      const int *fds, size_t n, const ingest_set *docs,
                                      json_t **rec, char *err, size_t errlen);

/* 1 when rec names an input the conversation already has: the same
 * arguments (stdin, a pipe and descriptors aside, which read new data each
 * time) or the same file. */
int conversation_has(const conversation *c, const json_t *rec);

/* Adds the next question's new input (docs and rec taken, whatever the
 * result). RLM_ERR_USAGE past 4,096 inputs, RLM_ERR_NOMEM, with err set. */
rlm_status conversation_add(conversation *c, ingest_set *docs, json_t *rec, char *err,
                            size_t errlen);

/* A saved session records its inputs and models (docs/sessions.md) before
 * the question runs; in memory, nothing. RLM_ERR_INPUT with err set when
 * the database cannot be written. */
rlm_status conversation_save(conversation *c, const char *model, const char *sub_model,
                             char *err, size_t errlen);

#endif
