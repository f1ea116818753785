/* Unit tests for ingest.c: the directory walk (gitignore, .git, binary files,
 * include/exclude, sorted names), single files, stdin, globs, JSONL with
 * broken lines, and every bad input of issue 5: a missing path, a directory
 * without text, a file that shrinks while mapped, a symlink loop, unreadable
 * entries, a 0-byte file. Also the packed form and its validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest.h"
#include "pack.h"

static char root[256];

static void put(const char *rel, const char *text, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0755);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void puts_file(const char *rel, const char *text) { put(rel, text, strlen(text)); }

static const char *at(const char *rel)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return path;
}

static int setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/rlm-ingest-XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static ingest_set *open_one(const char *arg, const ingest_options *opt, char *err)
{
    ingest_set *s = NULL;
    const char *args[] = {arg};
    ingest_open(args, 1, opt, &s, err, 512);
    return s;
}

static int has_problem(const ingest_set *s, const char *needle)
{
    for (size_t i = 0; i < ingest_problem_count(s); i++)
        if (strstr(ingest_problem(s, i), needle))
            return 1;
    return 0;
}

static void test_directory_walk(void **state)
{
    puts_file("tree/b.txt", "bee\n");
    puts_file("tree/a.md", "# a\n");
    puts_file("tree/src/main.c", "int main(void) { return 0; }\n");
    puts_file("tree/src/gen.o.txt", "generated\n");
    puts_file("tree/.gitignore", "*.log\nbuild/\n/src/gen*\n");
    puts_file("tree/app.log", "noise\n");
    puts_file("tree/build/out.txt", "built\n");
    puts_file("tree/.git/config", "[core]\n");
    puts_file("tree/sub/.gitignore", "!keep.log\n");
    puts_file("tree/sub/keep.log", "kept\n");
    put("tree/image.png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    char err[512] = "";
    ingest_set *s = open_one(at("tree"), NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_DICT);
    const char *want[] = {"a.md", "b.txt", "src/main.c", "sub/.gitignore", "sub/keep.log"};
    /* .gitignore files are text and are documents too, except the ignored ones */
    size_t n = ingest_count(s);
    const ingest_doc *d = ingest_docs(s);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(d[i].name, ".gitignore"))
            continue;
        assert_true(k < 5);
        assert_string_equal(d[i].name, want[k]);
        k++;
    }
    assert_int_equal(k, 5);
    assert_true(has_problem(s, "image.png': binary"));
    ingest_free(s);

    ingest_options opt;
    ingest_options_init(&opt);
    const char *inc[] = {"*.c", "*.md"};
    const char *exc[] = {"a.md"};
    opt.include = inc;
    opt.n_include = 2;
    opt.exclude = exc;
    opt.n_exclude = 1;
    s = open_one(at("tree"), &opt, err);
    assert_non_null(s);
    assert_int_equal(ingest_count(s), 1);
    assert_string_equal(ingest_docs(s)[0].name, "src/main.c");
    assert_memory_equal(ingest_docs(s)[0].data, "int main", 8);
    ingest_free(s);
}

static void test_single_file_empty_file_and_missing(void **state)
{
    puts_file("one.txt", "h\xc3\xa9llo \xff world\n");
    char err[512] = "";
    ingest_set *s = open_one(at("one.txt"), NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_count(s), 1);
    assert_int_equal(ingest_docs(s)[0].len, 15);
    assert_int_equal(ingest_docs(s)[0].chars, 14);
    assert_int_equal(ingest_invalid_utf8(s), 1);
    assert_true(has_problem(s, "invalid UTF-8"));
    ingest_free(s);

    puts_file("empty.txt", "");
    s = open_one(at("empty.txt"), NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_docs(s)[0].len, 0);
    assert_null(ingest_docs(s)[0].data);
    ingest_free(s);

    err[0] = '\0';
    assert_null(open_one(at("no/such/file"), NULL, err));
    assert_non_null(strstr(err, "No such file"));
    err[0] = '\0';
    assert_null(open_one(at("nothing-*.zzz"), NULL, err));
    assert_non_null(strstr(err, "no file matches"));
}

static void test_directory_without_text(void **state)
{
    put("bin/a.bin", "\0\1\2", 3);
    put("bin/b.bin", "\x7f" "ELF\0", 5);
    char err[512] = "";
    assert_null(open_one(at("bin"), NULL, err));
    assert_non_null(strstr(err, "no text files"));
    assert_non_null(strstr(err, "binary"));
    mkdir(at("void"), 0755);
    assert_null(open_one(at("void"), NULL, err));
    assert_non_null(strstr(err, "no text files"));
}

static void test_file_shrinks_while_mapped(void **state)
{
    size_t big = 3 * 65536;
    char *text = malloc(big);
    memset(text, 'x', big);
    for (size_t i = 99; i < big; i += 100)
        text[i] = '\n';
    put("shrink/log.txt", text, big);
    puts_file("shrink/other.txt", "other\n");
    char err[512] = "";
    ingest_set *s = open_one(at("shrink"), NULL, err);
    assert_non_null(s);
    assert_int_equal(truncate(at("shrink/log.txt"), 1000), 0);
    assert_int_equal(ingest_validate(s), 1);
    const ingest_doc *d = ingest_docs(s);
    assert_string_equal(d[0].name, "log.txt");
    assert_int_equal(d[0].len, 1000);
    /* reading what is left is safe: those pages still exist */
    size_t newlines = 0;
    for (size_t i = 0; i < d[0].len; i++)
        newlines += d[0].data[i] == '\n';
    assert_int_equal(newlines, 10);
    assert_true(has_problem(s, "shrank"));
    /* the pack reads with pread: a further shrink is a short read, not SIGBUS */
    assert_int_equal(truncate(at("shrink/log.txt"), 10), 0);
    int fd, data_fd;
    size_t len;
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_int_equal(data_fd, -1);
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    ingest_kind kind;
    ingest_doc *docs;
    size_t n;
    assert_int_equal(pack_read(map, len, NULL, 0, &kind, &docs, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(docs[0].len, 10);
    assert_memory_equal(docs[1].data, "other\n", 6);
    free(docs);
    munmap(map, len);
    close(fd);
    ingest_free(s);
    free(text);
}

static void test_symlink_loop_and_unreadable(void **state)
{
    puts_file("loop/a/file.txt", "in a\n");
    assert_int_equal(symlink("..", at("loop/a/up")), 0);
    assert_int_equal(symlink("missing-target", at("loop/dangling.txt")), 0);
    assert_int_equal(symlink("self.txt", at("loop/self.txt")), 0);
    puts_file("loop/locked/secret.txt", "s\n");
    int as_root = geteuid() == 0;
    /* root reads through chmod 000, so only other users see this one refused;
     * the dangling and self-referencing links stand for unreadable entries */
    if (!as_root)
        chmod(at("loop/locked"), 0);
    char err[512] = "";
    ingest_set *s = open_one(at("loop"), NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_count(s), as_root ? 2 : 1);
    assert_string_equal(ingest_docs(s)[0].name, "a/file.txt");
    assert_true(has_problem(s, "already walked"));
    assert_true(has_problem(s, "dangling.txt"));
    assert_true(has_problem(s, "self.txt"));
    if (!as_root) {
        assert_true(has_problem(s, "locked"));
        chmod(at("loop/locked"), 0755);
    }
    ingest_free(s);
}

static void test_jsonl_with_broken_lines(void **state)
{
    const char text[] = "{\"text\": \"first\", \"id\": 1}\n"
                        "{\"text\": broken\n"
                        "\n"
                        "{\"id\": 3}\n"
                        "\"a bare string\"\n"
                        "{\"text\": \"caf\\u00e9 \\n line\"}";
    put("t.jsonl", text, sizeof text - 1);
    ingest_options opt;
    ingest_options_init(&opt);
    opt.jsonl_field = "text";
    char err[512] = "";
    ingest_set *s = open_one(at("t.jsonl"), &opt, err);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_LIST);
    assert_int_equal(ingest_count(s), 3);
    const ingest_doc *d = ingest_docs(s);
    assert_memory_equal(d[0].data, "first", 5);
    assert_memory_equal(d[1].data, "a bare string", 13);
    assert_int_equal(d[2].len, strlen("caf\xc3\xa9 \n line"));
    assert_memory_equal(d[2].data, "caf\xc3\xa9 \n line", d[2].len);
    assert_non_null(strstr(d[2].name, "t.jsonl:6"));
    assert_true(has_problem(s, "line 2: broken JSON"));
    assert_true(has_problem(s, "line 4: no string field"));
    ingest_free(s);

    put("bad.jsonl", "nope\n{\n", 7);
    assert_null(open_one(at("bad.jsonl"), &opt, err));
    assert_non_null(strstr(err, "no JSONL records"));
}

static void test_stdin_glob_and_pack(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "from stdin\n", 11), 11);
    close(p[1]);
    ingest_options opt;
    ingest_options_init(&opt);
    opt.stdin_fd = p[0];
    char err[512] = "";
    ingest_set *s = open_one("-", &opt, err);
    close(p[0]);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_memory_equal(ingest_docs(s)[0].data, "from stdin\n", 11);
    ingest_free(s);

    puts_file("g/x1.txt", "one\n");
    puts_file("g/x2.txt", "two\n");
    puts_file("g/y.txt", "why\n");
    char pattern[300];
    snprintf(pattern, sizeof pattern, "%s/g/x*.txt", root);
    s = open_one(pattern, NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_kind_of(s), INGEST_DICT);
    assert_int_equal(ingest_count(s), 2);
    assert_non_null(strstr(ingest_docs(s)[1].name, "g/x2.txt"));

    /* inline pack round trip, then damage it */
    int fd, data_fd;
    size_t len;
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_int_equal(data_fd, -1);
    char *copy = malloc(len);
    assert_int_equal(pread(fd, copy, len, 0), (ssize_t)len);
    ingest_kind kind;
    ingest_doc *docs;
    size_t n;
    assert_int_equal(pack_read(copy, len, NULL, 0, &kind, &docs, &n, err, sizeof err), 0);
    assert_int_equal(pack_format(copy, len), INGEST_TEXT);
    assert_int_equal(kind, INGEST_DICT);
    assert_int_equal(n, 2);
    assert_string_equal(docs[0].name, ingest_docs(s)[0].name);
    assert_memory_equal(docs[1].data, "two\n", 4);
    free(docs);
    assert_int_equal(pack_read(copy, 40, NULL, 0, &kind, &docs, &n, err, sizeof err), -1);
    memset(copy + 64, 0xff, 16);   /* the first entry's name offset and length */
    assert_int_equal(pack_read(copy, len, NULL, 0, &kind, &docs, &n, err, sizeof err), -1);
    free(copy);
    close(fd);
    ingest_free(s);

    /* one file: the pack holds the index and passes the file itself */
    s = open_one(at("g/y.txt"), NULL, err);
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_true(data_fd >= 0);
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    void *data = mmap(NULL, 4, PROT_READ, MAP_SHARED, data_fd, 0);
    assert_int_equal(pack_read(map, len, data, 4, &kind, &docs, &n, err, sizeof err), 0);
    assert_int_equal(kind, INGEST_STR);
    assert_memory_equal(docs[0].data, "why\n", 4);
    free(docs);
    munmap(map, len);
    munmap(data, 4);
    close(fd);
    close(data_fd);
    ingest_free(s);

    /* A set read as JSON lines (or JSON) says so in its pack. */
    ingest_options lines;
    ingest_options_init(&lines);
    lines.format = INGEST_JSONL;
    const char *one[] = {at("g/y.txt")};
    assert_int_equal(ingest_open(one, 1, &lines, &s, err, sizeof err), 0);
    assert_int_equal(ingest_format_of(s), INGEST_JSONL);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    assert_int_equal(pack_format(map, len), INGEST_JSONL);
    munmap(map, len);
    close(fd);
    close(data_fd);
    ingest_free(s);
}

static void test_several_arguments_and_limits(void **state)
{
    puts_file("m1/same.txt", "1\n");
    puts_file("m2/same.txt", "2\n");
    char err[512] = "";
    char a1[300], a2[300];
    snprintf(a1, sizeof a1, "%s/m1", root);
    snprintf(a2, sizeof a2, "%s/m2/", root);
    const char *args[] = {a1, a2};
    ingest_set *s = NULL;
    assert_int_equal(ingest_open(args, 2, NULL, &s, err, sizeof err), 0);
    assert_int_equal(ingest_count(s), 2);
    assert_non_null(strstr(ingest_docs(s)[0].name, "m1/same.txt"));
    assert_non_null(strstr(ingest_docs(s)[1].name, "m2/same.txt"));
    ingest_free(s);
    ingest_options opt;
    ingest_options_init(&opt);
    opt.max_files = 1;
    assert_int_equal(ingest_open(args, 2, &opt, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than 1 documents"));
    assert_int_equal(ingest_open(args, 0, NULL, &s, err, sizeof err), -1);
}

/* Valid UTF-8 longer than one read block (256 KiB): a character cut by a
 * block boundary is neither invalid nor counted twice, whatever the offset. */
static void test_utf8_across_read_blocks(void **state)
{
    enum { N = 300 * 1024 };
    char *text = malloc(N + 8);
    assert_non_null(text);
    for (int shift = 0; shift < 4; shift++) {
        size_t len = 0, chars = 0;
        for (int i = 0; i < shift; i++, chars++)
            text[len++] = 'a';
        /* 2, 3 and 4 bytes and ASCII: a mix that lands on every boundary offset. */
        static const char *const pieces[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "x"};
        for (size_t k = 0; len + 4 < N; k++, chars++) {
            const char *p = pieces[k % 4];
            memcpy(text + len, p, strlen(p));
            len += strlen(p);
        }
        put("utf8/big.txt", text, len);
        char err[512];
        ingest_set *s = open_one(at("utf8/big.txt"), NULL, err);
        assert_non_null(s);
        assert_int_equal(ingest_invalid_utf8(s), 0);
        assert_int_equal(ingest_docs(s)[0].chars, chars);
        assert_false(has_problem(s, "invalid UTF-8"));
        ingest_free(s);
        /* The same file in a directory walk: text, not binary. */
        ingest_options opt;
        ingest_options_init(&opt);
        s = open_one(at("utf8"), &opt, err);
        assert_non_null(s);
        assert_int_equal(ingest_count(s), 1);
        assert_false(has_problem(s, "binary"));
        assert_int_equal(ingest_invalid_utf8(s), 0);
        ingest_free(s);
    }
    free(text);
}

static const ingest_doc *doc_named(const ingest_set *s, const char *name)
{
    for (size_t i = 0; i < ingest_count(s); i++)
        if (strcmp(ingest_docs(s)[i].name, name) == 0)
            return &ingest_docs(s)[i];
    return NULL;
}

/* Binary is NUL bytes or a known signature (as git and ripgrep have it);
 * Latin-1 / Windows-1252 text is decoded, said, never dropped; text that
 * mixes UTF-8 and stray bytes is repaired as before. */
static void test_encodings_and_binary(void **state)
{
    puts_file("enc/latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9" "e, \xe0 la fran\xe7" "aise\n");
    puts_file("enc/cp1252.txt", "\x93quoted\x94 costs \x80" "5\n");
    puts_file("enc/mixed.txt", "caf\xc3\xa9 and a stray \xff byte\n");
    puts_file("enc/doc.pdf", "%PDF-1.4\n\xe2\xe3\xcf\xd3\n1 0 obj\n");
    put("enc/blob.bin", "abc\0def", 7);
    ingest_options opt;
    ingest_options_init(&opt);
    char err[512];
    ingest_set *s = open_one(at("enc"), &opt, err);
    assert_non_null(s);
    assert_int_equal(ingest_count(s), 3);
    const ingest_doc *d = doc_named(s, "latin1.txt");
    assert_non_null(d);
    const char *want = "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e, \xc3\xa0 la fran\xc3\xa7" "aise\n";
    assert_int_equal(d->len, strlen(want));
    assert_memory_equal(d->data, want, d->len);
    assert_int_equal(d->chars, 34);
    assert_int_equal(d->invalid_utf8, 0);
    d = doc_named(s, "cp1252.txt");
    assert_non_null(d);
    want = "\xe2\x80\x9cquoted\xe2\x80\x9d costs \xe2\x82\xac" "5\n";
    assert_int_equal(d->len, strlen(want));
    assert_memory_equal(d->data, want, d->len);
    d = doc_named(s, "mixed.txt");
    assert_non_null(d);
    assert_int_equal(d->invalid_utf8, 1);
    assert_true(has_problem(s, "'latin1.txt' is not UTF-8: read as Windows-1252"));
    assert_true(has_problem(s, "skipped 'doc.pdf': binary"));
    assert_true(has_problem(s, "skipped 'blob.bin': binary"));
    assert_int_equal(ingest_invalid_utf8(s), 1);
    ingest_free(s);

    /* Named explicitly, a file is read whatever it holds, with a warning
     * when it looks binary. */
    s = open_one(at("enc/blob.bin"), NULL, err);
    assert_non_null(s);
    assert_true(has_problem(s, "looks binary"));
    ingest_free(s);
    s = open_one(at("enc/latin1.txt"), NULL, err);
    assert_non_null(s);
    assert_int_equal(ingest_docs(s)[0].len, 40);
    assert_false(has_problem(s, "looks binary"));
    ingest_free(s);
}

/* More files than the kernel allows mappings (vm.max_map_count, 65,530 by
 * default): small files are copied, not mapped, so the walk takes them all. */
static void test_more_files_than_mappings(void **state)
{
    enum { FILES = 70000 };
    char path[600];
    snprintf(path, sizeof path, "%s/many", root);
    assert_int_equal(mkdir(path, 0755), 0);
    for (int i = 0; i < FILES; i++) {
        snprintf(path, sizeof path, "%s/many/f%05d.txt", root, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        char line[32];
        int n = snprintf(line, sizeof line, "file %d\n", i);
        assert_int_equal(write(fd, line, (size_t)n), n);
        close(fd);
    }
    ingest_options opt;
    ingest_options_init(&opt);
    char err[512];
    ingest_set *s = open_one(at("many"), &opt, err);
    assert_non_null(s);
    assert_int_equal(ingest_count(s), FILES);
    assert_int_equal(ingest_problem_total(s), 0);
    const ingest_doc *d = &ingest_docs(s)[FILES - 1];
    assert_string_equal(d->name, "f69999.txt");
    assert_memory_equal(d->data, "file 69999\n", d->len);
    int fd = -1, data_fd = -1;
    size_t len = 0;
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    close(fd);
    ingest_free(s);
}

/* Inputs given by descriptor (rlm_add_context_fd): a memfd written just
 * before (its offset at the end) is mapped from its start under its given
 * name; a pipe is read like stdin; a .jsonl name reads records; the set
 * keeps its own descriptor, so the caller's may close at once; several
 * make a dict by name, and the pack holds their bytes. */
static void test_inputs_by_descriptor(void **state)
{
    char err[512];
    int mem = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(mem >= 0);
    assert_int_equal(write(mem, "alpha\nbeta\n", 11), 11);
    fcntl(mem, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(write(pipefd[1], "from a pipe", 11), 11);
    close(pipefd[1]);
    int recs = memfd_create("r", MFD_CLOEXEC);
    assert_int_equal(write(recs, "{\"a\":1}\n{\"a\":2}\n", 16), 16);

    ingest_options opt;
    ingest_options_init(&opt);
    const char *one[] = {"notes.txt"};
    int one_fd[] = {mem};
    opt.fds = one_fd;
    ingest_set *s = NULL;
    assert_int_equal(ingest_open(one, 1, &opt, &s, err, sizeof err), 0);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_count(s), 1);
    assert_string_equal(ingest_docs(s)[0].name, "notes.txt");
    assert_int_equal(ingest_docs(s)[0].len, 11);
    assert_memory_equal(ingest_docs(s)[0].data, "alpha\nbeta\n", 11);
    ingest_free(s);

    const char *two[] = {"b.txt", "a.txt"};
    int two_fds[] = {pipefd[0], mem};
    opt.fds = two_fds;
    assert_int_equal(ingest_open(two, 2, &opt, &s, err, sizeof err), 0);
    close(pipefd[0]);
    close(mem);   /* the set keeps its own */
    assert_int_equal(ingest_kind_of(s), INGEST_DICT);
    assert_string_equal(ingest_docs(s)[0].name, "a.txt");
    assert_string_equal(ingest_docs(s)[1].name, "b.txt");
    assert_memory_equal(ingest_docs(s)[1].data, "from a pipe", 11);
    int fd = -1, data_fd = -1;
    size_t len = 0;
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_int_equal(data_fd, -1);   /* two sources: the bytes are inline */
    close(fd);
    ingest_free(s);

    const char *jsonl[] = {"records.jsonl"};
    int jsonl_fd[] = {recs};
    opt.fds = jsonl_fd;
    opt.format = INGEST_JSONL;
    assert_int_equal(ingest_open(jsonl, 1, &opt, &s, err, sizeof err), 0);
    assert_int_equal(ingest_format_of(s), INGEST_JSONL);
    assert_int_equal(ingest_docs(s)[0].len, 16);
    ingest_free(s);
    opt.format = INGEST_TEXT;

    int closed[] = {recs};
    close(recs);
    opt.fds = closed;
    assert_int_equal(ingest_open(jsonl, 1, &opt, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "records.jsonl"));
}

/* Inputs confined to roots (ingest_options.roots): what resolves outside,
 * through a link, "..", a glob or stdin, is refused or skipped, never read,
 * and the refusal does not say whether the path exists. */
static void test_roots_confinement(void **state)
{
    puts_file("allowed/a.txt", "alpha\n");
    puts_file("allowed/sub/b.txt", "beta\n");
    puts_file("outside/secret.txt", "SECRET\n");
    assert_int_equal(symlink("sub/b.txt", at("allowed/link_in")), 0);
    assert_int_equal(symlink("../outside/secret.txt", at("allowed/link_out")), 0);
    assert_int_equal(symlink("../outside", at("allowed/dir_out")), 0);
    char allowed[4096], err[512];
    assert_int_equal(ingest_root_resolve(at("allowed"), allowed, sizeof allowed, err, sizeof err), 0);
    assert_int_equal(ingest_root_resolve(at("missing"), allowed + 2048, 2048, err, sizeof err), -1);
    const char *roots[] = {allowed};
    ingest_options opt;
    ingest_options_init(&opt);
    opt.roots = roots;
    opt.n_roots = 1;

    ingest_set *s = open_one(at("allowed"), &opt, err);
    assert_non_null(s);
    const char *want[] = {"a.txt", "link_in", "sub/b.txt"};
    assert_int_equal(ingest_count(s), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(ingest_docs(s)[i].name, want[i]);
        assert_null(memmem(ingest_docs(s)[i].data, ingest_docs(s)[i].len, "SECRET", 6));
    }
    assert_true(has_problem(s, "link_out': not found inside the allowed roots"));
    assert_true(has_problem(s, "dir_out/': not found inside the allowed roots"));
    ingest_free(s);

    /* Named outside, whether it exists or not: the same refusal. */
    const char *refused[] = {at("outside/secret.txt"), at("allowed/link_out"),
                             at("allowed/../outside/secret.txt"), at("outside/nothing.txt"),
                             at("allowed/dir_out/secret.txt")};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s", refused[i]);
        err[0] = '\0';
        assert_null(open_one(path, &opt, err));
        assert_non_null(strstr(err, "not found inside the allowed roots"));
    }
    assert_null(open_one("-", &opt, err));
    assert_non_null(strstr(err, "stdin"));
    char glob_out[512];
    snprintf(glob_out, sizeof glob_out, "%s", at("outside/*.txt"));
    assert_null(open_one(glob_out, &opt, err));
    assert_non_null(strstr(err, "no file matches inside the allowed roots"));
    char glob_in[512];
    snprintf(glob_in, sizeof glob_in, "%s", at("allowed/*.txt"));
    s = open_one(glob_in, &opt, err);
    assert_non_null(s);
    assert_int_equal(ingest_count(s), 1);
    ingest_free(s);

    assert_true(ingest_path_within(at("allowed/link_in"), roots, 1));
    assert_false(ingest_path_within(at("allowed/link_out"), roots, 1));
    assert_false(ingest_path_within(at("allowed/none"), roots, 1));
    /* A sibling whose name starts like the root is not inside it. */
    puts_file("allowed2/c.txt", "gamma\n");
    assert_false(ingest_path_within(at("allowed2/c.txt"), roots, 1));
}

/* One input given whole through the API (rlm_set_context_file / _text):
 * the same shape as the walk's, one str document; a file is checked as
 * rlm.h promises, a text (empty too) lives in a sealed memory file the pack
 * shares instead of copying. */
static void test_one_file_and_one_text(void **state)
{
    (void)state;
    char err[512];
    ingest_set *s = NULL;
    puts_file("whole/a.txt", "caf\xc3\xa9\n");
    assert_int_equal(ingest_open_file(at("whole/a.txt"), &s, err, sizeof err), 0);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_count(s), 1);
    assert_string_equal(ingest_docs(s)[0].name, at("whole/a.txt"));
    assert_int_equal(ingest_docs(s)[0].chars, 5);
    int fd, data_fd;
    size_t len;
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_true(data_fd >= 0);   /* the file itself, not a copy */
    close(fd);
    close(data_fd);
    ingest_free(s);

    puts_file("whole/empty.txt", "");
    const char *bad[][2] = {{"whole/empty.txt", "is empty"}, {"whole", "is a directory"},
                            {"whole/missing.txt", "cannot open"}};
    for (size_t i = 0; i < 3; i++) {
        s = (ingest_set *)1;
        assert_int_equal(ingest_open_file(at(bad[i][0]), &s, err, sizeof err), -1);
        assert_null(s);
        assert_non_null(strstr(err, bad[i][1]));
    }
    /* "-" is a file's name here, not stdin. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    puts_file("-", "dash\n");
    assert_int_equal(chdir(root), 0);
    assert_int_equal(ingest_open_file("-", &s, err, sizeof err), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(ingest_total_bytes(s), 5);
    ingest_free(s);

    const char text[] = "one\xff two\n";
    assert_int_equal(ingest_open_text(text, sizeof text - 1, &s, err, sizeof err), 0);
    assert_int_equal(ingest_kind_of(s), INGEST_STR);
    assert_int_equal(ingest_count(s), 1);
    assert_string_equal(ingest_docs(s)[0].name, "");
    assert_memory_equal(ingest_docs(s)[0].data, text, sizeof text - 1);
    assert_int_equal(ingest_invalid_utf8(s), 1);
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_true(data_fd >= 0);   /* the sealed memory file, shared */
    assert_int_equal(fcntl(data_fd, F_GET_SEALS) & F_SEAL_WRITE, F_SEAL_WRITE);
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    void *data = mmap(NULL, sizeof text - 1, PROT_READ, MAP_SHARED, data_fd, 0);
    assert_true(map != MAP_FAILED && data != MAP_FAILED);
    ingest_kind kind;
    ingest_doc *docs = NULL;
    size_t n = 0;
    assert_int_equal(pack_read(map, len, data, sizeof text - 1, &kind, &docs, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(docs[0].name, "");
    assert_memory_equal(docs[0].data, text, sizeof text - 1);
    free(docs);
    munmap(map, len);
    munmap(data, sizeof text - 1);
    close(fd);
    close(data_fd);
    ingest_free(s);

    assert_int_equal(ingest_open_text("", 0, &s, err, sizeof err), 0);
    assert_int_equal(ingest_count(s), 1);
    assert_int_equal(ingest_total_bytes(s), 0);
    assert_int_equal(ingest_pack(s, &fd, &len, &data_fd, err, sizeof err), 0);
    assert_int_equal(data_fd, -1);   /* nothing to share */
    close(fd);
    ingest_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_directory_walk),
        cmocka_unit_test(test_single_file_empty_file_and_missing),
        cmocka_unit_test(test_directory_without_text),
        cmocka_unit_test(test_file_shrinks_while_mapped),
        cmocka_unit_test(test_symlink_loop_and_unreadable),
        cmocka_unit_test(test_jsonl_with_broken_lines),
        cmocka_unit_test(test_stdin_glob_and_pack),
        cmocka_unit_test(test_several_arguments_and_limits),
        cmocka_unit_test(test_utf8_across_read_blocks),
        cmocka_unit_test(test_encodings_and_binary),
        cmocka_unit_test(test_more_files_than_mappings),
        cmocka_unit_test(test_inputs_by_descriptor),
        cmocka_unit_test(test_roots_confinement),
        cmocka_unit_test(test_one_file_and_one_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
