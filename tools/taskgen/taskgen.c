/* taskgen — writes benchmark tasks (input, question, gold answer, answer key)
 * deterministically from a seed; scores answers against the gold. */
#include "taskgen.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define CHARS_PER_TOKEN 4
#define NEEDLE_DEPTHS 40
#define SENTENCE_POOL 2048
#define LABEL_COUNT 6

const char *const taskgen_labels[LABEL_COUNT] = {
    "abbreviation", "entity", "description", "human", "location", "numeric",
};

/* ---- deterministic randomness (splitmix64: tiny, and the same everywhere) -- */

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rng_below(rng *r, size_t n)
{
    return n ? (size_t)(rng_next(r) % n) : 0;
}

static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) / 9007199254740992.0;
}

#define PICK(r, list) ((list)[rng_below((r), sizeof(list) / sizeof((list)[0]))])

/* ---- word lists ----------------------------------------------------------- */

static const char *const adjectives[] = {
    "quiet", "amber", "distant", "hollow", "bright", "crooked", "gentle", "rapid", "silver",
    "ancient", "narrow", "pale", "restless", "sudden", "tidy", "wild", "humble", "frozen",
    "golden", "lucky", "muddy", "proud", "shy", "vivid",
};
static const char *const nouns[] = {
    "river", "lantern", "orchard", "harbor", "meadow", "engine", "library", "canyon", "kettle",
    "garden", "bridge", "market", "island", "violin", "forest", "tower", "compass", "mirror",
    "valley", "workshop", "lighthouse", "festival", "glacier", "carriage",
};
static const char *const verbs[] = {
    "watches", "follows", "remembers", "crosses", "outlasts", "shelters", "greets", "echoes",
    "borrows", "carries", "admires", "ignores", "circles", "measures", "repairs", "paints",
};
static const char *const syllables[] = {
    "vel", "mo", "ra", "tan", "ki", "lor", "sen", "du", "ba", "ri", "the", "nor", "qua", "zel",
    "pim", "or", "ast", "ev", "ul", "dra",
};
static const char *const months[] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

/* An invented proper name of 2-3 syllables, capitalised. */
static void invent_name(rng *r, char *out, size_t outlen)
{
    size_t n = 2 + rng_below(r, 2);
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, outlen - len, "%s", PICK(r, syllables));
        if (w < 0 || (size_t)w >= outlen - len)
            break;
        len += (size_t)w;
    }
    if (out[0] >= 'a' && out[0] <= 'z')
        out[0] = (char)(out[0] - 'a' + 'A');
}

/* ---- files ------------------------------------------------------------------ */

typedef struct out_file {
    FILE *f;
    size_t written;
} out_file;

static int make_dir(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "directory path too long");
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create '%s': %s", path, strerror(errno));
    return -1;
}

static int out_open(out_file *o, const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    o->written = 0;
    o->f = fopen(path, "we");
    if (!o->f) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    setvbuf(o->f, NULL, _IOFBF, 1 << 20);
    return 0;
}

static void out_write(out_file *o, const char *s, size_t len)
{
    fwrite(s, 1, len, o->f);
    o->written += len;
}

static void out_puts(out_file *o, const char *s)
{
    out_write(o, s, strlen(s));
}

static int out_close(out_file *o, char *err, size_t errlen)
{
    if (!o->f)
        return 0;
    int bad = ferror(o->f);
    if (fclose(o->f) != 0 || bad) {
        snprintf(err, errlen, "write failed: %s", strerror(errno));
        o->f = NULL;
        return -1;
    }
    o->f = NULL;
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text, char *err, size_t errlen)
{
    out_file o;
    if (out_open(&o, dir, name, err, errlen) != 0)
        return -1;
    out_puts(&o, text);
    out_puts(&o, "\n");
    return out_close(&o, err, errlen);
}

static void key_line(out_file *key, json_t *obj)
{
    char *line = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (line) {
        out_puts(key, line);
        out_puts(key, "\n");
        free(line);
    }
}

/* The common trailer: question, gold and task.json. */
static int write_meta(const task_spec *spec, const char *dir, size_t chars, size_t lines,
                      const char *scoring, const char *question, const char *gold, char *err,
                      size_t errlen)
{
    if (write_text(dir, "question.txt", question, err, errlen) != 0 ||
        write_text(dir, "gold.txt", gold, err, errlen) != 0)
        return -1;
    json_t *meta = json_pack("{s:s,s:I,s:I,s:I,s:I,s:s,s:s,s:s}", "family",
                             taskgen_family_name(spec->family), "seed", (json_int_t)spec->seed,
                             "tokens", (json_int_t)(chars / CHARS_PER_TOKEN), "chars", (json_int_t)chars,
                             "lines", (json_int_t)lines, "scoring", scoring, "question", question,
                             "gold", gold);
    char *text = meta ? json_dumps(meta, JSON_INDENT(2)) : NULL;
    json_decref(meta);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = write_text(dir, "task.json", text, err, errlen);
    free(text);
    return rc;
}

/* ---- scripted root strategies -------------------------------------------------- */

static json_t *repl_rule(const char *match, const char *code)
{
    char *reply = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&reply, &len);
    if (!f)
        return NULL;
    fprintf(f, "```repl\n%s```", code);
    fclose(f);
    json_t *rule = json_pack("{s:s,s:s}", "match", match, "reply", reply);
    free(reply);
    return rule;
}

/* Writes script.json: the sub-call rules first (they carry no turn label),
 * then turn 2 (answer from the variable), then turn 1 (the strategy). */
static int write_script(const char *dir, json_t *subcall_rules, const char *strategy, char *err,
                        size_t errlen)
{
    /* Absolute, so the server may run from any directory. */
    char key_path[PATH_MAX + 16], *real = realpath(dir, NULL);
    snprintf(key_path, sizeof key_path, "%s/key.jsonl", real ? real : dir);
    free(real);
    json_t *rules = subcall_rules;
    json_array_append_new(rules, json_pack("{s:s,s:s}", "match", "(?i)turn 2 of", "reply",
                                           "The computation is done and checked.\nFINAL_VAR(result)"));
    json_array_append_new(rules, repl_rule("(?i)turn 1 of", strategy));
    json_t *script = json_pack("{s:i,s:o,s:{s:s}}", "latency_ms", 0, "rules", rules, "oracle", "key",
                               key_path);
    char *text = script ? json_dumps(script, JSON_INDENT(1)) : NULL;
    json_decref(script);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = write_text(dir, "script.json", text, err, errlen);
    free(text);
    return rc;
}

/* Sub-calls per llm_query_batched in the OOLONG strategies: 10 rounds at the
 * default concurrency of 64. Measured on 430K lines (BENCHMARKS.md): 640
 * keeps host + sandbox under 3x the input with the wall time within 1.2x
 * of ideal; 1,280 was no faster and cost ~15 MB more. */
#define OOLONG_WAVE 640

static const char label_prompt[] =
    "Label each instance below with one of: abbreviation, entity, description, human, location, "
    "numeric. Reply with one label per line, in order, nothing else.";

/* Python that labels every line through batched sub-calls (100 lines per
 * call) and counts the labels into `counts` (and, with per_user, the (user,
 * label) pairs into `per_user`), then runs `finish`, which sets `result`.
 *
 * It streams, as a careful model would on an input of hundreds of MB: lines
 * come from a generator over a megabyte of the context at a time, each group
 * of 100 becomes its prompt at once, and the prompts go out in waves of
 * `wave` sub-calls (a multiple of the default concurrency, 64, so no wave
 * ends in a half-empty round), dropped before the next wave is built. The
 * sandbox then holds the context plus one wave's prompts, not a list of
 * every line, every prompt, every reply and a label per line (on 430K lines
 * that was 4x the input), and the sub-calls are exactly those of one big
 * batch: same prompts, same count, same rounds. */
static char *oolong_strategy(const char *finish, int per_user)
{
    char *code = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&code, &len);
    if (!f)
        return NULL;
    fprintf(f,
            "from collections import Counter, defaultdict\n"
            "from itertools import islice\n"
            "ask = '%s'\n"
            "size, wave = 100, %d  # lines per sub-call; sub-calls per batch\n"
            "\n"
            "def instance_groups(text, step=1 << 20):\n"
            "    \"\"\"The non-blank lines of text in lists of `size`, reading a MB at a time.\"\"\"\n"
            "    rest, pos = [], 0\n"
            "    while pos < len(text):\n"
            "        end = text.find('\\n', pos + step)\n"
            "        end = len(text) if end < 0 else end + 1\n"
            "        lines = rest + [l for l in text[pos:end].splitlines() if l.strip()]\n"
            "        whole = len(lines) - len(lines) %% size\n"
            "        for i in range(0, whole, size):\n"
            "            yield lines[i:i + size]\n"
            "        rest, pos = lines[whole:], end\n"
            "    if rest:\n"
            "        yield rest\n"
            "\n"
            "counts, per_user = Counter(), Counter()\n"
            "n_lines = n_calls = 0\n"
            "groups = instance_groups(context)\n"
            "while True:\n"
            "    prompts, sizes, users = [], [], []\n"
            "    for g in islice(groups, wave):\n"
            "        prompts.append(ask + '\\n\\n' + '\\n'.join(g))\n"
            "        sizes.append(len(g))\n"
            "%s"
            "    if not prompts:\n"
            "        break\n"
            "    replies = llm_query_batched(prompts)\n"
            "    del prompts\n"
            "    for i, r in enumerate(replies):\n"
            "        got = [x.strip().lower() for x in r.splitlines() if x.strip()]\n"
            "        if len(got) != sizes[i]:\n"
            "            got = ['unknown'] * sizes[i]\n"
            "        counts.update(got)\n"
            "%s"
            "    n_lines += sum(sizes)\n"
            "    n_calls += len(sizes)\n"
            "order = ['abbreviation', 'entity', 'description', 'human', 'location', 'numeric']\n"
            "%s"
            "print(n_lines, 'lines,', n_calls, 'sub-calls,', counts.most_common())\n"
            "print('result:', result[:500])\n",
            label_prompt, OOLONG_WAVE,
            per_user ? "        users.append([l.split(' || ')[1].split(': ')[1] for l in g])\n" : "",
            per_user ? "        per_user.update(zip(users[i], got))\n" : "",
            finish);
    fclose(f);
    return code;
}

static json_t *oolong_subcall_rules(void)
{
    json_t *rules = json_array();
    char match[256];
    snprintf(match, sizeof match, "^%.40s", label_prompt);
    json_array_append_new(rules, json_pack("{s:s,s:s}", "match", match, "oracle", "labels"));
    return rules;
}

/* ---- S-NIAH ----------------------------------------------------------------- */

static int gen_sniah(const task_spec *spec, const char *dir, char *err, size_t errlen)
{
    rng r = {spec->seed * 2654435761u + 1};
    size_t target = spec->tokens * CHARS_PER_TOKEN;
    int depth = spec->depth >= 0 ? spec->depth % NEEDLE_DEPTHS : (int)rng_below(&r, NEEDLE_DEPTHS);

    char needle_key[64], value[16], needle[256];
    snprintf(needle_key, sizeof needle_key, "%s-%s", PICK(&r, adjectives), PICK(&r, nouns));
    snprintf(value, sizeof value, "%07zu", 1000000 + rng_below(&r, 9000000));
    snprintf(needle, sizeof needle, "One of the special magic numbers for %s is: %s. ", needle_key, value);

    /* A pool of filler sentences, drawn at random to fill the input. */
    char (*pool)[96] = malloc(SENTENCE_POOL * sizeof *pool);
    if (!pool) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < SENTENCE_POOL; i++)
        snprintf(pool[i], sizeof pool[i], "The %s %s %s the %s %s. ", PICK(&r, adjectives),
                 PICK(&r, nouns), PICK(&r, verbs), PICK(&r, adjectives), PICK(&r, nouns));

    size_t needle_at = (size_t)((double)target * depth / (NEEDLE_DEPTHS - 1));
    int placed = 0;
    out_file ctx;
    if (out_open(&ctx, dir, "context.txt", err, errlen) != 0) {
        free(pool);
        return -1;
    }
    size_t sentences = 0;
    while (ctx.written < target || !placed) {
        if (!placed && ctx.written >= needle_at) {
            out_puts(&ctx, needle);
            placed = 1;
            continue;
        }
        out_puts(&ctx, pool[rng_below(&r, SENTENCE_POOL)]);
        if (++sentences % 12 == 0)
            out_puts(&ctx, "\n");
    }
    out_puts(&ctx, "\n");
    free(pool);
    size_t chars = ctx.written;
    if (out_close(&ctx, err, errlen) != 0)
        return -1;

    out_file key;
    if (out_open(&key, dir, "key.jsonl", err, errlen) != 0)
        return -1;
    key_line(&key, json_pack("{s:s,s:s,s:i}", "needle", needle_key, "value", value, "depth", depth));
    if (out_close(&key, err, errlen) != 0)
        return -1;

    char question[256];
    snprintf(question, sizeof question,
             "What is the special magic number for %s mentioned in the provided text? "
             "Answer with the number only.", needle_key);
    if (write_meta(spec, dir, chars, 0, "contains", question, value, err, errlen) != 0)
        return -1;

    char code[2048];
    json_t *subcalls = json_array();
    if (spec->subcalls) {
        /* Overlapping chunks so a needle on a boundary is still whole in one. */
        snprintf(code, sizeof code,
                 "size, overlap = 100000, 300\n"
                 "chunks = [context[i:i + size + overlap] for i in range(0, len(context), size)]\n"
                 "ask = 'Find the special magic number for %s in the text below. Reply with the "
                 "number only, or NONE if it is not there.\\n\\n'\n"
                 "replies = llm_query_batched([ask + c for c in chunks])\n"
                 "found = [r.strip() for r in replies if r.strip().isdigit()]\n"
                 "result = found[0] if found else 'not found'\n"
                 "print(len(chunks), 'chunks; found:', found)\n", needle_key);
        char match[256];
        snprintf(match, sizeof match, "(?s)^Find the special magic number.*special magic numbers for %s is: (\\d+)",
                 needle_key);
        json_array_append_new(subcalls, json_pack("{s:s,s:s}", "match", match, "reply", "$1"));
        json_array_append_new(subcalls, json_pack("{s:s,s:s}", "match", "^Find the special magic number",
                                                  "reply", "NONE"));
    } else {
        snprintf(code, sizeof code,
                 "import re\n"
                 "hits = re.findall(r'special magic numbers? for %s is: (\\d+)', context)\n"
                 "result = hits[0] if hits else 'not found'\n"
                 "print(len(context), 'characters; hits:', hits)\n", needle_key);
    }
    return write_script(dir, subcalls, code, err, errlen);
}

/* ---- OOLONG-style data -------------------------------------------------------- */

/* Instance templates per label, in taskgen_labels order; %s is a name. */
static const char *const templates[LABEL_COUNT][4] = {
    {"What does %s stand for?", "What is the full form of the abbreviation %s?",
     "%s is short for what?", "Expand the acronym %s."},
    {"Which animal appears on the flag of %s?", "What instrument is %s famous for?",
     "What kind of tree grows in the %s valley?", "Which dish is %s known for?"},
    {"Why does the %s festival take place at night?", "How does a %s engine work?",
     "What is the meaning of the word %s?", "Describe the climate of %s."},
    {"Who founded the city of %s?", "Who wrote the novel %s?",
     "Who was the first mayor of %s?", "Which explorer discovered %s?"},
    {"Where is %s located?", "In which country is the town of %s?",
     "What river flows through %s?", "Which mountain range surrounds %s?"},
    {"How many people live in %s?", "In what year was %s founded?",
     "How far is %s from the coast in kilometres?", "How tall is the tower of %s in metres?"},
};

/* Skewed label distribution (cumulative weights over taskgen_labels). */
static const double label_weights[LABEL_COUNT] = {0.07, 0.21, 0.28, 0.17, 0.12, 0.15};

static int pick_label(rng *r)
{
    double u = rng_unit(r), acc = 0;
    for (int i = 0; i < LABEL_COUNT; i++) {
        acc += label_weights[i];
        if (u < acc)
            return i;
    }
    return LABEL_COUNT - 1;
}

/* Most lines come from a few users: index = floor(n * u^3). */
static size_t pick_user(rng *r, size_t users)
{
    double u = rng_unit(r);
    size_t i = (size_t)((double)users * u * u * u);
    return i < users ? i : users - 1;
}

/* Writes context.txt and key.jsonl; fills counts. */
static int gen_oolong_data(rng *r, size_t lines, size_t users, const char *dir, size_t *counts,
                           size_t *label_totals, size_t *chars, char *err, size_t errlen)
{
    out_file ctx, key;
    if (out_open(&ctx, dir, "context.txt", err, errlen) != 0)
        return -1;
    if (out_open(&key, dir, "key.jsonl", err, errlen) != 0) {
        out_close(&ctx, err, errlen);
        return -1;
    }
    for (size_t i = 0; i < lines; i++) {
        int label = pick_label(r);
        size_t user = pick_user(r, users);
        char name[64], instance[256], line[512];
        if (label == 0) {
            /* Abbreviations are capital letters. */
            size_t n = 2 + rng_below(r, 3);
            for (size_t k = 0; k < n; k++)
                name[k] = (char)('A' + rng_below(r, 26));
            name[n] = '\0';
        } else {
            invent_name(r, name, sizeof name);
        }
        snprintf(instance, sizeof instance, templates[label][rng_below(r, 4)], name);
        snprintf(line, sizeof line, "Date: %s %02zu, %zu || User: %zu || Instance: %s\n",
                 PICK(r, months), 1 + rng_below(r, 28), 2022 + rng_below(r, 3), 10000 + user * 7,
                 instance);
        out_puts(&ctx, line);
        key_line(&key, json_pack("{s:s,s:s}", "instance", instance, "label", taskgen_labels[label]));
        counts[user * LABEL_COUNT + (size_t)label]++;
        label_totals[label]++;
    }
    *chars = ctx.written;
    int rc = out_close(&ctx, err, errlen);
    if (out_close(&key, err, errlen) != 0)
        rc = -1;
    return rc;
}

static size_t oolong_lines(const task_spec *spec)
{
    if (spec->lines)
        return spec->lines;
    /* A line averages about 85 characters. */
    size_t n = spec->tokens * CHARS_PER_TOKEN / 85;
    return n ? n : 1;
}

static int gen_oolong(const task_spec *spec, const char *dir, char *err, size_t errlen)
{
    rng r = {spec->seed * 40503u + 7};
    size_t lines = oolong_lines(spec);
    size_t users = lines / 25 < 5 ? 5 : (lines / 25 > 5000 ? 5000 : lines / 25);
    size_t *counts = calloc(users * LABEL_COUNT, sizeof *counts);
    size_t totals[LABEL_COUNT] = {0}, chars = 0;
    if (!counts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int variant = spec->variant >= 0 ? spec->variant % 4 : (int)rng_below(&r, 4);
    int asked = (int)rng_below(&r, LABEL_COUNT);
    if (gen_oolong_data(&r, lines, users, dir, counts, totals, &chars, err, errlen) != 0) {
        free(counts);
        return -1;
    }

    static const char label_note[] =
        " Each instance's label is one of: abbreviation, entity, description, human, location, "
        "numeric; labels are not given in the data and must be inferred from the instance text.";
    char question[1024], gold[64];
    const char *scoring = "numeric";
    if (variant == 0) {
        snprintf(question, sizeof question, "How many instances in the data have the label '%s'?%s "
                 "Answer with a number.", taskgen_labels[asked], label_note);
        snprintf(gold, sizeof gold, "%zu", totals[asked]);
    } else if (variant == 1 || variant == 2) {
        int best = 0;
        for (int i = 1; i < LABEL_COUNT; i++)
            if (variant == 1 ? totals[i] > totals[best] : totals[i] < totals[best])
                best = i;
        snprintf(question, sizeof question, "Which label is the %s frequent among all instances?%s "
                 "If two are tied, give the one listed first above. Answer with the label only.",
                 variant == 1 ? "most" : "least", label_note);
        snprintf(gold, sizeof gold, "%s", taskgen_labels[best]);
        scoring = "exact";
    } else {
        /* The busiest user: pick_user favours index 0. */
        size_t user = 0;
        snprintf(question, sizeof question, "How many instances from User %zu have the label '%s'?%s "
                 "Answer with a number.", 10000 + user * 7, taskgen_labels[asked], label_note);
        snprintf(gold, sizeof gold, "%zu", counts[user * LABEL_COUNT + (size_t)asked]);
    }
    free(counts);
    if (write_meta(spec, dir, chars, lines, scoring, question, gold, err, errlen) != 0)
        return -1;

    char finish[512];
    if (variant == 0)
        snprintf(finish, sizeof finish, "result = str(counts['%s'])\n", taskgen_labels[asked]);
    else if (variant == 1)
        snprintf(finish, sizeof finish,
                 "result = max(order, key=lambda l: (counts[l], -order.index(l)))\n");
    else if (variant == 2)
        snprintf(finish, sizeof finish,
                 "result = min(order, key=lambda l: (counts[l], order.index(l)))\n");
    else
        snprintf(finish, sizeof finish,
                 "result = str(per_user[('10000', '%s')])\n", taskgen_labels[asked]);
    char *code = oolong_strategy(finish, variant == 3);
    if (!code) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = write_script(dir, oolong_subcall_rules(), code, err, errlen);
    free(code);
    return rc;
}

static int gen_pairs(const task_spec *spec, const char *dir, char *err, size_t errlen)
{
    rng r = {spec->seed * 69069u + 11};
    size_t lines = oolong_lines(spec);
    /* Few enough users that the pair list stays readable. */
    size_t users = lines / 40 < 8 ? 8 : (lines / 40 > 300 ? 300 : lines / 40);
    size_t *counts = calloc(users * LABEL_COUNT, sizeof *counts);
    size_t totals[LABEL_COUNT] = {0}, chars = 0;
    if (!counts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Two of the rarer labels make a selective predicate. */
    int a = 0, b = 4;
    if (rng_below(&r, 2))
        b = 5;
    if (gen_oolong_data(&r, lines, users, dir, counts, totals, &chars, err, errlen) != 0) {
        free(counts);
        return -1;
    }
    char *gold = NULL;
    size_t gold_len = 0;
    FILE *g = open_memstream(&gold, &gold_len);
    size_t pairs = 0;
    for (size_t i = 0; i < users; i++) {
        if (!counts[i * LABEL_COUNT + (size_t)a] || !counts[i * LABEL_COUNT + (size_t)b])
            continue;
        for (size_t j = i + 1; j < users; j++) {
            if (!counts[j * LABEL_COUNT + (size_t)a] || !counts[j * LABEL_COUNT + (size_t)b])
                continue;
            fprintf(g, "%s(%zu, %zu)", pairs ? "\n" : "", 10000 + i * 7, 10000 + j * 7);
            pairs++;
        }
    }
    fclose(g);
    free(counts);
    char question[1024];
    snprintf(question, sizeof question,
             "List every pair of users (by User ID, smaller first) in which both users have at least "
             "one instance labelled '%s' and at least one instance labelled '%s'. Each instance's label "
             "is one of: abbreviation, entity, description, human, location, numeric; labels are not "
             "given in the data and must be inferred from the instance text. Give one pair per line "
             "as (id1, id2).", taskgen_labels[a], taskgen_labels[b]);
    int rc = write_meta(spec, dir, chars, lines, "f1", question, gold ? gold : "", err, errlen);
    free(gold);
    if (rc != 0)
        return -1;
    char finish[1024];
    snprintf(finish, sizeof finish,
             "has = defaultdict(set)\n"
             "for u, l in per_user:\n"
             "    has[u].add(l)\n"
             "both = sorted(int(u) for u in has if '%s' in has[u] and '%s' in has[u])\n"
             "result = '\\n'.join('(%%d, %%d)' %% (a, b) for i, a in enumerate(both) for b in both[i + 1:])\n",
             taskgen_labels[a], taskgen_labels[b]);
    char *code = oolong_strategy(finish, 1);
    if (!code) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rc = write_script(dir, oolong_subcall_rules(), code, err, errlen);
    free(code);
    return rc;
}

/* ---- multi-hop document QA (BrowseComp-Plus style) ------------------------------ */

/* A fixed-capacity text being built (this library stands alone, without util's buf). */
typedef struct doc_text {
    char *data;
    size_t len, cap;
} doc_text;

static void text_printf(doc_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(doc_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < t->cap - t->len ? (size_t)n : t->cap - t->len - 1;
}

#define DOCQA_DOCS 1000
#define DOCQA_MIN_DOCS 24        /* room for 6 evidence documents and their negatives */
#define DOCQA_MAX_DOCS 3000      /* three-syllable names run out beyond this */
#define DOCQA_MAX_HOPS 6

static const char *const relations[] = {
    "founder", "mentor", "birthplace", "rival", "patron", "architect", "heir", "biographer",
};

typedef struct names {
    char (*list)[32];
    size_t n, cap;
} names;

static int names_has(const names *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->list[i], name) == 0)
            return 1;
    return 0;
}

/* A fresh invented name of three syllables, never handed out before. */
static const char *names_new(names *ns, rng *r)
{
    char name[32];
    do {
        snprintf(name, sizeof name, "%s%s%s", PICK(r, syllables), PICK(r, syllables), PICK(r, syllables));
        name[0] = (char)(name[0] - 'a' + 'A');
    } while (names_has(ns, name) && ns->n < ns->cap);
    if (ns->n >= ns->cap)
        return ns->list[0]; /* more names than a task ever asks for */
    snprintf(ns->list[ns->n], sizeof ns->list[0], "%s", name);
    return ns->list[ns->n++];
}

/* A lookalike of base (the hard negative's subject): base plus a suffix. */
static const char *names_lookalike(names *ns, rng *r, const char *base)
{
    static const char *const suffixes[] = {"n", "ia", "or", "et", "ul"};
    char name[32];
    for (size_t k = 0; k < 5; k++) {
        snprintf(name, sizeof name, "%s%s", base, suffixes[(rng_below(r, 5) + k) % 5]);
        if (!names_has(ns, name) && ns->n < ns->cap) {
            snprintf(ns->list[ns->n], sizeof ns->list[0], "%s", name);
            return ns->list[ns->n++];
        }
    }
    return names_new(ns, r);
}

/* One planted fact: which document states "The RELATION of SUBJECT is OBJECT." */
typedef struct fact {
    const char *subject, *relation, *object;
    size_t doc;
} fact;

static void fact_sentence(const fact *f, char *out, size_t outlen)
{
    snprintf(out, outlen, "The %s of %s is %s. ", f->relation, f->subject, f->object);
}

/* A document index not yet in used[0..n). */
static size_t fresh_doc(rng *r, size_t docs, const size_t *used, size_t n)
{
    for (;;) {
        size_t d = rng_below(r, docs), i = 0;
        while (i < n && used[i] != d)
            i++;
        if (i == n)
            return d;
    }
}

/* Writes one document to context.txt and docs.jsonl: filler sentences up to
 * `chars`, with the document's facts at random places among them. */
static void docqa_document(rng *r, size_t index, const char *title, const fact *facts, size_t nfacts,
                           size_t chars, out_file *ctx, out_file *docs, doc_text *body)
{
    body->len = 0;
    body->data[0] = '\0';
    size_t sentences = chars / 40 + 1, next_fact = 0;
    for (size_t s = 0; s < sentences || next_fact < nfacts; s++) {
        if (next_fact < nfacts && (s >= sentences || rng_below(r, sentences - s + 1) == 0)) {
            char sentence[160];
            fact_sentence(&facts[next_fact++], sentence, sizeof sentence);
            text_printf(body, "%s", sentence);
            continue;
        }
        text_printf(body, "The %s %s %s the %s %s. ", PICK(r, adjectives), PICK(r, nouns), PICK(r, verbs),
                   PICK(r, adjectives), PICK(r, nouns));
        if (s % 10 == 9)
            text_printf(body, "\n");
    }
    char header[160];
    snprintf(header, sizeof header, "=== Document %zu: %s ===\n", index + 1, title);
    out_puts(ctx, header);
    out_write(ctx, body->data, body->len);
    out_puts(ctx, "\n\n");
    key_line(docs, json_pack("{s:s,s:s}", "title", title, "text", body->data));
}

static char *docqa_strategy(const fact *chain, size_t hops)
{
    char *code = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&code, &len);
    if (!f)
        return NULL;
    fputs("import re\n"
          "if isinstance(context, str):\n"
          "    docs = [d for d in re.split(r'(?m)^(?==== Document \\d+: )', context) if d.startswith('===')]\n"
          "elif isinstance(context, dict):\n"
          "    docs = list(context.values())\n"
          "else:\n"
          "    docs = [str(d) for d in context]\n"
          "chain = [", f);
    for (size_t i = 0; i < hops; i++)
        fprintf(f, "%s'%s'", i ? ", " : "", chain[i].relation);
    fprintf(f, "]  # innermost relation first\n"
            "entity = '%s'\n"
            "trail = []\n"
            "for rel in chain:\n"
            "    cands = [d for d in docs if entity in d and rel in d]\n"
            "    ask = ('Question: what is the %%s of %%s? Using only the documents below, reply with '\n"
            "           'the name only, or NOT FOUND.\\n\\n' %% (rel, entity))\n"
            "    entity = llm_query(ask + '\\n\\n'.join(cands[:20])).strip()\n"
            "    trail.append((rel, len(cands), entity))\n"
            "result = entity\n"
            "print(len(docs), 'documents; hops:', trail)\n",
            chain[0].subject);
    fclose(f);
    return code;
}

static int gen_docqa(const task_spec *spec, const char *dir, char *err, size_t errlen)
{
    rng r = {spec->seed * 2246822519u + 13};
    size_t ndocs = spec->lines ? spec->lines : DOCQA_DOCS;
    if (ndocs < DOCQA_MIN_DOCS)
        ndocs = DOCQA_MIN_DOCS;
    if (ndocs > DOCQA_MAX_DOCS)
        ndocs = DOCQA_MAX_DOCS;
    size_t doc_chars = spec->tokens * CHARS_PER_TOKEN / ndocs;
    if (doc_chars < 200)
        doc_chars = 200;
    size_t hops = 3 + rng_below(&r, DOCQA_MAX_HOPS - 2);
    size_t max_names = 2 * ndocs + 8 * DOCQA_MAX_HOPS;
    names ns = {malloc(max_names * sizeof *ns.list), 0, max_names};
    /* Per document at most 2 facts: a chain fact or negative, and one background fact. */
    fact *facts = malloc((3 * DOCQA_MAX_HOPS + ndocs) * sizeof *facts);
    size_t *used = malloc(3 * DOCQA_MAX_HOPS * sizeof *used), nused = 0, nfacts = 0;
    doc_text body = {NULL, 0, doc_chars * 2 + 4096};
    body.data = malloc(body.cap);
    out_file ctx = {0}, docs = {0}, key = {0};
    int rc = -1;
    if (!ns.list || !facts || !used || !body.data) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    /* The chain E0 -r1-> E1 -r2-> ... -rH-> EH, each hop in its own document,
     * and two hard negatives per hop: another relation of the same subject,
     * and the same relation of a lookalike subject. */
    size_t order[sizeof relations / sizeof relations[0]];
    for (size_t i = 0; i < sizeof relations / sizeof relations[0]; i++)
        order[i] = i;
    for (size_t i = sizeof relations / sizeof relations[0] - 1; i > 0; i--) {
        size_t j = rng_below(&r, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    const char *entity = names_new(&ns, &r);
    for (size_t h = 0; h < hops; h++) {
        const char *rel = relations[order[h]], *next = names_new(&ns, &r);
        /* Any relation but this hop's: the offset is 1..7 of 8. */
        const char *other = relations[order[(h + 1 + rng_below(&r, 7)) % 8]];
        const char *twin = names_lookalike(&ns, &r, entity);
        const fact hop[3] = {{entity, rel, next, 0}, {entity, other, names_new(&ns, &r), 0},
                             {twin, rel, names_new(&ns, &r), 0}};
        for (size_t k = 0; k < 3; k++) {
            facts[nfacts] = hop[k];
            facts[nfacts++].doc = used[nused] = fresh_doc(&r, ndocs, used, nused);
            nused++;
        }
        entity = next;
    }
    const char *answer = entity;

    if (out_open(&ctx, dir, "context.txt", err, errlen) != 0 ||
        out_open(&docs, dir, "docs.jsonl", err, errlen) != 0 ||
        out_open(&key, dir, "key.jsonl", err, errlen) != 0)
        goto done;
    size_t planted = nfacts;
    for (size_t d = 0; d < ndocs; d++) {
        fact here[2];
        size_t n = 0;
        for (size_t i = 0; i < planted && n < 1; i++)
            if (facts[i].doc == d)
                here[n++] = facts[i];
        char title[96];
        if (n) {
            snprintf(title, sizeof title, "%s and the %s %s", here[0].subject, PICK(&r, adjectives), PICK(&r, nouns));
        } else {
            snprintf(title, sizeof title, "The %s %s", PICK(&r, adjectives), PICK(&r, nouns));
            /* Background: a fact about someone else, so facts are everywhere. */
            here[n++] = facts[nfacts++] = (fact){names_new(&ns, &r), PICK(&r, relations), names_new(&ns, &r), d};
        }
        docqa_document(&r, d, title, here, n, doc_chars, &ctx, &docs, &body);
    }
    for (size_t i = 0; i < nfacts; i++) {
        char sentence[160];
        fact_sentence(&facts[i], sentence, sizeof sentence);
        sentence[strlen(sentence) - 1] = '\0';
        key_line(&key, json_pack("{s:s,s:s,s:s,s:s,s:I}", "subject", facts[i].subject, "relation",
                                 facts[i].relation, "object", facts[i].object, "fact", sentence, "doc",
                                 (json_int_t)facts[i].doc + 1));
    }
    size_t chars = ctx.written;
    if (out_close(&ctx, err, errlen) != 0 || out_close(&docs, err, errlen) != 0 ||
        out_close(&key, err, errlen) != 0)
        goto done;

    /* "the r3 of the r2 of the r1 of E0": outermost relation first. */
    char qdata[1024];
    doc_text q = {qdata, 0, sizeof qdata};
    text_printf(&q, "What is");
    for (size_t h = hops; h-- > 0;)
        text_printf(&q, " the %s of", facts[3 * h].relation);
    text_printf(&q, " %s? The facts are spread over several documents; some documents name similar "
               "entities. Answer with the name only.", facts[0].subject);
    fact chain[DOCQA_MAX_HOPS];
    for (size_t h = 0; h < hops; h++)
        chain[h] = facts[3 * h];
    rc = write_meta(spec, dir, chars, ndocs, "exact", q.data, answer, err, errlen);
    if (rc != 0)
        goto done;
    char *code = docqa_strategy(chain, hops);
    if (!code) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
        goto done;
    }
    json_t *subcalls = json_array();
    json_array_append_new(subcalls, json_pack("{s:s,s:s}", "match", "^Question: what is the (\\w+) of (\\w+)\\? Using only",
                                              "oracle", "facts"));
    rc = write_script(dir, subcalls, code, err, errlen);
    free(code);
done:
    if (ctx.f)
        out_close(&ctx, err, errlen);
    if (docs.f)
        out_close(&docs, err, errlen);
    if (key.f)
        out_close(&key, err, errlen);
    free(body.data);
    free(ns.list);
    free(facts);
    free(used);
    return rc;
}

/* ---- public ------------------------------------------------------------------ */

const char *taskgen_family_name(task_family f)
{
    switch (f) {
    case TASK_SNIAH: return "sniah";
    case TASK_OOLONG: return "oolong";
    case TASK_PAIRS: return "pairs";
    case TASK_DOCQA: return "docqa";
    }
    return "unknown";
}

int taskgen_family_parse(const char *name)
{
    for (int f = TASK_SNIAH; f <= TASK_DOCQA; f++)
        if (strcmp(name, taskgen_family_name((task_family)f)) == 0)
            return f;
    return -1;
}

int taskgen_write(const task_spec *spec, const char *dir, char *err, size_t errlen)
{
    if (make_dir(dir, err, errlen) != 0)
        return -1;
    switch (spec->family) {
    case TASK_SNIAH: return gen_sniah(spec, dir, err, errlen);
    case TASK_OOLONG: return gen_oolong(spec, dir, err, errlen);
    case TASK_PAIRS: return gen_pairs(spec, dir, err, errlen);
    case TASK_DOCQA: return gen_docqa(spec, dir, err, errlen);
    }
    snprintf(err, errlen, "unknown task family");
    return -1;
}

/* ---- scoring ------------------------------------------------------------------ */

static void trim_fold(const char *s, char *out, size_t outlen)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r' || *s == '"' || *s == '\'')
        s++;
    size_t n = 0;
    for (; *s && n + 1 < outlen; s++)
        out[n++] = (char)((*s >= 'A' && *s <= 'Z') ? *s - 'A' + 'a' : *s);
    while (n > 0 && strchr(" \n\t\r.\"'", out[n - 1]))
        n--;
    out[n] = '\0';
}

/* Every "(a, b)" pair in text, normalised to a < b, as an array of 2n longs. */
static size_t parse_pairs(const char *text, long *out, size_t max)
{
    size_t n = 0;
    const char *p = text;
    while (*p && n < max) {
        char *end;
        if (*p < '0' || *p > '9') {
            p++;
            continue;
        }
        long x = strtol(p, &end, 10);
        const char *q = end;
        while (*q == ' ' || *q == ',')
            q++;
        if (*q < '0' || *q > '9' || !memchr(end, ',', (size_t)(q - end))) {
            p = end;
            continue;
        }
        long y = strtol(q, &end, 10);
        out[2 * n] = x < y ? x : y;
        out[2 * n + 1] = x < y ? y : x;
        n++;
        p = end;
    }
    return n;
}

static int pair_compare(const void *x, const void *y)
{
    const long *a = x, *b = y;
    if (a[0] != b[0])
        return a[0] < b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : (a[1] > b[1]);
}

/* Sorts n pairs and drops repeats; returns the new count. */
static size_t pairs_unique(long *p, size_t n)
{
    qsort(p, n, 2 * sizeof *p, pair_compare);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out && p[2 * (out - 1)] == p[2 * i] && p[2 * (out - 1) + 1] == p[2 * i + 1])
            continue;
        p[2 * out] = p[2 * i];
        p[2 * out + 1] = p[2 * i + 1];
        out++;
    }
    return out;
}

static double score_f1(const char *gold, const char *answer)
{
    enum { MAX_PAIRS = 1 << 20 };
    long *g = malloc(2 * MAX_PAIRS * sizeof *g), *a = malloc(2 * MAX_PAIRS * sizeof *a);
    double f1 = 0;
    if (!g || !a)
        goto done;
    size_t ng = pairs_unique(g, parse_pairs(gold, g, MAX_PAIRS));
    size_t na = pairs_unique(a, parse_pairs(answer, a, MAX_PAIRS));
    if (ng == 0 && na == 0) {
        f1 = 1;
        goto done;
    }
    /* Both sorted: count the common pairs in one merge. */
    size_t hit = 0;
    for (size_t i = 0, j = 0; i < na && j < ng;) {
        int c = pair_compare(&a[2 * i], &g[2 * j]);
        if (c == 0) {
            hit++;
            i++;
            j++;
        } else if (c < 0) {
            i++;
        } else {
            j++;
        }
    }
    if (hit) {
        double precision = (double)hit / (double)na, recall = (double)hit / (double)ng;
        f1 = 2 * precision * recall / (precision + recall);
    }
done:
    free(g);
    free(a);
    return f1;
}

double taskgen_score(const char *scoring, const char *gold, const char *answer)
{
    if (!answer)
        return 0;
    if (strcmp(scoring, "contains") == 0)
        return strstr(answer, gold) ? 1 : 0;
    if (strcmp(scoring, "f1") == 0)
        return score_f1(gold, answer);
    if (strcmp(scoring, "numeric") == 0) {
        const char *p = answer;
        while (*p && !(*p >= '0' && *p <= '9') && !(*p == '-' && p[1] >= '0' && p[1] <= '9'))
            p++;
        if (!*p)
            return 0;
        double got = strtod(p, NULL), want = strtod(gold, NULL);
        return pow(0.75, fabs(got - want));
    }
    char a[512], g[512];
    trim_fold(answer, a, sizeof a);
    trim_fold(gold, g, sizeof g);
    return strcmp(a, g) == 0 ? 1 : 0;
}
