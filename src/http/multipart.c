/* multipart/form-data parsing (RFC 7578, RFC 2046 §5.1): finds the boundary in
 * the Content-Type, splits the buffered body at delimiter lines and reads each
 * part's Content-Disposition name/filename and Content-Type. Zero-copy: part
 * data points into the body. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"

int bs_req_is_multipart(bs_req_t *req)
{
    const char *ct = bs_req_header(req, "content-type");
    return ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
}

static const char *memmem_s(const char *h, size_t hl, const char *n, size_t nl)
{
    return memmem(h, hl, n, nl);
}

/* The arena copy of n bytes of a parameter value; NULL when they hold a control byte (a
 * NUL would cut the C string short: name="artifact\0x" must not read as "artifact"). */
static const char *param_copy(bs_arena_t *a, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return NULL;
    return bs_arena_strndup(a, p, n);
}

/* Extracts param="value" or param=value from a header value into the arena. */
static const char *header_param(bs_arena_t *a, const char *v, size_t vl, const char *param)
{
    size_t pl = strlen(param);
    for (size_t i = 0; i + pl + 1 <= vl; i++) {
        if ((i == 0 || v[i - 1] == ';' || v[i - 1] == ' ') && strncasecmp(v + i, param, pl) == 0 &&
            v[i + pl] == '=') {
            const char *p = v + i + pl + 1, *end = v + vl;
            if (p < end && *p == '"') {
                p++;
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (!q)
                    return NULL;
                return param_copy(a, p, (size_t)(q - p));
            }
            const char *q = p;
            while (q < end && *q != ';' && *q != ' ')
                q++;
            return param_copy(a, p, (size_t)(q - p));
        }
    }
    return NULL;
}

int bs_req_multipart(bs_req_t *req, bs_form_part_t *parts, int max, bs_err_t *err)
{
    const char *ct = bs_req_header(req, "content-type");
    const char *boundary = ct ? header_param(&req->arena, ct, strlen(ct), "boundary") : NULL;
    if (!boundary || !*boundary || strlen(boundary) > 70)
        return bs_err_set(err, BS_EINVAL, "multipart body needs a boundary of 1-70 characters");
    char delim[80];
    size_t dl = (size_t)snprintf(delim, sizeof delim, "--%s", boundary);
    const char *body = req->body, *end = req->body + req->body_len;
    if (!body)
        return bs_err_set(err, BS_EINVAL, "multipart body is empty");
    const char *p = memmem_s(body, req->body_len, delim, dl);
    if (!p)
        return bs_err_set(err, BS_EINVAL, "multipart body has no boundary line");
    int n = 0;
    for (;;) {
        p += dl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return n; /* closing delimiter */
        /* skip transport padding and CRLF */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return bs_err_set(err, BS_EINVAL, "malformed multipart delimiter line");
        p += 2;
        const char *hdr_end = memmem_s(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hdr_end)
            return bs_err_set(err, BS_EINVAL, "multipart part has no header terminator");
        if (n == max)
            return bs_err_set(err, BS_EINVAL, "multipart body has more than %d parts", max);
        bs_form_part_t *part = &parts[n];
        memset(part, 0, sizeof *part);
        for (const char *line = p; line < hdr_end;) {
            const char *eol = memmem_s(line, (size_t)(hdr_end - line) + 2, "\r\n", 2);
            if (!eol)
                eol = hdr_end;
            size_t ll = (size_t)(eol - line);
            if (ll > 20 && strncasecmp(line, "content-disposition:", 20) == 0) {
                part->name = header_param(&req->arena, line + 20, ll - 20, "name");
                part->filename = header_param(&req->arena, line + 20, ll - 20, "filename");
            } else if (ll > 13 && strncasecmp(line, "content-type:", 13) == 0) {
                const char *v = line + 13;
                while (*v == ' ')
                    v++;
                part->content_type = bs_arena_strndup(&req->arena, v, (size_t)(eol - v));
            }
            line = eol + 2;
        }
        const char *data = hdr_end + 4;
        char next_delim[84];
        size_t nl = (size_t)snprintf(next_delim, sizeof next_delim, "\r\n%s", delim);
        const char *q = memmem_s(data, (size_t)(end - data), next_delim, nl);
        if (!q)
            return bs_err_set(err, BS_EINVAL, "multipart part is not terminated by the boundary");
        part->data = data;
        part->len = (size_t)(q - data);
        if (!part->name)
            return bs_err_set(err, BS_EINVAL, "multipart part %d has no name", n);
        n++;
        p = q + 2;
    }
}
