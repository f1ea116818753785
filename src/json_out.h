/* json_out — compact JSON written straight into a buf, byte for byte what
 * jansson's json_dumps(JSON_COMPACT) writes for the same values: keys in
 * the order given, the escapes \" \\ \b \f \n \r \t and \u00XX for the
 * other control bytes, UTF-8 as it is, integers in full, reals as %.17g
 * with ".0" when that reads as an integer and the exponent without "+" or
 * leading zeros. The trace writes every event with it (a tree, or the
 * fields of a sub-call straight from their values: trace_event_later).
 *
 * Every function appends to b and returns 0, or -1 when b's limit is
 * reached or memory runs out (b then holds a prefix, to be thrown away). */
#ifndef RLM_JSON_OUT_H
#define RLM_JSON_OUT_H

#include <jansson.h>
#include <stddef.h>

#include "util.h"

/* s[0..n) as a JSON string, quotes included; s must be valid UTF-8 (the
 * caller checks: utf8_valid). */
int json_out_string(buf *b, const char *s, size_t n);

/* json_out_string, or null when s is NULL or not valid UTF-8. */
int json_out_text(buf *b, const char *s, size_t n);

int json_out_integer(buf *b, long long v);
/* null for NaN and the infinities, which JSON cannot hold. */
int json_out_real(buf *b, double v);
int json_out_bool(buf *b, int v);

/* ,"key": — a member after the first; key is plain ASCII (a literal). */
int json_out_key(buf *b, const char *key);

/* A whole jansson value. -1 also when nested past 2,048 levels (more than
 * jansson's parser reads back). */
int json_out_value(buf *b, json_t *j);

#endif
