/* keys — the bearer keys `rlm serve` accepts (--api-key-file, several):
 * read once, kept only as SHA-256 digests, and compared in constant time, so
 * neither a key's bytes nor its length leak through how long a refusal
 * takes.
 *
 * Ownership: keys_new's set is freed by keys_free. Strings passed in are
 * borrowed. */
#ifndef RLM_SERVE_KEYS_H
#define RLM_SERVE_KEYS_H

#include <stddef.h>

/* Longest key accepted, in bytes. */
#define KEYS_MAX_LEN 512
/* Most keys in all the files together. */
#define KEYS_MAX 1024

typedef struct keys keys;

keys *keys_new(void);
void keys_free(keys *k);

/* Adds every key of the file at path: one per line, blank lines and lines
 * starting with '#' skipped, spaces around a key trimmed. A key holds
 * printable ASCII only (no spaces), at most KEYS_MAX_LEN bytes. A file
 * others may read is refused: keys are secrets. 0, or -1 with err (naming
 * the file and line). */
int keys_add_file(keys *k, const char *path, char *err, size_t errlen);

/* How many keys the set holds. */
size_t keys_count(const keys *k);

/* Checks an Authorization header's value ("Bearer KEY", the scheme in any
 * case). Every key is compared, whatever matched earlier. Returns the
 * matching key's number (1-based, for the access log), 0 when none does
 * (or the header is missing or malformed: header NULL). */
int keys_check(const keys *k, const char *header);

#endif
