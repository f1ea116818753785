/* ingest — the --context arguments turned into a document set over read-only
 * mappings: the directory walk (gitignore, include/exclude, binary sniffing,
 * symlink loops), JSONL records, stdin, one file or text given whole, and
 * writing the packed form for the sandbox (pack.c reads it). */
#include "ingest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <stdint.h>
#include <linux/openat2.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gitignore.h"
#include "pack.h"
#include "utf8.h"
#include "util.h"

enum {
    SNIFF_BYTES = 8192,              /* binary detection looks this far */
    SCAN_BLOCK = 256 * 1024,         /* pread block while counting */
    MAX_OPEN_FDS = 64,               /* file sources that keep their descriptor */
    GITIGNORE_MAX_BYTES = 1 << 20,
    GITIGNORE_MAX_RULES = 100000,
    PATH_MAX_BYTES = 4096,
    JSONL_LINE_MAX = 256 * 1024 * 1024,
    SMALL_FILE = 64 * 1024,          /* smaller files are copied into the blob, not mapped */
    PACK_ALIGN = 4096,
};

/* Where a document's bytes live: a mapped file or a sealed memfd (stdin, the
 * decoded JSONL texts). */
typedef struct source {
    char *path;          /* NULL for a memfd */
    int fd;              /* -1 once closed (files past MAX_OPEN_FDS) */
    const char *map;
    size_t map_len;      /* what munmap releases */
    size_t len;          /* bytes still trusted (ingest_validate lowers it) */
    dev_t dev;
    ino_t ino;
    uint64_t head_sum;   /* of the first and last bytes read (mapped files): a file */
    uint64_t tail_sum;   /* rewritten in place shows there (ingest_validate) */
} source;

typedef struct docrec {
    ingest_doc d;
    size_t src;          /* index into sources, SIZE_MAX when len is 0 */
    size_t off;          /* offset in the source */
} docrec;

struct ingest_set {
    ingest_kind kind;
    ingest_format format;
    docrec *recs;
    size_t n_recs, cap_recs;
    ingest_doc *docs;    /* the public, sorted view */
    source *srcs;
    size_t n_srcs, cap_srcs, open_fds;
    char **problems;
    size_t n_problems, problem_total, max_problems;
    size_t total_bytes, invalid;
    const char *rewritten;   /* a document whose file was rewritten in place, or NULL */
};

/* State of one ingest_open call. */
typedef struct walk {
    ingest_set *s;
    const ingest_options *opt;
    gitignore *gi, *exclude, *include;
    uint64_t *seen;      /* open-addressing set of directory (dev, ino) hashes */
    dev_t *seen_dev;
    ino_t *seen_ino;
    size_t seen_n, seen_cap;
    int blob_fd;         /* JSONL texts, -1 until the first record */
    size_t blob_len;
    size_t blob_src;
    size_t skipped;
    char *err;
    size_t errlen;
} walk;

static void problem(ingest_set *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(ingest_set *s, const char *fmt, ...)
{
    s->problem_total++;
    if (s->n_problems >= s->max_problems)
        return;
    char line[PATH_MAX_BYTES + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char *copy = strdup(line);
    if (!copy)
        return;
    if (s->n_problems % 64 == 0) {
        char **grown = realloc(s->problems, (s->n_problems + 64) * sizeof *grown);
        if (!grown) {
            free(copy);
            return;
        }
        s->problems = grown;
    }
    s->problems[s->n_problems++] = copy;
}

void ingest_options_init(ingest_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->stdin_fd = 0;
    opt->max_files = 1000000;
    opt->max_depth = 128;
    opt->max_problems = 1000;
}

/* --- confinement to roots ------------------------------------------------
 *
 * Design note. A path is checked and then used, and between the two a
 * directory on it may be swapped for a symbolic link to elsewhere. So the
 * check resolves the path (realpath: every link followed, no "..") and the
 * open goes through exactly that resolved text with RESOLVE_NO_SYMLINKS:
 * if anything on it became a link meanwhile the open fails (ELOOP) rather
 * than follow it. What is opened is therefore what was checked. Hard links
 * are files like any other: whoever can make one inside a root could copy
 * the file there as well. */

static int inside_root(const char *resolved, const char *root)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return 1;
    return strncmp(resolved, root, n) == 0 && (resolved[n] == '\0' || resolved[n] == '/');
}

int ingest_root_resolve(const char *dir, char *out, size_t outlen, char *err, size_t errlen)
{
    char resolved[PATH_MAX];
    struct stat st;
    if (!realpath(dir, resolved)) {
        snprintf(err, errlen, "root '%s': %s", dir, strerror(errno));
        return -1;
    }
    if (stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "root '%s' is not a directory", dir);
        return -1;
    }
    if ((size_t)snprintf(out, outlen, "%s", resolved) >= outlen) {
        snprintf(err, errlen, "root '%s': path too long", dir);
        return -1;
    }
    return 0;
}

/* path resolved into `resolved` when it lies inside one of the roots. */
static int resolve_within(const char *path, const char *const *roots, size_t n, char *resolved)
{
    if (!realpath(path, resolved))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (inside_root(resolved, roots[i]))
            return 1;
    return 0;
}

int ingest_path_within(const char *path, const char *const *roots, size_t n)
{
    char resolved[PATH_MAX];
    return resolve_within(path, roots, n, resolved);
}

/* Opens path for the walk: as it is without roots; with them only inside
 * one, through its resolved text with no link followed. -1 with errno set
 * (EACCES, and *outside = 1, when it lies outside or does not exist:
 * the two are not told apart, so a caller confined to roots learns nothing
 * of the files beyond them). */
static int walk_open(const walk *w, const char *path, int flags, int *outside)
{
    *outside = 0;
    if (!w->opt->n_roots)
        return open(path, flags | O_CLOEXEC);
    char resolved[PATH_MAX];
    if (!resolve_within(path, w->opt->roots, w->opt->n_roots, resolved)) {
        *outside = 1;
        errno = EACCES;
        return -1;
    }
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, AT_FDCWD, resolved, &how, sizeof how);
    return (int)fd;
}

#define OUTSIDE_ROOTS "not found inside the allowed roots"

/* Why the first bytes of a file say it is binary, or NULL: a NUL byte in
 * the first SNIFF_BYTES, or the signature of a format that is never text
 * (as git and ripgrep decide). Text that is not UTF-8 is not binary: it is
 * decoded (Windows-1252) or repaired, never dropped. */
static const char *binary_reason(const char *data, size_t len)
{
    static const struct {
        const char *magic;
        size_t len;
        const char *what;
    } signatures[] = {
        {"\x89PNG\r\n\x1a\n", 8, "a PNG image"}, {"GIF87a", 6, "a GIF image"},
        {"GIF89a", 6, "a GIF image"}, {"\xff\xd8\xff", 3, "a JPEG image"},
        {"%PDF-", 5, "a PDF document"}, {"PK\x03\x04", 4, "a zip archive"},
        {"\x1f\x8b", 2, "gzip data"}, {"BZh", 3, "bzip2 data"}, {"\xfd" "7zXZ", 5, "xz data"},
        {"7z\xbc\xaf\x27\x1c", 6, "a 7z archive"}, {"\x7f" "ELF", 4, "an ELF binary"},
        {"\xca\xfe\xba\xbe", 4, "a Java class or Mach-O binary"}, {"\xcf\xfa\xed\xfe", 4, "a Mach-O binary"},
        {"OggS", 4, "Ogg media"}, {"fLaC", 4, "FLAC audio"}, {"\x28\xb5\x2f\xfd", 4, "zstd data"},
    };
    size_t n = len < SNIFF_BYTES ? len : SNIFF_BYTES;
    if (memchr(data, '\0', n))
        return "NUL bytes";
    for (size_t i = 0; i < sizeof signatures / sizeof signatures[0]; i++)
        if (n >= signatures[i].len && memcmp(data, signatures[i].magic, signatures[i].len) == 0)
            return signatures[i].what;
    if (n >= 12 && memcmp(data, "RIFF", 4) == 0 &&
        (memcmp(data + 8, "WAVE", 4) == 0 || memcmp(data + 8, "AVI ", 4) == 0 ||
         memcmp(data + 8, "WEBP", 4) == 0))
        return "RIFF media";
    return NULL;
}

/* Windows-1252's 0x80-0x9F (the five it leaves undefined keep Latin-1's C1
 * code points); 0xA0-0xFF are the code points of Latin-1. */
static const uint16_t cp1252_high[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

/* in[0..n) decoded as Windows-1252 into out (room for 3 x n), as UTF-8.
 * Returns the bytes written. */
static size_t cp1252_to_utf8(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = in[i] < 0x80 ? in[i] : in[i] < 0xA0 ? cp1252_high[in[i] - 0x80] : in[i];
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xC0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            out[o++] = (char)(0xE0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return o;
}

/* Bytes of data[0..n) at or above 0x80, eight at a time. */
static size_t high_bytes(const char *data, size_t n)
{
    size_t high = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        /* the high bits summed by a multiply: __builtin_popcountll is a
         * library call without -mpopcnt */
        high += (size_t)((((w & 0x8080808080808080ULL) >> 7) * 0x0101010101010101ULL) >> 56);
    }
    for (; i < n; i++)
        high += (unsigned char)data[i] >= 0x80;
    return high;
}

/* --- sources and documents ---------------------------------------------- */

static int add_source(ingest_set *s, source *src)
{
    if (s->n_srcs == s->cap_srcs) {
        size_t cap = s->cap_srcs ? s->cap_srcs * 2 : 16;
        source *grown = realloc(s->srcs, cap * sizeof *grown);
        if (!grown)
            return -1;
        s->srcs = grown;
        s->cap_srcs = cap;
    }
    s->srcs[s->n_srcs++] = *src;
    return 0;
}

static int add_doc(walk *w, const char *name, size_t src, size_t off, size_t len)
{
    ingest_set *s = w->s;
    if (s->n_recs >= w->opt->max_files) {
        snprintf(w->err, w->errlen, "more than %zu documents; narrow the input with --include or --exclude",
                 w->opt->max_files);
        return -1;
    }
    if (s->n_recs == s->cap_recs) {
        size_t cap = s->cap_recs ? s->cap_recs * 2 : 64;
        docrec *grown = realloc(s->recs, cap * sizeof *grown);
        if (!grown)
            goto oom;
        s->recs = grown;
        s->cap_recs = cap;
    }
    docrec *r = &s->recs[s->n_recs];
    memset(r, 0, sizeof *r);
    r->d.name = strdup(name);
    if (!r->d.name)
        goto oom;
    r->d.len = len;
    r->src = src;
    r->off = off;
    s->n_recs++;
    return 0;
oom:
    snprintf(w->err, w->errlen, "out of memory");
    return -1;
}

/* Counts characters, invalid bytes and bytes at or above 0x80 of a file
 * through pread, not through its mapping, so a file shrinking under us is a
 * short read. Returns the bytes that could be read. */
static size_t scan_file(int fd, size_t len, size_t *chars, size_t *invalid, size_t *high)
{
    char *block = malloc(SCAN_BLOCK + 4);
    size_t done = 0, carry = 0, c = 0, bad = 0;
    *chars = *invalid = *high = 0;
    if (!block)
        return 0;
    while (done < len) {
        size_t want = len - done < SCAN_BLOCK ? len - done : SCAN_BLOCK;
        ssize_t got = pread(fd, block + carry, want, (off_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        done += (size_t)got;
        *high += high_bytes(block + carry, (size_t)got);
        size_t have = carry + (size_t)got;
        size_t upto = done < len ? utf8_complete_prefix(block, have) : have;
        if (upto + 4 < have)
            upto = have;  /* a run of invalid bytes: counted now, not carried */
        size_t ch, bd;
        utf8_count(block, upto, &ch, &bd);
        c += ch;
        bad += bd;
        carry = have - upto;
        memmove(block, block + upto, carry);
    }
    if (carry) {
        size_t ch, bd;
        utf8_count(block, carry, &ch, &bd);
        c += ch;
        bad += bd;
    }
    free(block);
    *chars = c;
    *invalid = bad;
    return done;
}

/* FNV-1a of up to SUM_BYTES of fd at off: what ingest_validate compares to
 * tell a file rewritten in place from one only appended to. */
enum { SUM_BYTES = 4096 };
static uint64_t range_sum(int fd, size_t off, size_t n)
{
    unsigned char b[SUM_BYTES];
    ssize_t got = pread(fd, b, n < SUM_BYTES ? n : SUM_BYTES, (off_t)off);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (ssize_t i = 0; i < got; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return got < 0 ? 0 : h ^ (uint64_t)got;
}

/* The blob: one memfd for texts that are not mapped from their file —
 * JSONL records, small files, decoded files. Created on first use and
 * mapped by finish(). */
static int blob_ready(walk *w)
{
    if (w->blob_fd >= 0)
        return 0;
    w->blob_fd = memfd_create("rlm-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (w->blob_fd < 0) {
        snprintf(w->err, w->errlen, "cannot create a memory file: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Copies len bytes of fd into the blob (decoded from Windows-1252 when
 * cp1252) and adds them as a document. A file that shrinks meanwhile gives
 * fewer bytes (said as a problem), never SIGBUS. */
static int add_file_copy(walk *w, int fd, const char *name, size_t len, int cp1252)
{
    enum { BLOCK = 64 * 1024 };
    char *in = malloc(BLOCK), *out = cp1252 ? malloc(3 * BLOCK) : NULL;
    size_t done = 0, off = w->blob_len;
    int rc = -1;
    if (!in || (cp1252 && !out)) {
        snprintf(w->err, w->errlen, "out of memory");
        goto done;
    }
    if (blob_ready(w) != 0)
        goto done;
    while (done < len) {
        size_t want = len - done < BLOCK ? len - done : BLOCK;
        ssize_t got = pread(fd, in, want, (off_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        size_t n = cp1252 ? cp1252_to_utf8((const unsigned char *)in, (size_t)got, out) : (size_t)got;
        if (write_full(w->blob_fd, cp1252 ? out : in, n) != 0) {
            snprintf(w->err, w->errlen, "cannot store '%s': %s", name, strerror(errno));
            goto done;
        }
        w->blob_len += n;
        done += (size_t)got;
    }
    if (done < len)
        problem(w->s, "'%s' shrank from %zu to %zu bytes while being read", name, len, done);
    size_t stored = w->blob_len - off;
    rc = add_doc(w, name, stored ? SIZE_MAX - 1 : SIZE_MAX, off, stored);
done:
    free(in);
    free(out);
    return rc;
}

/* Adds one regular file as a document named `name`: mapped, or copied into
 * the blob when it is a small file of a walk or glob (a directory of 100,000
 * files must not need 100,000 mappings: the kernel allows about 65,000),
 * when it must be decoded, or when no mapping can be made. In a walk (sniff set) binary files are skipped; an explicitly
 * named file is taken as it is, with a warning when it looks binary. Text
 * that is not UTF-8 and holds no UTF-8 sequence at all is Windows-1252 (or
 * Latin-1, its subset), decoded and said; a mix of UTF-8 and stray bytes
 * keeps the stray bytes to be replaced. 0 when added or skipped, -1 on a
 * fatal error (err set). */
static int add_open_file(walk *w, int fd, const char *path, const char *name, int sniff,
                         int fatal_open, int keep_fd);

static int add_file(walk *w, const char *path, const char *name, int sniff, int fatal_open)
{
    int outside;
    int fd = walk_open(w, path, O_RDONLY, &outside);
    if (fd < 0) {
        const char *why = outside ? OUTSIDE_ROOTS : strerror(errno);
        if (fatal_open) {
            snprintf(w->err, w->errlen, "cannot open '%s': %s", path, why);
            return -1;
        }
        problem(w->s, "skipped '%s': %s", name, why);
        w->skipped++;
        return 0;
    }
    return add_open_file(w, fd, path, name, sniff, fatal_open, 0);
}

/* add_file on a descriptor already open (taken: closed here or kept by the
 * set). path is what messages name and what a later check re-opens when the
 * descriptor had to be closed; keep_fd keeps it open whatever the count (an
 * input given by descriptor has no path to re-open). */
static int add_open_file(walk *w, int fd, const char *path, const char *name, int sniff,
                         int fatal_open, int keep_fd)
{
    ingest_set *s = w->s;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        if (fatal_open) {
            snprintf(w->err, w->errlen, "'%s' is not a regular file", path);
            return -1;
        }
        problem(s, "skipped '%s': not a regular file", name);
        w->skipped++;
        return 0;
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        close(fd);
        return add_doc(w, name, SIZE_MAX, 0, 0);
    }
    char head[SNIFF_BYTES];
    ssize_t got = pread(fd, head, sizeof head, 0);
    if (got < 0) {
        problem(s, "skipped '%s': %s", name, strerror(errno));
        close(fd);
        w->skipped++;
        return 0;
    }
    const char *binary = binary_reason(head, (size_t)got);
    if (binary && sniff) {
        problem(s, "skipped '%s': binary (%s)", name, binary);
        close(fd);
        w->skipped++;
        return 0;
    }
    if (binary)
        problem(s, "'%s' looks binary (%s): read as text anyway", name, binary);
    size_t chars, invalid, high;
    size_t seen = scan_file(fd, len, &chars, &invalid, &high);
    if (seen < len) {
        problem(s, "'%s' shrank from %zu to %zu bytes while being read", name, len, seen);
        len = seen;
    }
    /* Every byte >= 0x80 invalid: no UTF-8 in it, a single-byte encoding. */
    int cp1252 = !binary && invalid > 0 && invalid == high;
    /* Small files of a walk or a glob (there may be a million) are copied;
     * a file named on its own is mapped whatever its size. */
    if (cp1252 || (sniff && len < SMALL_FILE)) {
        int rc = add_file_copy(w, fd, name, len, cp1252);
        close(fd);
        if (rc != 0)
            return -1;
        docrec *r = &s->recs[s->n_recs - 1];
        r->d.chars = cp1252 ? seen : chars;
        r->d.invalid_utf8 = cp1252 ? 0 : invalid;
        if (cp1252)
            problem(s, "'%s' is not UTF-8: read as Windows-1252 (Latin-1), %zu bytes decoded", name,
                    invalid);
        return 0;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        /* Out of mappings (or memory for them): the bytes go into the blob. */
        int rc = add_file_copy(w, fd, name, len, 0);
        close(fd);
        if (rc != 0)
            return -1;
        s->recs[s->n_recs - 1].d.chars = chars;
        s->recs[s->n_recs - 1].d.invalid_utf8 = invalid;
        return 0;
    }
    size_t tail = len < SUM_BYTES ? len : SUM_BYTES;
    source src = {.path = strdup(path), .fd = fd, .map = map, .map_len = len, .len = len, .dev = st.st_dev,
                  .ino = st.st_ino, .head_sum = range_sum(fd, 0, SUM_BYTES),
                  .tail_sum = range_sum(fd, len - tail, tail)};
    if (!src.path || add_source(s, &src) != 0) {
        free(src.path);
        if (map)
            munmap(map, len);
        close(fd);
        snprintf(w->err, w->errlen, "out of memory");
        return -1;
    }
    if (keep_fd || s->open_fds < MAX_OPEN_FDS) {
        s->open_fds++;
    } else {
        close(fd);
        s->srcs[s->n_srcs - 1].fd = -1;
    }
    if (add_doc(w, name, s->n_srcs - 1, 0, len) != 0)
        return -1;
    docrec *r = &s->recs[s->n_recs - 1];
    r->d.chars = chars;
    r->d.invalid_utf8 = invalid;
    return 0;
}

/* --- memfds: stdin and JSONL texts --------------------------------------- */

static int memfd_finish(walk *w, int fd, size_t len, size_t *src_index)
{
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            snprintf(w->err, w->errlen, "cannot map a memory file: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    source src = {.path = NULL, .fd = fd, .map = map, .map_len = len, .len = len};
    if (add_source(w->s, &src) != 0) {
        if (map)
            munmap(map, len);
        close(fd);
        snprintf(w->err, w->errlen, "out of memory");
        return -1;
    }
    *src_index = w->s->n_srcs - 1;
    return 0;
}

/* One read from a stream (stdin, a pipe) that may keep us waiting: it
 * polls in slices of 100 ms, so the cancel flag is seen however long the
 * writer takes (or if none ever comes). >= 0 bytes read (0: the end), -1
 * with errno (ECANCELED when cancelled). */
static ssize_t stream_read(const walk *w, int fd, char *block, size_t n)
{
    for (;;) {
        if (w->opt->cancel && *w->opt->cancel) {
            errno = ECANCELED;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, 100);
        if (ready < 0 && errno != EINTR)
            return -1;
        if (ready <= 0)
            continue;
        ssize_t got = read(fd, block, n);
        if (got >= 0)
            return got;
        if (errno != EINTR && errno != EAGAIN)
            return -1;
    }
}

/* Reads a stream (stdin, a pipe or FIFO) to its end into a sealed memfd: the
 * one copy a stream needs. what names it in messages. */
static int read_stream(walk *w, int in, const char *what, size_t *src_index, size_t *len_out)
{
    int fd = memfd_create("rlm-stream", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        snprintf(w->err, w->errlen, "cannot create a memory file: %s", strerror(errno));
        return -1;
    }
    char *block = malloc(SCAN_BLOCK);
    size_t len = 0;
    if (!block)
        goto fail;
    for (;;) {
        ssize_t got = stream_read(w, in, block, SCAN_BLOCK);
        if (got < 0 && errno == ECANCELED) {
            snprintf(w->err, w->errlen, "cancelled");
            goto fail;
        }
        if (got < 0) {
            snprintf(w->err, w->errlen, "cannot read %s: %s", what, strerror(errno));
            goto fail;
        }
        if (got == 0)
            break;
        if (write_full(fd, block, (size_t)got) != 0) {
            snprintf(w->err, w->errlen, "cannot store %s: %s", what, strerror(errno));
            goto fail;
        }
        len += (size_t)got;
    }
    free(block);
    *len_out = len;
    return memfd_finish(w, fd, len, src_index);
fail:
    free(block);
    close(fd);
    return -1;
}

/* --- JSONL ---------------------------------------------------------------- */

static int jsonl_record(walk *w, const char *name, size_t line_no, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i == len)
        return 0;   /* blank lines are not records */
    json_error_t jerr;
    json_t *v = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (!v) {
        problem(w->s, "%s line %zu: broken JSON (%s), skipped", name, line_no, jerr.text);
        return 0;
    }
    json_t *text = json_is_object(v) ? json_object_get(v, w->opt->jsonl_field) : v;
    if (!json_is_string(text)) {
        problem(w->s, "%s line %zu: no string field \"%s\", skipped", name, line_no,
                w->opt->jsonl_field);
        json_decref(v);
        return 0;
    }
    const char *t = json_string_value(text);
    size_t tlen = json_string_length(text);
    if (w->blob_fd < 0) {
        w->blob_fd = memfd_create("rlm-jsonl", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (w->blob_fd < 0) {
            snprintf(w->err, w->errlen, "cannot create a memory file: %s", strerror(errno));
            json_decref(v);
            return -1;
        }
    }
    if (tlen && write_full(w->blob_fd, t, tlen) != 0) {
        snprintf(w->err, w->errlen, "cannot store JSONL text: %s", strerror(errno));
        json_decref(v);
        return -1;
    }
    char label[PATH_MAX_BYTES + 32];
    snprintf(label, sizeof label, "%s:%zu", name, line_no);
    size_t chars, invalid;
    utf8_count(t, tlen, &chars, &invalid);
    json_decref(v);
    if (add_doc(w, label, tlen ? SIZE_MAX - 1 : SIZE_MAX, w->blob_len, tlen) != 0)
        return -1;
    w->s->recs[w->s->n_recs - 1].d.chars = chars;
    w->blob_len += tlen;
    return 0;
}

/* Reads a JSONL file line by line with read(2) into a bounded buffer: the
 * texts are decoded anyway, so the file is not mapped. */
static int add_jsonl(walk *w, int fd, const char *name)
{
    buf line;
    buf_init(&line, JSONL_LINE_MAX);
    char *block = malloc(SCAN_BLOCK);
    size_t line_no = 0;
    int too_long = 0, rc = -1;
    if (!block) {
        snprintf(w->err, w->errlen, "out of memory");
        goto done;
    }
    for (;;) {
        ssize_t got = stream_read(w, fd, block, SCAN_BLOCK);
        if (got < 0 && errno == ECANCELED) {
            snprintf(w->err, w->errlen, "cancelled");
            goto done;
        }
        if (got < 0) {
            problem(w->s, "%s: read error after line %zu: %s", name, line_no, strerror(errno));
            break;
        }
        size_t i = 0, n = (size_t)got;
        while (i < n) {
            const char *nl = memchr(block + i, '\n', n - i);
            size_t end = nl ? (size_t)(nl - block) : n;
            if (!too_long && buf_append(&line, block + i, end - i) != 0)
                too_long = 1;
            i = end + (nl != NULL);
            if (!nl)
                break;
            line_no++;
            if (too_long)
                problem(w->s, "%s line %zu: longer than %d bytes, skipped", name, line_no,
                        JSONL_LINE_MAX);
            else if (jsonl_record(w, name, line_no, line.data ? line.data : "", line.len) != 0)
                goto done;
            buf_reset(&line);
            too_long = 0;
        }
        if (got == 0) {
            if (line.len > 0 || too_long) {
                line_no++;
                if (jsonl_record(w, name, line_no, line.data, line.len) != 0)
                    goto done;
            }
            break;
        }
    }
    rc = 0;
done:
    free(block);
    buf_free(&line);
    return rc;
}

/* --- the directory walk ---------------------------------------------------- */

static int seen_directory(walk *w, dev_t dev, ino_t ino)
{
    if (w->seen_n * 2 >= w->seen_cap) {
        size_t cap = w->seen_cap ? w->seen_cap * 2 : 256;
        dev_t *devs = calloc(cap, sizeof *devs);
        ino_t *inos = calloc(cap, sizeof *inos);
        uint64_t *used = calloc(cap, sizeof *used);
        if (!devs || !inos || !used) {
            free(devs);
            free(inos);
            free(used);
            return -1;
        }
        for (size_t i = 0; i < w->seen_cap; i++) {
            if (!w->seen[i])
                continue;
            size_t h = (size_t)(((uint64_t)w->seen_dev[i] * 0x9E3779B97F4A7C15ULL) ^ w->seen_ino[i]);
            while (used[h % cap])
                h++;
            used[h % cap] = 1;
            devs[h % cap] = w->seen_dev[i];
            inos[h % cap] = w->seen_ino[i];
        }
        free(w->seen);
        free(w->seen_dev);
        free(w->seen_ino);
        w->seen = used;
        w->seen_dev = devs;
        w->seen_ino = inos;
        w->seen_cap = cap;
    }
    size_t h = (size_t)(((uint64_t)dev * 0x9E3779B97F4A7C15ULL) ^ ino);
    for (;; h++) {
        size_t i = h % w->seen_cap;
        if (!w->seen[i]) {
            w->seen[i] = 1;
            w->seen_dev[i] = dev;
            w->seen_ino[i] = ino;
            w->seen_n++;
            return 0;
        }
        if (w->seen_dev[i] == dev && w->seen_ino[i] == ino)
            return 1;
    }
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_gitignore(walk *w, const char *dir, const char *rel)
{
    char path[PATH_MAX_BYTES];
    if ((size_t)snprintf(path, sizeof path, "%s/.gitignore", dir) >= sizeof path)
        return;
    int outside;
    int fd = walk_open(w, path, O_RDONLY, &outside);
    if (fd < 0)
        return;
    char *text = malloc(GITIGNORE_MAX_BYTES);
    ssize_t got = text ? read(fd, text, GITIGNORE_MAX_BYTES) : -1;
    close(fd);
    if (got > 0 && gitignore_add_text(w->gi, rel, text, (size_t)got) != 0)
        problem(w->s, "%s: too many .gitignore rules, the rest are not applied", path);
    free(text);
}

/* Whether rel (relative to the walk's root) is left out. */
static int excluded(walk *w, const char *rel, int is_dir)
{
    if (gitignore_match(w->exclude, rel, is_dir) == GITIGNORE_IGNORE)
        return 1;
    if (gitignore_match(w->gi, rel, is_dir) == GITIGNORE_IGNORE)
        return 1;
    if (!is_dir && gitignore_count(w->include) > 0 &&
        gitignore_match(w->include, rel, 0) == GITIGNORE_NONE)
        return 1;
    return 0;
}

static int walk_dir(walk *w, const char *dir, const char *rel, const char *prefix, size_t depth);

static int walk_entry(walk *w, const char *dir, const char *rel, const char *prefix,
                      const char *entry, size_t depth)
{
    char path[PATH_MAX_BYTES], child_rel[PATH_MAX_BYTES], name[PATH_MAX_BYTES];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, entry) >= sizeof path ||
        (size_t)snprintf(child_rel, sizeof child_rel, "%s%s", rel, entry) >= sizeof child_rel ||
        (size_t)snprintf(name, sizeof name, "%s%s", prefix, child_rel) >= sizeof name) {
        problem(w->s, "skipped '%s/%s': path too long", dir, entry);
        return 0;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        problem(w->s, "skipped '%s': %s", name, strerror(errno));
        w->skipped++;
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        if (excluded(w, child_rel, 1))
            return 0;
        int seen = seen_directory(w, st.st_dev, st.st_ino);
        if (seen < 0) {
            snprintf(w->err, w->errlen, "out of memory");
            return -1;
        }
        if (seen) {
            problem(w->s, "skipped '%s': directory already walked (a symlink loop?)", name);
            return 0;
        }
        if (depth + 1 > w->opt->max_depth) {
            problem(w->s, "skipped '%s': nested deeper than %zu", name, w->opt->max_depth);
            return 0;
        }
        size_t len = strlen(child_rel);
        if (len + 2 > sizeof child_rel)
            return 0;
        child_rel[len] = '/';
        child_rel[len + 1] = '\0';
        return walk_dir(w, path, child_rel, prefix, depth + 1);
    }
    if (!S_ISREG(st.st_mode) || excluded(w, child_rel, 0))
        return 0;
    return add_file(w, path, name, 1, 0);
}

/* Walks dir (rel is its path from the root, "" or ending in '/'; names get
 * prefix in front). Entries in byte order, so the walk is stable. */
static int walk_dir(walk *w, const char *dir, const char *rel, const char *prefix, size_t depth)
{
    int outside;
    int dir_fd = walk_open(w, dir, O_RDONLY | O_DIRECTORY, &outside);
    DIR *d = dir_fd >= 0 ? fdopendir(dir_fd) : NULL;
    if (!d) {
        int e = errno;
        if (dir_fd >= 0)
            close(dir_fd);
        problem(w->s, "skipped directory '%s%s': %s", prefix, rel, outside ? OUTSIDE_ROOTS : strerror(e));
        w->skipped++;
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..") || !strcmp(nm, ".git"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **grown = realloc(names, cap * sizeof *grown);
            if (!grown)
                goto oom;
            names = grown;
        }
        if (!(names[n] = strdup(nm)))
            goto oom;
        n++;
    }
    if (n)
        qsort(names, n, sizeof *names, compare_names);
    size_t mark = gitignore_count(w->gi);
    load_gitignore(w, dir, rel);
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = walk_entry(w, dir, rel, prefix, names[i], depth);
    gitignore_truncate(w->gi, mark);
    goto done;
oom:
    snprintf(w->err, w->errlen, "out of memory");
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

/* --- arguments ---------------------------------------------------------- */

static int has_glob_chars(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* One path (from the command line or a glob match). */
static int add_stream(walk *w, const char *path);

static int add_path(walk *w, const char *path, int single, int from_glob)
{
    struct stat st;
    if (w->opt->n_roots && !ingest_path_within(path, w->opt->roots, w->opt->n_roots)) {
        snprintf(w->err, w->errlen, "context '%s': " OUTSIDE_ROOTS, path);
        return -1;
    }
    if (stat(path, &st) != 0) {
        snprintf(w->err, w->errlen, "context '%s': %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        char prefix[PATH_MAX_BYTES];
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/')
            len--;
        if (single)
            prefix[0] = '\0';
        else if ((size_t)snprintf(prefix, sizeof prefix, "%.*s/", (int)len, path) >= sizeof prefix)
            return 0;
        if (seen_directory(w, st.st_dev, st.st_ino) == 1)
            return 0;
        size_t before = w->s->n_recs;
        gitignore_truncate(w->gi, 0);
        if (walk_dir(w, path, "", prefix, 0) != 0)
            return -1;
        if (w->s->n_recs == before && !w->opt->jsonl_field)
            problem(w->s, "no text files in directory '%s'", path);
        return 0;
    }
    /* A pipe is opened without waiting (a FIFO's open blocks until a writer
     * comes, where no Ctrl-C could reach it); the reads wait instead. */
    int fifo = S_ISFIFO(st.st_mode);
    if (w->opt->jsonl_field) {
        int outside;
        int fd = walk_open(w, path, O_RDONLY | (fifo ? O_NONBLOCK : 0), &outside);
        if (fd < 0) {
            snprintf(w->err, w->errlen, "cannot open '%s': %s", path,
                     outside ? OUTSIDE_ROOTS : strerror(errno));
            return -1;
        }
        int rc = add_jsonl(w, fd, path);
        close(fd);
        return rc;
    }
    if (fifo)
        return add_stream(w, path);
    return add_file(w, path, path, from_glob, 1);
}

/* Stdin, or a pipe or FIFO at path (path NULL: stdin), read to its end as
 * one document. */
static int add_stream(walk *w, const char *path)
{
    int outside = 0;
    int fd = path ? walk_open(w, path, O_RDONLY | O_NONBLOCK, &outside) : w->opt->stdin_fd;
    if (fd < 0) {
        snprintf(w->err, w->errlen, "cannot open '%s': %s", path,
                 outside ? OUTSIDE_ROOTS : strerror(errno));
        return -1;
    }
    size_t src, len;
    int rc = read_stream(w, fd, path ? path : "stdin", &src, &len);
    if (path)
        close(fd);
    if (rc != 0 || add_doc(w, path ? path : "<stdin>", len ? src : SIZE_MAX, 0, len) != 0)
        return -1;
    docrec *r = &w->s->recs[w->s->n_recs - 1];
    if (len)
        utf8_count(w->s->srcs[src].map, len, &r->d.chars, &r->d.invalid_utf8);
    return 0;
}

/* A descriptor of its own on the file open on fd, reading from the start
 * (the caller's offset is its own: a memfd just written is at its end), or
 * -1 when /proc is not there: then fd itself, rewound. */
static int open_again(int fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int own = open(path, O_RDONLY | O_CLOEXEC);
    if (own < 0)
        lseek(fd, 0, SEEK_SET);
    return own;
}

/* An input given by descriptor (ingest_options.fds), named `name`: a
 * regular file or memfd is mapped like a file named on its own, anything
 * else (a pipe, a socket) read to its end like stdin. The caller keeps fd:
 * the set works on a duplicate. */
static int add_fd(walk *w, int fd, const char *name)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(w->err, w->errlen, "context '%s': %s", name, strerror(errno));
        return -1;
    }
    if (w->opt->jsonl_field || !S_ISREG(st.st_mode)) {
        /* Read from the start whatever the caller's offset, where it can be. */
        int own = S_ISREG(st.st_mode) ? open_again(fd) : -1;
        int rc;
        if (w->opt->jsonl_field) {
            rc = add_jsonl(w, own >= 0 ? own : fd, name);
        } else {
            size_t src, len;
            rc = read_stream(w, fd, name, &src, &len);
            if (rc == 0 && add_doc(w, name, len ? src : SIZE_MAX, 0, len) != 0)
                rc = -1;
            if (rc == 0 && len) {
                docrec *r = &w->s->recs[w->s->n_recs - 1];
                utf8_count(w->s->srcs[src].map, len, &r->d.chars, &r->d.invalid_utf8);
            }
        }
        if (own >= 0)
            close(own);
        return rc;
    }
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        snprintf(w->err, w->errlen, "context '%s': %s", name, strerror(errno));
        return -1;
    }
    return add_open_file(w, dup_fd, name, name, 0, 1, 1);
}

static int add_argument(walk *w, const char *arg, size_t n_args, int fd)
{
    if (fd >= 0)
        return add_fd(w, fd, arg);
    if (!strcmp(arg, "-") && w->opt->n_roots) {
        snprintf(w->err, w->errlen, "context '-': stdin is not an input when inputs are confined to roots");
        return -1;
    }
    if (!strcmp(arg, "-")) {
        if (w->opt->jsonl_field)
            return add_jsonl(w, w->opt->stdin_fd, "<stdin>");
        return add_stream(w, NULL);
    }
    struct stat st;
    if (stat(arg, &st) != 0 && has_glob_chars(arg)) {
        glob_t g;
        int grc = glob(arg, 0, NULL, &g);
        if (grc != 0) {
            snprintf(w->err, w->errlen, "context '%s': no file matches", arg);
            if (grc != GLOB_NOMATCH)
                globfree(&g);
            return -1;
        }
        /* Under roots, matches outside them are no matches: the error
         * below cannot tell what lies beyond the roots. */
        int rc = 0;
        size_t used = 0;
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
            if (w->opt->n_roots && !ingest_path_within(g.gl_pathv[i], w->opt->roots, w->opt->n_roots))
                continue;
            used++;
            rc = add_path(w, g.gl_pathv[i], 0, 1);
        }
        globfree(&g);
        if (rc == 0 && used == 0) {
            snprintf(w->err, w->errlen, "context '%s': no file matches inside the allowed roots", arg);
            return -1;
        }
        return rc;
    }
    return add_path(w, arg, n_args == 1, 0);
}

/* --- finishing the set ---------------------------------------------------- */

static int compare_recs(const void *a, const void *b)
{
    return strcmp(((const docrec *)a)->d.name, ((const docrec *)b)->d.name);
}

/* Resolves data pointers once every source is mapped, drops duplicate names
 * of a dict, and builds the public array. */
static int finish(walk *w)
{
    ingest_set *s = w->s;
    if (w->blob_fd >= 0) {
        int fd = w->blob_fd;
        w->blob_fd = -1;
        if (memfd_finish(w, fd, w->blob_len, &w->blob_src) != 0)
            return -1;
    }
    if (s->kind == INGEST_DICT) {
        if (s->n_recs)
            qsort(s->recs, s->n_recs, sizeof *s->recs, compare_recs);
        size_t out = 0;
        for (size_t i = 0; i < s->n_recs; i++) {
            if (out > 0 && !strcmp(s->recs[out - 1].d.name, s->recs[i].d.name)) {
                problem(s, "skipped a second '%s': the name is taken", s->recs[i].d.name);
                free((char *)s->recs[i].d.name);
                continue;
            }
            s->recs[out++] = s->recs[i];
        }
        s->n_recs = out;
    }
    s->docs = calloc(s->n_recs ? s->n_recs : 1, sizeof *s->docs);
    if (!s->docs) {
        snprintf(w->err, w->errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < s->n_recs; i++) {
        docrec *r = &s->recs[i];
        if (r->src == SIZE_MAX - 1)
            r->src = w->blob_src;
        if (r->src != SIZE_MAX && r->d.len)
            r->d.data = s->srcs[r->src].map + r->off;
        else
            r->src = SIZE_MAX;
        s->docs[i] = r->d;
        s->total_bytes += r->d.len;
        s->invalid += r->d.invalid_utf8;
    }
    if (s->invalid)
        problem(s, "%zu bytes of invalid UTF-8 will be replaced with U+FFFD", s->invalid);
    return 0;
}

int ingest_open(const char *const *args, size_t n_args, const ingest_options *opt_in,
                ingest_set **out, char *err, size_t errlen)
{
    ingest_options defaults;
    ingest_options_init(&defaults);
    ingest_options opt = opt_in ? *opt_in : defaults;
    if (!opt.max_files)
        opt.max_files = defaults.max_files;
    if (!opt.max_depth)
        opt.max_depth = defaults.max_depth;
    if (!opt.max_problems)
        opt.max_problems = defaults.max_problems;
    *out = NULL;
    walk w = {.opt = &opt, .blob_fd = -1, .err = err, .errlen = errlen};
    w.s = calloc(1, sizeof *w.s);
    w.gi = gitignore_new(GITIGNORE_MAX_RULES);
    w.exclude = gitignore_new(GITIGNORE_MAX_RULES);
    w.include = gitignore_new(GITIGNORE_MAX_RULES);
    if (!w.s || !w.gi || !w.exclude || !w.include) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    w.s->max_problems = opt.max_problems;
    if (n_args == 0) {
        snprintf(err, errlen, "no context given");
        goto fail;
    }
    for (size_t i = 0; i < opt.n_exclude; i++)
        if (gitignore_add_pattern(w.exclude, opt.exclude[i]) != 0)
            goto oom;
    for (size_t i = 0; i < opt.n_include; i++)
        if (gitignore_add_pattern(w.include, opt.include[i]) != 0)
            goto oom;
    if (opt.jsonl_field) {
        w.s->kind = INGEST_LIST;
    } else {
        struct stat st;
        int one_file = n_args == 1 && ((opt.fds && opt.fds[0] >= 0) || !strcmp(args[0], "-") ||
                                       (stat(args[0], &st) == 0 &&
                                        (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode))));
        w.s->kind = one_file ? INGEST_STR : INGEST_DICT;
        w.s->format = opt.format;
    }
    for (size_t i = 0; i < n_args; i++)
        if (add_argument(&w, args[i], n_args, opt.fds ? opt.fds[i] : -1) != 0)
            goto fail;
    if (finish(&w) != 0)
        goto fail;
    if (w.s->kind != INGEST_STR && w.s->n_recs == 0) {
        const char *what = opt.jsonl_field ? "JSONL records" : "text files";
        if (w.s->n_problems)
            snprintf(err, errlen, "the context has no %s (%zu files skipped; first: %s)", what,
                     w.skipped, w.s->problems[0]);
        else
            snprintf(err, errlen, "the context has no %s", what);
        goto fail;
    }
    gitignore_free(w.gi);
    gitignore_free(w.exclude);
    gitignore_free(w.include);
    free(w.seen);
    free(w.seen_dev);
    free(w.seen_ino);
    *out = w.s;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (w.blob_fd >= 0)
        close(w.blob_fd);
    gitignore_free(w.gi);
    gitignore_free(w.exclude);
    gitignore_free(w.include);
    free(w.seen);
    free(w.seen_dev);
    free(w.seen_ino);
    ingest_free(w.s);
    return -1;
}

/* --- one document: a file or a text given through the API -------------- */

/* The walk of a set of one str document, with the default options. */
static int one_doc_begin(walk *w, ingest_options *opt, char *err, size_t errlen)
{
    ingest_options_init(opt);
    *w = (walk){.opt = opt, .blob_fd = -1, .err = err, .errlen = errlen};
    w->s = calloc(1, sizeof *w->s);
    if (!w->s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->s->max_problems = opt->max_problems;
    w->s->kind = INGEST_STR;
    return 0;
}

/* Finishes the walk w (whatever rc says happened so far): 0 with *out
 * set, or -1 with the set freed. */
static int one_doc_end(walk *w, int rc, ingest_set **out)
{
    if (rc == 0 && finish(w) == 0) {
        *out = w->s;
        return 0;
    }
    ingest_free(w->s);
    return -1;
}

int ingest_open_file(const char *path, ingest_set **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open context file '%s': %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const char *why = S_ISDIR(st.st_mode)   ? "is a directory; give a file"
                      : !S_ISREG(st.st_mode) ? "is not a regular file"
                      : st.st_size == 0      ? "is empty"
                                             : NULL;
    if (why) {
        snprintf(err, errlen, "context file '%s' %s", path, why);
        close(fd);
        return -1;
    }
    ingest_options opt;
    walk w;
    if (one_doc_begin(&w, &opt, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    /* Named on its own: mapped whatever its size, never sniffed away. */
    return one_doc_end(&w, add_open_file(&w, fd, path, path, 0, 1, 0), out);
}

int ingest_open_text(const char *text, size_t len, ingest_set **out, char *err, size_t errlen)
{
    *out = NULL;
    ingest_options opt;
    walk w;
    if (one_doc_begin(&w, &opt, err, errlen) != 0)
        return -1;
    int rc = -1;
    size_t src = SIZE_MAX;
    int fd = memfd_create("rlm-context", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        snprintf(err, errlen, "cannot create a memory file for the context: %s", strerror(errno));
    else if (len && write_full(fd, text, len) != 0) {
        snprintf(err, errlen, "cannot fill the context memory file: %s", strerror(errno));
        close(fd);
    } else {
        /* memfd_finish seals it: nobody holding the fd (the sandbox
         * included) can change it, and it is shared, never copied. */
        rc = memfd_finish(&w, fd, len, &src);
    }
    if (rc == 0)
        rc = add_doc(&w, "", len ? src : SIZE_MAX, 0, len);
    if (rc == 0 && len) {
        docrec *r = &w.s->recs[w.s->n_recs - 1];
        utf8_count(w.s->srcs[src].map, len, &r->d.chars, &r->d.invalid_utf8);
    }
    return one_doc_end(&w, rc, out);
}

void ingest_free(ingest_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_recs; i++)
        free((char *)s->recs[i].d.name);
    for (size_t i = 0; i < s->n_srcs; i++) {
        if (s->srcs[i].map)
            munmap((void *)s->srcs[i].map, s->srcs[i].map_len);
        if (s->srcs[i].fd >= 0)
            close(s->srcs[i].fd);
        free(s->srcs[i].path);
    }
    for (size_t i = 0; i < s->n_problems; i++)
        free(s->problems[i]);
    free(s->problems);
    free(s->srcs);
    free(s->recs);
    free(s->docs);
    free(s);
}

ingest_kind ingest_kind_of(const ingest_set *s) { return s->kind; }
const char *ingest_rewritten(const ingest_set *s) { return s->rewritten; }
ingest_format ingest_format_of(const ingest_set *s) { return s->format; }
size_t ingest_count(const ingest_set *s) { return s->n_recs; }
const ingest_doc *ingest_docs(const ingest_set *s) { return s->docs; }
size_t ingest_total_bytes(const ingest_set *s) { return s->total_bytes; }
size_t ingest_invalid_utf8(const ingest_set *s) { return s->invalid; }
size_t ingest_problem_count(const ingest_set *s) { return s->n_problems; }
size_t ingest_problem_total(const ingest_set *s) { return s->problem_total; }

const char *ingest_problem(const ingest_set *s, size_t i)
{
    return i < s->n_problems ? s->problems[i] : NULL;
}

/* --- shrinking files ---------------------------------------------------- */

/* The bytes of source src that are still backed by its file. */
static size_t source_live_len(const source *src)
{
    if (!src->path)
        return src->len;   /* a sealed memfd cannot shrink */
    struct stat st;
    int ok = src->fd >= 0 ? fstat(src->fd, &st) == 0 : stat(src->path, &st) == 0;
    if (!ok || st.st_dev != src->dev || st.st_ino != src->ino)
        return 0;
    return (size_t)st.st_size < src->len ? (size_t)st.st_size : src->len;
}

/* 1 when the first or last bytes of a source still open are not those read
 * at first: rewritten in place (a log truncated and written again), which
 * no length check sees when it grew back. Appending changes neither. */
static int source_rewritten(const source *src)
{
    if (!src->path || src->fd < 0 || !src->len)
        return 0;
    size_t tail = src->len < SUM_BYTES ? src->len : SUM_BYTES;
    return range_sum(src->fd, 0, SUM_BYTES) != src->head_sum ||
           range_sum(src->fd, src->len - tail, tail) != src->tail_sum;
}

size_t ingest_validate(ingest_set *s)
{
    size_t changed = 0;
    for (size_t i = 0; i < s->n_srcs; i++) {
        size_t live = source_live_len(&s->srcs[i]);
        if (live >= s->srcs[i].len) {
            if (!source_rewritten(&s->srcs[i]))
                continue;
            for (size_t k = 0; k < s->n_recs; k++) {
                if (s->recs[k].src != i)
                    continue;
                if (!s->rewritten) {
                    s->rewritten = s->recs[k].d.name;
                    problem(s, "'%s' was rewritten while rlm was using it: its bytes are not those "
                            "read at first", s->rewritten);
                }
                changed++;
            }
            continue;
        }
        for (size_t k = 0; k < s->n_recs; k++) {
            docrec *r = &s->recs[k];
            if (r->src != i || r->off + r->d.len <= live)
                continue;
            size_t keep = live > r->off ? live - r->off : 0;
            problem(s, "'%s' shrank or was replaced: %zu of %zu bytes kept", r->d.name, keep,
                    r->d.len);
            s->total_bytes -= r->d.len - keep;
            r->d.len = keep;
            if (keep == 0)
                r->d.data = NULL;
            s->docs[k] = r->d;
            changed++;
        }
        s->srcs[i].len = live;
    }
    return changed;
}

/* --- the packed form (docs/internals/context-format.md; pack.h) ----------- */

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* The single source every document comes from, if there is one and it is a
 * file still open, or the sealed memory file of a set that is one str (stdin,
 * a text given through the API): then the pack need not hold the bytes. */
static const source *only_file_source(const ingest_set *s)
{
    const source *only = NULL;
    for (size_t i = 0; i < s->n_recs; i++) {
        size_t src = s->recs[i].src;
        if (src == SIZE_MAX)
            continue;
        if (only && only != &s->srcs[src])
            return NULL;
        only = &s->srcs[src];
    }
    int whole = only && (only->path || (s->kind == INGEST_STR && s->n_recs == 1));
    return whole && only->fd >= 0 ? only : NULL;
}

/* Copies one document's bytes into dst with pread (or memcpy from a sealed
 * memfd). Returns the bytes copied; fewer than len when the file shrank. */
static size_t pack_copy(const ingest_set *s, const docrec *r, char *dst)
{
    const source *src = &s->srcs[r->src];
    if (!src->path) {
        memcpy(dst, src->map + r->off, r->d.len);
        return r->d.len;
    }
    int fd = src->fd;
    if (fd < 0) {
        fd = open(src->path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0)
            return 0;
        if (fstat(fd, &st) != 0 || st.st_dev != src->dev || st.st_ino != src->ino) {
            close(fd);
            return 0;
        }
    }
    size_t done = 0;
    while (done < r->d.len) {
        ssize_t got = pread(fd, dst + done, r->d.len - done, (off_t)(r->off + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        done += (size_t)got;
    }
    if (fd != src->fd)
        close(fd);
    return done;
}

int ingest_pack(const ingest_set *s, int *fd_out, size_t *len_out, int *data_fd, char *err,
                size_t errlen)
{
    *fd_out = *data_fd = -1;
    *len_out = 0;
    const source *external = only_file_source(s);
    size_t names_len = 0, data_len = 0;
    for (size_t i = 0; i < s->n_recs; i++) {
        names_len += strlen(s->recs[i].d.name) + 1;
        data_len += s->recs[i].d.len;
    }
    size_t index_off = align_up(sizeof(pack_header), 64);
    size_t names_off = index_off + s->n_recs * sizeof(pack_entry);
    size_t data_off = external ? 0 : align_up(names_off + names_len, PACK_ALIGN);
    size_t total = external ? names_off + names_len : data_off + data_len;
    int fd;
    char *map;
    if (pack_create(total, &fd, &map, err, errlen) != 0)
        return -1;
    pack_header h = {.version = 1, .kind = (uint32_t)s->kind,
                     .flags = (external ? PACK_EXTERNAL : 0) |
                              (s->format == INGEST_JSON ? PACK_JSON : 0) |
                              (s->format == INGEST_JSONL ? PACK_JSONL : 0),
                     .n_docs = s->n_recs,
                     .index_off = index_off, .names_off = names_off, .names_len = names_len,
                     .data_off = data_off,
                     .data_len = external ? external->len : data_len};
    memcpy(h.magic, PACK_MAGIC, sizeof h.magic);
    memcpy(map, &h, sizeof h);
    size_t name_at = 0, data_at = 0;
    for (size_t i = 0; i < s->n_recs; i++) {
        const docrec *r = &s->recs[i];
        size_t nlen = strlen(r->d.name);
        memcpy(map + names_off + name_at, r->d.name, nlen + 1);
        pack_entry e = {.name_off = name_at, .name_len = nlen,
                        .data_off = external ? r->off : data_at, .data_len = r->d.len};
        if (!external && r->d.len)
            e.data_len = pack_copy(s, r, map + data_off + data_at);
        memcpy(map + index_off + i * sizeof e, &e, sizeof e);
        name_at += nlen + 1;
        data_at += r->d.len;
    }
    /* Sealed: neither side can change what the other reads. */
    if (pack_seal(fd, map, total, err, errlen) != 0)
        return -1;
    if (external) {
        *data_fd = fcntl(external->fd, F_DUPFD_CLOEXEC, 0);
        if (*data_fd < 0) {
            snprintf(err, errlen, "cannot share the context file: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    *fd_out = fd;
    *len_out = total;
    return 0;
}

void ingest_release_pages(const ingest_set *s)
{
    if (!s)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < ingest_count(s); i++) {
        const ingest_doc *d = &ingest_docs(s)[i];
        if (!d->data || d->len < page)
            continue;
        /* Whole pages inside the document only: a neighbour sharing a page
         * keeps it (it is only a hint, and shared pages are never lost). */
        uintptr_t start = ((uintptr_t)d->data + page - 1) & ~(uintptr_t)(page - 1);
        uintptr_t end = ((uintptr_t)d->data + d->len) & ~(uintptr_t)(page - 1);
        if (end > start)
            madvise((void *)start, end - start, MADV_DONTNEED);
    }
}
