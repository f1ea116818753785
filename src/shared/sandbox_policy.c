/* sandbox_policy — the tables of sandbox_policy.h, expanded once, and the
 * two look-ups both sides of the sandbox need. */
#include "sandbox_policy.h"

#include <sched.h>
#include <string.h>

#define NAME_ENTRY(name, kind, takes_context, numbered) {name, kind, takes_context, numbered},
const sandbox_repl_name sandbox_repl_names[] = {SANDBOX_REPL_NAMES(NAME_ENTRY)};
const size_t sandbox_repl_names_count = sizeof sandbox_repl_names / sizeof sandbox_repl_names[0];

#define MODULE_ENTRY(name) name,
const char *const sandbox_allowed_modules[] = {SANDBOX_ALLOWED_MODULES(MODULE_ENTRY)};
const size_t sandbox_allowed_modules_count =
    sizeof sandbox_allowed_modules / sizeof sandbox_allowed_modules[0];

#define REFUSED_ENTRY(name, hint) {name, hint},
const sandbox_refused_module sandbox_refused_modules[] = {SANDBOX_REFUSED_MODULES(REFUSED_ENTRY)};
const size_t sandbox_refused_modules_count =
    sizeof sandbox_refused_modules / sizeof sandbox_refused_modules[0];

const char *const sandbox_preload_modules[] = {SANDBOX_PRELOAD_MODULES(MODULE_ENTRY)};
const size_t sandbox_preload_modules_count =
    sizeof sandbox_preload_modules / sizeof sandbox_preload_modules[0];

#define NAMESPACE_ENTRY(flags, names) {flags, names},
const sandbox_namespace_set sandbox_child_namespaces[] = {SANDBOX_CHILD_NAMESPACES(NAMESPACE_ENTRY)};
const size_t sandbox_child_namespaces_count =
    sizeof sandbox_child_namespaces / sizeof sandbox_child_namespaces[0];
const sandbox_namespace_set sandbox_zygote_namespaces[] = {
    SANDBOX_ZYGOTE_NAMESPACES(NAMESPACE_ENTRY)};
const size_t sandbox_zygote_namespaces_count =
    sizeof sandbox_zygote_namespaces / sizeof sandbox_zygote_namespaces[0];

const sandbox_repl_name *sandbox_policy_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sandbox_repl_names_count; i++) {
        const sandbox_repl_name *n = &sandbox_repl_names[i];
        size_t len = strlen(n->name);
        if (!n->numbered) {
            if (strcmp(name, n->name) == 0)
                return n;
            continue;
        }
        if (strncmp(name, n->name, len) != 0 || !name[len])
            continue;
        const char *p = name + len;
        while (*p >= '0' && *p <= '9')
            p++;
        if (!*p)
            return n;
    }
    return NULL;
}

const char *sandbox_policy_refusal(const char *module)
{
    for (size_t i = 0; module && i < sandbox_refused_modules_count; i++)
        if (strcmp(module, sandbox_refused_modules[i].name) == 0)
            return sandbox_refused_modules[i].hint;
    return NULL;
}
