/* doctor — rlm_doctor: starts one sandbox child with the configuration's
 * settings and reports which confinement layers this machine allows, which it
 * refuses and why; rlm_doctor_setup: whether the chosen endpoints answer
 * (and take the key) and the cache, session and price files are usable. Both
 * as the JSON objects documented in include/rlm.h. */
#include "rlm.h"

#include "endpoint.h"
#include "lm.h"
#include "pricing.h"
#include "sandbox.h"
#include "session.h"
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

/* ---- the setup: endpoints and files (rlm_doctor_setup) ------------------------ */

/* Seconds the endpoint has to answer its one GET. */
#define PROBE_TIMEOUT 15.0

/* Checks one endpoint: a key for a hosted API, then (online) GET /models. */
static json_t *check_endpoint(const rlm_config *cfg, int sub, int offline)
{
    const char *urls = config_value(cfg, sub ? "sub_base_url" : "base_url");
    const char *provider = config_value(cfg, sub ? "sub_provider" : "provider");
    const char *model = config_value(cfg, sub ? "sub_model" : "model");
    const char *key = config_value(cfg, "api_key");
    if (sub) {
        const char *own = config_value(cfg, "sub_api_key");
        key = own[0] ? own : rlm_config_url_within(cfg, "sub_base_url", config_value(cfg, "base_url")) ? key : "";
    }
    char first[ENDPOINT_URL_MAX], why[1024] = "";
    size_t n = strcspn(urls, ",");
    snprintf(first, sizeof first, "%.*s", (int)(n < sizeof first ? n : sizeof first - 1), urls);
    endpoint_url u;
    int hosted = endpoint_parse(first, &u, why, sizeof why) == 0 &&
                 endpoint_host_provider(u.host) != NULL;
    json_t *out = json_pack("{s:s,s:s,s:s,s:b,s:s}", "base_url", urls, "provider", provider, "model",
                            model, "hosted", hosted, "key", key[0] ? "set" : "none");
    int ok = 1;
    long status = 0;
    json_t *listed = json_null(), *count = json_null();
    if (hosted && !key[0]) {
        ok = 0;
        snprintf(why, sizeof why, "no API key: %s needs one", u.host);
    } else if (offline) {
        snprintf(why, sizeof why, "not contacted (offline)");
    } else {
        lm_options lo = {.base_url = first, .api_key = key, .provider = provider,
                         .timeout = PROBE_TIMEOUT, .max_retries = -1};
        char err[1024];
        lm *m = lm_new(&lo, err, sizeof err);
        char *body = NULL;
        if (!m) {
            ok = 0;
            snprintf(why, sizeof why, "%s", err);
        } else if (lm_probe(m, PROBE_TIMEOUT, &status, &body, err, sizeof err) != 0) {
            ok = 0;
            snprintf(why, sizeof why, "%s", err);
        } else if (status == 200) {
            json_t *j = body ? json_loads(body, 0, NULL) : NULL;
            json_t *data = json_object_get(j, "data");
            int found = 0;
            size_t i;
            json_t *item;
            json_array_foreach(data, i, item)
                found |= json_is_string(json_object_get(item, "id")) &&
                         strcmp(json_string_value(json_object_get(item, "id")), model) == 0;
            json_decref(listed);
            json_decref(count);
            listed = json_is_array(data) ? json_boolean(found) : json_null();
            count = json_is_array(data) ? json_integer((json_int_t)json_array_size(data)) : json_null();
            snprintf(why, sizeof why, "reachable%s, %zu models listed%s%s%s",
                     lm_has_key(m) ? ", the key accepted" : "", json_array_size(data),
                     json_is_array(data) && !found ? " (the model '" : "",
                     json_is_array(data) && !found ? model : "",
                     json_is_array(data) && !found ? "' is not among them)" : "");
            json_decref(j);
        } else if (status == 404) {
            snprintf(why, sizeof why, "reachable; it lists no models (HTTP 404 on /models), so the key "
                     "and the model were not checked");
        } else {
            ok = 0;
            const lm_provider *p = endpoint_provider_named(provider);
            char *msg = (p ? p : endpoint_default_provider())->error_message(status, body,
                                                                             body ? strlen(body) : 0);
            snprintf(why, sizeof why, "%s%s", msg ? msg : "refused",
                     (status == 401 || status == 403) && !lm_has_key(m) ? " (no key was sent)" : "");
            free(msg);
        }
        free(body);
        lm_free(m);
    }
    json_object_set_new(out, "status", status ? json_integer(status) : json_null());
    json_object_set_new(out, "models", count);
    json_object_set_new(out, "model_listed", listed);
    json_object_set_new(out, "ok", json_boolean(ok));
    json_object_set_new(out, "detail", json_string(why));
    return out;
}

/* path itself when it exists, else its nearest existing ancestor: where a
 * file or directory would be created. -1 when none is writable. */
static int creatable(const char *path, char *why, size_t whylen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    for (;;) {
        if (access(dir, F_OK) == 0) {
            if (access(dir, W_OK) == 0)
                return 0;
            snprintf(why, whylen, "'%.1000s' is not writable", dir);
            return -1;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            snprintf(why, whylen, "no part of '%.1000s' exists", path);
            return -1;
        }
        *slash = '\0';
    }
}

static json_t *file_check(const char *name, const char *path, int ok, const char *detail)
{
    return json_pack("{s:s,s:s?,s:b,s:s}", "name", name, "path", path, "ok", ok, "detail", detail);
}

/* The response cache and search index directory, the session file and the
 * price files: usable, or why not. */
static json_t *check_files(const rlm_config *cfg)
{
    json_t *files = json_array();
    char why[2048];

    const char *dir = config_value(cfg, "cache_dir");
    char *def = dir[0] ? NULL : user_file_path("XDG_CACHE_HOME", ".cache", "");
    const char *cache = dir[0] ? dir : def;
    if (!cache)
        json_array_append_new(files, file_check("cache", NULL, 0, "neither XDG_CACHE_HOME nor HOME is set"));
    else if (creatable(cache, why, sizeof why) != 0)
        json_array_append_new(files, file_check("cache", cache, 0, why));
    else
        json_array_append_new(files, file_check("cache", cache, 1, access(cache, F_OK) == 0
                                                                    ? "writable" : "writable (created when first used)"));
    free(def);

    const char *db = config_value(cfg, "session_db");
    def = db[0] ? NULL : user_file_path("XDG_DATA_HOME", ".local/share", "sessions.db");
    const char *sessions = db[0] ? db : def;
    json_t *list = NULL;
    if (!sessions)
        json_array_append_new(files, file_check("sessions", NULL, 0, "neither XDG_DATA_HOME nor HOME is set"));
    else if (access(sessions, F_OK) != 0)
        json_array_append_new(files, creatable(sessions, why, sizeof why) == 0
                                         ? file_check("sessions", sessions, 1, "none yet (created by the first --session)")
                                         : file_check("sessions", sessions, 0, why));
    else if (session_list(sessions, &list, why, sizeof why) != 0)
        json_array_append_new(files, file_check("sessions", sessions, 0, why));
    else {
        snprintf(why, sizeof why, "%zu sessions, readable", json_array_size(list));
        json_array_append_new(files, file_check("sessions", sessions, 1, why));
    }
    json_decref(list);
    free(def);

    char *user = user_file_path("XDG_CONFIG_HOME", ".config", "prices.json");
    const char *given = config_value(cfg, "prices");
    const char *paths[2] = {user, given[0] ? given : NULL};
    for (int i = 0; i < 2; i++) {
        if (!paths[i] || (i == 0 && access(paths[i], F_OK) != 0))
            continue;
        pricing *p = pricing_new();
        if (p && pricing_load_file(p, paths[i], why, sizeof why) == 0)
            json_array_append_new(files, file_check("prices", paths[i], 1, "readable"));
        else
            json_array_append_new(files, file_check("prices", paths[i], 0, p ? why : "out of memory"));
        pricing_free(p);
    }
    free(user);
    return files;
}

rlm_status rlm_doctor_setup(const rlm_config *cfg, int offline, char **report)
{
    *report = NULL;
    rlm_config *dflt = cfg ? NULL : rlm_config_new();
    if (!cfg && !dflt)
        return RLM_ERR_NOMEM;
    const rlm_config *c = cfg ? cfg : dflt;
    json_t *root = check_endpoint(c, 0, offline);
    json_t *sub = rlm_config_url_within(c, "sub_base_url", config_value(c, "base_url")) &&
                          strcmp(config_value(c, "sub_provider"), config_value(c, "provider")) == 0 &&
                          !config_value(c, "sub_api_key")[0]
                      ? json_null()
                      : check_endpoint(c, 1, offline);
    json_t *files = check_files(c);
    int endpoints_ok = json_is_true(json_object_get(root, "ok")) &&
                       (json_is_null(sub) || json_is_true(json_object_get(sub, "ok")));
    int files_ok = 1;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
        files_ok &= json_is_true(json_object_get(f, "ok"));
    json_t *out = json_pack("{s:o,s:o,s:o,s:b,s:b}", "endpoint", root, "sub_endpoint", sub, "files", files,
                            "endpoints_ok", endpoints_ok, "files_ok", files_ok);
    *report = out ? json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(out);
    rlm_config_free(dflt);
    if (!*report)
        return RLM_ERR_NOMEM;
    return !endpoints_ok ? RLM_ERR_MODEL : !files_ok ? RLM_ERR_INPUT : RLM_OK;
}
