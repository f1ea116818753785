/* layers — the host's account of a child's confinement: the child's own
 * report of its layers (layers.h) with the namespaces the host put it in,
 * in the order a reader weighs them, as one line, the reasons for what is
 * missing, and a JSON list. */
#include "layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static json_t *layer_entry(const char *name, int active, const char *detail)
{
    return json_pack("{s:s, s:b, s:s}", "name", name, "active", active, "detail", detail);
}

typedef struct layer_text {
    buf active;  /* "landlock(abi 7),namespaces(...),seccomp,rlimits" */
    buf absent;  /* "landlock, namespaces" */
    buf reasons; /* "landlock: not available: ...; ..." */
} layer_text;

static void add_layer(json_t *list, layer_text *t, const char *label, const char *name,
                      int active, const char *detail)
{
    json_array_append_new(list, layer_entry(name, active, detail));
    if (active) {
        buf_printf(&t->active, "%s%s", t->active.len ? "," : "", label);
    } else {
        buf_printf(&t->absent, "%s%s", t->absent.len ? ", " : "", name);
        buf_printf(&t->reasons, "%s%s: %s", t->reasons.len ? "; " : "", name, detail);
    }
}

int sandbox_compose_layers(const json_t *details, const sandbox_namespaces *ns,
                           int unsafe_no_sandbox, char *layers, size_t layers_len, char *warnings,
                           size_t warnings_len, char **layers_json, char *err, size_t errlen)
{
    json_t *list = json_array();
    layer_text t;
    *layers_json = NULL;
    buf_init(&t.active, layers_len / 2);
    buf_init(&t.absent, layers_len / 2);
    buf_init(&t.reasons, warnings_len - 1);
    int rc = -1, floor = 0, ns_added = 0;
    if (!list) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char ns_label[80];
    int have_ns = ns->active;
    snprintf(ns_label, sizeof ns_label, "namespaces(%s)", ns->names);
    if (unsafe_no_sandbox) {
        static const char *const names[] = {"landlock", "namespaces", "seccomp", "rlimits"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            add_layer(list, &t, names[i], names[i], 0, "off: unsafe_no_sandbox");
        snprintf(layers, layers_len, "none (unsafe)");
        floor = 2;
    }
    for (size_t i = 0; !unsafe_no_sandbox && i < json_array_size(details); i++) {
        json_t *d = json_array_get(details, i);
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *label = json_string_value(json_object_get(d, "label"));
        const char *detail = json_string_value(json_object_get(d, "detail"));
        int active = json_is_true(json_object_get(d, "active"));
        if (!name)
            continue;
        if (strcmp(name, "seccomp") == 0 && !ns_added) {
            add_layer(list, &t, ns_label, "namespaces", have_ns, ns->detail);
            ns_added = 1;
        }
        add_layer(list, &t, label ? label : name, name, active, detail ? detail : "");
        if (active && (strcmp(name, "seccomp") == 0 || strcmp(name, "rlimits") == 0))
            floor++;
    }
    if (!unsafe_no_sandbox && !ns_added)
        add_layer(list, &t, ns_label, "namespaces", have_ns, ns->detail);
    if (floor < 2) {
        snprintf(err, errlen, "the sandbox floor (seccomp + rlimits) is not in force (%s); "
                              "refusing to run model code (unsafe_no_sandbox runs it "
                              "unconfined)",
                 t.reasons.len ? t.reasons.data : "the child reported no layers");
        goto fail;
    }
    if (!unsafe_no_sandbox)
        snprintf(layers, layers_len, "%s%s%s%s", t.active.data ? t.active.data : "",
                 t.absent.len ? " (without: " : "", t.absent.len ? t.absent.data : "",
                 t.absent.len ? ")" : "");
    snprintf(warnings, warnings_len, "%s", t.reasons.len ? t.reasons.data : "");
    *layers_json = json_dumps(list, JSON_COMPACT);
    if (!*layers_json) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rc = 0;
fail:
    buf_free(&t.active);
    buf_free(&t.absent);
    buf_free(&t.reasons);
    json_decref(list);
    return rc;
}
