/* prompt — the words rlm says to the root model: the system prompt, the
 * description of the context, the first message, the per-turn feedback, and
 * the head + tail cutting of long output. Pure functions over buffers.
 *
 * Ownership: every returned char* is malloc'd and owned by the caller. */
#ifndef RLM_PROMPT_H
#define RLM_PROMPT_H

#include <stddef.h>

/* The system prompt teaching the REPL contract. max_iterations is stated in it. */
char *prompt_system(int max_iterations);

/* The placeholders a system prompt template may hold, NULL-terminated:
 * {max_iterations} (the turns), {allowed_modules} ("re, json, ... and
 * builtins", from the policy table) and {context_description} (the first
 * input's description; a prompt that holds it gets it there instead of in
 * the first user message). */
extern const char *const prompt_placeholders[];

/* rlm's own system prompt with its placeholders unfilled: what a user starts
 * a custom one from (`rlm prompt --template`). */
char *prompt_system_template(void);

/* template with every placeholder filled; {context_description} only when
 * description is not NULL (it stays as written otherwise). Any other text,
 * braces included, is copied as is. NULL when out of memory. */
char *prompt_system_fill(const char *template, int max_iterations, const char *description);

/* The system message of direct mode (one plain call with the whole input). */
char *prompt_direct_system(void);

/* The first user message: the context description and the question verbatim. */
char *prompt_first_user(const char *description, const char *question, int max_iterations);

/* One block's result, for the feedback message. */
typedef struct prompt_block_result {
    const char *code;        /* the code that ran */
    const char *output;      /* its output (already bounded) */
    size_t output_len;       /* its bytes, NUL bytes included (shown as U+FFFD); 0: up to
                                the first NUL */
    const char *variables;   /* the model's variables after it ran, one bounded line
                                ("name: type, ..."), or NULL */
    int raised, timed_out, restarted;
} prompt_block_result;

/* The user message after a turn that ran code: each block's output in order
 * (code is not echoed; invalid UTF-8 and control bytes become U+FFFD), the
 * last block's variables ("REPL variables: ...", as the reference's feedback
 * lists them, so the model knows its names), then `note` (may be NULL) e.g.
 * to say a text FINAL was not accepted, then the label of the next turn
 * ("Turn i of N"). */
char *prompt_feedback(const prompt_block_result *blocks, size_t n_blocks,
                      int next_turn, int max_iterations, const char *note);

/* The user message after a reply with neither code nor a final answer. */
char *prompt_nudge(int next_turn, int max_iterations);

/* The last request when the turns ran out: answer now with FINAL(...). */
char *prompt_last_turn(void);

/* The last request when a budget ran out: says which (`why`, e.g. "max_cost:
 * $0.0213 spent of $0.02"; control bytes are dropped, cut to 300 bytes), that
 * no more code or sub-calls will run, and asks for FINAL(...) now. */
char *prompt_last_turn_budget(const char *why);

/* A later question of a conversation: says the REPL starts afresh with the
 * data of the earlier questions (not their functions and classes) and
 * answer_1 .. answer_{number-1} and history_k, then `carried` (what was left
 * out, and why: the engine's text, may be NULL), describes a new input
 * (description of the variable input_name; both NULL when the question
 * brings none), then the question and "Turn 1 of N". */
char *prompt_next_question(const char *description, const char *input_name, const char *carried,
                           const char *question, int number, int max_iterations);

/* The request that asks the root to summarise the work so far before older
 * turns are dropped from its history (compaction). */
char *prompt_compact_request(void);

/* The user message that replaces the compacted turns: the summary the root
 * wrote, the question again, and the label of the next turn. */
char *prompt_compacted(const char *summary, const char *question, int next_turn, int max_iterations);

#endif
