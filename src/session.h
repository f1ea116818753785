/* session — the on-disk record of a conversation with one RLM, so a later
 * process can continue it: the root history, the answers, the code of every
 * cell (for the record), and the data the last question left, in SQLite.
 *
 * Design: a sandbox's namespace is not saved, and nothing is re-run: each
 * question leaves its data variables as a snapshot (bytes the sandbox child
 * wrote, docs/internals/snapshot-format.md), stored here as a blob and handed
 * to the next question's fresh sandbox, which validates them. Sessions of
 * earlier versions recorded each cell's sub-call replies to re-run the cells;
 * they still load their history and answers. Rows are appended and committed
 * as they happen, so a crash mid-question loses nothing of the questions
 * before it. Compaction replaces a prefix of the history by a summary
 * without deleting it: older messages are marked hidden.
 *
 * Ownership: session_open returns a handle freed by session_free. Strings
 * passed in are copied into the database; strings and JSON handed out to a
 * callback are borrowed for the duration of the call. Not thread-safe. */
#ifndef RLM_SESSION_H
#define RLM_SESSION_H

#include <jansson.h>
#include <stddef.h>

typedef struct session session;

/* Opens (creating if needed) the database at db_path and the session called
 * name in it, and holds the session until session_free: a second handle on
 * it, in this process or another, fails with "session 'NAME' is in use by
 * pid N" (the lock is the kernel's, in the file DB-lock, and goes with its
 * holder however it ends). The name is 1-100 characters of [A-Za-z0-9._-].
 * Returns 0, or -1 with err set (bad name, unwritable path, not a session
 * database, damaged (the message says how to recover), in use). */
int session_open(const char *db_path, const char *name, session **out, char *err, size_t errlen);

/* 1 when name is a valid session name: 1-100 characters of letters, digits,
 * '.', '_' and '-', not starting with '.'. */
int session_name_valid(const char *name);

/* 1 when the session had no questions before this handle opened it. */
int session_is_new(const session *s);

/* 1 when this open created the session (no session of that name existed). */
int session_created(const session *s);

/* The session's configuration as saved by the first process (a JSON object
 * such as {"model": ..., "contexts": [...]}; NULL for a new session, or when
 * none was saved). Borrowed from the handle. */
const json_t *session_config(const session *s);

/* Saves the configuration (replacing any earlier one). Does not steal cfg. */
int session_set_config(session *s, const json_t *cfg);

/* Starts question number n (1-based, returned) with its text. */
int session_begin_question(session *s, const char *question, int *number);

/* Ends the current question with its answer (NULL when it got none). */
int session_end_question(session *s, const char *answer);

/* Appends one root message (role "system", "user" or "assistant"). */
int session_add_message(session *s, const char *role, const char *content);

/* Appends one cell: the code that ran (for the record: nothing re-runs it)
 * and, from sessions of earlier versions only, the replies its sub-calls
 * received, as a JSON array of strings in call order (NULL: none). Does not
 * steal replies. */
int session_add_cell(session *s, const char *code, const json_t *replies);

/* Saves the data question `question` left: the snapshot bytes of fd
 * (len of them, read with pread, a chunk at a time) and the list of what
 * was not carried (may be NULL), replacing the session's earlier one, in
 * one transaction. -1 with the handle's message (larger than SQLite's
 * length limit, a read error, a write error), and nothing is replaced. */
int session_save_snapshot(session *s, int question, int fd, size_t len, const json_t *not_carried);

/* The session's last saved data: *fd a new sealed memfd holding its len
 * bytes (the caller closes it), *question the question that left it,
 * *not_carried its list (a new reference, or NULL). 0; 1 when there is
 * none; -1 with the handle's message. */
int session_load_snapshot(session *s, int *question, int *fd, size_t *len, json_t **not_carried);

/* 1 when cells of this session carry their sub-call replies: it was
 * recorded by a version of rlm that rebuilt variables by re-running them. */
int session_recorded_replies(session *s);

/* Compaction: hides every visible message with seq < before_seq except the
 * system message, and appends `summary` as a user message in their place.
 * Returns the number of messages hidden, or -1. */
int session_compact(session *s, long before_seq, const char *summary);

/* Calls fn for each visible message, oldest first; fn returns 0 to go on. */
typedef int (*session_message_fn)(void *userdata, long seq, const char *role, const char *content);
int session_each_message(session *s, session_message_fn fn, void *userdata);

/* Calls fn for each recorded cell, oldest first, with its sub-call replies. */
typedef int (*session_cell_fn)(void *userdata, const char *code, const json_t *replies);
int session_each_cell(session *s, session_cell_fn fn, void *userdata);

/* Earlier answers, oldest first, for the namespace (answer_1, answer_2, ...):
 * fn gets the question number and the answer (NULL when it had none). */
typedef int (*session_answer_fn)(void *userdata, int number, const char *question, const char *answer);
int session_each_answer(session *s, session_answer_fn fn, void *userdata);

/* Saves question `number`'s messages (a JSON array of {"role", "content"},
 * the conversation's history_{number-1}), replacing any saved before. Does
 * not steal messages. */
int session_add_history(session *s, int number, const json_t *messages);

/* Calls fn for each saved history, oldest question first. Sessions recorded
 * before histories were saved have none for their earlier questions. */
typedef int (*session_history_fn)(void *userdata, int number, const json_t *messages);
int session_each_history(session *s, session_history_fn fn, void *userdata);

/* The last error on the handle. */
const char *session_errmsg(const session *s);

/* The sessions of the database at db_path, by name, as a new JSON array of
 * {"name", "created", "questions", "last_question" (Unix time or null),
 * "model", "sub_model", "inputs", "in_use_by" (the holder's pid, or null)};
 * an empty array when there is no database there. 0, or -1 with err (a
 * damaged database says how to recover). */
int session_list(const char *db_path, json_t **out, char *err, size_t errlen);

/* Removes session `name` and every row of it. -1 with err when there is no
 * such session or it is in use. */
int session_remove(const char *db_path, const char *name, char *err, size_t errlen);

/* Recovery of a damaged database: copies every row that can still be read,
 * table by table in rowid order up to the first damage (cells whose
 * recorded replies do not parse are dropped), into a new file that takes
 * db_path's place; the damaged file is kept beside it as
 * DB.damaged-YYYYmmdd-HHMMSS. Each session that lost rows is marked in its
 * config ("recovered": {"cells_lost", "messages_lost", "questions_lost",
 * "data_lost"}), so that continuing it says what is missing. Refused while any session of the file is in use. *report (a new
 * object: database, damaged_copy, sessions [{name, cells_lost, ...}], rows
 * per table, cut_tables, cells_dropped). 0, or -1 with err; the original
 * file is never removed. */
int session_recover(const char *db_path, json_t **report, char *err, size_t errlen);

void session_free(session *s);

#endif
