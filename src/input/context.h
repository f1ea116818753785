/* context — the input a run works on, held as a read-only memory mapping of a
 * file (or of a sealed memfd for text given by the API), never copied into
 * the host's heap. The sandbox maps the same file descriptor.
 *
 * Ownership: context_open_* return a handle freed by context_free; data and
 * name are borrowed from the handle. */
#ifndef RLM_CONTEXT_H
#define RLM_CONTEXT_H

#include <stddef.h>

typedef struct context context;

/* Maps the regular file at path. Returns 0, or -1 with err set (missing,
 * unreadable, a directory, empty). */
int context_open_file(const char *path, context **out, char *err, size_t errlen);

/* Copies text[0..len) into an anonymous memory file. len may be 0. */
int context_open_text(const char *text, size_t len, context **out, char *err, size_t errlen);

int context_fd(const context *c);
size_t context_len(const context *c);
const char *context_data(const context *c);   /* len bytes; NULL when len is 0 */
const char *context_name(const context *c);   /* the path, or NULL for text */

/* Tells the kernel the host is done with the pages it touched (e.g. after
 * describing the input): they leave this process's resident set but stay in
 * the page cache, so the sandbox's own mapping of the same file reuses them.
 * The mapping stays valid; later reads fault the pages back in. */
void context_release_pages(const context *c);

void context_free(context *c);

#endif
