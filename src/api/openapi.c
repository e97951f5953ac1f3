/* Generates the OpenAPI 3.1 document from the route table, so the document
 * cannot drift from the router: path parameters come from the patterns,
 * security from each route's minimum role, schemas from the route entries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

static void write_path_key(bs_buf_t *b, const char *pattern)
{
    /* "{name*}" becomes "{name}" */
    char tmp[256];
    size_t k = 0;
    for (const char *p = pattern; *p && k + 1 < sizeof tmp; p++)
        if (!(*p == '*' && p[1] == '}'))
            tmp[k++] = *p;
    tmp[k] = '\0';
    bs_jw_key(b, tmp);
}

static void write_params(bs_buf_t *b, const char *pattern)
{
    bs_jw_key(b, "parameters");
    bs_jw_arr_begin(b);
    for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *e = strchr(p, '}');
        if (!e)
            break;
        size_t n = (size_t)(e - p - 1);
        if (n && p[n] == '*')
            n--;
        bs_jw_obj_begin(b);
        bs_jw_key(b, "name");
        bs_jw_strn(b, p + 1, n);
        bs_jw_key(b, "in");
        bs_jw_str(b, "path");
        bs_jw_key(b, "required");
        bs_jw_bool(b, 1);
        bs_jw_key(b, "schema");
        bs_jw_raw(b, "{\"type\":\"string\"}", 17);
        bs_jw_obj_end(b);
    }
    bs_jw_arr_end(b);
}

static void lower(const char *m, char *out)
{
    size_t i = 0;
    for (; m[i] && i < 15; i++)
        out[i] = (char)(m[i] >= 'A' && m[i] <= 'Z' ? m[i] + 32 : m[i]);
    out[i] = '\0';
}

void bs_api_openapi(const bs_route_t *routes, int n, bs_buf_t *b)
{
    bs_jw_obj_begin(b);
    bs_jw_key(b, "openapi");
    bs_jw_str(b, "3.1.0");
    bs_jw_key(b, "info");
    bs_jw_obj_begin(b);
    bs_jw_key(b, "title");
    bs_jw_str(b, "basalt");
    bs_jw_key(b, "version");
    bs_jw_str(b, BS_VERSION);
    bs_jw_key(b, "description");
    bs_jw_str(b, "AI backend in one binary: model registry and serving, and more. Errors are "
                 "{\"error\": {\"code\", \"message\", \"field\"}, \"request_id\"}.");
    bs_jw_obj_end(b);
    bs_jw_key(b, "components");
    bs_jw_raw(b,
              "{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\"}},"
              "\"schemas\":{\"Error\":{\"type\":\"object\",\"required\":[\"error\",\"request_id\"],"
              "\"properties\":{\"error\":{\"type\":\"object\",\"required\":[\"code\",\"message\"],"
              "\"properties\":{\"code\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"},"
              "\"field\":{\"type\":\"string\"}}},\"request_id\":{\"type\":\"string\"}}}}}",
              strlen("{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\"}},"
                     "\"schemas\":{\"Error\":{\"type\":\"object\",\"required\":[\"error\",\"request_id\"],"
                     "\"properties\":{\"error\":{\"type\":\"object\",\"required\":[\"code\",\"message\"],"
                     "\"properties\":{\"code\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"},"
                     "\"field\":{\"type\":\"string\"}}},\"request_id\":{\"type\":\"string\"}}}}}"));
    bs_jw_key(b, "paths");
    bs_jw_obj_begin(b);
    char *done = calloc((size_t)n, 1);
    for (int i = 0; i < n; i++) {
        if (done && done[i])
            continue;
        write_path_key(b, routes[i].pattern);
        bs_jw_obj_begin(b);
        for (int j = i; j < n; j++) {
            if (strcmp(routes[j].pattern, routes[i].pattern) != 0)
                continue;
            if (done)
                done[j] = 1;
            const bs_route_t *r = &routes[j];
            char m[16];
            lower(r->method, m);
            bs_jw_key(b, m);
            bs_jw_obj_begin(b);
            bs_jw_key(b, "summary");
            bs_jw_str(b, r->summary ? r->summary : "");
            bs_jw_key(b, "operationId");
            char opid[300];
            snprintf(opid, sizeof opid, "%s %s", r->method, r->pattern);
            bs_jw_str(b, opid);
            bs_jw_key(b, "tags");
            bs_jw_arr_begin(b);
            bs_jw_str(b, r->tag ? r->tag : "default");
            bs_jw_arr_end(b);
            bs_jw_key(b, "x-basalt-min-role");
            bs_jw_str(b, bs_role_name(r->min_role));
            if (r->min_role > BS_ROLE_PUBLIC) {
                bs_jw_key(b, "security");
                bs_jw_raw(b, "[{\"bearer\":[]}]", strlen("[{\"bearer\":[]}]"));
            }
            write_params(b, r->pattern);
            if (r->request_schema) {
                bs_jw_key(b, "requestBody");
                bs_jw_obj_begin(b);
                bs_jw_key(b, "required");
                bs_jw_bool(b, 1);
                bs_jw_key(b, "content");
                bs_jw_obj_begin(b);
                bs_jw_key(b, "application/json");
                bs_jw_obj_begin(b);
                bs_jw_key(b, "schema");
                bs_jw_raw(b, r->request_schema, strlen(r->request_schema));
                bs_jw_obj_end(b);
                bs_jw_obj_end(b);
                bs_jw_obj_end(b);
            }
            bs_jw_key(b, "responses");
            bs_jw_obj_begin(b);
            char st[8];
            snprintf(st, sizeof st, "%d", r->success_status ? r->success_status : 200);
            bs_jw_key(b, st);
            bs_jw_obj_begin(b);
            bs_jw_key(b, "description");
            bs_jw_str(b, "success");
            if (r->response_schema) {
                bs_jw_key(b, "content");
                bs_jw_obj_begin(b);
                bs_jw_key(b, "application/json");
                bs_jw_obj_begin(b);
                bs_jw_key(b, "schema");
                bs_jw_raw(b, r->response_schema, strlen(r->response_schema));
                bs_jw_obj_end(b);
                bs_jw_obj_end(b);
            }
            bs_jw_obj_end(b);
            bs_jw_key(b, "default");
            bs_jw_raw(b,
                      "{\"description\":\"error\",\"content\":{\"application/json\":{\"schema\":"
                      "{\"$ref\":\"#/components/schemas/Error\"}}}}",
                      strlen("{\"description\":\"error\",\"content\":{\"application/json\":{\"schema\":"
                             "{\"$ref\":\"#/components/schemas/Error\"}}}}"));
            bs_jw_obj_end(b);
            bs_jw_obj_end(b);
        }
        bs_jw_obj_end(b);
    }
    free(done);
    bs_jw_obj_end(b);
    bs_jw_obj_end(b);
}

int bs_api_authenticate(void *app, const char *token, size_t len, bs_principal_t *who, bs_err_t *err)
{
    return bs_auth_verify(((bs_app_t *)app)->auth, token, len, who, err);
}

int bs_api_rate_limit(void *app, const bs_principal_t *who, double *retry_after_s)
{
    return bs_auth_charge(((bs_app_t *)app)->auth, who, retry_after_s);
}

int bs_api_authorize(void *app, const bs_principal_t *who, const bs_route_t *route, bs_err_t *err)
{
    (void)app;
    if (!who->scopes)
        return 0;
    if ((who->scopes & BS_SCOPE_METRICS) && route->fn == bs__api_metrics)
        return 0;
    return bs_err_set(err, BS_EFORBID, "this API key is limited to its scopes (metrics: GET /metrics)");
}
