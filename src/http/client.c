/* Blocking HTTP/1.1 client; see client.h. */
#include "http/client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_all(int fd, const char *p, size_t n, int timeout_ms)
{
    while (n) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        if (poll(&pfd, 1, timeout_ms) <= 0)
            return -1;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Decodes a chunked body in place into out. */
static int dechunk(const char *p, size_t n, bs_buf_t *out)
{
    const char *end = p + n;
    for (;;) {
        char *e;
        unsigned long len = strtoul(p, &e, 16);
        const char *crlf = memmem(e, (size_t)(end - e), "\r\n", 2);
        if (!crlf || e == p)
            return -1;
        p = crlf + 2;
        if (len == 0)
            return 0;
        if ((size_t)(end - p) < len + 2)
            return -1;
        bs_buf_append(out, p, len);
        p += len + 2;
    }
}

int bs_http_request(const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, int timeout_ms, bs_http_response_t *resp,
                    bs_err_t *err)
{
    memset(resp, 0, sizeof *resp);
    if (strncmp(url, "http://", 7) != 0)
        return bs_err_set(err, BS_EINVAL, "only http:// URLs are supported, got '%.64s'", url);
    const char *hp = url + 7, *slash = strchr(hp, '/');
    char host[256], port[8] = "80";
    size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);
    if (hl == 0 || hl >= sizeof host)
        return bs_err_set(err, BS_EINVAL, "bad URL '%.64s'", url);
    memcpy(host, hp, hl);
    host[hl] = '\0';
    char *colon = strrchr(host, ':');
    if (colon && !strchr(colon, ']')) {
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = '\0';
    }
    const char *path = slash ? slash : "/";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g)
        return bs_err_set(err, BS_EIO, "cannot resolve %s: %s", host, gai_strerror(g));
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return bs_err_set(err, BS_EIO, "cannot connect to %s:%s: %s", host, port, strerror(errno));
    bs_buf_t req;
    bs_buf_init(&req);
    bs_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\nContent-Length: %zu\r\n",
                  method, path, host, port, body_len);
    for (const char *const *h = headers; h && *h; h++)
        bs_buf_printf(&req, "%s\r\n", *h);
    bs_buf_puts(&req, "\r\n");
    int rc = 0;
    if (send_all(fd, req.data, req.len, timeout_ms) || (body_len && send_all(fd, body, body_len, timeout_ms)))
        rc = bs_err_set(err, BS_EIO, "cannot send the request to %s:%s", host, port);
    bs_buf_free(&req);
    bs_buf_t raw;
    bs_buf_init(&raw);
    while (!rc) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0) {
            rc = bs_err_set(err, BS_EIO, "timed out waiting for %s:%s", host, port);
            break;
        }
        char tmp[65536];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = bs_err_set(err, BS_EIO, "read failed: %s", strerror(errno));
            break;
        }
        if (r == 0)
            break;
        bs_buf_append(&raw, tmp, (size_t)r);
    }
    close(fd);
    if (rc) {
        bs_buf_free(&raw);
        return rc;
    }
    const char *hend = raw.data ? memmem(raw.data, raw.len, "\r\n\r\n", 4) : NULL;
    if (!hend || sscanf(raw.data, "HTTP/1.%*d %d", &resp->status) != 1) {
        bs_buf_free(&raw);
        return bs_err_set(err, BS_EIO, "malformed HTTP response from %s:%s", host, port);
    }
    const char *bstart = hend + 4;
    size_t blen = raw.len - (size_t)(bstart - raw.data);
    int chunked = 0;
    for (const char *l = raw.data; l < hend;) {
        const char *e = memmem(l, (size_t)(hend - l) + 2, "\r\n", 2);
        if (!e)
            break;
        if ((size_t)(e - l) > 18 && strncasecmp(l, "transfer-encoding:", 18) == 0 &&
            memmem(l, (size_t)(e - l), "chunked", 7))
            chunked = 1;
        l = e + 2;
    }
    bs_buf_init(&resp->body);
    if (chunked) {
        if (dechunk(bstart, blen, &resp->body) != 0) {
            bs_buf_free(&raw);
            bs_buf_free(&resp->body);
            return bs_err_set(err, BS_EIO, "malformed chunked response");
        }
    } else {
        bs_buf_append(&resp->body, bstart, blen);
    }
    bs_buf_free(&raw);
    return 0;
}
