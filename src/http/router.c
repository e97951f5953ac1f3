/*
 * Route matching. Patterns are compiled into segments at start; matching
 * walks the route table comparing segment by segment (a few dozen routes,
 * so a linear scan over precompiled segments beats a trie in simplicity and
 * is well under a microsecond). A path that matches some route with a
 * different method yields 405 with the Allow list (RFC 9110 §15.5.6).
 *
 * When several patterns match one path, the most specific owns it, whatever the table
 * order: patterns are ordered by their segment kinds, compared left to right (a literal
 * before a parameter before a rest parameter), so /v1/webhooks/deliveries owns that path
 * for every method (another method there is a 405 listing its methods), and
 * /v1/webhooks/{name} gets every other name.
 */
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

#define MAX_SEGS 12

typedef struct {
    const char *text; /* literal, or parameter name */
    size_t len;
    int is_param;
    int is_rest; /* {name*}: matches the remaining path */
} seg_t;

typedef struct {
    int n_segs;
    int has_rest; /* last segment takes the rest of the path */
    seg_t segs[MAX_SEGS];
    size_t method_len;
} compiled_t;

struct bs_router {
    const bs_route_t *routes;
    int n;
    compiled_t *c;
    int *order;  /* route indexes, most specific first (see above) */
    char *names; /* parameter names, NUL-terminated copies */
};

/* Segment kind for ordering: literal 0, parameter 1, rest 2. */
static int seg_kind(const seg_t *s) { return s->is_rest ? 2 : s->is_param ? 1 : 0; }

/* <0 when route a must be tried before route b. */
static int specificity_cmp(const bs_router_t *r, int a, int b)
{
    const compiled_t *x = &r->c[a], *y = &r->c[b];
    int n = x->n_segs < y->n_segs ? x->n_segs : y->n_segs;
    for (int i = 0; i < n; i++) {
        int d = seg_kind(&x->segs[i]) - seg_kind(&y->segs[i]);
        if (d)
            return d;
    }
    /* Lexicographic order on the kind vectors (a total order): a prefix first. */
    if (x->n_segs != y->n_segs)
        return x->n_segs - y->n_segs;
    return a - b;
}

bs_router_t *bs_router_new(const bs_route_t *routes, int n_routes, bs_err_t *err)
{
    bs_router_t *r = calloc(1, sizeof *r);
    size_t total = 0;
    for (int i = 0; i < n_routes; i++)
        total += strlen(routes[i].pattern) + 1;
    if (r) {
        r->c = calloc((size_t)n_routes + 1, sizeof *r->c);
        r->order = calloc((size_t)n_routes + 1, sizeof *r->order);
        r->names = malloc(total + 1);
    }
    if (!r || !r->c || !r->order || !r->names) {
        bs_router_free(r);
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    r->routes = routes;
    r->n = n_routes;
    char *np = r->names;
    for (int i = 0; i < n_routes; i++) {
        const char *p = routes[i].pattern;
        compiled_t *c = &r->c[i];
        c->method_len = strlen(routes[i].method);
        if (*p != '/')
            goto bad;
        while (*p == '/') {
            p++;
            const char *end = strchr(p, '/');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len == 0 && !end && c->n_segs == 0)
                break; /* "/" */
            if (c->n_segs == MAX_SEGS || len == 0)
                goto bad;
            seg_t *s = &c->segs[c->n_segs++];
            if (p[0] == '{' && p[len - 1] == '}') {
                s->is_param = 1;
                size_t nl = len - 2;
                if (nl && p[len - 2] == '*') {
                    s->is_rest = 1;
                    c->has_rest = 1;
                    nl--;
                }
                memcpy(np, p + 1, nl);
                np[nl] = '\0';
                s->text = np;
                s->len = nl;
                np += nl + 1;
            } else {
                s->text = p;
                s->len = len;
            }
            p += len;
        }
        continue;
    bad:
        bs_err_set(err, BS_EINVAL, "bad route pattern '%s'", routes[i].pattern);
        bs_router_free(r);
        return NULL;
    }
    /* Insertion sort (a few dozen routes, once): stable by the table index tiebreak. */
    for (int i = 0; i < n_routes; i++) {
        int k = i;
        while (k > 0 && specificity_cmp(r, i, r->order[k - 1]) < 0) {
            r->order[k] = r->order[k - 1];
            k--;
        }
        r->order[k] = i;
    }
    return r;
}

void bs_router_free(bs_router_t *r)
{
    if (!r)
        return;
    free(r->c);
    free(r->order);
    free(r->names);
    free(r);
}

int bs_router_count(const bs_router_t *r) { return r->n; }
const bs_route_t *bs_router_route(const bs_router_t *r, int i) { return &r->routes[i]; }

/* Matches path segments; fills params. Returns 1 on match. */
static int match_path(const compiled_t *c, const char *path, size_t path_len,
                      bs_route_param_t *params, int *n_params)
{
    const char *p = path, *end = path + path_len;
    int np = 0;
    for (int i = 0; i < c->n_segs; i++) {
        const seg_t *s = &c->segs[i];
        if (p >= end || *p != '/')
            return 0;
        p++;
        const char *q = s->is_rest ? end : memchr(p, '/', (size_t)(end - p));
        if (!q)
            q = end;
        size_t len = (size_t)(q - p);
        if (len == 0)
            return 0;
        if (s->is_param) {
            if (params && np < BS_HTTP_MAX_PARAMS) {
                params[np].name = s->text;
                params[np].value = p;
                params[np].len = len;
            }
            np++;
        } else if (len != s->len || memcmp(p, s->text, len) != 0) {
            return 0;
        }
        p = q;
    }
    if (c->n_segs == 0)
        return path_len == 1 && path[0] == '/';
    if (p != end)
        return 0;
    if (n_params)
        *n_params = np;
    return 1;
}

/* 1 if routes a and b have the same segment kinds (so, matching one path, one pattern). */
static int same_shape(const bs_router_t *r, int a, int b)
{
    const compiled_t *x = &r->c[a], *y = &r->c[b];
    if (x->n_segs != y->n_segs)
        return 0;
    for (int i = 0; i < x->n_segs; i++)
        if (seg_kind(&x->segs[i]) != seg_kind(&y->segs[i]))
            return 0;
    return 1;
}

static void allow_add(char *allow, size_t allow_len, size_t *alen, const char *m, size_t ml)
{
    if (!allow || *alen + ml + 3 >= allow_len || strstr(allow, m))
        return;
    if (*alen) {
        memcpy(allow + *alen, ", ", 2);
        *alen += 2;
    }
    memcpy(allow + *alen, m, ml);
    *alen += ml;
    allow[*alen] = '\0';
}

int bs_router_match(const bs_router_t *r, const char *method, size_t method_len, const char *path,
                    size_t path_len, bs_route_param_t *params, int *n_params, char *allow,
                    size_t allow_len)
{
    size_t alen = 0;
    if (allow && allow_len)
        allow[0] = '\0';
    /* Segments in the path: routes with another count cannot match (unless they end in a
     * rest parameter), which skips most of the table with one comparison. */
    int segs = 0;
    for (size_t k = 0; k < path_len; k++)
        segs += path[k] == '/';
    if (path_len == 1)
        segs = 0;
    /* The most specific pattern that matches the path owns it: the first match in
     * specificity order. Its routes (the same pattern, one per method; adjacent in that
     * order) are the candidates: /v1/webhooks/deliveries belongs to the delivery log for
     * every method, and another method there is a 405, not the webhook named so. */
    int owner = -1;
    for (int k = 0; k < r->n && owner < 0; k++) {
        int i = r->order[k];
        const compiled_t *c = &r->c[i];
        if (c->n_segs != segs && !(c->has_rest && segs >= c->n_segs))
            continue;
        if (match_path(c, path, path_len, NULL, NULL))
            owner = k;
    }
    if (owner < 0)
        return BS_ENOTFOUND;
    /* The route of this method, else (HEAD) the GET route, else 405 with the Allow list. */
    int head = method_len == 4 && memcmp(method, "HEAD", 4) == 0, get = -1;
    for (int k = owner; k < r->n && same_shape(r, r->order[owner], r->order[k]); k++) {
        int i = r->order[k];
        const compiled_t *c = &r->c[i];
        if (!match_path(c, path, path_len, NULL, NULL))
            continue; /* the same kinds of segments, other literals */
        const char *m = r->routes[i].method;
        if (c->method_len == method_len && memcmp(m, method, method_len) == 0) {
            match_path(c, path, path_len, params, n_params);
            return i;
        }
        if (head && strcmp(m, "GET") == 0)
            get = i;
        allow_add(allow, allow_len, &alen, m, c->method_len);
    }
    if (get >= 0) {
        match_path(&r->c[get], path, path_len, params, n_params);
        if (allow && allow_len)
            allow[0] = '\0';
        return get;
    }
    return BS_EMETHOD;
}
