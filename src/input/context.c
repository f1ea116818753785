/* context — the input as a read-only mapping: a file, or text placed in a
 * memfd so the sandbox can map it through the same file-descriptor path. */
#include "context.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

struct context {
    int fd;
    size_t len;
    const char *data;
    char *name;
};

static int context_map(context *c, char *err, size_t errlen)
{
    if (c->len == 0)
        return 0;
    void *p = mmap(NULL, c->len, PROT_READ, MAP_SHARED, c->fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the context: %s", strerror(errno));
        return -1;
    }
    madvise(p, c->len, MADV_SEQUENTIAL);
    c->data = p;
    return 0;
}

int context_open_file(const char *path, context **out, char *err, size_t errlen)
{
    *out = NULL;
    context *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot open context file '%s': %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(c->fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat context file '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "context '%s' is a directory; give a file", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "context '%s' is not a regular file", path);
        goto fail;
    }
    if (st.st_size == 0) {
        snprintf(err, errlen, "context file '%s' is empty", path);
        goto fail;
    }
    c->len = (size_t)st.st_size;
    c->name = strdup(path);
    if (!c->name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (context_map(c, err, errlen) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    context_free(c);
    return -1;
}

int context_open_text(const char *text, size_t len, context **out, char *err, size_t errlen)
{
    *out = NULL;
    context *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->fd = memfd_create("rlm-context", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot create a memory file for the context: %s", strerror(errno));
        goto fail;
    }
    if (len && write_full(c->fd, text, len) != 0) {
        snprintf(err, errlen, "cannot fill the context memory file: %s", strerror(errno));
        goto fail;
    }
    /* Sealed so nobody holding the fd (the sandbox included) can change it. */
    fcntl(c->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    c->len = len;
    if (context_map(c, err, errlen) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    context_free(c);
    return -1;
}

int context_fd(const context *c) { return c->fd; }
size_t context_len(const context *c) { return c->len; }
const char *context_data(const context *c) { return c->data; }
const char *context_name(const context *c) { return c->name; }

void context_release_pages(const context *c)
{
    if (c && c->data)
        madvise((void *)c->data, c->len, MADV_DONTNEED);
}

void context_free(context *c)
{
    if (!c)
        return;
    if (c->data)
        munmap((void *)c->data, c->len);
    if (c->fd >= 0)
        close(c->fd);
    free(c->name);
    free(c);
}
