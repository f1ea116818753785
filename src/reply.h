/* reply — parsing one reply of the root model, as pure functions: the code
 * blocks to run and a final answer stated in the text. No I/O.
 *
 * Ownership: reply_parse fills a caller-provided struct whose strings are
 * malloc'd; reply_clear frees them. */
#ifndef RLM_REPLY_H
#define RLM_REPLY_H

#include <stddef.h>

typedef enum reply_final_kind {
    REPLY_FINAL_NONE = 0,
    REPLY_FINAL_VALUE,   /* FINAL(text) on a line of its own, outside code */
    REPLY_FINAL_VAR,     /* FINAL_VAR(name) on a line of its own, outside code */
} reply_final_kind;

typedef struct reply {
    char **blocks;           /* code of each ```repl / ```python / ```py block, in order */
    size_t n_blocks;
    reply_final_kind final_kind;
    char *final_text;        /* VALUE: the argument, surrounding quotes removed;
                                VAR: the variable name (quotes removed); else NULL */
    int final_after_code;    /* 1 if the FINAL line comes after a code block */
    int unclosed;            /* 1 if the last code block's fence was never closed: it
                                runs to the end of the text */
} reply;

/* Extracts code blocks and a text final answer from text[0..len).
 *
 * Code blocks: a fence line of three or more backticks whose info string is
 * `repl`, `python`, `python3` or `py` (any case), closed by a line that starts
 * with at least as many backticks: text after them on that line ("```Now I
 * wait") is prose, not code, and is read for a final answer like any line
 * outside code. An unclosed block runs to the end of the text (unclosed is
 * set). Fences
 * of other languages (```text, ```json, bare ```) are not code and their
 * contents are ignored for final-answer detection too. A fence indented inside
 * a list item strips that indentation from its lines; blocks holding only
 * whitespace are dropped.
 *
 * Final answer: the first line outside any fence that starts (after spaces and
 * markdown decoration such as "**" or "> ") with FINAL( or FINAL_VAR(. The
 * argument extends to the matching close parenthesis, honouring nested
 * parentheses and quoted strings; it may span lines. A FINAL that does not
 * start its line ("then I will call FINAL(x)") is prose, not an answer. An
 * unbalanced FINAL( takes the rest of the text, trimmed. When the argument is
 * one string literal its quotes go and \n \t \\ \" \' are decoded. The text an
 * argument spans is not searched for code blocks. Linear time.
 *
 * Returns 0, or -1 when out of memory (out is then cleared). */
int reply_parse(const char *text, size_t len, reply *out);

void reply_clear(reply *r);

#endif
