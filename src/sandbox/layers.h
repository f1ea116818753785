/* layers — composing the layer report of a new sandbox child: what the
 * child says it applied to itself (Landlock, seccomp, rlimits: its ready
 * frame's "layer_details") and the namespaces the host started it in, with
 * the floor rule: no model code runs without seccomp and rlimits unless
 * unsafe_no_sandbox was asked for (docs/sandbox.md). Pure: no I/O.
 *
 * Ownership: details and ns are borrowed; *layers_json is malloc'd and the
 * caller's. */
#ifndef RLM_LAYERS_H
#define RLM_LAYERS_H

#include <jansson.h>
#include <stddef.h>

#include "sandbox_spawn.h"

/* The child's report (trusted: no model code has run in it yet) with the
 * namespaces put in their place, strongest first: layers gets the line
 * ("landlock(abi 7),namespaces(user,net,ipc,pid),seccomp,rlimits", with
 * " (without: ...)" for missing ones; "none (unsafe)" under
 * unsafe_no_sandbox), warnings why each missing layer is missing, and
 * *layers_json [{"name","active","detail"}]. 0; or -1 with err (and
 * *layers_json NULL) when the floor is not in force or out of memory. */
int sandbox_compose_layers(const json_t *details, const sandbox_namespaces *ns,
                           int unsafe_no_sandbox, char *layers, size_t layers_len, char *warnings,
                           size_t warnings_len, char **layers_json, char *err, size_t errlen);

#endif
