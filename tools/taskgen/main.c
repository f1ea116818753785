/* taskgen — command-line front end of the task generators: writes a task
 * directory, or scores an answer file against a gold file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskgen.h"
#include "util.h"

static void usage(FILE *out)
{
    fputs("usage: taskgen sniah|oolong|pairs|docqa --out DIR [--tokens N] [--lines N] [--seed S]\n"
          "                [--docs N] [--depth 0-39] [--variant 0-3] [--subcalls]\n"
          "       taskgen score contains|exact|numeric|f1 GOLD_FILE ANSWER_FILE\n"
          "Writes context.txt, question.txt, gold.txt, key.jsonl, task.json and script.json\n(a fake-server script playing the root model) into DIR; docqa also docs.jsonl.\n"
          "--lines: instance lines (oolong, pairs); --docs: documents (docqa, default 1000).\n"
          "Sizes: a token is 4 characters; suffixes K, M, G allowed (1M = 1,048,576).\n"
          "Exit: 0 done, 2 usage error, 1 write error.\n",
          out);
}


static int cmd_score(int argc, char **argv)
{
    if (argc != 5) {
        usage(stderr);
        return 2;
    }
    char *gold = file_read(argv[3], (size_t)1 << 30, NULL), *answer = file_read(argv[4], (size_t)1 << 30, NULL);
    if (!gold || !answer) {
        fprintf(stderr, "taskgen: cannot read %s\n", gold ? argv[4] : argv[3]);
        free(gold);
        free(answer);
        return 2;
    }
    /* gold.txt ends in a newline, which "contains" must not demand of the answer. */
    size_t n = strlen(gold);
    while (n > 0 && (gold[n - 1] == '\n' || gold[n - 1] == '\r'))
        gold[--n] = '\0';
    printf("%.4f\n", taskgen_score(argv[2], gold, answer));
    free(gold);
    free(answer);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "score") == 0)
        return cmd_score(argc, argv);
    int family = taskgen_family_parse(argv[1]);
    if (family < 0) {
        fprintf(stderr, "taskgen: unknown family '%s'\n", argv[1]);
        return 2;
    }
    task_spec spec = {.family = (task_family)family, .seed = 1, .tokens = 8192, .depth = -1, .variant = -1};
    const char *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(flag, "--subcalls") == 0) {
            spec.subcalls = 1;
            continue;
        }
        long l;
        size_t sz;
        if (!value) {
            fprintf(stderr, "taskgen: %s needs a value\n", flag);
            return 2;
        }
        i++;
        if (strcmp(flag, "--out") == 0) {
            out = value;
        } else if (strcmp(flag, "--tokens") == 0 && parse_size(value, &sz) == 0 && sz > 0) {
            spec.tokens = sz;
        } else if ((strcmp(flag, "--lines") == 0 || strcmp(flag, "--docs") == 0) &&
                   parse_size(value, &sz) == 0 && sz > 0) {
            spec.lines = sz;
        } else if (strcmp(flag, "--seed") == 0 && parse_long(value, &l) == 0 && l >= 0) {
            spec.seed = (uint64_t)l;
        } else if (strcmp(flag, "--depth") == 0 && parse_long(value, &l) == 0 && l >= 0 && l < 40) {
            spec.depth = (int)l;
        } else if (strcmp(flag, "--variant") == 0 && parse_long(value, &l) == 0 && l >= 0 && l < 4) {
            spec.variant = (int)l;
        } else {
            fprintf(stderr, "taskgen: bad option or value: %s %s\n", flag, value);
            return 2;
        }
    }
    if (!out) {
        fputs("taskgen: --out DIR is required\n", stderr);
        return 2;
    }
    char err[512];
    if (taskgen_write(&spec, out, err, sizeof err) != 0) {
        fprintf(stderr, "taskgen: %s\n", err);
        return 1;
    }
    return 0;
}
