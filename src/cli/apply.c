/*
 * `basalt apply -f FILE|DIR [--dry-run]`, `basalt get KIND [NAME] [-o json|yaml]` and
 * `basalt delete KIND NAME` (DESIGN.md "Declarative resources"): kubectl's verbs over
 * the server's resources API. The kinds and their paths come from GET /v1/kinds, so a
 * kind a subsystem adds needs nothing here.
 *
 * apply reads YAML (libyaml's event parser, several documents per file) or JSON files;
 * each document is {kind, name, spec} and goes to PUT <path>/<name> as it is, one
 * request per document, in file order (files of a directory in name order). A failing
 * document is reported and the others still go; the exit status is 1 if any failed.
 * --dry-run asks the server (PUT ?dry_run=true: validated and compared, nothing written)
 * and prints a line diff of the normalised spec against the stored one.
 *
 * YAML scalars resolve by the YAML 1.2 core schema (null, true/false, integers, floats;
 * quoted scalars are strings); anchors and aliases are expanded; merge keys are not
 * supported. get -o yaml writes documents that apply takes back.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "base/buf.h"
#include "base/json.h"
#include "cli/cli.h"
#include "http/client.h"

typedef bs_cli_remote_t remote_t;

/* ---- talking to the server ---------------------------------------------------------------- */

/* One request: 0 with *status and the body in out, or 1 (no answer; reported). */
static int request(const remote_t *r, const char *method, const char *path, const char *body,
                   int *status, bs_buf_t *out)
{
    char url[2048], auth[300];
    snprintf(url, sizeof url, "%.*s%s", r->url_len, r->url, path);
    const char *headers[3];
    int nh = 0;
    if (r->key && *r->key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", r->key);
        headers[nh++] = auth;
    }
    if (body)
        headers[nh++] = "Content-Type: application/json";
    headers[nh] = NULL;
    bs_http_response_t resp;
    bs_err_t err;
    if (bs_http_request(method, url, headers, body, body ? strlen(body) : 0, 60000, &resp, &err)) {
        fprintf(stderr, "basalt: %s\n", err.msg);
        return 1;
    }
    *status = resp.status;
    bs_buf_append(out, resp.body.data ? resp.body.data : "", resp.body.len);
    bs_buf_putc(out, '\0');
    out->len--;
    bs_buf_free(&resp.body);
    return 0;
}

/* The server's error message of a non-2xx body ("message (field f)"), into msg. */
static void error_message(const char *body, int status, char *msg, size_t n)
{
    cJSON *j = cJSON_Parse(body ? body : "");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "field");
    if (cJSON_IsString(m) && cJSON_IsString(f) && *f->valuestring)
        snprintf(msg, n, "%s (field %s)", m->valuestring, f->valuestring);
    else if (cJSON_IsString(m))
        snprintf(msg, n, "%s", m->valuestring);
    else
        snprintf(msg, n, "the server answered %d", status);
    cJSON_Delete(j);
}

typedef struct {
    char kind[64], plural[64], path[128];
} kind_t;

typedef struct {
    kind_t *v;
    int n;
} kinds_t;

/* GET /v1/kinds. 0, or the exit code (reported). */
static int load_kinds(const remote_t *r, kinds_t *k)
{
    memset(k, 0, sizeof *k);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(r, "GET", "/v1/kinds", NULL, NULL, 0, &out);
    if (rc) {
        bs_buf_free(&out);
        return rc;
    }
    cJSON *j = cJSON_Parse(out.data ? out.data : "");
    bs_buf_free(&out);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items"), *it;
    k->v = calloc((size_t)cJSON_GetArraySize(items) + 1, sizeof *k->v);
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *kd = cJSON_GetObjectItem(it, "kind"), *pl = cJSON_GetObjectItem(it, "plural"),
                    *pa = cJSON_GetObjectItem(it, "path");
        if (!cJSON_IsString(kd) || !cJSON_IsString(pl) || !cJSON_IsString(pa))
            continue;
        kind_t *x = &k->v[k->n++];
        snprintf(x->kind, sizeof x->kind, "%s", kd->valuestring);
        snprintf(x->plural, sizeof x->plural, "%s", pl->valuestring);
        snprintf(x->path, sizeof x->path, "%s", pa->valuestring);
    }
    cJSON_Delete(j);
    return 0;
}

/* "Topic", "topic", "topics" (and any case) name the kind Topic. */
static const kind_t *find_kind(const kinds_t *k, const char *s)
{
    for (int i = 0; i < k->n; i++) {
        const kind_t *x = &k->v[i];
        size_t pl = strlen(x->plural);
        if (!strcasecmp(x->kind, s) || !strcasecmp(x->plural, s) ||
            (pl > 1 && strlen(s) == pl - 1 && !strncasecmp(x->plural, s, pl - 1)))
            return x;
    }
    return NULL;
}

static void unknown_kind(const kinds_t *k, const char *s)
{
    fprintf(stderr, "basalt: unknown kind '%s' (the server knows:", s);
    for (int i = 0; i < k->n; i++)
        fprintf(stderr, "%s %s", i ? "," : "", k->v[i].kind);
    fprintf(stderr, "%s)\n", k->n ? "" : " none");
}

/* "topic" for Topic: what apply, get and delete print before the name. */
static void lower(const char *s, char *out, size_t n)
{
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = 0;
}

/* ---- YAML in ------------------------------------------------------------------------------ */

typedef struct {
    yaml_parser_t p;
    const char *file;
    char err[512];
    struct {
        char *name;
        cJSON *node;
    } anchors[256];
    int n_anchors;
} yin_t;

static int yfail(yin_t *y, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int yfail(yin_t *y, const char *fmt, ...)
{
    if (!y->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(y->err, sizeof y->err, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int next_event(yin_t *y, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&y->p, ev))
        return yfail(y, "%s:%zu:%zu: %s%s%s", y->file, y->p.problem_mark.line + 1,
                     y->p.problem_mark.column + 1, y->p.problem ? y->p.problem : "invalid YAML",
                     y->p.context ? " " : "", y->p.context ? y->p.context : "");
    return 0;
}

static int match(const char *s, const char *re_chars_first, const char *re_chars_rest)
{
    if (!*s || !strchr(re_chars_first, *s))
        return 0;
    for (s++; *s; s++)
        if (!strchr(re_chars_rest, *s))
            return 0;
    return 1;
}

/* A plain scalar by the YAML 1.2 core schema (§10.3.2). */
static cJSON *plain_scalar(const char *s)
{
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
        return cJSON_CreateNull();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return cJSON_CreateTrue();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return cJSON_CreateFalse();
    const char *d = s + (*s == '-' || *s == '+');
    if (match(d, "0123456789", "0123456789"))
        return cJSON_CreateNumber(strtod(s, NULL));
    if (!strncmp(s, "0x", 2) && match(s + 2, "0123456789abcdefABCDEF", "0123456789abcdefABCDEF"))
        return cJSON_CreateNumber((double)strtoll(s + 2, NULL, 16));
    if (!strncmp(s, "0o", 2) && match(s + 2, "01234567", "01234567"))
        return cJSON_CreateNumber((double)strtoll(s + 2, NULL, 8));
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    const char *p = d;
    int digits = 0;
    while (isdigit((unsigned char)*p))
        p++, digits++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p))
            p++, digits++;
    }
    if (digits && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!isdigit((unsigned char)*p))
            return cJSON_CreateString(s);
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (digits && !*p) {
        double v = strtod(s, NULL);
        if (isfinite(v))
            return cJSON_CreateNumber(v);
    }
    return cJSON_CreateString(s);
}

static cJSON *scalar(const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag && !strcmp(tag, YAML_STR_TAG))
        return cJSON_CreateString(s);
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE && !tag)
        return cJSON_CreateString(s);
    return plain_scalar(s);
}

static void remember(yin_t *y, const yaml_char_t *anchor, const cJSON *node)
{
    if (!anchor || y->n_anchors == 256)
        return;
    y->anchors[y->n_anchors].name = strdup((const char *)anchor);
    y->anchors[y->n_anchors].node = cJSON_Duplicate(node, 1);
    y->n_anchors++;
}

/* The node that starts with ev (consumed). NULL with y->err. */
static cJSON *node(yin_t *y, yaml_event_t *ev, int depth)
{
    if (depth > 64) {
        yfail(y, "%s: nesting deeper than 64", y->file);
        return NULL;
    }
    cJSON *out = NULL;
    yaml_char_t *anchor = NULL;
    if (ev->type == YAML_ALIAS_EVENT) {
        for (int i = y->n_anchors - 1; i >= 0; i--)
            if (!strcmp(y->anchors[i].name, (const char *)ev->data.alias.anchor))
                return cJSON_Duplicate(y->anchors[i].node, 1);
        yfail(y, "%s:%zu: unknown alias *%s", y->file, ev->start_mark.line + 1,
              (const char *)ev->data.alias.anchor);
        return NULL;
    }
    if (ev->type == YAML_SCALAR_EVENT) {
        out = scalar(ev);
        remember(y, ev->data.scalar.anchor, out);
        return out;
    }
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor ? (yaml_char_t *)strdup(
                                                      (const char *)ev->data.sequence_start.anchor)
                                                : NULL;
        out = cJSON_CreateArray();
        for (;;) {
            yaml_event_t e;
            if (next_event(y, &e))
                break;
            if (e.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&e);
                remember(y, anchor, out);
                free(anchor);
                return out;
            }
            cJSON *item = node(y, &e, depth + 1);
            yaml_event_delete(&e);
            if (!item)
                break;
            cJSON_AddItemToArray(out, item);
        }
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor
                     ? (yaml_char_t *)strdup((const char *)ev->data.mapping_start.anchor)
                     : NULL;
        out = cJSON_CreateObject();
        for (;;) {
            yaml_event_t k;
            if (next_event(y, &k))
                break;
            if (k.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&k);
                remember(y, anchor, out);
                free(anchor);
                return out;
            }
            if (k.type != YAML_SCALAR_EVENT) {
                yfail(y, "%s:%zu: mapping keys must be scalars", y->file, k.start_mark.line + 1);
                yaml_event_delete(&k);
                break;
            }
            char *key = strdup((const char *)k.data.scalar.value);
            size_t line = k.start_mark.line + 1;
            yaml_event_delete(&k);
            if (!strcmp(key, "<<")) {
                yfail(y, "%s:%zu: merge keys (<<) are not supported", y->file, line);
                free(key);
                break;
            }
            if (cJSON_GetObjectItemCaseSensitive(out, key)) {
                yfail(y, "%s:%zu: duplicate key '%s'", y->file, line, key);
                free(key);
                break;
            }
            yaml_event_t v;
            if (next_event(y, &v)) {
                free(key);
                break;
            }
            cJSON *val = node(y, &v, depth + 1);
            yaml_event_delete(&v);
            if (!val) {
                free(key);
                break;
            }
            cJSON_AddItemToObject(out, key, val);
            free(key);
        }
    } else {
        yfail(y, "%s:%zu: unexpected YAML event", y->file, ev->start_mark.line + 1);
    }
    free(anchor);
    cJSON_Delete(out);
    return NULL;
}

/* Every document of text (YAML, JSON being YAML too) appended to docs. 0 or -1 (msg). */
static int parse_yaml(const char *file, const char *text, size_t len, cJSON *docs, char *msg,
                      size_t n)
{
    yin_t *y = calloc(1, sizeof *y);
    y->file = file;
    yaml_parser_initialize(&y->p);
    yaml_parser_set_input_string(&y->p, (const unsigned char *)text, len);
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (next_event(y, &ev)) {
            rc = -1;
            break;
        }
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT ||
            t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        cJSON *d = node(y, &ev, 0);
        yaml_event_delete(&ev);
        if (!d) {
            rc = -1;
            break;
        }
        if (cJSON_IsNull(d)) /* an empty document ("---" at the end) */
            cJSON_Delete(d);
        else
            cJSON_AddItemToArray(docs, d);
    }
    if (rc)
        snprintf(msg, n, "%s", y->err[0] ? y->err : "invalid YAML");
    yaml_parser_delete(&y->p);
    for (int i = 0; i < y->n_anchors; i++) {
        free(y->anchors[i].name);
        cJSON_Delete(y->anchors[i].node);
    }
    free(y);
    return rc;
}

/* ---- YAML out ----------------------------------------------------------------------------- */

static int buf_write(void *data, unsigned char *buffer, size_t size)
{
    bs_buf_append(data, buffer, size);
    return 1;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, int is_string)
{
    yaml_event_t ev;
    int quoted = 0;
    if (is_string) {
        cJSON *as = plain_scalar(s);
        quoted = !cJSON_IsString(as) || !*s || isspace((unsigned char)s[0]) ||
                 (*s && isspace((unsigned char)s[strlen(s) - 1]));
        cJSON_Delete(as);
    }
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), !quoted, quoted,
                                 quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
    return yaml_emitter_emit(e, &ev);
}

static int emit_node(yaml_emitter_t *e, const cJSON *j)
{
    yaml_event_t ev;
    if (cJSON_IsObject(j)) {
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                            j->child ? YAML_BLOCK_MAPPING_STYLE
                                                     : YAML_FLOW_MAPPING_STYLE);
        if (!yaml_emitter_emit(e, &ev))
            return 0;
        for (const cJSON *m = j->child; m; m = m->next)
            if (!emit_scalar(e, m->string, 1) || !emit_node(e, m))
                return 0;
        yaml_mapping_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev);
    }
    if (cJSON_IsArray(j)) {
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                             j->child ? YAML_BLOCK_SEQUENCE_STYLE
                                                      : YAML_FLOW_SEQUENCE_STYLE);
        if (!yaml_emitter_emit(e, &ev))
            return 0;
        for (const cJSON *m = j->child; m; m = m->next)
            if (!emit_node(e, m))
                return 0;
        yaml_sequence_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev);
    }
    if (cJSON_IsString(j))
        return emit_scalar(e, j->valuestring, 1);
    char num[64];
    if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) < 9e15)
            snprintf(num, sizeof num, "%.0f", v);
        else
            snprintf(num, sizeof num, "%.17g", v);
    } else {
        snprintf(num, sizeof num, "%s", cJSON_IsTrue(j) ? "true" : cJSON_IsFalse(j) ? "false" : "null");
    }
    return emit_scalar(e, num, 0);
}

/* Writes docs (a JSON array) as YAML documents ("---" before each) into b. */
static int to_yaml(const cJSON *docs, bs_buf_t *b, int explicit_start)
{
    yaml_emitter_t e;
    yaml_event_t ev;
    yaml_emitter_initialize(&e);
    yaml_emitter_set_output(&e, buf_write, b);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, 100);
    int ok = 1;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    ok = ok && yaml_emitter_emit(&e, &ev);
    for (const cJSON *d = docs->child; ok && d; d = d->next) {
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, !explicit_start);
        ok = yaml_emitter_emit(&e, &ev) && emit_node(&e, d);
        yaml_document_end_event_initialize(&ev, 1);
        ok = ok && yaml_emitter_emit(&e, &ev);
    }
    yaml_stream_end_event_initialize(&ev);
    ok = ok && yaml_emitter_emit(&e, &ev);
    yaml_emitter_flush(&e);
    yaml_emitter_delete(&e);
    bs_buf_putc(b, '\0');
    b->len--;
    return ok ? 0 : -1;
}

/* ---- diff -------------------------------------------------------------------------------- */

static int split_lines(char *s, char ***out)
{
    int n = 0, cap = 16;
    char **v = malloc((size_t)cap * sizeof *v);
    for (char *p = s; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (n == cap)
            v = realloc(v, (size_t)(cap *= 2) * sizeof *v);
        v[n++] = p;
        p = nl ? nl + 1 : NULL;
    }
    *out = v;
    return n;
}

/* Prints a line diff of a (old) and b (new): "  " same, "- " removed, "+ " added (LCS). */
static void print_diff(const char *a, const char *b)
{
    char *ca = strdup(a ? a : ""), *cb = strdup(b ? b : "");
    char **la, **lb;
    int na = split_lines(ca, &la), nb = split_lines(cb, &lb);
    int *t = calloc((size_t)(na + 1) * (size_t)(nb + 1), sizeof *t);
#define T(i, j) t[(size_t)(i) * (size_t)(nb + 1) + (size_t)(j)]
    for (int i = na - 1; i >= 0; i--)
        for (int j = nb - 1; j >= 0; j--)
            T(i, j) = !strcmp(la[i], lb[j]) ? T(i + 1, j + 1) + 1
                                            : (T(i + 1, j) > T(i, j + 1) ? T(i + 1, j) : T(i, j + 1));
    int i = 0, j = 0;
    while (i < na || j < nb) {
        if (i < na && j < nb && !strcmp(la[i], lb[j])) {
            printf("    %s\n", la[i]);
            i++, j++;
        } else if (i < na && (j == nb || T(i + 1, j) >= T(i, j + 1))) {
            printf("  - %s\n", la[i++]);
        } else {
            printf("  + %s\n", lb[j++]);
        }
    }
#undef T
    free(t);
    free(la);
    free(lb);
    free(ca);
    free(cb);
}

static char *spec_yaml(const cJSON *spec)
{
    if (!spec)
        return strdup("");
    cJSON *docs = cJSON_CreateArray();
    cJSON_AddItemReferenceToArray(docs, (cJSON *)spec);
    bs_buf_t b;
    bs_buf_init(&b);
    to_yaml(docs, &b, 0);
    cJSON_Delete(docs);
    /* drop the document end marker libyaml may write ("...") */
    char *s = bs_buf_take(&b);
    if (!s)
        return strdup("");
    size_t n = strlen(s);
    if (n >= 4 && !strcmp(s + n - 4, "...\n"))
        s[n - 4] = 0;
    return s;
}

/* ---- apply ------------------------------------------------------------------------------- */

/* The file's bytes ("-": standard input), NUL-terminated; NULL after reporting. */
static char *slurp(const char *path, size_t *len)
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
    bs_buf_putc(&b, '\0');
    return bs_buf_take(&b);
}

static int has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), e = strlen(ext);
    return n > e && !strcasecmp(name + n - e, ext);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends to docs every document of path (a file, "-", or a directory's *.yaml, *.yml and
 * *.json files in name order), each as {"file", "index", "doc"}. 0 or 1 (reported). */
static int read_docs(const char *path, cJSON *docs)
{
    struct stat st;
    if (strcmp(path, "-") && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            fprintf(stderr, "basalt: cannot read directory %s: %s\n", path, strerror(errno));
            return 1;
        }
        char **names = NULL;
        int n = 0, cap = 0, rc = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.' &&
                (has_ext(e->d_name, ".yaml") || has_ext(e->d_name, ".yml") ||
                 has_ext(e->d_name, ".json"))) {
                if (n == cap)
                    names = realloc(names, (size_t)(cap = cap ? cap * 2 : 16) * sizeof *names);
                size_t l = strlen(path) + strlen(e->d_name) + 2;
                names[n] = malloc(l);
                snprintf(names[n++], l, "%s/%s", path, e->d_name);
            }
        closedir(d);
        if (n > 1)
            qsort(names, (size_t)n, sizeof *names, cmp_str);
        for (int i = 0; i < n; i++) {
            if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && read_docs(names[i], docs))
                rc = 1;
            free(names[i]);
        }
        free(names);
        if (n == 0)
            fprintf(stderr, "basalt: %s holds no .yaml, .yml or .json files\n", path);
        return rc || n == 0;
    }
    size_t len;
    char *text = slurp(path, &len);
    if (!text)
        return 1;
    cJSON *found = cJSON_CreateArray();
    char msg[600];
    int rc = 0;
    if (has_ext(path, ".json")) {
        bs_err_t err;
        cJSON *j = bs_json_parse(text, len, 256, &err);
        if (!j) {
            fprintf(stderr, "basalt: %s: %s\n", path, err.msg);
            rc = 1;
        } else if (cJSON_IsArray(j)) {
            cJSON *it;
            while ((it = cJSON_DetachItemFromArray(j, 0)))
                cJSON_AddItemToArray(found, it);
            cJSON_Delete(j);
        } else {
            cJSON_AddItemToArray(found, j);
        }
    } else if (parse_yaml(path, text, len, found, msg, sizeof msg)) {
        fprintf(stderr, "basalt: %s\n", msg);
        rc = 1;
    }
    free(text);
    int i = 0;
    cJSON *d;
    while ((d = cJSON_DetachItemFromArray(found, 0))) {
        cJSON *w = cJSON_CreateObject();
        cJSON_AddStringToObject(w, "file", path);
        cJSON_AddNumberToObject(w, "index", ++i);
        cJSON_AddItemToObject(w, "doc", d);
        cJSON_AddItemToArray(docs, w);
    }
    cJSON_Delete(found);
    return rc;
}

/* The fields a document may carry: what get -o yaml writes (the read-only ones ignored). */
static const char *const doc_fields[] = {"kind",       "name",       "spec",       "apiVersion",
                                         "metadata",   "tenant",     "generation", "created_at",
                                         "updated_at", "created_by", "updated_by", "status",
                                         NULL};

static int apply_one(const remote_t *r, const kinds_t *kinds, const cJSON *w, int dry_run)
{
    const char *file = cJSON_GetObjectItem(w, "file")->valuestring;
    int index = cJSON_GetObjectItem(w, "index")->valueint;
    const cJSON *doc = cJSON_GetObjectItem(w, "doc");
    char where[1200];
    snprintf(where, sizeof where, "%s, document %d", file, index);
    bs_err_t err;
    if (!cJSON_IsObject(doc)) {
        fprintf(stderr, "basalt: %s: a document must be a mapping {kind, name, spec}\n", where);
        return 1;
    }
    if (bs_json_reject_unknown(doc, doc_fields, &err)) {
        fprintf(stderr, "basalt: %s: unknown field '%s' (a document is {kind, name, spec})\n",
                where, err.field);
        return 1;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(doc, "kind");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "name");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(doc, "spec");
    if (!name) /* Kubernetes' place for it */
        name = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "metadata"),
                                                "name");
    if (!cJSON_IsString(kind) || !cJSON_IsString(name)) {
        fprintf(stderr, "basalt: %s: a document needs kind and name (strings)\n", where);
        return 1;
    }
    const kind_t *k = find_kind(kinds, kind->valuestring);
    if (!k) {
        fprintf(stderr, "basalt: %s: ", where);
        unknown_kind(kinds, kind->valuestring);
        return 1;
    }
    char lk[64];
    lower(k->kind, lk, sizeof lk);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "kind", k->kind);
    cJSON_AddStringToObject(body, "name", name->valuestring);
    cJSON_AddItemToObject(body, "spec",
                          spec && !cJSON_IsNull(spec) ? cJSON_Duplicate(spec, 1)
                                                      : cJSON_CreateObject());
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    bs_buf_t path;
    bs_buf_init(&path);
    bs_buf_printf(&path, "%s/", k->path);
    bs_cli_put_encoded(&path, name->valuestring);
    size_t base_len = path.len;
    if (dry_run)
        bs_buf_puts(&path, "?dry_run=true");
    bs_buf_t out;
    bs_buf_init(&out);
    int status = 0;
    int rc = request(r, "PUT", path.data, text, &status, &out);
    free(text);
    if (!rc && (status < 200 || status > 299)) {
        char msg[600];
        error_message(out.data, status, msg, sizeof msg);
        fprintf(stderr, "basalt: %s/%s (%s): %s\n", lk, name->valuestring, where, msg);
        rc = 1;
    }
    if (!rc) {
        cJSON *res = cJSON_Parse(out.data ? out.data : "");
        const cJSON *oc = cJSON_GetObjectItemCaseSensitive(res, "outcome");
        const char *outcome = cJSON_IsString(oc) ? oc->valuestring
                              : status == 201    ? "created"
                                                 : "updated";
        if (r->json) {
            printf("%s\n", out.data ? out.data : "");
        } else {
            printf("%s/%s %s%s\n", lk, name->valuestring, outcome, dry_run ? " (dry run)" : "");
        }
        if (dry_run && !r->json && strcmp(outcome, "unchanged") != 0) {
            /* the stored spec (as GET shows it) against the normalised new one */
            path.len = base_len;
            path.data[base_len] = 0;
            bs_buf_t cur;
            bs_buf_init(&cur);
            int st = 0;
            cJSON *stored = NULL;
            if (request(r, "GET", path.data, NULL, &st, &cur) == 0 && st == 200)
                stored = cJSON_Parse(cur.data ? cur.data : "");
            char *a = spec_yaml(cJSON_GetObjectItemCaseSensitive(stored, "spec"));
            char *b = spec_yaml(cJSON_GetObjectItemCaseSensitive(res, "spec"));
            print_diff(a, b);
            free(a);
            free(b);
            cJSON_Delete(stored);
            bs_buf_free(&cur);
        }
        cJSON_Delete(res);
    }
    bs_buf_free(&out);
    bs_buf_free(&path);
    return rc;
}

int bs_cli_apply(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    int dry_run = 0, nfiles = 0;
    const char *files[256];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dry-run")) {
            dry_run = 1;
        } else if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filename")) && i + 1 < argc) {
            if (nfiles < 256)
                files[nfiles++] = argv[++i];
        } else if (!strncmp(argv[i], "--filename=", 11) && nfiles < 256) {
            files[nfiles++] = argv[i] + 11;
        } else {
            fprintf(stderr, "basalt: apply: unexpected argument '%s'\n", argv[i]);
            bs_cli_usage(stderr, NULL, "apply");
            return 2;
        }
    }
    if (!nfiles) {
        bs_cli_usage(stderr, NULL, "apply");
        return 2;
    }
    cJSON *docs = cJSON_CreateArray();
    int failed = 0;
    for (int i = 0; i < nfiles; i++)
        failed |= read_docs(files[i], docs);
    if (failed) { /* nothing is applied from a set of files that does not all parse */
        cJSON_Delete(docs);
        return 1;
    }
    if (!cJSON_GetArraySize(docs)) {
        fprintf(stderr, "basalt: apply: no documents found\n");
        cJSON_Delete(docs);
        return 1;
    }
    kinds_t kinds;
    int rc = load_kinds(&r, &kinds);
    if (rc) {
        cJSON_Delete(docs);
        return rc;
    }
    for (const cJSON *w = docs->child; w; w = w->next)
        failed |= apply_one(&r, &kinds, w, dry_run);
    free(kinds.v);
    cJSON_Delete(docs);
    return failed ? 1 : 0;
}

/* ---- get, delete -------------------------------------------------------------------------- */

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A resource as a document apply takes back: kind, name, spec first, then what the server
 * adds (generation, times, status), which apply ignores. */
static cJSON *as_doc(const cJSON *res)
{
    cJSON *d = cJSON_CreateObject();
    static const char *const order[] = {"kind",       "name",       "spec",       "generation",
                                        "created_at", "updated_at", "updated_by", "status",
                                        NULL};
    for (int i = 0; order[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(res, order[i]);
        if (v)
            cJSON_AddItemToObject(d, order[i], cJSON_Duplicate(v, 1));
    }
    return d;
}

int bs_cli_get(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *kind = NULL, *name = NULL, *output = r.json ? "json" : NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc)
            output = argv[++i];
        else if (!strncmp(argv[i], "-o", 2) && argv[i][2])
            output = argv[i] + 2 + (argv[i][2] == '=');
        else if (!kind && argv[i][0] != '-')
            kind = argv[i];
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else {
            fprintf(stderr, "basalt: get: unexpected argument '%s'\n", argv[i]);
            bs_cli_usage(stderr, NULL, "get");
            return 2;
        }
    }
    if (!kind || (output && strcmp(output, "json") && strcmp(output, "yaml"))) {
        if (output && strcmp(output, "json") && strcmp(output, "yaml"))
            fprintf(stderr, "basalt: get: -o takes json or yaml, not '%s'\n", output);
        bs_cli_usage(stderr, NULL, "get");
        return 2;
    }
    kinds_t kinds;
    int rc = load_kinds(&r, &kinds);
    if (rc)
        return rc;
    const kind_t *k = find_kind(&kinds, kind);
    if (!k) {
        unknown_kind(&kinds, kind);
        free(kinds.v);
        return 1;
    }
    bs_buf_t path;
    bs_buf_init(&path);
    bs_buf_puts(&path, k->path);
    cJSON *items = NULL, *one = NULL;
    if (name) {
        bs_buf_putc(&path, '/');
        bs_cli_put_encoded(&path, name);
        bs_buf_t out;
        bs_buf_init(&out);
        rc = bs_cli_call(&r, "GET", path.data, NULL, NULL, 0, &out);
        if (!rc)
            one = cJSON_Parse(out.data ? out.data : "");
        bs_buf_free(&out);
        if (!rc && !one) {
            fprintf(stderr, "basalt: GET %s: the answer is not JSON\n", path.data);
            rc = 1;
        }
        if (!rc) {
            items = cJSON_CreateArray();
            cJSON_AddItemReferenceToArray(items, one);
        }
    } else {
        bs_buf_puts(&path, "?limit=1000");
        rc = bs__cli_list_all(&r, path.data, &items);
    }
    bs_buf_free(&path);
    if (rc) {
        free(kinds.v);
        return rc;
    }
    if (output && !strcmp(output, "json")) {
        if (one) {
            char *t = cJSON_PrintUnformatted(one);
            printf("%s\n", t ? t : "{}");
            free(t);
        } else {
            bs__cli_print_items(items);
        }
    } else if (output) {
        cJSON *docs = cJSON_CreateArray();
        for (const cJSON *it = items->child; it; it = it->next)
            cJSON_AddItemToArray(docs, as_doc(it));
        bs_buf_t b;
        bs_buf_init(&b);
        to_yaml(docs, &b, 1);
        fwrite(b.data ? b.data : "", 1, b.len, stdout);
        bs_buf_free(&b);
        cJSON_Delete(docs);
    } else {
        bs_cli_table_t t;
        bs_cli_table_init(&t, 4);
        bs_cli_table_row(&t, "NAME", "GENERATION", "UPDATED", "UPDATED BY");
        for (const cJSON *it = items->child; it; it = it->next) {
            char gen[32] = "-";
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(it, "generation");
            if (cJSON_IsNumber(g))
                snprintf(gen, sizeof gen, "%.0f", g->valuedouble);
            bs_cli_table_row(&t, str_of(it, "name"), gen, str_of(it, "updated_at"),
                             str_of(it, "updated_by"));
        }
        if (t.nrows > 1)
            bs_cli_table_print(&t, stdout);
        else
            printf("no %s\n", k->plural);
        bs_cli_table_free(&t);
    }
    cJSON_Delete(items);
    cJSON_Delete(one);
    free(kinds.v);
    return 0;
}

int bs_cli_delete(int argc, char **argv)
{
    remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
        bs_cli_usage(stderr, NULL, "delete");
        return 2;
    }
    kinds_t kinds;
    int rc = load_kinds(&r, &kinds);
    if (rc)
        return rc;
    const kind_t *k = find_kind(&kinds, argv[1]);
    if (!k) {
        unknown_kind(&kinds, argv[1]);
        free(kinds.v);
        return 1;
    }
    bs_buf_t path;
    bs_buf_init(&path);
    bs_buf_printf(&path, "%s/", k->path);
    bs_cli_put_encoded(&path, argv[2]);
    bs_buf_t out;
    bs_buf_init(&out);
    rc = bs_cli_call(&r, "DELETE", path.data, NULL, NULL, 0, &out);
    if (!rc) {
        char lk[64];
        lower(k->kind, lk, sizeof lk);
        if (r.json) {
            bs_buf_t j;
            bs_buf_init(&j);
            bs_jw_obj_begin(&j);
            bs_jw_key(&j, "kind");
            bs_jw_str(&j, k->kind);
            bs_jw_key(&j, "name");
            bs_jw_str(&j, argv[2]);
            bs_jw_key(&j, "deleted");
            bs_jw_bool(&j, 1);
            bs_jw_obj_end(&j);
            printf("%.*s\n", (int)j.len, j.data ? j.data : "");
            bs_buf_free(&j);
        } else
            printf("%s/%s deleted\n", lk, argv[2]);
    }
    bs_buf_free(&out);
    bs_buf_free(&path);
    free(kinds.v);
    return rc;
}
