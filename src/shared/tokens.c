/* tokens — token estimates from bytes.
 *
 * Ratios. rlm has no tokenizer, so tokens are estimated from bytes.
 * English prose runs about 4 bytes per token with current BPE vocabularies;
 * rlm uses 3.5 everywhere so estimates err high (a budget that is
 * overestimated fails safe). Source code tokenizes denser — operators,
 * indentation runs, short and camel-cased identifiers each cost tokens — so
 * 3.0. JSON is densest: every quote, brace, colon and comma and each
 * repeated key is a token or part of one, so 2.5. The rate limiter is the
 * exception (tokens_for_rate): it paces against the provider's own count. */
#include "tokens.h"

#include <string.h>
#include <strings.h>

static const char *const code_extensions[] = {
    "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "py", "js", "mjs", "ts", "tsx", "jsx", "go",
    "rs", "java", "kt", "scala", "rb", "php", "cs", "swift", "m", "mm", "sh", "bash", "zsh",
    "pl", "lua", "sql", "r", "jl", "hs", "ml", "ex", "exs", "erl", "clj", "el", "vim", "css",
    "scss", "html", "xml", "yaml", "yml", "toml", "ini", "cmake", "mk", "proto", "dart", "zig",
};

size_t tokens_estimate(size_t bytes, tokens_kind kind)
{
    /* bytes / ratio rounded up, with the ratio as a fraction num/den so
     * nothing overflows: 3.5 = 7/2, 3.0 = 3/1, 2.5 = 5/2 */
    size_t num = kind == TOKENS_CODE ? 3 : kind == TOKENS_JSON ? 5 : 7;
    size_t den = kind == TOKENS_CODE ? 1 : 2;
    return bytes / num * den + ((bytes % num) * den + num - 1) / num;
}

tokens_kind tokens_kind_of_name(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    if (!strcmp(base, "Makefile") || !strcmp(base, "CMakeLists.txt") || !strcmp(base, "Dockerfile"))
        return TOKENS_CODE;
    if (!dot)
        return TOKENS_PROSE;
    const char *ext = dot + 1;
    if (!strcasecmp(ext, "json") || !strcasecmp(ext, "jsonl") || !strcasecmp(ext, "ndjson"))
        return TOKENS_JSON;
    for (size_t i = 0; i < sizeof code_extensions / sizeof *code_extensions; i++)
        if (!strcasecmp(ext, code_extensions[i]))
            return TOKENS_CODE;
    return TOKENS_PROSE;
}

double tokens_for_rate(size_t bytes)
{
    return (double)bytes / 4.0;
}
