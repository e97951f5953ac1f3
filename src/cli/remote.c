/*
 * Client subcommands that talk to a running server's API:
 *   basalt model push FILE --name N [--format F] [--schema S.json] [--metric k=v]…
 *                          [--param k=v]… [--run ID] [--description D] [--tag T]…
 *   basalt model ls | versions NAME | approve NAME V | reject NAME V | archive NAME V
 *   basalt model alias NAME ALIAS V
 *   basalt predict REF JSON        (REF: name, name@alias or name/versions/N)
 * The server URL and key come from --url / --key or BASALT_URL / BASALT_API_KEY
 * (default http://127.0.0.1:8080).
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

typedef struct {
    const char *url;
    int url_len; /* without trailing slashes: "http://host:port/" is the same server */
    const char *key;
} remote_t;

/* Removes --url/--key from argv (in place); returns the new argc. */
static int take_globals(int argc, char **argv, remote_t *r)
{
    r->url = getenv("BASALT_URL");
    r->key = getenv("BASALT_API_KEY");
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
        argv[k++] = argv[i];
    }
    size_t n = strlen(r->url);
    while (n > 0 && r->url[n - 1] == '/')
        n--;
    r->url_len = (int)n;
    return k;
}

/* Performs a call; prints the body (or the error) and returns the exit code. */
static int call(const remote_t *r, const char *method, const char *path, const char *content_type,
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

static int model_push(const remote_t *r, int argc, char **argv)
{
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
        fprintf(stderr, "usage: basalt model push FILE --name NAME [--format F] [--schema S.json] "
                        "[--metric k=v]… [--param k=v]… [--tag T]… [--run ID] [--description D]\n");
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
            rc = call(r, "POST", "/v1/models", "application/json", mb, strlen(mb), &ignore);
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
    rc = call(r, "POST", path, ct, body.data, body.len, &out);
    bs_buf_free(&body);
    if (!rc) {
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

static int model_ls(const remote_t *r)
{
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = call(r, "GET", "/v1/models?limit=1000", NULL, NULL, 0, &out);
    if (!rc) {
        cJSON *j = cJSON_Parse(out.data);
        printf("%-32s %-8s %s\n", "NAME", "LATEST", "ALIASES");
        const cJSON *items = cJSON_GetObjectItem(j, "items"), *m;
        cJSON_ArrayForEach(m, items)
        {
            const cJSON *n = cJSON_GetObjectItem(m, "name"), *l = cJSON_GetObjectItem(m, "latest_version"),
                        *al = cJSON_GetObjectItem(m, "aliases"), *a;
            char aliases[512] = "";
            size_t k = 0;
            cJSON_ArrayForEach(a, al)
            {
                int w = snprintf(aliases + k, sizeof aliases - k, "%s%s=%d", k ? " " : "", a->string,
                                 a->valueint);
                if (w > 0 && (size_t)w < sizeof aliases - k)
                    k += (size_t)w;
            }
            char latest[16] = "-";
            if (cJSON_IsNumber(l))
                snprintf(latest, sizeof latest, "%d", l->valueint);
            printf("%-32s %-8s %s\n", cJSON_IsString(n) ? n->valuestring : "?", latest, aliases);
        }
        cJSON_Delete(j);
    }
    bs_buf_free(&out);
    return rc;
}

static int positive(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v > 0 && v < 1000000000 ? (int)v : 0;
}

/* Writes version v's artifact, byte for byte, to file (NULL = standard output). */
static int model_pull(const remote_t *r, const char *name, int v, const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/versions/%d/artifact", name, v);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = call(r, "GET", path, NULL, NULL, 0, &b);
    if (!rc) {
        FILE *f = file ? fopen(file, "wb") : stdout;
        int ok = f && fwrite(b.data ? b.data : "", 1, b.len, f) == b.len;
        if (f && file)
            ok = fclose(f) == 0 && ok;
        if (!ok) {
            fprintf(stderr, "basalt: cannot write %s: %s\n", file ? file : "standard output",
                    strerror(errno));
            rc = 1;
        } else if (file) {
            fprintf(stderr, "pulled %s version %d to %s (%zu bytes)\n", name, v, file, b.len);
        }
    }
    bs_buf_free(&b);
    return rc;
}

int bs_cli_model_remote(int argc, char **argv)
{
    remote_t r;
    argc = take_globals(argc, argv, &r);
    const char *cmd = argv[0];
    char path[512];
    if (!strcmp(cmd, "push"))
        return model_push(&r, argc, argv);
    if (!strcmp(cmd, "ls") || !strcmp(cmd, "list"))
        return model_ls(&r);
    if (!strcmp(cmd, "versions") && argc == 2) {
        snprintf(path, sizeof path, "/v1/models/%s/versions", argv[1]);
        return call(&r, "GET", path, NULL, NULL, 0, NULL);
    }
    if ((!strcmp(cmd, "approve") || !strcmp(cmd, "reject") || !strcmp(cmd, "archive")) &&
        (argc == 3 || (argc == 5 && !strcmp(argv[3], "--comment"))) && positive(argv[2])) {
        snprintf(path, sizeof path, "/v1/models/%s/versions/%d/%s", argv[1], positive(argv[2]), cmd);
        char body[2048] = "{}";
        if (argc == 5) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "comment", argv[4]);
            char *t = cJSON_PrintUnformatted(o);
            snprintf(body, sizeof body, "%s", t);
            free(t);
            cJSON_Delete(o);
        }
        return call(&r, "POST", path, "application/json", body, strlen(body), NULL);
    }
    if (!strcmp(cmd, "pull") && (argc == 3 || (argc == 5 && !strcmp(argv[3], "-o"))) &&
        positive(argv[2]))
        return model_pull(&r, argv[1], positive(argv[2]), argc == 5 ? argv[4] : NULL);
    if (!strcmp(cmd, "alias") && argc == 4 && positive(argv[3])) {
        snprintf(path, sizeof path, "/v1/models/%s/aliases/%s", argv[1], argv[2]);
        char body[64];
        snprintf(body, sizeof body, "{\"version\":%d}", positive(argv[3]));
        return call(&r, "PUT", path, "application/json", body, strlen(body), NULL);
    }
    bs_cli_model_usage(stderr);
    return 2;
}

void bs_cli_model_usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  basalt model check FILE [--format F] [--rows ROWS.json]   offline: load, print the schema,\n"
            "                                      predict positional rows ([[v, …], …])\n"
            "  basalt model push FILE --name N [--format F] [--schema S.json] [--metric k=v]…\n"
            "                    [--param k=v]… [--tag T]… [--run ID] [--description D]\n"
            "  basalt model ls\n"
            "  basalt model versions NAME\n"
            "  basalt model approve|reject NAME V [--comment C]\n"
            "  basalt model archive NAME V\n"
            "  basalt model alias NAME ALIAS V\n"
            "  basalt model pull NAME V [-o FILE]   the version's artifact, as uploaded\n"
            "client commands take --url URL --key KEY (or BASALT_URL, BASALT_API_KEY)\n");
}

int bs_cli_predict(int argc, char **argv)
{
    remote_t r;
    argc = take_globals(argc, argv, &r);
    int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (argc != 3) {
        fprintf(help ? stdout : stderr,
                "usage: basalt predict REF JSON|@FILE|-\n"
                "  REF:  name, name@alias or name/versions/N\n"
                "  JSON: {\"feature\": value, …}, [{…}, …] or a full predict body; @FILE reads it\n"
                "        from a file, - from standard input\n");
        return help ? 0 : 2;
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
    if (!(cJSON_IsObject(j) && (cJSON_GetObjectItem(j, "inputs") || cJSON_GetObjectItem(j, "instances")))) {
        cJSON *w = cJSON_CreateObject();
        cJSON_AddItemToObject(w, "inputs", j);
        j = w;
    }
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char path[512];
    snprintf(path, sizeof path, "/v1/models/%s/predict", ref);
    int rc = call(&r, "POST", path, "application/json", body, strlen(body), NULL);
    free(body);
    return rc;
}
