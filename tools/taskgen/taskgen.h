/* taskgen — deterministic generators for the benchmark task families of the
 * RLM literature (S-NIAH, OOLONG-style aggregation, OOLONG-Pairs, multi-hop
 * document QA in the style of BrowseComp-Plus), from 8K to
 * 1B tokens, each with its question, gold answer and an answer key that the
 * fake server's oracle mode reads. Same spec and seed, same bytes.
 *
 * Sizes: a token is taken as 4 characters of generated ASCII text (RULER's
 * convention), so `tokens` = 1M writes about 4 MB.
 *
 * Ownership: nothing returned needs freeing; files are written into `dir`. */
#ifndef RLM_TASKGEN_H
#define RLM_TASKGEN_H

#include <stddef.h>
#include <stdint.h>

typedef enum task_family {
    TASK_SNIAH = 0,   /* one "special magic number" needle in filler */
    TASK_OOLONG,      /* labelled instance lines; counting / frequency questions */
    TASK_PAIRS,       /* OOLONG data; all user pairs meeting a label predicate */
    TASK_DOCQA,       /* multi-hop QA over 1,000 documents (BrowseComp-Plus style) */
} task_family;

typedef struct task_spec {
    task_family family;
    uint64_t seed;
    size_t tokens;     /* target input size; OOLONG/PAIRS may use lines instead */
    size_t lines;      /* OOLONG/PAIRS: number of instance lines (0: from tokens);
                          DOCQA: number of documents (0: 1,000; 24..3,000) */
    int depth;         /* S-NIAH: needle depth index 0..39 (-1: from the seed) */
    int variant;       /* OOLONG question kind 0..3 (-1: from the seed) */
    int subcalls;      /* S-NIAH: the scripted root sends every 100K-character
                          chunk to llm_query_batched instead of using a regex */
} task_spec;

/* The family's name ("sniah", "oolong", "pairs", "docqa"), and back (-1 if unknown). */
const char *taskgen_family_name(task_family f);
int taskgen_family_parse(const char *name);

/* Writes into dir (created if missing):
 *   context.txt   the input
 *   question.txt  the question, one line
 *   gold.txt      the gold answer
 *   key.jsonl     the answer key, one JSON object per line:
 *                 S-NIAH {"needle": KEY, "value": VALUE};
 *                 OOLONG/PAIRS {"instance": TEXT, "label": LABEL} per line;
 *                 DOCQA {"subject", "relation", "object", "fact", "doc"} per
 *                 planted fact ("fact" is the sentence stating it, "doc" its
 *                 1-based document number)
 *   docs.jsonl    DOCQA only: the documents as {"title", "text"} lines (the
 *                 same documents context.txt holds, each there under a line
 *                 "=== Document N: TITLE ===")
 *   task.json     {"family", "seed", "tokens", "chars", "lines", "scoring",
 *                  "question", "gold"}
 *   script.json   a fake-server script that plays a competent root model for
 *                 this task (the strategy a good model would write: regex or
 *                 chunk + llm_query_batched + aggregate, then FINAL_VAR) and
 *                 answers its sub-calls from key.jsonl through the server's
 *                 oracle mode, so a whole RLM run is reproducible offline.
 * Returns 0, or -1 with err set (cannot create or write). */
int taskgen_write(const task_spec *spec, const char *dir, char *err, size_t errlen);

/* Scores answer against gold for the family's scoring rule, in [0, 1]:
 *   "contains": 1 if the answer contains gold;
 *   "exact": 1 if equal after trimming and case-folding;
 *   "numeric": 0.75^|answer - gold| for the first number in the answer;
 *   "f1": F1 of the (a, b) pairs found in the answer against those in gold. */
double taskgen_score(const char *scoring, const char *gold, const char *answer);

/* The six coarse labels of the OOLONG-style data, in a fixed order. */
extern const char *const taskgen_labels[6];

#endif
