/* reply — parsing one reply of the root model: the ```repl code blocks to run,
 * in order, and a FINAL(...) / FINAL_VAR(...) answer stated in the text.
 * One forward pass over the lines, so a 100 KB reply costs linear time. Pure. */
#include "reply.h"

#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One line of the reply, without its "\n" or "\r\n". */
typedef struct line {
    const char *s;
    size_t len;
    size_t next; /* offset of the following line (or the text's length) */
} line;

/* An open fence: how far it was indented, how many backticks opened it, and
 * whether its info string names a language we run. */
typedef struct fence {
    size_t indent;
    size_t ticks;
    int is_code;
} fence;

enum { OUTSIDE, IN_CODE, IN_OTHER };

static void line_at(const char *text, size_t len, size_t pos, line *ln)
{
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    ln->next = nl ? end + 1 : len;
    if (end > pos && text[end - 1] == '\r')
        end--;
    ln->s = text + pos;
    ln->len = end - pos;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static size_t skip_blanks(const char *s, size_t len, size_t i)
{
    while (i < len && is_blank(s[i]))
        i++;
    return i;
}

static size_t count_ticks(const char *s, size_t len, size_t i)
{
    size_t n = 0;
    while (i + n < len && s[i + n] == '`')
        n++;
    return n;
}

static int word_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

/* The info string's first word decides: repl, python, python3 and py run;
 * everything else (json, text, none) is a fence whose contents we skip. */
static int info_is_code(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && !is_blank(s[n]) && s[n] != '{')
        n++;
    return word_is(s, n, "repl") || word_is(s, n, "python") ||
           word_is(s, n, "python3") || word_is(s, n, "py");
}

/* Any indentation is accepted (models indent fences inside list items). An
 * info string containing a backtick means inline code such as ```x```, which
 * CommonMark does not treat as a fence either. */
static int fence_opens(const line *ln, fence *f)
{
    size_t i = skip_blanks(ln->s, ln->len, 0);
    size_t ticks = count_ticks(ln->s, ln->len, i);
    if (ticks < 3)
        return 0;
    size_t info = skip_blanks(ln->s, ln->len, i + ticks);
    if (memchr(ln->s + info, '`', ln->len - info))
        return 0;
    f->indent = i;
    f->ticks = ticks;
    f->is_code = info_is_code(ln->s + info, ln->len - info);
    return 1;
}

/* A fence of other text closes as CommonMark says: backticks and blanks
 * only. A code fence closes at any line starting with enough backticks —
 * models write "```Now I wait for the output." — and *rest is what follows
 * them on the line (prose), empty when nothing does. */
static int fence_closes(const line *ln, const fence *f, line *rest)
{
    size_t i = skip_blanks(ln->s, ln->len, 0);
    size_t ticks = count_ticks(ln->s, ln->len, i);
    if (ticks < f->ticks)
        return 0;
    size_t after = skip_blanks(ln->s, ln->len, i + ticks);
    *rest = (line){ln->s + after, ln->len - after, ln->next};
    return after == ln->len || f->is_code;
}

/* Code inside an indented fence loses up to the fence's own indentation, so a
 * block written inside a list item is still valid Python. */
static int code_add_line(buf *code, const line *ln, const fence *f)
{
    size_t i = 0;
    while (i < f->indent && i < ln->len && is_blank(ln->s[i]))
        i++;
    if (buf_append(code, ln->s + i, ln->len - i) != 0)
        return -1;
    return buf_append(code, "\n", 1);
}

static int only_blanks(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Takes the collected code as the next block; a block of nothing but
 * whitespace is dropped (running it would only add "(no output)" noise). */
static int block_push(reply *r, buf *code, size_t *cap)
{
    if (code->len && code->data[code->len - 1] == '\n')
        code->data[--code->len] = '\0';
    if (only_blanks(code->data, code->len)) {
        buf_reset(code);
        return 0;
    }
    if (r->n_blocks == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        char **blocks = realloc(r->blocks, ncap * sizeof *blocks);
        if (!blocks)
            return -1;
        r->blocks = blocks;
        *cap = ncap;
    }
    char *block = buf_take(code);
    if (!block)
        return -1;
    r->blocks[r->n_blocks++] = block;
    return 0;
}

/* A line is a final answer when, after blanks and markdown decoration
 * (bold, italics, quote, heading, bullet, inline code), it starts with
 * FINAL( or FINAL_VAR(. Returns the offset just after the "(" within the line,
 * or 0 when the line is not one. */
static size_t final_start(const line *ln, reply_final_kind *kind)
{
    size_t i = 0;
    while (i < ln->len && strchr(" \t*_>#-`", ln->s[i]) && ln->s[i] != '\0')
        i++;
    const char *s = ln->s + i;
    size_t rest = ln->len - i;
    if (rest >= 9 && memcmp(s, "FINAL_VAR", 9) == 0) {
        *kind = REPLY_FINAL_VAR;
        i += 9;
    } else if (rest >= 5 && memcmp(s, "FINAL", 5) == 0) {
        *kind = REPLY_FINAL_VALUE;
        i += 5;
    } else {
        return 0;
    }
    i = skip_blanks(ln->s, ln->len, i);
    if (i >= ln->len || ln->s[i] != '(')
        return 0;
    return i + 1;
}

static int is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* A quote opens a string only where Python could start one: at the start of
 * the argument, after a non-word character, or after a string prefix (f, r, b,
 * u, rb, ...). That keeps prose apostrophes ("John's", "it's") from swallowing
 * the rest of the argument. */
static int quote_may_open(const char *text, size_t from, size_t i)
{
    size_t w = i;
    while (w > from && i - w <= 2 && is_word_char(text[w - 1]))
        w--;
    if (w == i)
        return 1;
    if (i - w > 2 || (w > from && is_word_char(text[w - 1])))
        return 0;
    for (size_t k = w; k < i; k++)
        if (!strchr("rRbBuUfF", text[k]))
            return 0;
    return 1;
}

/* The offset just past the string literal opening at text[i], or 0 when it
 * never closes. Single-quoted strings end at the line's end, as in Python. */
static size_t skip_string(const char *text, size_t len, size_t i)
{
    char q = text[i];
    int triple = i + 2 < len && text[i + 1] == q && text[i + 2] == q;
    size_t j = i + (triple ? 3 : 1);
    while (j < len) {
        char c = text[j];
        if (c == '\\') {
            j += 2;
            continue;
        }
        if (!triple && c == '\n')
            return 0;
        if (c == q) {
            if (!triple)
                return j + 1;
            if (j + 2 < len && text[j + 1] == q && text[j + 2] == q)
                return j + 3;
        }
        j++;
    }
    return 0;
}

/* The offset of the ")" closing the "(" before text[from], or len when the
 * parentheses never balance. */
static size_t match_paren(const char *text, size_t len, size_t from, int honour_quotes)
{
    size_t depth = 1;
    for (size_t i = from; i < len; i++) {
        char c = text[i];
        if (honour_quotes && (c == '"' || c == '\'') && quote_may_open(text, from, i)) {
            size_t end = skip_string(text, len, i);
            if (end == 0)
                return len;
            i = end - 1;
        } else if (c == '(') {
            depth++;
        } else if (c == ')' && --depth == 0) {
            return i;
        }
    }
    return len;
}

static void trim(const char *text, size_t *start, size_t *end)
{
    while (*start < *end && isspace((unsigned char)text[*start]))
        (*start)++;
    while (*end > *start && isspace((unsigned char)text[*end - 1]))
        (*end)--;
}

/* Python's common escapes; any other backslash stays as written. */
static int append_escape(buf *out, char c)
{
    switch (c) {
    case 'n': return buf_append(out, "\n", 1);
    case 't': return buf_append(out, "\t", 1);
    case '\\': case '"': case '\'': return buf_append(out, &c, 1);
    default:
        if (buf_append(out, "\\", 1) != 0)
            return -1;
        return buf_append(out, &c, 1);
    }
}

/* Copies text[start..end) dropping "\r" before "\n"; when the whole of it is
 * one string literal, the quotes go and the common escapes are decoded. */
static char *final_copy(const char *text, size_t start, size_t end)
{
    size_t body = start, body_end = end, quote = 0;
    int literal = 0;
    if (end > start && (text[start] == '"' || text[start] == '\'') &&
        skip_string(text, end, start) == end) {
        quote = (end - start >= 6 && text[start + 1] == text[start] &&
                 text[start + 2] == text[start]) ? 3 : 1;
        body = start + quote;
        body_end = end - quote;
        literal = 1;
    }
    buf out;
    buf_init(&out, end - start + 1);
    for (size_t i = body; i < body_end; i++) {
        char c = text[i];
        int rc;
        if (c == '\r' && i + 1 < body_end && text[i + 1] == '\n')
            continue;
        if (literal && c == '\\' && i + 1 < body_end)
            rc = append_escape(&out, text[++i]);
        else
            rc = buf_append(&out, &c, 1);
        if (rc != 0) {
            buf_free(&out);
            return NULL;
        }
    }
    return buf_take(&out);
}

/* Reads the argument of a FINAL whose "(" ends just before text[from]. Sets
 * *resume to the line after the closing ")" so that whatever the argument
 * spans is not scanned again (a fenced snippet inside an answer is not code
 * to run). Returns -1 when out of memory. */
static int final_take(const char *text, size_t len, size_t from, reply *r, size_t *resume)
{
    size_t close = match_paren(text, len, from, 1);
    if (close == len)
        close = match_paren(text, len, from, 0);
    size_t start = from, end = close;
    trim(text, &start, &end);
    r->final_text = final_copy(text, start, end);
    if (!r->final_text)
        return -1;
    if (close == len) {
        *resume = len;
    } else {
        const char *nl = memchr(text + close, '\n', len - close);
        *resume = nl ? (size_t)(nl - text) + 1 : len;
    }
    return 0;
}

/* Reads a line outside any fence (or the prose after a code fence's close)
 * for a final answer: the first one wins. -1 when out of memory. */
static int outside_line(const char *text, size_t len, const line *ln, reply *out, size_t *pos)
{
    reply_final_kind kind = REPLY_FINAL_NONE;
    size_t arg;
    if (out->final_kind != REPLY_FINAL_NONE || (arg = final_start(ln, &kind)) == 0)
        return 0;
    out->final_kind = kind;
    out->final_after_code = out->n_blocks > 0;
    return final_take(text, len, (size_t)(ln->s - text) + arg, out, pos);
}

int reply_parse(const char *text, size_t len, reply *out)
{
    memset(out, 0, sizeof *out);
    buf code;
    buf_init(&code, len + 1);
    fence f = {0, 0, 0};
    int state = OUTSIDE;
    size_t cap = 0, pos = 0;
    if (!text)
        len = 0;
    while (pos < len) {
        line ln;
        line_at(text, len, pos, &ln);
        pos = ln.next;
        line rest;
        if (state == OUTSIDE) {
            if (fence_opens(&ln, &f))
                state = f.is_code ? IN_CODE : IN_OTHER;
            else if (outside_line(text, len, &ln, out, &pos) != 0)
                goto fail;
        } else if (fence_closes(&ln, &f, &rest)) {
            if (state == IN_CODE && block_push(out, &code, &cap) != 0)
                goto fail;
            state = OUTSIDE;
            if (rest.len && outside_line(text, len, &rest, out, &pos) != 0)
                goto fail;
        } else if (state == IN_CODE && code_add_line(&code, &ln, &f) != 0) {
            goto fail;
        }
    }
    if (state == IN_CODE) {
        size_t before = out->n_blocks;
        if (block_push(out, &code, &cap) != 0)
            goto fail;
        out->unclosed = out->n_blocks > before;
    }
    buf_free(&code);
    return 0;
fail:
    buf_free(&code);
    reply_clear(out);
    return -1;
}

void reply_clear(reply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_blocks; i++)
        free(r->blocks[i]);
    free(r->blocks);
    free(r->final_text);
    memset(r, 0, sizeof *r);
}
