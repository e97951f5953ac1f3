/*
 * Client commands that talk to a running server's API: `basalt model
 * push|ls|versions|approve|reject|archive|alias|pull` and `basalt predict`
 * (their usage is in commands.c). The server URL and key come from --url /
 * --key or BASALT_URL / BASALT_API_KEY (default http://127.0.0.1:8080).
 * Each prints a table or a one-line summary, or with --json the server's JSON
 * as it came; list commands follow next_cursor, so --json prints every page's
 * items as one {"items": […], "next_cursor": null}.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "cli/cli.h"
#include "http/client.h"
#include "ml/ml.h"

typedef bs_cli_remote_t remote_t;

int bs_cli_take_globals(int argc, char **argv, remote_t *r)
{
    r->url = getenv("BASALT_URL");
    r->key = getenv("BASALT_API_KEY");
    r->json = 0;
    if (!r->url || !*r->url)
        r->url = "http://127.0.0.1:8080";
    int k = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "--url") || !strcmp(argv[i], "--key")) && i + 1 < argc) {
            if (argv[i][2] == 'u')
                r->url = argv[i + 1];
            else
                r->key = argv[i + 1];
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--json")) {
            r->json = 1;
            continue;
        }
        argv[k++] = argv[i];
    }
    size_t n = strlen(r->url);
    while (n > 0 && r->url[n - 1] == '/')
        n--;
    r->url_len = (int)n;
    return k;
}

int bs_cli_call(const remote_t *r, const char *method, const char *path, const char *content_type,
                const void *body, size_t len, bs_buf_t *out)
{
    char url[2048], auth[300], ct[300];
    snprintf(url, sizeof url, "%.*s%s", r->url_len, r->url, path);
    const char *headers[4];
    int nh = 0;
    if (r->key && *r->key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->key);
        headers[nh++] = auth;
    }
    if (content_type) {
        snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
        headers[nh++] = ct;
    }
    headers[nh] = NULL;
    bs_http_response_t resp;
    bs_err_t err;
    if (bs_http_request(method, url, headers, body, len, 60000, &resp, &err) != 0) {
        fprintf(stderr, "basalt: %s\n", err.msg);
        return 1;
    }
    int ok = resp.status >= 200 && resp.status < 300;
    if (!ok) {
        cJSON *j = resp.body.data ? cJSON_Parse(resp.body.data) : NULL;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        fprintf(stderr, "basalt: %s %s failed with %d: %s\n", method, path, resp.status,
                cJSON_IsString(m) ? m->valuestring : (resp.body.data ? resp.body.data : ""));
        cJSON_Delete(j);
    } else if (out) {
        bs_buf_append(out, resp.body.data ? resp.body.data : "", resp.body.len);
    } else if (resp.body.len) {
        fwrite(resp.body.data, 1, resp.body.len, stdout);
        putchar('\n');
    }
    bs_buf_free(&resp.body);
    return ok ? 0 : (resp.status == 404 ? 3 : 1);
}

/* The file's bytes ("-" = standard input), NUL-terminated. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "basalt: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    bs_buf_t b;
    bs_buf_init(&b);
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        bs_buf_append(&b, tmp, n);
    if (f != stdin)
        fclose(f);
    *len = b.len;
    return bs_buf_take(&b);
}

/* "k=v" into obj (numbers when they parse, else strings). */
static int add_kv(cJSON *obj, const char *kv, int numeric_only)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "basalt: expected key=value, got '%s'\n", kv);
        return -1;
    }
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    char *end;
    double v = strtod(eq + 1, &end);
    if (eq[1] && !*end)
        cJSON_AddNumberToObject(obj, key, v);
    else if (numeric_only) {
        fprintf(stderr, "basalt: metric '%s' must be a number\n", key);
        return -1;
    } else
        cJSON_AddStringToObject(obj, key, eq + 1);
    return 0;
}

int bs_cli_model_push(int argc, char **argv)
{
    remote_t rr;
    argc = bs_cli_take_globals(argc, argv, &rr);
    const remote_t *r = &rr;
    const char *file = NULL, *name = NULL, *format = NULL, *schema = NULL;
    cJSON *meta = cJSON_CreateObject(), *metrics = cJSON_CreateObject(), *params = cJSON_CreateObject(),
          *tags = cJSON_CreateArray();
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' && !file) {
            file = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "basalt: %s needs a value\n", a);
            goto out;
        }
        i++;
        if (!strcmp(a, "--name"))
            name = v;
        else if (!strcmp(a, "--format"))
            format = v;
        else if (!strcmp(a, "--schema"))
            schema = v;
        else if (!strcmp(a, "--metric")) {
            if (add_kv(metrics, v, 1))
                goto out;
        } else if (!strcmp(a, "--param")) {
            if (add_kv(params, v, 0))
                goto out;
        } else if (!strcmp(a, "--tag"))
            cJSON_AddItemToArray(tags, cJSON_CreateString(v));
        else if (!strcmp(a, "--run"))
            cJSON_AddStringToObject(meta, "run_id", v);
        else if (!strcmp(a, "--description"))
            cJSON_AddStringToObject(meta, "description", v);
        else if (!strcmp(a, "--dataset"))
            cJSON_AddStringToObject(meta, "dataset", v);
        else if (!strcmp(a, "--source-commit"))
            cJSON_AddStringToObject(meta, "source_commit", v);
        else {
            fprintf(stderr, "basalt: unknown option %s for model push\n", a);
            goto out;
        }
    }
    if (!file || !name) {
        bs_cli_usage(stderr, "model", "push");
        goto out;
    }
    if (schema) {
        size_t sl;
        char *text = read_file(schema, &sl);
        cJSON *s = text ? cJSON_Parse(text) : NULL;
        free(text);
        if (!s) {
            fprintf(stderr, "basalt: %s is not valid JSON\n", schema);
            rc = 1;
            goto out;
        }
        /* A schema file holds input_schema/output_schema, or just the input feature list. */
        if (cJSON_IsObject(s) && (cJSON_GetObjectItem(s, "input_schema") || cJSON_GetObjectItem(s, "output_schema"))) {
            cJSON *in = cJSON_DetachItemFromObject(s, "input_schema"), *o = cJSON_DetachItemFromObject(s, "output_schema");
            if (in)
                cJSON_AddItemToObject(meta, "input_schema", in);
            if (o)
                cJSON_AddItemToObject(meta, "output_schema", o);
            cJSON_Delete(s);
        } else {
            cJSON_AddItemToObject(meta, "input_schema", s);
        }
    }
    if (format)
        cJSON_AddStringToObject(meta, "format", format);
    cJSON_AddItemToObject(meta, "metrics", metrics);
    cJSON_AddItemToObject(meta, "params", params);
    cJSON_AddItemToObject(meta, "tags", tags);
    metrics = params = tags = NULL;
    size_t len;
    char *artifact = read_file(file, &len);
    if (!artifact) {
        rc = 1;
        goto out;
    }
    /* Load it here first, with the server's own loaders: a broken file fails before
     * anything (a new model) is created on the server. */
    const char *fmt = format ? format : bs_ml_detect_format(artifact, len);
    bs_err_t lerr;
    bs_err_clear(&lerr);
    bs_ml_model_t *local = fmt ? bs_ml_load(fmt, artifact, len, &lerr) : NULL;
    if (!local) {
        if (fmt)
            fprintf(stderr, "basalt: %s: the artifact does not load as %s: %s\n", file, fmt, lerr.msg);
        else
            fprintf(stderr, "basalt: %s: cannot tell the artifact's format; pass --format "
                            "xgboost_json or basalt_json\n", file);
        free(artifact);
        rc = 1;
        goto out;
    }
    bs_ml_model_free(local);
    /* Create the model if it does not exist yet. */
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s", name);
    bs_buf_t ignore;
    bs_buf_init(&ignore);
    char probe_url[2048];
    snprintf(probe_url, sizeof probe_url, "%.*s%s", r->url_len, r->url, path);
    {
        char auth[300];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->key ? r->key : "");
        const char *h[] = {auth, NULL};
        bs_http_response_t resp;
        bs_err_t err;
        if (bs_http_request("GET", probe_url, r->key ? h : NULL, NULL, 0, 30000, &resp, &err) != 0) {
            fprintf(stderr, "basalt: %s\n", err.msg);
            free(artifact);
            rc = 1;
            goto out;
        }
        int status = resp.status;
        bs_buf_free(&resp.body);
        if (status == 404) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "name", name);
            char *mb = cJSON_PrintUnformatted(m);
            cJSON_Delete(m);
            rc = bs_cli_call(r, "POST", "/v1/models", "application/json", mb, strlen(mb), &ignore);
            free(mb);
            if (rc) {
                free(artifact);
                bs_buf_free(&ignore);
                goto out;
            }
        }
    }
    bs_buf_free(&ignore);
    char boundary[40] = "basalt-";
    bs_random_hex(boundary + 7, 12);
    char *mj = cJSON_PrintUnformatted(meta);
    bs_buf_t body;
    bs_buf_init(&body);
    bs_buf_printf(&body, "--%s\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
                         "Content-Type: application/json\r\n\r\n%s\r\n",
                  boundary, mj);
    bs_buf_printf(&body, "--%s\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"model\"\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n",
                  boundary);
    bs_buf_append(&body, artifact, len);
    bs_buf_printf(&body, "\r\n--%s--\r\n", boundary);
    free(mj);
    free(artifact);
    char ct[100];
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", boundary);
    snprintf(path, sizeof path, "/v1/models/%s/versions", name);
    bs_buf_t out;
    bs_buf_init(&out);
    rc = bs_cli_call(r, "POST", path, ct, body.data, body.len, &out);
    bs_buf_free(&body);
    if (!rc && r->json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *v = cJSON_Parse(out.data);
        const cJSON *ver = cJSON_GetObjectItem(v, "version"), *sha = cJSON_GetObjectItem(v, "sha256"),
                    *st = cJSON_GetObjectItem(v, "status");
        printf("pushed %s version %d (%s), sha256 %s\n", name, cJSON_IsNumber(ver) ? ver->valueint : 0,
               cJSON_IsString(st) ? st->valuestring : "?", cJSON_IsString(sha) ? sha->valuestring : "?");
        cJSON_Delete(v);
    }
    bs_buf_free(&out);
out:
    cJSON_Delete(meta);
    cJSON_Delete(metrics);
    cJSON_Delete(params);
    cJSON_Delete(tags);
    return rc;
}

/* Appends s to b, percent-encoding all but RFC 3986 unreserved characters. */
void bs_cli_put_encoded(bs_buf_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~')
            bs_buf_putc(b, (char)*p);
        else
            bs_buf_printf(b, "%%%02X", *p);
    }
}

/* GETs every page of a list (path has a query already: "…?limit=1000"), following
 * next_cursor. Returns 0 with *items (a cJSON array, the caller frees it), or the exit code. */
int bs__cli_list_all(const remote_t *r, const char *path, cJSON **items)
{
    *items = cJSON_CreateArray();
    bs_buf_t p, out;
    bs_buf_init(&p);
    bs_buf_init(&out);
    bs_buf_puts(&p, path);
    int rc = 0;
    for (int page = 0; page < 100000; page++) {
        bs_buf_reset(&out);
        if ((rc = bs_cli_call(r, "GET", p.data, NULL, NULL, 0, &out)))
            break;
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        cJSON *its = cJSON_DetachItemFromObject(j, "items");
        const cJSON *next = cJSON_GetObjectItem(j, "next_cursor");
        if (!cJSON_IsArray(its)) {
            fprintf(stderr, "basalt: GET %s: the server's answer has no items list\n", p.data);
            cJSON_Delete(its);
            cJSON_Delete(j);
            rc = 1;
            break;
        }
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(its, 0)))
            cJSON_AddItemToArray(*items, it);
        cJSON_Delete(its);
        if (!cJSON_IsString(next) || !*next->valuestring) {
            cJSON_Delete(j);
            break;
        }
        bs_buf_reset(&p);
        bs_buf_printf(&p, "%s&cursor=", path);
        bs_cli_put_encoded(&p, next->valuestring);
        cJSON_Delete(j);
    }
    bs_buf_free(&p);
    bs_buf_free(&out);
    if (rc) {
        cJSON_Delete(*items);
        *items = NULL;
    }
    return rc;
}

/* --json of a list: every page's items as one page. */
void bs__cli_print_items(const cJSON *items)
{
    char *t = cJSON_PrintUnformatted(items);
    printf("{\"items\":%s,\"next_cursor\":null}\n", t ? t : "[]");
    free(t);
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int int_of(const cJSON *o, const char *key, char *buf, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return snprintf(buf, n, "-"), 0;
    snprintf(buf, n, "%.0f", v->valuedouble);
    return 1;
}

/* Rejects arguments left over after a command's own. */
static int no_more(int argc, int want, const char *group, const char *name)
{
    if (argc == want)
        return 0;
    bs_cli_usage(stderr, group, name);
    return 2;
}

int bs_cli_model_ls(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (no_more(argc, 1, "model", argv[0]))
        return 2;
    cJSON *items;
    int rc = bs__cli_list_all(&r, "/v1/models?limit=1000", &items);
    if (rc)
        return rc;
    if (r.json) {
        bs__cli_print_items(items);
        cJSON_Delete(items);
        return 0;
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 3);
    bs_cli_table_row(&t, "NAME", "LATEST", "ALIASES");
    const cJSON *m;
    cJSON_ArrayForEach(m, items)
    {
        const cJSON *al = cJSON_GetObjectItem(m, "aliases"), *a;
        bs_buf_t aliases;
        bs_buf_init(&aliases);
        bs_buf_puts(&aliases, "");
        cJSON_ArrayForEach(a, al)
        bs_buf_printf(&aliases, "%s%s=%d", aliases.len ? " " : "", a->string, a->valueint);
        char latest[32];
        int_of(m, "latest_version", latest, sizeof latest);
        bs_cli_table_row(&t, str_of(m, "name"), latest, aliases.data);
        bs_buf_free(&aliases);
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    cJSON_Delete(items);
    return 0;
}

int bs_cli_model_versions(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (no_more(argc, 2, "model", "versions"))
        return 2;
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/versions?limit=1000", argv[1]);
    cJSON *items;
    int rc = bs__cli_list_all(&r, path, &items);
    if (rc)
        return rc;
    if (r.json) {
        bs__cli_print_items(items);
        cJSON_Delete(items);
        return 0;
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 7);
    bs_cli_table_row(&t, "VERSION", "STATUS", "FORMAT", "KIND", "SIZE", "CREATED", "ALIASES");
    const cJSON *v;
    cJSON_ArrayForEach(v, items)
    {
        char ver[32], size[32];
        int_of(v, "version", ver, sizeof ver);
        int_of(v, "size", size, sizeof size);
        bs_buf_t aliases;
        bs_buf_init(&aliases);
        bs_buf_puts(&aliases, "");
        const cJSON *a;
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(v, "aliases"))
        if (cJSON_IsString(a))
            bs_buf_printf(&aliases, "%s%s", aliases.len ? "," : "", a->valuestring);
        bs_cli_table_row(&t, ver, str_of(v, "status"), str_of(v, "format"), str_of(v, "kind"), size,
                         str_of(v, "created_at"), aliases.data);
        bs_buf_free(&aliases);
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    cJSON_Delete(items);
    return 0;
}

static int positive(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v > 0 && v < 1000000000 ? (int)v : 0;
}

/* approve, reject and archive: POST …/versions/V/<cmd> {comment?}. */
int bs_cli_model_review(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *cmd = argv[0];
    if (!((argc == 3 || (argc == 5 && !strcmp(argv[3], "--comment"))) && positive(argv[2]))) {
        bs_cli_usage(stderr, "model", cmd);
        return 2;
    }
    int v = positive(argv[2]);
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/versions/%d/%s", argv[1], v, cmd);
    cJSON *o = cJSON_CreateObject();
    if (argc == 5)
        cJSON_AddStringToObject(o, "comment", argv[4]);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "POST", path, "application/json", body, strlen(body), &out);
    free(body);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        const char *st = str_of(j, "status");
        printf("%s version %d is %s\n", argv[1], v, st ? st : "?");
        cJSON_Delete(j);
    }
    bs_buf_free(&out);
    return rc;
}

int bs_cli_model_alias(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 4 || !positive(argv[3])) {
        bs_cli_usage(stderr, "model", "alias");
        return 2;
    }
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/aliases/%s", argv[1], argv[2]);
    char body[64];
    snprintf(body, sizeof body, "{\"version\":%d}", positive(argv[3]));
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "PUT", path, "application/json", body, strlen(body), &out);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        char ver[32], prev[32];
        int_of(j, "version", ver, sizeof ver);
        if (int_of(j, "previous_version", prev, sizeof prev))
            printf("%s@%s -> version %s (was version %s)\n", argv[1], argv[2], ver, prev);
        else
            printf("%s@%s -> version %s\n", argv[1], argv[2], ver);
        cJSON_Delete(j);
    }
    bs_buf_free(&out);
    return rc;
}

/* Writes version v's artifact, byte for byte, to -o FILE (or standard output). */
int bs_cli_model_pull(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (!((argc == 3 || (argc == 5 && !strcmp(argv[3], "-o"))) && positive(argv[2]))) {
        bs_cli_usage(stderr, "model", "pull");
        return 2;
    }
    const char *name = argv[1], *file = argc == 5 ? argv[4] : NULL;
    int v = positive(argv[2]);
    if (r.json && !file) {
        fprintf(stderr, "basalt: model pull --json needs -o FILE (without it the artifact "
                        "itself goes to standard output)\n");
        return 2;
    }
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/versions/%d/artifact", name, v);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_cli_call(&r, "GET", path, NULL, NULL, 0, &b);
    if (!rc) {
        FILE *f = file ? fopen(file, "wb") : stdout;
        int ok = f && fwrite(b.data ? b.data : "", 1, b.len, f) == b.len;
        if (f && file)
            ok = fclose(f) == 0 && ok;
        if (!ok) {
            fprintf(stderr, "basalt: cannot write %s: %s\n", file ? file : "standard output",
                    strerror(errno));
            rc = 1;
        } else if (file && r.json) {
            bs_buf_t j;
            bs_buf_init(&j);
            bs_jw_obj_begin(&j);
            bs_jw_key(&j, "model");
            bs_jw_str(&j, name);
            bs_jw_key(&j, "version");
            bs_jw_int(&j, v);
            bs_jw_key(&j, "file");
            bs_jw_str(&j, file);
            bs_jw_key(&j, "size");
            bs_jw_int(&j, (int64_t)b.len);
            bs_jw_obj_end(&j);
            printf("%.*s\n", (int)j.len, j.data);
            bs_buf_free(&j);
        } else if (file) {
            fprintf(stderr, "pulled %s version %d to %s (%zu bytes)\n", name, v, file, b.len);
        }
    }
    bs_buf_free(&b);
    return rc;
}

/* A prediction value for a table cell (%.6g for numbers, JSON for anything else). */
static void cell_of(const cJSON *v, char *buf, size_t n)
{
    if (cJSON_IsNumber(v)) {
        snprintf(buf, n, "%.6g", v->valuedouble);
    } else if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else {
        char *t = cJSON_PrintUnformatted(v);
        snprintf(buf, n, "%s", t ? t : "?");
        free(t);
    }
}

/* The predict answer as "MODEL version V" and a table: one line per row with the label
 * and each class's probability (classification), the value(s) (regression), and the
 * prediction id that feedback refers to. */
static void print_predictions(const cJSON *j)
{
    const cJSON *preds = cJSON_GetObjectItem(j, "predictions"), *ids = cJSON_GetObjectItem(j, "prediction_ids");
    char ver[32];
    int_of(j, "version", ver, sizeof ver);
    printf("%s version %s\n", str_of(j, "model") ? str_of(j, "model") : "?", ver);
    const cJSON *first = cJSON_GetArrayItem(preds, 0);
    const cJSON *probs0 = cJSON_GetObjectItem(first, "probabilities");
    int classification = cJSON_IsObject(first) && cJSON_GetObjectItem(first, "label");
    int nout = cJSON_IsArray(first) ? cJSON_GetArraySize(first) : 1;
    int nlabels = classification ? cJSON_GetArraySize(probs0) : 0;
    int ncols = classification ? 3 + nlabels : 2 + nout;
    if (ncols > 32)
        ncols = 32; /* the table's limit; more outputs are in --json */
    /* Each row is built as an array of cells, then added with the fixed-arity call. */
    char (*cells)[256] = calloc((size_t)ncols, sizeof *cells);
    if (!cells)
        return;
    bs_cli_table_t t;
    bs_cli_table_init(&t, ncols);
    const char *row[32];
    for (int c = 0; c < ncols; c++)
        row[c] = cells[c];
    /* header */
    snprintf(cells[0], sizeof cells[0], "ROW");
    if (classification) {
        snprintf(cells[1], sizeof cells[1], "LABEL");
        const cJSON *p = probs0 ? probs0->child : NULL;
        for (int c = 2; c < ncols - 1 && p; c++, p = p->next)
            snprintf(cells[c], sizeof cells[c], "P(%s)", p->string);
    } else if (cJSON_IsArray(first)) {
        for (int c = 1; c < ncols - 1; c++)
            snprintf(cells[c], sizeof cells[c], "Y%d", c - 1);
    } else {
        snprintf(cells[1], sizeof cells[1], "PREDICTION");
    }
    snprintf(cells[ncols - 1], sizeof cells[ncols - 1], "PREDICTION_ID");
    bs_cli_table_rowv(&t, row);
    int i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, preds)
    {
        snprintf(cells[0], sizeof cells[0], "%d", i);
        if (classification) {
            cell_of(cJSON_GetObjectItem(p, "label"), cells[1], sizeof cells[1]);
            const cJSON *pr = cJSON_GetObjectItem(p, "probabilities");
            const cJSON *h = probs0 ? probs0->child : NULL;
            for (int c = 2; c < ncols - 1; c++, h = h ? h->next : NULL)
                cell_of(h ? cJSON_GetObjectItemCaseSensitive(pr, h->string) : NULL, cells[c],
                        sizeof cells[c]);
        } else if (cJSON_IsArray(first)) {
            for (int c = 1; c < ncols - 1; c++)
                cell_of(cJSON_GetArrayItem(p, c - 1), cells[c], sizeof cells[c]);
        } else {
            cell_of(p, cells[1], sizeof cells[1]);
        }
        cell_of(cJSON_GetArrayItem(ids, i), cells[ncols - 1], sizeof cells[ncols - 1]);
        bs_cli_table_rowv(&t, row);
        i++;
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    free(cells);
}

int bs_cli_predict(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 3) {
        bs_cli_usage(stderr, NULL, "predict");
        return 2;
    }
    const char *ref = argv[1], *json = argv[2];
    char *text = NULL;
    if (json[0] == '@' || !strcmp(json, "-")) {
        size_t len;
        if (!(text = read_file(json[0] == '@' ? json + 1 : json, &len)))
            return 2;
        json = text;
    }
    cJSON *j = cJSON_Parse(json);
    free(text);
    if (!j) {
        fprintf(stderr, "basalt: the input is not valid JSON\n");
        return 2;
    }
    /* A bare row or list of rows is wrapped as the API's {"inputs": …}. */
    if (!(cJSON_IsObject(j) && (cJSON_GetObjectItem(j, "inputs") || cJSON_GetObjectItem(j, "instances")))) {
        cJSON *w = cJSON_CreateObject();
        cJSON_AddItemToObject(w, "inputs", j);
        j = w;
    }
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/predict", ref);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "POST", path, "application/json", body, strlen(body), &out);
    free(body);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *a = cJSON_Parse(out.data ? out.data : "");
        print_predictions(a);
        cJSON_Delete(a);
    }
    bs_buf_free(&out);
    return rc;
}

int bs_cli_parse_interval(const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 50 || v > 60000) {
        fprintf(stderr, "basalt: --interval must be 50 to 60000 (ms)\n");
        return -1;
    }
    *out = v;
    return 0;
}
