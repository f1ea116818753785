/* config — the options behind rlm_config (include/rlm.h): one table of
 * keys, kinds, defaults and ranges, the check of a value against its kind
 * (rlm_config_set), and the defaults that depend on other options (provider,
 * base URLs: the provider table's). The public functions are rlm.h's
 * rlm_config_*; these are what the rest of the library reads a
 * configuration with.
 *
 * Ownership: config_json a new reference (json_decref). Strings come from
 * rlm_config_get, borrowed from the configuration. */
#ifndef RLM_CONFIG_H
#define RLM_CONFIG_H

#include <jansson.h>

#include "rlm.h"

/* The value of key as a number; 0 when it is empty or not one (the table's
 * check makes that an unset option). */
long config_long(const rlm_config *cfg, const char *key);
double config_double(const rlm_config *cfg, const char *key);
/* A limit that "none" (or no value) switches off: -1 then. */
double config_limit(const rlm_config *cfg, const char *key);

/* Every option and its value for the trace; the keys only as "(set)" or
 * "(none)". */
json_t *config_json(const rlm_config *cfg);

#endif
