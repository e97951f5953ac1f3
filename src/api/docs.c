/* The /docs page: the OpenAPI document rendered as one HTML page at start-up, so it
 * says what /openapi.json says (method, path, summary, minimum role, parameters,
 * request bodies, responses, a curl example) and works offline — no script, no
 * third-party asset, only inline CSS. Schemas are shown as indented JSON. */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

static void esc(bs_buf_t *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            bs_buf_puts(b, "&lt;");
            break;
        case '>':
            bs_buf_puts(b, "&gt;");
            break;
        case '&':
            bs_buf_puts(b, "&amp;");
            break;
        case '"':
            bs_buf_puts(b, "&quot;");
            break;
        case '\'':
            bs_buf_puts(b, "&#39;");
            break;
        default:
            bs_buf_putc(b, *s);
        }
    }
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Indented JSON of node, escaped, in a <pre>. */
static void json_block(bs_buf_t *b, const cJSON *node)
{
    char *t = cJSON_Print(node);
    bs_buf_puts(b, "<pre>");
    if (t)
        esc(b, t);
    else
        b->oom = 1;
    bs_buf_puts(b, "</pre>");
    free(t);
}

/* "string", "integer (1..1000, default 100)", "pending | approved | …" */
static void type_of(bs_buf_t *b, const cJSON *schema)
{
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(schema, "enum");
    if (cJSON_IsArray(en)) {
        const cJSON *v;
        int first = 1;
        cJSON_ArrayForEach(v, en)
        {
            if (cJSON_IsString(v)) {
                bs_buf_puts(b, first ? "" : " | ");
                esc(b, v->valuestring);
                first = 0;
            }
        }
        return;
    }
    esc(b, str_of(schema, "type") ? str_of(schema, "type") : "any");
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(schema, "minimum");
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(schema, "maximum");
    const cJSON *df = cJSON_GetObjectItemCaseSensitive(schema, "default");
    if (cJSON_IsNumber(mn) && cJSON_IsNumber(mx))
        bs_buf_printf(b, " (%g..%g", mn->valuedouble, mx->valuedouble);
    else if (cJSON_IsNumber(mn))
        bs_buf_printf(b, " (&ge; %g", mn->valuedouble);
    if (cJSON_IsNumber(df))
        bs_buf_printf(b, "%sdefault %g", cJSON_IsNumber(mn) ? ", " : " (", df->valuedouble);
    if (cJSON_IsNumber(mn) || cJSON_IsNumber(df))
        bs_buf_putc(b, ')');
}

static void render_params(bs_buf_t *b, const cJSON *params)
{
    if (!cJSON_IsArray(params) || !cJSON_GetArraySize(params))
        return;
    bs_buf_puts(b, "<h4>Parameters</h4><table class=\"p\"><tr><th>name</th><th>in</th><th>type</th>"
                   "<th>description</th></tr>");
    const cJSON *p;
    cJSON_ArrayForEach(p, params)
    {
        bs_buf_puts(b, "<tr><td><code>");
        esc(b, str_of(p, "name"));
        bs_buf_puts(b, "</code>");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "required")))
            bs_buf_puts(b, " <small>required</small>");
        bs_buf_puts(b, "</td><td>");
        esc(b, str_of(p, "in"));
        bs_buf_puts(b, "</td><td>");
        type_of(b, cJSON_GetObjectItemCaseSensitive(p, "schema"));
        bs_buf_puts(b, "</td><td>");
        esc(b, str_of(p, "description"));
        bs_buf_puts(b, "</td></tr>");
    }
    bs_buf_puts(b, "</table>");
}

/* Each media type of a content object: its schema, its example when there is one. */
static void render_content(bs_buf_t *b, const cJSON *content)
{
    const cJSON *mt;
    cJSON_ArrayForEach(mt, content)
    {
        bs_buf_puts(b, "<p><code>");
        esc(b, mt->string);
        bs_buf_puts(b, "</code></p>");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(mt, "schema");
        if (schema)
            json_block(b, schema);
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(mt, "example");
        if (ex) {
            bs_buf_puts(b, "<p>Example:</p>");
            json_block(b, ex);
        }
    }
}

static void render_operation(bs_buf_t *b, const char *path, const cJSON *op, const char *method)
{
    bs_buf_puts(b, "<section id=\"");
    esc(b, str_of(op, "operationId"));
    bs_buf_puts(b, "\"><h3><code class=\"m\">");
    for (const char *m = method; *m; m++)
        bs_buf_putc(b, (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m));
    bs_buf_puts(b, "</code> <code>");
    esc(b, path);
    bs_buf_puts(b, "</code></h3><p>");
    esc(b, str_of(op, "summary"));
    bs_buf_puts(b, "</p><p>Minimum role: <b class=\"role\">");
    const char *role = str_of(op, "x-basalt-min-role");
    esc(b, role);
    bs_buf_puts(b, "</b>");
    if (role && !strcmp(role, "public"))
        bs_buf_puts(b, " (no API key needed)");
    bs_buf_puts(b, " &middot; operationId <code>");
    esc(b, str_of(op, "operationId"));
    bs_buf_puts(b, "</code></p>");
    render_params(b, cJSON_GetObjectItemCaseSensitive(op, "parameters"));
    const cJSON *rb = cJSON_GetObjectItemCaseSensitive(op, "requestBody");
    if (rb) {
        bs_buf_puts(b, "<h4>Request body</h4>");
        if (str_of(rb, "description")) {
            bs_buf_puts(b, "<p>");
            esc(b, str_of(rb, "description"));
            bs_buf_puts(b, "</p>");
        }
        render_content(b, cJSON_GetObjectItemCaseSensitive(rb, "content"));
    }
    const cJSON *resp;
    cJSON_ArrayForEach(resp, cJSON_GetObjectItemCaseSensitive(op, "responses"))
    {
        if (resp->string[0] != '2')
            continue; /* errors: the envelope described once at the top */
        bs_buf_puts(b, "<h4>Response ");
        esc(b, resp->string);
        bs_buf_puts(b, "</h4>");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(resp, "content");
        if (content)
            render_content(b, content);
        else
            bs_buf_puts(b, "<p>No body.</p>");
    }
    const cJSON *sample;
    cJSON_ArrayForEach(sample, cJSON_GetObjectItemCaseSensitive(op, "x-codeSamples"))
    {
        bs_buf_puts(b, "<h4>Example");
        if (str_of(sample, "label")) {
            bs_buf_puts(b, " (");
            esc(b, str_of(sample, "label"));
            bs_buf_putc(b, ')');
        }
        bs_buf_puts(b, "</h4><pre class=\"ex\">");
        esc(b, str_of(sample, "source"));
        bs_buf_puts(b, "</pre>");
    }
    bs_buf_puts(b, "</section>\n");
}

int bs__api_docs_render(const char *openapi, size_t len, bs_buf_t *b, bs_err_t *err)
{
    cJSON *doc = cJSON_ParseWithLength(openapi, len);
    if (!doc)
        return bs_err_set(err, BS_EINTERNAL, "the OpenAPI document does not parse");
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(doc, "info");
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    bs_buf_puts(b,
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width\"><title>basalt API</title>"
                "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:64em;"
                "padding:0 1em}code,pre{font:13px ui-monospace,monospace}pre{background:#f4f4f4;"
                "padding:.6em;overflow:auto;max-height:24em}section{border-top:1px solid #ccc;"
                "margin-top:1.5em}.m{font-weight:bold}table{border-collapse:collapse}td,th{"
                "border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}"
                "nav li{list-style:none}</style></head><body><h1>basalt API ");
    esc(b, str_of(info, "version"));
    bs_buf_puts(b, "</h1><p>");
    esc(b, str_of(info, "description"));
    bs_buf_puts(b, "</p><p>Send the key as <code>Authorization: Bearer bsk_…</code>. The examples "
                   "read the server's address and a key from <code>$BASALT_URL</code> and "
                   "<code>$BASALT_API_KEY</code>, as the CLI does. The machine-readable "
                   "description is <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1); "
                   "this page is rendered from it.</p><nav><ul>");
    /* the table of contents, then the routes, in the document's order */
    const cJSON *p, *op;
    cJSON_ArrayForEach(p, paths)
    {
        cJSON_ArrayForEach(op, p)
        {
            bs_buf_puts(b, "<li><a href=\"#");
            esc(b, str_of(op, "operationId"));
            bs_buf_puts(b, "\"><code>");
            for (const char *m = op->string; *m; m++)
                bs_buf_putc(b, (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m));
            bs_buf_putc(b, ' ');
            esc(b, p->string);
            bs_buf_puts(b, "</code></a> ");
            esc(b, str_of(op, "summary"));
            bs_buf_puts(b, "</li>");
        }
    }
    bs_buf_puts(b, "</ul></nav>\n");
    cJSON_ArrayForEach(p, paths)
    {
        cJSON_ArrayForEach(op, p)
        {
            render_operation(b, p->string, op, op->string);
        }
    }
    bs_buf_puts(b, "</body></html>\n");
    cJSON_Delete(doc);
    if (b->oom)
        return bs_err_set(err, BS_ENOMEM, "out of memory rendering /docs");
    return 0;
}
