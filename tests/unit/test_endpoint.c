/* Unit tests for endpoint (base URLs parsed once, providers, where a key may
 * go) and for how the public configuration resolves provider, base URL and
 * the sub-call endpoint from them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "endpoint.h"
#include "rlm.h"

static void test_parse_normalises(void **state)
{
    (void)state;
    endpoint_url u;
    char err[512];
    assert_int_equal(endpoint_parse("https://api.openai.com/v1", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "https://api.openai.com/v1");
    assert_string_equal(u.origin, "https://api.openai.com:443");
    assert_string_equal(u.host, "api.openai.com");
    assert_int_equal(u.pasted_path, 0);

    assert_int_equal(endpoint_parse("HTTPS://API.Anthropic.COM/v1/", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "https://api.anthropic.com/v1");
    assert_string_equal(u.host, "api.anthropic.com");

    assert_int_equal(endpoint_parse("http://127.0.0.1:8080", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "http://127.0.0.1:8080");
    assert_string_equal(u.origin, "http://127.0.0.1:8080");

    assert_int_equal(endpoint_parse("http://[::1]:9/v1#frag", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "http://[::1]:9/v1");
}

static void test_parse_recognises_a_pasted_endpoint(void **state)
{
    (void)state;
    endpoint_url u;
    char err[512];
    assert_int_equal(endpoint_parse("https://api.openai.com/v1/chat/completions", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "https://api.openai.com/v1");
    assert_int_equal(u.pasted_path, 1);
    assert_int_equal(endpoint_parse("https://api.anthropic.com/v1/messages/", &u, err, sizeof err), 0);
    assert_string_equal(u.base, "https://api.anthropic.com/v1");
    assert_int_equal(u.pasted_path, 1);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    endpoint_url u;
    char err[512];
    const char *bad[] = {"", "api.openai.com/v1", "ftp://host/v1", "http://", "http://host:99999/v1",
                         "http://host:0/v1", "http://ho st/v1", "https://host/v1\r\nX-Evil: 1",
                         "http://host:abc/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(endpoint_parse(bad[i], &u, err, sizeof err), -1);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(endpoint_parse("http://host:99999/v1", &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "port"));
}

static void test_request_url_keeps_the_query(void **state)
{
    (void)state;
    endpoint_url u;
    char err[512], url[ENDPOINT_URL_MAX + 64];
    assert_int_equal(endpoint_parse("https://x.example/openai/deployments/d?api-version=2024-10-21", &u,
                                    err, sizeof err), 0);
    assert_int_equal(endpoint_request_url(&u, endpoint_provider_named("openai"), url, sizeof url, err, sizeof err), 0);
    assert_string_equal(url, "https://x.example/openai/deployments/d/chat/completions?api-version=2024-10-21");
    assert_int_equal(endpoint_parse("http://localhost:8080", &u, err, sizeof err), 0);
    assert_int_equal(endpoint_request_url(&u, endpoint_provider_named("anthropic"), url, sizeof url, err, sizeof err), 0);
    assert_string_equal(url, "http://localhost:8080/messages");
}

static void test_providers_match_exact_names_only(void **state)
{
    (void)state;
    const lm_provider *openai = endpoint_provider_named("openai");
    const lm_provider *anthropic = endpoint_provider_named("anthropic");
    assert_non_null(openai);
    assert_non_null(anthropic);
    assert_ptr_equal(endpoint_host_provider("api.anthropic.com"), anthropic);
    assert_ptr_equal(endpoint_host_provider("API.ANTHROPIC.COM"), anthropic);
    assert_ptr_equal(endpoint_host_provider("api.openai.com"), openai);
    assert_null(endpoint_host_provider("api.anthropic.com.localhost"));
    assert_null(endpoint_host_provider("evil-api.anthropic.com"));
    assert_null(endpoint_host_provider("api.anthropic.co"));
    assert_ptr_equal(endpoint_model_provider("claude-sonnet-4-5"), anthropic);
    assert_null(endpoint_model_provider("anthropic/claude-3.5"));
    assert_null(endpoint_model_provider("gpt-5-mini"));
}

/* The table: names in and out, the default, and the list said in messages. */
static void test_provider_table(void **state)
{
    (void)state;
    assert_ptr_equal(endpoint_default_provider(), endpoint_provider_named("openai"));
    assert_null(endpoint_provider_named(NULL));
    assert_null(endpoint_provider_named(""));
    assert_null(endpoint_provider_named("OpenAI"));
    assert_string_equal(endpoint_provider_named("anthropic")->name, "anthropic");
    assert_string_equal(endpoint_provider_named("anthropic")->default_url, "https://api.anthropic.com/v1");
    assert_string_equal(endpoint_default_provider()->default_url, "https://api.openai.com/v1");
    char names[64];
    endpoint_provider_names(names, sizeof names);
    assert_string_equal(names, "openai or anthropic");
    char tiny[5];
    endpoint_provider_names(tiny, sizeof tiny);
    assert_string_equal(tiny, "open");
}

static void test_list_within_compares_origins(void **state)
{
    (void)state;
    assert_true(endpoint_list_within("https://api.openai.com/v1", "https://api.openai.com/v2"));
    assert_true(endpoint_list_within("https://api.openai.com:443/v1", "https://API.openai.com"));
    assert_false(endpoint_list_within("http://api.openai.com/v1", "https://api.openai.com/v1"));
    assert_false(endpoint_list_within("https://api.openai.com:8443/v1", "https://api.openai.com/v1"));
    assert_false(endpoint_list_within("https://api.openai.com.evil.test/v1", "https://api.openai.com/v1"));
    assert_true(endpoint_list_within("http://a:1,http://b:2", "http://b:2,http://a:1/x"));
    assert_false(endpoint_list_within("http://a:1,http://c:2", "http://b:2,http://a:1/x"));
    assert_false(endpoint_list_within("not a url", "http://a"));
}

static void test_config_resolves_provider_and_urls(void **state)
{
    (void)state;
    rlm_config *cfg = rlm_config_new();
    assert_string_equal(rlm_config_get(cfg, "provider"), "openai");
    assert_string_equal(rlm_config_get(cfg, "base_url"), "https://api.openai.com/v1");
    assert_string_equal(rlm_config_get(cfg, "sub_base_url"), "https://api.openai.com/v1");

    /* The default URL follows the provider, which follows a claude model. */
    assert_int_equal(rlm_config_set(cfg, "model", "claude-sonnet-4-5"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "provider"), "anthropic");
    assert_string_equal(rlm_config_get(cfg, "base_url"), "https://api.anthropic.com/v1");
    assert_int_equal(rlm_config_set(cfg, "provider", "openai"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "base_url"), "https://api.openai.com/v1");
    assert_int_equal(rlm_config_set(cfg, "provider", "anthropic"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "model", "gpt-5"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "base_url"), "https://api.anthropic.com/v1");

    /* A given URL decides, by its exact host, and is never overridden by a model name. */
    assert_int_equal(rlm_config_set(cfg, "provider", NULL), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "model", "claude-x"), RLM_OK);
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://localhost:4000/v1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "provider"), "openai");
    assert_int_equal(rlm_config_set(cfg, "base_url", "https://api.anthropic.com.localhost/v1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "provider"), "openai");
    assert_int_equal(rlm_config_set(cfg, "base_url", "https://api.anthropic.com/v1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "provider"), "anthropic");

    /* Sub-calls: the root's endpoint unless said otherwise. */
    assert_string_equal(rlm_config_get(cfg, "sub_provider"), "anthropic");
    assert_string_equal(rlm_config_get(cfg, "sub_base_url"), "https://api.anthropic.com/v1");
    assert_int_equal(rlm_config_set(cfg, "sub_base_url", "http://localhost:8000/v1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "sub_provider"), "anthropic");
    assert_int_equal(rlm_config_set(cfg, "sub_provider", "openai"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "sub_provider"), "openai");
    rlm_config_free(cfg);

    /* A claude sub-model with nothing else said goes to Anthropic. */
    cfg = rlm_config_new();
    assert_int_equal(rlm_config_set(cfg, "sub_model", "claude-haiku-4-5"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "provider"), "openai");
    assert_string_equal(rlm_config_get(cfg, "sub_provider"), "anthropic");
    assert_string_equal(rlm_config_get(cfg, "sub_base_url"), "https://api.anthropic.com/v1");
    /* ... but not when the run names its endpoint. */
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://localhost:4000/v1"), RLM_OK);
    assert_string_equal(rlm_config_get(cfg, "sub_provider"), "openai");
    assert_string_equal(rlm_config_get(cfg, "sub_base_url"), "http://localhost:4000/v1");
    rlm_config_free(cfg);
}

static void test_config_checks_urls(void **state)
{
    (void)state;
    rlm_config *cfg = rlm_config_new();
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://localhost:99999/v1"), RLM_ERR_USAGE);
    assert_non_null(strstr(rlm_config_errmsg(cfg), "base_url"));
    assert_non_null(strstr(rlm_config_errmsg(cfg), "port"));
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://a/v1,ftp://b"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "sub_base_url", "localhost:8080"), RLM_ERR_USAGE);
    assert_int_equal(rlm_config_set(cfg, "base_url", "http://a/v1,http://b:81/v1"), RLM_OK);
    assert_true(rlm_config_url_within(cfg, "base_url", "http://b:81,http://a"));
    assert_false(rlm_config_url_within(cfg, "base_url", "http://a"));
    assert_false(rlm_config_url_within(cfg, "no_such_key", "http://a"));
    rlm_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_normalises),
        cmocka_unit_test(test_parse_recognises_a_pasted_endpoint),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_request_url_keeps_the_query),
        cmocka_unit_test(test_providers_match_exact_names_only),
        cmocka_unit_test(test_provider_table),
        cmocka_unit_test(test_list_within_compares_origins),
        cmocka_unit_test(test_config_resolves_provider_and_urls),
        cmocka_unit_test(test_config_checks_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
