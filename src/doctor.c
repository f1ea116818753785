/* doctor — rlm_doctor: starts one sandbox child with the configuration's
 * settings and reports which confinement layers this machine allows, which it
 * refuses and why, as the JSON object documented in include/rlm.h. */
#include "rlm.h"

#include "sandbox.h"
#include "util.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>


static const char *config_value(const rlm_config *cfg, const char *key)
{
    const char *v = cfg ? rlm_config_get(cfg, key) : NULL;
    return v ? v : "";
}

/* True when the floor, seccomp and rlimits, is active in layers_json. */
static int floor_in_force(json_t *layers)
{
    int found = 0;
    for (size_t i = 0; i < json_array_size(layers); i++) {
        json_t *l = json_array_get(layers, i);
        const char *name = json_string_value(json_object_get(l, "name"));
        if (name && (strcmp(name, "seccomp") == 0 || strcmp(name, "rlimits") == 0) &&
            json_is_true(json_object_get(l, "active")))
            found++;
    }
    return found == 2;
}

/* What model code can still do because a layer is off, for each layer that
 * is: the floor covers the rest (docs/sandbox.md). */
static json_t *not_covered(json_t *layers)
{
    static const struct {
        const char *layer, *gap;
    } gaps[] = {
        {"landlock", "without landlock: the seccomp deny list is the only barrier between model "
                     "code and the filesystem; a system call it misses would not be caught by a "
                     "second layer"},
        {"namespaces", "without namespaces: model code shares this machine's process ids, "
                       "network and System V IPC: it can tell which processes exist and read "
                       "their scheduling settings (not signal, trace or read them); sockets and "
                       "IPC objects stay denied by seccomp"},
    };
    json_t *out = json_array();
    for (size_t i = 0; out && i < json_array_size(layers); i++) {
        json_t *l = json_array_get(layers, i);
        const char *name = json_string_value(json_object_get(l, "name"));
        if (!name || json_is_true(json_object_get(l, "active")))
            continue;
        for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++)
            if (strcmp(name, gaps[g].layer) == 0)
                json_array_append_new(out, json_string(gaps[g].gap));
    }
    return out;
}

rlm_status rlm_doctor(const rlm_config *cfg, char **report)
{
    *report = NULL;
    rlm_status status = RLM_ERR_NOMEM;
    char *exe = sandbox_find_exe(config_value(cfg, "sandbox_exe"));
    json_t *out = json_object();
    if (!exe || !out)
        goto fail;
    struct utsname uts;
    json_object_set_new(out, "sandbox_exe", json_string(exe));
    json_object_set_new(out, "kernel", json_string(uname(&uts) == 0 ? uts.release : "unknown"));
    sandbox_options opts = {.exe_path = exe, .context_fd = -1,
                            .unsafe_no_sandbox = strcmp(config_value(cfg, "unsafe_no_sandbox"),
                                                        "1") == 0};
    const char *memory = config_value(cfg, "sandbox_memory");
    if (memory[0])
        parse_size(memory, &opts.memory_limit);
    sandbox *sb = NULL;
    char err[1024] = "";
    double t0 = clock_now();
    if (sandbox_start(&opts, &sb, err, sizeof err) != 0) {
        json_object_set_new(out, "python", json_null());
        json_object_set_new(out, "ready_seconds", json_null());
        json_object_set_new(out, "layers", json_array());
        json_object_set_new(out, "error", json_string(err));
        json_object_set_new(out, "ok", json_false());
        status = RLM_ERR_SANDBOX;
    } else {
        double ready = clock_now() - t0;
        json_error_t error;
        json_t *layers = json_loads(sandbox_layers_json(sb), 0, &error);
        json_object_set_new(out, "python", json_string(sandbox_python_version(sb)));
        json_object_set_new(out, "ready_seconds", json_real(ready));
        json_object_set_new(out, "summary", json_string(sandbox_layers(sb)));
        json_object_set_new(out, "warnings", json_string(sandbox_warnings(sb)));
        json_object_set_new(out, "ok", json_boolean(floor_in_force(layers)));
        json_object_set_new(out, "not_covered", not_covered(layers));
        json_object_set_new(out, "layers", layers ? layers : json_array());
        sandbox_free(sb);
        status = RLM_OK;
    }
    *report = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (!*report)
        status = RLM_ERR_NOMEM;
fail:
    json_decref(out);
    free(exe);
    return status;
}
