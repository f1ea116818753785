/* describe — the context description for a set of documents: sizes,
 * token estimates per kind of text (tokens.h), a histogram, the first names
 * and a preview, every part capped so 50,000 files describe in a few KB. */
#include "describe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tokens.h"
#include "utf8.h"
#include "util.h"

enum {
    DESCRIPTION_MAX_BYTES = 24 * 1024,
    NAMES_LISTED = 100,
    NAME_MAX_BYTES = 160,
    PREVIEW_DOCS = 3,
    PREVIEW_CHARS = 240,
    /* one str (describe_str): its own preview of head and tail */
    STR_DESCRIPTION_MAX_BYTES = 16 * 1024,
    STR_PREVIEW_HEAD_CHARS = 500,
    STR_PREVIEW_TAIL_CHARS = 200,
    STR_NAME_MAX_CHARS = 200,
};

static size_t doc_chars(const ingest_doc *d)
{
    if (d->chars || d->len == 0 || !d->data)
        return d->chars;
    return utf8_count_chars(d->data, d->len);
}

/* Text for the model: invalid UTF-8 becomes U+FFFD, control bytes but
 * newline and tab become spaces, so a preview cannot break the message. */
static int put_clean(buf *out, const char *s, size_t len)
{
    size_t clean_len;
    char *clean = utf8_sanitize(s, len, &clean_len);
    if (!clean)
        return -1;
    for (size_t i = 0; i < clean_len; i++) {
        unsigned char c = (unsigned char)clean[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F)
            clean[i] = ' ';
    }
    int rc = buf_append(out, clean, clean_len);
    free(clean);
    return rc;
}

static int put_name(buf *out, const char *name)
{
    size_t len = strlen(name);
    size_t cut = utf8_cut(name, len, NAME_MAX_BYTES);
    if (buf_puts(out, "\"") != 0 || put_clean(out, name, cut) != 0)
        return -1;
    return buf_puts(out, cut < len ? "...\"" : "\"");
}

/* Size classes of the histogram, in characters. */
static const size_t bucket_top[] = {0, 1000, 10000, 100000, 1000000, 10000000};
static const char *const bucket_label[] = {"empty", "1-1K", "1K-10K", "10K-100K", "100K-1M",
                                            "1M-10M", "over 10M"};
enum { N_BUCKETS = 7 };

static int describe_many(buf *out, ingest_kind kind, const ingest_doc *docs, size_t n)
{
    size_t total_chars = 0, total_bytes = 0, invalid = 0, largest = 0;
    size_t bytes_of[3] = {0, 0, 0}, buckets[N_BUCKETS] = {0};
    for (size_t i = 0; i < n; i++) {
        size_t ch = doc_chars(&docs[i]);
        total_chars += ch;
        total_bytes += docs[i].len;
        invalid += docs[i].invalid_utf8;
        tokens_kind t = kind == INGEST_LIST ? TOKENS_PROSE : tokens_kind_of_name(docs[i].name);
        bytes_of[t] += docs[i].len;
        size_t b = 0;
        while (b < N_BUCKETS - 1 && ch > bucket_top[b])
            b++;
        buckets[b]++;
        if (ch > doc_chars(&docs[largest]))
            largest = i;
    }
    size_t tokens = tokens_estimate(bytes_of[0], TOKENS_PROSE) +
                    tokens_estimate(bytes_of[1], TOKENS_CODE) +
                    tokens_estimate(bytes_of[2], TOKENS_JSON);
    const char *type = kind == INGEST_LIST ? "a list of " : "a dict of ";
    if (buf_puts(out, "The context is ") || buf_puts(out, type) || buf_put_count(out, n) ||
        buf_puts(out, kind == INGEST_LIST ? " str (documents; index them as context[i])"
                                          : " documents (path -> str; context[path])") ||
        buf_puts(out, " with ") || buf_put_count(out, total_chars) ||
        buf_puts(out, " characters in total (about ") || buf_put_count(out, tokens) ||
        buf_puts(out, " tokens"))
        return -1;
    if (bytes_of[1] || bytes_of[2]) {
        if (buf_puts(out, ": ") || buf_put_count(out, tokens_estimate(bytes_of[1], TOKENS_CODE)) ||
            buf_puts(out, " in code, ") ||
            buf_put_count(out, tokens_estimate(bytes_of[2], TOKENS_JSON)) ||
            buf_puts(out, " in JSON, ") ||
            buf_put_count(out, tokens_estimate(bytes_of[0], TOKENS_PROSE)) ||
            buf_puts(out, " in other text"))
            return -1;
    }
    if (buf_puts(out, ").\n"))
        return -1;
    if (invalid && (buf_puts(out, "Invalid UTF-8: ") || buf_put_count(out, invalid) ||
                    buf_puts(out, " bytes were replaced with U+FFFD.\n")))
        return -1;
    if (buf_puts(out, "Sizes in characters:"))
        return -1;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        if (!buckets[b])
            continue;
        if (buf_printf(out, " %s: ", bucket_label[b]) || buf_put_count(out, buckets[b]) ||
            buf_puts(out, ";"))
            return -1;
    }
    if (n && (buf_puts(out, " largest: ") || put_name(out, docs[largest].name) ||
              buf_puts(out, " (") || buf_put_count(out, doc_chars(&docs[largest])) ||
              buf_puts(out, ")")))
        return -1;
    if (buf_puts(out, ".\n"))
        return -1;
    size_t listed = n < NAMES_LISTED ? n : NAMES_LISTED;
    if (buf_puts(out, listed < n ? "The first " : "All ") || buf_put_count(out, listed) ||
        buf_puts(out, " names, in order, with characters:\n"))
        return -1;
    for (size_t i = 0; i < listed; i++) {
        if (buf_puts(out, "  ") || put_name(out, docs[i].name) || buf_puts(out, " ") ||
            buf_put_count(out, doc_chars(&docs[i])) || buf_puts(out, "\n"))
            return -1;
    }
    if (listed < n && (buf_puts(out, "  ... and ") || buf_put_count(out, n - listed) ||
                       buf_puts(out, " more\n")))
        return -1;
    size_t shown = 0;
    for (size_t i = 0; i < n && shown < PREVIEW_DOCS; i++) {
        if (!docs[i].len)
            continue;
        size_t end = utf8_cut(docs[i].data, docs[i].len, PREVIEW_CHARS * 4);
        size_t chars = 0, k = 0;
        for (; k < end && chars <= PREVIEW_CHARS; k++)
            chars += ((unsigned char)docs[i].data[k] & 0xC0) != 0x80;
        if (chars > PREVIEW_CHARS)
            k--;
        if (buf_puts(out, "--- start of ") || put_name(out, docs[i].name) ||
            buf_puts(out, " ---\n") || put_clean(out, docs[i].data, k) ||
            buf_puts(out, k < docs[i].len ? "\n...\n" : "\n"))
            return -1;
        shown++;
    }
    return buf_puts(out, shown ? "--- end of preview ---\n" : "");
}

/* "a, b, c" of a JSON array of strings, each cut, "and N more" past max. */
static int put_list(buf *out, const json_t *list, size_t total)
{
    size_t i;
    const json_t *item;
    json_array_foreach(list, i, item) {
        const char *s = json_string_value(item);
        if (i && buf_puts(out, ", "))
            return -1;
        if (s && put_clean(out, s, utf8_cut(s, strlen(s), NAME_MAX_BYTES)))
            return -1;
    }
    if (total > json_array_size(list) &&
        (buf_puts(out, " and ") || buf_put_count(out, total - json_array_size(list)) ||
         buf_puts(out, " more")))
        return -1;
    return 0;
}

/* "dict 499, str 1" of {"dict": 499, "str": 1}. */
static int put_types(buf *out, const json_t *types)
{
    const char *name;
    const json_t *count;
    int first = 1;
    json_object_foreach((json_t *)types, name, count) {
        if ((!first && buf_puts(out, ", ")) || buf_puts(out, name) || buf_puts(out, " ") ||
            buf_put_count(out, (size_t)json_integer_value(count)))
            return -1;
        first = 0;
    }
    return 0;
}

static int describe_json(buf *out, const ingest_doc *docs, size_t n, const json_t *summary)
{
    const char *fmt = json_string_value(json_object_get(summary, "format"));
    const char *type = json_string_value(json_object_get(summary, "type"));
    int lines = fmt && strcmp(fmt, "jsonl") == 0;
    size_t length = (size_t)json_integer_value(json_object_get(summary, "length"));
    size_t skipped = (size_t)json_integer_value(json_object_get(summary, "skipped"));
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += docs[i].len;
    if (!type)
        type = "value";
    if (buf_puts(out, "The context is "))
        return -1;
    if (lines) {
        if (buf_puts(out, "a list of ") || buf_put_count(out, length) ||
            buf_puts(out, length == 1 ? " record" : " records"))
            return -1;
    } else if (n > 1) {
        if (buf_puts(out, "a dict of ") || buf_put_count(out, length) ||
            buf_puts(out, " documents (path -> the parsed JSON value; context[path])"))
            return -1;
    } else if (!strcmp(type, "dict") || !strcmp(type, "list") || !strcmp(type, "str")) {
        if (buf_printf(out, "a %s of ", type) || buf_put_count(out, length) ||
            buf_puts(out, !strcmp(type, "dict") ? " keys" : !strcmp(type, "list") ? " items"
                                                                           : " characters"))
            return -1;
    } else if (buf_printf(out, "a %s", type)) {
        return -1;
    }
    if (buf_puts(out, lines ? ", parsed from the JSON lines of " : ", parsed from the JSON of "))
        return -1;
    for (size_t i = 0; i < n && i < 5; i++)
        if ((i && buf_puts(out, ", ")) || put_name(out, docs[i].name))
            return -1;
    if (n > 5 && (buf_puts(out, " and ") || buf_put_count(out, n - 5) || buf_puts(out, " more files")))
        return -1;
    if (buf_puts(out, " (") || buf_put_count(out, bytes) || buf_puts(out, " bytes of JSON, about ") ||
        buf_put_count(out, tokens_estimate(bytes, TOKENS_JSON)) || buf_puts(out, " tokens).\n"))
        return -1;
    const json_t *keys = json_object_get(summary, "keys");
    if (json_array_size(keys) && !lines &&
        (buf_puts(out, n > 1 ? "Paths: " : "Keys, in order: ") || put_list(out, keys, length) ||
         buf_puts(out, ".\n")))
        return -1;
    const json_t *types = json_object_get(summary, "item_types");
    if (json_object_size(types) &&
        (buf_puts(out, lines || !strcmp(type, "list") ? "Types of the items" : "Types of the values") ||
         buf_puts(out, length > 10000 ? " (of the first 10,000): " : ": ") || put_types(out, types) ||
         buf_puts(out, ".\n")))
        return -1;
    const json_t *first = json_object_get(summary, "first_keys");
    if (json_array_size(first) &&
        (buf_puts(out, "The first item is a dict with the keys: ") ||
         put_list(out, first, json_array_size(first)) || buf_puts(out, ".\n")))
        return -1;
    if (skipped) {
        const char *why = json_string_value(json_array_get(json_object_get(summary, "problems"), 0));
        if (buf_put_count(out, skipped) ||
            buf_puts(out, skipped == 1 ? " line that is not JSON was skipped" :
                                         " lines that are not JSON were skipped") ||
            (why && (buf_puts(out, " (the first: ") || put_clean(out, why, strlen(why)) ||
                     buf_puts(out, ")"))) ||
            buf_puts(out, ".\n"))
            return -1;
    }
    const char *preview = json_string_value(json_object_get(summary, "preview"));
    if (preview && (buf_puts(out, "--- preview (Python repr, cut) ---\n") ||
                    put_clean(out, preview, strlen(preview)) ||
                    buf_puts(out, "\n--- end of preview ---\n")))
        return -1;
    return buf_puts(out, "grep, chunks and search work on the JSON text of the file(s): their "
                         "offsets and lines are into that text, not into the parsed values.\n");
}

/* The text of a description whose writing returned rc: over the cap, it
 * ends cleanly where it was cut. NULL when nothing was written. */
static char *description_take(buf *out, int rc)
{
    if (rc != 0 && out->len + 64 >= DESCRIPTION_MAX_BYTES) {
        out->max += 64;
        buf_puts(out, "\n[description cut here]\n");
    } else if (out->len == 0) {
        buf_free(out);
        return NULL;
    }
    return buf_take(out);
}

/* One part of a str's preview: a label with its size, then the text. */
static int str_preview(buf *out, const char *label, size_t chars, const char *data,
                            size_t len)
{
    if (buf_printf(out, "\n--- %s", label) != 0 || buf_put_count(out, chars) != 0 ||
        buf_puts(out, " characters ---\n") != 0 || utf8_append_clean(out, data, len) != 0)
        return -1;
    if (len == 0 || data[len - 1] != '\n')
        return buf_puts(out, "\n");
    return 0;
}

char *describe_str(const char *name, const char *data, size_t len)
{
    buf out;
    buf_init(&out, STR_DESCRIPTION_MAX_BYTES);
    size_t newlines = 0;
    if (!data)
        len = 0;
    /* one pass for both counts: the context may be tens of megabytes */
    size_t chars = utf8_count_chars_newlines(data, len, &newlines);
    size_t lines = newlines + (len > 0 && data[len - 1] != '\n');

    if (buf_puts(&out, "The context is a str of ") != 0 || buf_put_count(&out, chars) != 0 ||
        buf_puts(&out, chars == 1 ? " character" : " characters") != 0)
        goto fail;
    if (buf_puts(&out, " (about ") != 0 || buf_put_count(&out, tokens_estimate(len, TOKENS_PROSE)) != 0 ||
        buf_puts(&out, " tokens) in ") != 0 || buf_put_count(&out, lines) != 0 ||
        buf_puts(&out, lines == 1 ? " line" : " lines") != 0)
        goto fail;
    if (name && *name) {
        size_t name_len = strlen(name);
        size_t name_end = utf8_head_end(name, name_len, STR_NAME_MAX_CHARS);
        if (buf_puts(&out, ", read from the file \"") != 0 ||
            utf8_append_clean(&out, name, name_end) != 0 ||
            buf_puts(&out, name_end < name_len ? "...\"" : "\"") != 0)
            goto fail;
    }
    if (buf_puts(&out, ".\n") != 0)
        goto fail;

    if (chars == 0) {
        if (buf_puts(&out, "It is empty.\n") != 0)
            goto fail;
    } else if (chars <= STR_PREVIEW_HEAD_CHARS + STR_PREVIEW_TAIL_CHARS) {
        if (str_preview(&out, "the whole context, ", chars, data, len) != 0 ||
            buf_puts(&out, "--- end ---\n") != 0)
            goto fail;
    } else {
        size_t head = utf8_head_end(data, len, STR_PREVIEW_HEAD_CHARS);
        size_t tail = utf8_tail_start(data, len, STR_PREVIEW_TAIL_CHARS);
        if (str_preview(&out, "first ", STR_PREVIEW_HEAD_CHARS, data, head) != 0 ||
            str_preview(&out, "last ", STR_PREVIEW_TAIL_CHARS, data + tail, len - tail) != 0 ||
            buf_puts(&out, "--- end of preview ---\n") != 0)
            goto fail;
    }
    return buf_take(&out);
fail:
    buf_free(&out);
    return NULL;
}


char *describe_input(const ingest_set *docs, const json_t *summary)
{
    if (!docs)
        return describe_str(NULL, "", 0);
    if (summary)
        return describe_parsed(ingest_docs(docs), ingest_count(docs), summary);
    return describe_docset(ingest_kind_of(docs), ingest_docs(docs), ingest_count(docs));
}

char *describe_parsed(const ingest_doc *docs, size_t n, const json_t *summary)
{
    buf out;
    buf_init(&out, DESCRIPTION_MAX_BYTES);
    return description_take(&out, describe_json(&out, docs, n, summary));
}

char *describe_docset(ingest_kind kind, const ingest_doc *docs, size_t n)
{
    if (kind == INGEST_STR && n == 1) {
        char *base = describe_str(docs[0].name, docs[0].data, docs[0].len);
        if (!base || !docs[0].invalid_utf8)
            return base;
        buf out;
        buf_init(&out, DESCRIPTION_MAX_BYTES);
        int rc = buf_puts(&out, base) || buf_puts(&out, "Invalid UTF-8: ") ||
                 buf_put_count(&out, docs[0].invalid_utf8) ||
                 buf_puts(&out, " bytes were replaced with U+FFFD.\n");
        free(base);
        if (rc) {
            buf_free(&out);
            return NULL;
        }
        return buf_take(&out);
    }
    buf out;
    buf_init(&out, DESCRIPTION_MAX_BYTES);
    return description_take(&out, describe_many(&out, kind, docs, n));
}
