/* prompt — everything rlm says to the root model: the system prompt teaching
 * the REPL contract, the description of the context, the first message, the
 * per-turn feedback and the head + tail cutting of long output. Pure. */
#include "prompt.h"

#include "sandbox_policy.h"
#include "utf8.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for the fixed text around a message's parts. */
enum {
    FRAME_MAX_BYTES = 4096,
};

#define REPL_FENCE "```"

/* The system prompt, before the number of turns. */
static const char system_text[] =
    "You are the root of a Recursive Language Model. You answer a question about an input "
    "that is far too large to read directly. The input is not in this conversation: it is "
    "stored in the variable `context` inside a persistent Python REPL that you drive by "
    "writing code. You see only a description of it. Explore it with code, give pieces of it "
    "to sub-models, keep what they find in variables, and answer when the evidence is in.\n"
    "\n"
    "## How a turn works\n"
    "\n"
    "Put Python in fenced blocks marked repl:\n"
    "\n" REPL_FENCE "repl\n"
    "print(len(context))\n"
    "print(context[:500])\n" REPL_FENCE "\n"
    "\n"
    "Every repl block of a reply runs, in order, in one namespace that persists for the "
    "whole task: variables, functions and imports stay available in later turns. After your "
    "reply you get back what each block printed (and the traceback if it raised). Long output "
    "is cut to its head and tail, so keep big results in variables and print only sizes, "
    "counts, short samples and summaries. Fences of other languages are not run. You have ";

/* After the number of turns. */
static const char system_text_rest[] =
    " turns; each reply is one turn.\n"
    "\n"
    "## What the REPL provides\n"
    "\n"
    "- `context` (also `context_0`): the input: a str, a dict path -> str (several files) or "
    "a list of str (records). The first message gives its type, sizes and a preview.\n"
    "- In a conversation, later inputs are `context_1`, `context_2`, ...; earlier questions' "
    "messages are `history_0`, `history_1`, ... (`history` is history_0; lists of "
    "{\"role\", \"content\"} dicts) and their answers `answer_1`, `answer_2`, ....\n"
    "- `llm_query(prompt, model=None) -> str`: one sub-model call. The sub-model has not "
    "seen the context, so put the text it needs into the prompt. It reads long prompts well "
    "(100,000 characters or more per call is fine), so send big chunks, not many small ones.\n"
    "- `llm_query_batched(prompts, model=None) -> list[str]`: many prompts at once, run "
    "concurrently; the answers come back in the order of the prompts. A prompt that fails "
    "gives an error string in its slot instead of failing the batch, so check the answers "
    "before you aggregate them. Far faster than calling llm_query in a loop.\n"
    "- `rlm_query(prompt, context=None) -> str` and `rlm_query_batched(prompts, "
    "contexts=None) -> list[str]`: give a sub-task to a child RLM that has its own REPL and "
    "sub-models (context= sets its input; without it, the prompt is its input). Children of "
    "one batch run concurrently. Use it for pieces too large or intricate for one call. At "
    "the recursion limit it becomes a plain llm_query on prompt + context.\n"
    "- `SHOW_VARS()`: returns a listing of your variables and their types; "
    "`print(SHOW_VARS())`.\n"
    "- Fast helpers in C over the raw input (far faster than Python loops); each takes "
    "context= to work on another input (context_1, ...) or one document of one:\n"
    "  - `grep(pattern, flags=\"\", max_hits=1000, doc=None)` -> [{doc, line, offset, text}]: "
    "regex search (like re; flags i m s x, and u for Unicode \\w \\d \\s \\b, which are "
    "ASCII otherwise) over all documents or one (doc=). offset indexes that document's str. "
    "`grep(r\"ERROR \\d+\", \"i\")`\n"
    "  - `chunks(max_chars=100000, overlap=0, by=\"lines\")` -> list of str (or by=\"chars\", "
    "\"docs\"). `llm_query_batched([\"Summarise:\\n\" + c for c in chunks(200000)])`\n"
    "  - `search(query, k=10)` -> [{doc, score, offset, text}]: BM25 keyword ranking, best "
    "first. `search(\"refund policy\")`\n"
    "  - `count_tokens(text)` -> estimated tokens. `count_tokens(context[:9000])`\n"
    "  You may rebind these four; the other names here are put back after every block.\n"
    "- `print(...)`: how you see values (a bare expression on a block's last line is shown "
    "too).\n"
    "- `FINAL(value)`: finishes the task; the value, as a string, is the answer.\n"
    "- `FINAL_VAR(name)`: finishes with the value of a variable: `FINAL_VAR(\"result\")` or "
    "`FINAL_VAR(result)`.\n"
    "- `answer`: a dict that starts as {\"content\": \"\", \"ready\": False}. Setting "
    "answer[\"content\"] = ... and answer[\"ready\"] = True also finishes.\n"
    "\n"
    "You may import ";

/* After the list of modules. */
static const char system_text_modules_rest[] =
    ". Nothing else is available: no files, no network, no threads or processes (use "
    "llm_query_batched for concurrency), no other packages. All you need is `context` and the "
    "sub-models.\n"
    "\n"
    "## Strategies that work\n"
    "\n"
    "1. Look before you read. Print the length, the start and a sample from the middle to "
    "learn the structure (records, separators, headings) before choosing a plan.\n"
    "2. Search with code first. Regular expressions and str methods find names, keys, dates "
    "and sections at no cost; send only what matches to a sub-model.\n"
    "\n" REPL_FENCE "repl\n"
    "import re\n"
    "hits = [m.start() for m in re.finditer(r\"magic number\", context)]\n"
    "print(len(hits), [context[max(0, i - 100):i + 200] for i in hits[:3]])\n" REPL_FENCE "\n"
    "\n"
    "3. For questions about the whole input (count, classify or compare every record), split "
    "it into large chunks on natural boundaries, query them in one batch and combine the "
    "answers in code:\n"
    "\n" REPL_FENCE "repl\n"
    "lines = context.split(\"\\n\")\n"
    "parts = [\"\\n\".join(lines[i:i + 2000]) for i in range(0, len(lines), 2000)]\n"
    "prompts = [\"For each line below, give its label, one per line.\\n\\n\" + p for p in "
    "parts]\n"
    "labels = [x.strip() for r in llm_query_batched(prompts) for x in r.splitlines() if "
    "x.strip()]\n"
    "print(len(parts), len(labels), labels[:5])\n" REPL_FENCE "\n"
    "\n"
    "   Ask sub-models for short answers in a format code can parse, and do counting and "
    "arithmetic in Python, not in a prompt.\n"
    "4. Verify cheaply. Spot-check a result against the raw text, or with one small extra "
    "query, before relying on it. Do not redo work whose result is already in a variable.\n"
    "5. Finish only when sure, and only with what you have seen. Never write the final answer "
    "in the same reply as the code that computes it: you have not seen its output yet, so "
    "wait for the next turn. Never guess or invent output. When the answer is in a variable, "
    "call FINAL_VAR(name) in a repl block; a short answer can also be given as FINAL(...) "
    "at the start of a line of its own, outside code. A plan is not an answer: mention FINAL "
    "only to give the answer itself.\n";

char *prompt_direct_system(void)
{
    return strdup("Answer the question about the input below. The input is given in full "
                  "between the markers; base your answer on it and be concise.");
}


/* Adds a and b into *sum, refusing to wrap. */
static int size_add(size_t *sum, size_t a, size_t b)
{
    if (a > SIZE_MAX - b)
        return -1;
    *sum = a + b;
    return 0;
}

const char *const prompt_placeholders[] = {"{max_iterations}", "{allowed_modules}",
                                           "{context_description}", NULL};

char *prompt_system_template(void)
{
    buf out;
    buf_init(&out, sizeof system_text + sizeof system_text_rest + sizeof system_text_modules_rest + 64);
    if (buf_puts(&out, system_text) != 0 || buf_puts(&out, "{max_iterations}") != 0 ||
        buf_puts(&out, system_text_rest) != 0 || buf_puts(&out, "{allowed_modules}") != 0 ||
        buf_puts(&out, system_text_modules_rest) != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

/* The modules from the policy table, "re, json, ... and builtins": the
 * prompt cannot promise one the sandbox refuses, or hide one it allows. */
static int append_modules(buf *out)
{
    for (size_t i = 0; i < sandbox_allowed_modules_count; i++)
        if (buf_printf(out, "%s%s", i == 0 ? "" : i + 1 < sandbox_allowed_modules_count ? ", " : " and ",
                       sandbox_allowed_modules[i]) != 0)
            return -1;
    return 0;
}

char *prompt_system_fill(const char *template, int max_iterations, const char *description)
{
    if (!template)
        return NULL;
    size_t max;
    if (size_add(&max, strlen(template), description ? strlen(description) * 3 : 0) != 0 ||
        size_add(&max, max, 16 * sandbox_allowed_modules_count + 64) != 0)
        return NULL;
    buf out;
    buf_init(&out, max * 2);
    int rc = 0;
    for (const char *p = template; rc == 0 && *p;) {
        const char *brace = strchr(p, '{');
        size_t plain = brace ? (size_t)(brace - p) : strlen(p);
        rc = buf_append(&out, p, plain);
        p += plain;
        if (rc != 0 || !brace)
            break;
        if (strncmp(p, "{max_iterations}", 16) == 0) {
            rc = buf_printf(&out, "%d", max_iterations);
            p += 16;
        } else if (strncmp(p, "{allowed_modules}", 17) == 0) {
            rc = append_modules(&out);
            p += 17;
        } else if (strncmp(p, "{context_description}", 21) == 0 && description) {
            rc = utf8_append_clean(&out, description, strlen(description));
            p += 21;
        } else {
            rc = buf_append(&out, "{", 1);
            p++;
        }
    }
    if (rc != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

char *prompt_system(int max_iterations)
{
    char *template = prompt_system_template();
    char *filled = prompt_system_fill(template, max_iterations, NULL);
    free(template);
    return filled;
}

char *prompt_first_user(const char *description, const char *question, int max_iterations)
{
    if (!description)
        description = "";
    if (!question)
        question = "";
    size_t max;
    if (size_add(&max, strlen(description), strlen(question)) != 0 ||
        size_add(&max, max, FRAME_MAX_BYTES) != 0)
        return NULL;
    buf out;
    buf_init(&out, max);
    if (buf_puts(&out, description) != 0 ||
        buf_printf(&out, "\nThe question (answer it exactly as asked):\n\n%s\n\n", question) != 0 ||
        buf_printf(&out,
                   "Turn 1 of %d. You have not looked at the context yet: start by exploring "
                   "`context` in a repl block. The answer must come from what your code "
                   "shows you.\n",
                   max_iterations) != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

/* What happened to a block beyond its output, for the header line. */
static const char *block_status(const prompt_block_result *b)
{
    if (b->timed_out && b->restarted)
        return "; timed out, the sandbox was restarted and all variables were lost";
    if (b->timed_out)
        return "; timed out and was interrupted, variables kept";
    if (b->restarted)
        return "; the sandbox crashed and was restarted, all variables were lost";
    if (b->raised)
        return "; raised an exception";
    return "";
}

static int only_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

static size_t output_len(const prompt_block_result *b)
{
    if (!b->output)
        return 0;
    return b->output_len ? b->output_len : strlen(b->output);
}

static int append_turn(buf *out, int next_turn, int max_iterations)
{
    if (buf_printf(out, "Turn %d of %d.", next_turn, max_iterations) != 0)
        return -1;
    if (next_turn >= max_iterations)
        return buf_puts(out, " This is the last turn: give the final answer now with "
                             "FINAL(...) or FINAL_VAR(name).\n");
    return buf_puts(out, " Continue with more code, or finish with FINAL(...) / FINAL_VAR(name) "
                         "once the output above shows the answer.\n");
}

char *prompt_feedback(const prompt_block_result *blocks, size_t n_blocks,
                      int next_turn, int max_iterations, const char *note)
{
    size_t max = FRAME_MAX_BYTES;
    if (note && size_add(&max, max, strlen(note)) != 0)
        return NULL;
    for (size_t i = 0; i < n_blocks; i++) {
        size_t one = output_len(&blocks[i]) +
                     (blocks[i].variables ? strlen(blocks[i].variables) : 0);
        if (one > SIZE_MAX / 3 || size_add(&max, max, one * 3) != 0 ||
            size_add(&max, max, 256) != 0)
            return NULL;
    }
    buf out;
    buf_init(&out, max);
    for (size_t i = 0; i < n_blocks; i++) {
        const prompt_block_result *b = &blocks[i];
        size_t olen = output_len(b);
        int empty = !b->output || only_space(b->output, olen);
        if (empty)
            olen = 0;
        if (buf_printf(&out, "[block %zu of %zu output%s]\n", i + 1, n_blocks,
                       block_status(b)) != 0 ||
            (empty ? buf_puts(&out, "(no output)") : utf8_append_clean(&out, b->output, olen)) != 0 ||
            buf_puts(&out, olen && b->output[olen - 1] == '\n' ? "\n" : "\n\n") != 0)
            goto fail;
    }
    if (n_blocks == 0 && buf_puts(&out, "(no code ran)\n\n") != 0)
        goto fail;
    const char *vars = n_blocks ? blocks[n_blocks - 1].variables : NULL;
    if (vars && (buf_puts(&out, "REPL variables: ") != 0 ||
                 utf8_append_clean(&out, vars[0] ? vars : "(none yet)", vars[0] ? strlen(vars) : 10) != 0 ||
                 buf_puts(&out, "\n\n") != 0))
        goto fail;
    if (note && *note && buf_printf(&out, "%s\n\n", note) != 0)
        goto fail;
    if (append_turn(&out, next_turn, max_iterations) != 0)
        goto fail;
    return buf_take(&out);
fail:
    buf_free(&out);
    return NULL;
}

char *prompt_nudge(int next_turn, int max_iterations)
{
    buf out;
    buf_init(&out, FRAME_MAX_BYTES);
    if (buf_puts(&out, "Your last reply had no repl block to run and no final answer. "
                       "Write code in a " REPL_FENCE "repl block to keep working, or give the "
                       "answer with FINAL(...) or FINAL_VAR(name) at the start of a line.\n\n") != 0 ||
        append_turn(&out, next_turn, max_iterations) != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

char *prompt_last_turn(void)
{
    static const char text[] =
        "You have used all your turns, and no more code will run. Reply now with the final "
        "answer, based only on output you have already seen: FINAL(your answer) at the start "
        "of a line of its own, or FINAL_VAR(name) for a variable that holds it.\n";
    return str_dup_len(text, sizeof text - 1);
}

char *prompt_last_turn_budget(const char *why)
{
    buf b;
    buf_init(&b, 4096);
    buf_puts(&b, "The run's budget is spent (");
    /* `why` is ours, but keep the message one clean line whatever it holds. */
    size_t n = 0;
    for (const char *c = why ? why : "a limit was reached"; *c && n < 300; c++, n++)
        if ((unsigned char)*c >= 0x20)
            buf_append(&b, c, 1);
    buf_puts(&b, "), so no more code will run and no more sub-calls will be made. Reply now "
                 "with your best final answer, based only on output you have already seen: "
                 "FINAL(your answer) at the start of a line of its own, or FINAL_VAR(name) for a "
                 "variable that holds it.\n");
    return buf_take(&b);
}

char *prompt_next_question(const char *description, const char *input_name, const char *carried,
                           const char *question, int number, int max_iterations)
{
    if (!question)
        question = "";
    size_t max;
    if (size_add(&max, description ? strlen(description) : 0, strlen(question)) != 0 ||
        size_add(&max, max, carried ? strlen(carried) : 0) != 0 ||
        size_add(&max, max, FRAME_MAX_BYTES) != 0)
        return NULL;
    buf out;
    buf_init(&out, max);
    int rc = buf_printf(&out, "A new question (number %d of this conversation). The REPL starts "
                              "afresh for each question, with the data of the earlier ones: "
                              "your variables that hold data (str, bytes, numbers, lists, "
                              "tuples, dicts, sets, Counter, ...) and your imports are there, "
                              "functions and classes you defined are not (define them again if "
                              "you need them)", number);
    if (rc == 0 && number > 1)
        rc = buf_printf(&out, "; the answers so far are in answer_1 .. answer_%d", number - 1);
    if (rc == 0)
        rc = buf_puts(&out, ".\n");
    if (rc == 0 && number > 1)
        rc = buf_printf(&out, " The messages of the earlier questions are history_0 .. "
                              "history_%d.", number - 2);
    if (rc == 0 && carried && carried[0])
        rc = buf_printf(&out, "\n%s\n", carried);
    if (rc == 0 && description && input_name)
        rc = buf_printf(&out, "\nA new input came with this question. It is the variable `%s` "
                              "(`context` is still the first input). Its description:\n\n%s\n",
                        input_name, description);
    if (rc == 0)
        rc = buf_printf(&out, "\nThe question (answer it exactly as asked):\n\n%s\n\nTurn 1 of %d.\n",
                        question, max_iterations);
    if (rc != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}

char *prompt_compact_request(void)
{
    return strdup("Your conversation history is about to be cut to make room. Before it is, "
                  "write a compact note that lets you carry on without it: what the question "
                  "is, what you have established so far (facts, counts, partial results), the "
                  "names of the variables in the REPL that hold your work and what each "
                  "contains, what you tried that failed, and what remains to do. Variables "
                  "stay in the REPL. Reply with the note only: no code, no final answer.");
}

char *prompt_compacted(const char *summary, const char *question, int next_turn, int max_iterations)
{
    if (!summary)
        summary = "";
    if (!question)
        question = "";
    size_t max;
    if (size_add(&max, strlen(summary), strlen(question)) != 0 ||
        size_add(&max, max, FRAME_MAX_BYTES) != 0)
        return NULL;
    buf out;
    buf_init(&out, max);
    if (buf_puts(&out, "Earlier turns were removed from this conversation to save room. Your "
                       "note on them:\n\n") != 0 ||
        utf8_append_clean(&out, summary, strlen(summary)) != 0 ||
        buf_printf(&out, "\n\nThe REPL and its variables are unchanged. The question (answer "
                         "it exactly as asked):\n\n%s\n\n", question) != 0 ||
        append_turn(&out, next_turn, max_iterations) != 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}
