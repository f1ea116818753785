/* verbose — what `rlm ask`, `rlm chat` and `rlm demo` show on stderr while a
 * question runs, built from the library's events (rlm_set_event_callback)
 * alone: the live progress line (its clock ticks while the model thinks, it
 * fits the terminal's width), with -v each root turn's text, code and output
 * and one line per batch of sub-calls, child RLMs indented by their depth;
 * and the summary line after the answer. Nothing of it goes to stdout.
 *
 * Ownership: cli_live_new's result is freed by cli_live_free; the rlm
 * handle given to cli_live_attach is borrowed and must outlive the runs. */
#ifndef RLM_CLI_VERBOSE_H
#define RLM_CLI_VERBOSE_H

#include "rlm.h"

typedef struct cli_live cli_live;

/* What to show: progress (the live line and the summary), verbose (-v).
 * On a terminal the line rewrites itself and code is coloured; elsewhere
 * (--progress to a pipe) each state is a line of its own, at most one a
 * second, and nothing is coloured. NULL when out of memory. */
cli_live *cli_live_new(int progress, int verbose, int terminal);

/* The flags' choice for a command: progress on a terminal unless -q, or
 * with --progress; verbose with -v. NULL when nothing is to be shown. */
cli_live *cli_live_for_flags(int quiet, int progress, int verbose);

/* Listens to r's events. */
void cli_live_attach(cli_live *l, rlm *r);

/* A question starts (the clock's zero; the ticker starts) / is over (the
 * ticker stops and the progress line is erased, before anything else is
 * printed). */
void cli_live_begin(cli_live *l);
void cli_live_end(cli_live *l);

/* After an answer: one line on stderr — turns, sub-calls, tokens, cost (or
 * "prices unknown"), time — from the report of rlm_report_json. Only when
 * the progress line is shown. */
void cli_live_summary(cli_live *l, const char *report_json);

/* Stops listening is the caller's (rlm_set_event_callback(r, NULL, NULL))
 * when r outlives l. NULL is a no-op. */
void cli_live_free(cli_live *l);

#endif
