/*
 * The outbound HTTP client on libcurl (client.h).
 *
 * bs_http_request: one easy handle per call, blocking (the CLI's calls).
 *
 * bs_httpc_t: one client thread owns a curl multi handle and every easy handle added
 * to it; other threads touch only the submit queue (under mu) and wake the thread with
 * curl_multi_wakeup. The thread loops: move the queue into the multi handle, run
 * curl_multi_perform, finish what completed (the done callback runs here, on the client
 * thread), and wait in curl_multi_poll (bounded by curl's own next timeout). Connections
 * live in the multi handle's cache, so requests to one host reuse them; per-request
 * timeouts are curl's (CURLOPT_TIMEOUT_MS counts from the moment the request is added,
 * including a wait for a free connection). At shutdown the thread fails everything
 * queued or in flight with BS_EUNAVAIL before it exits.
 *
 * Locking: mu guards the queue, the counters and stopping; the active list and the multi
 * handle belong to the client thread alone.
 */
#include "http/client.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/time.h"

#define DEFAULT_TIMEOUT_MS 15000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_MAX_RESPONSE (64 * 1024)
#define HEADER_VALUE_MAX 256

/* ---- shared -------------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* curl_global_init is not thread-safe in every build: once per process. */
static int curl_ready(bs_err_t *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return bs_err_set(err, BS_EINTERNAL, "libcurl failed to initialise: %s",
                          curl_easy_strerror(curl_init_rc));
    return 0;
}

/* Checks an http(s) URL; host and port (the scheme's default when absent) into the
 * buffers for messages. */
static int check_url(const char *url, char *host, size_t host_len, char *port, size_t port_len,
                     bs_err_t *err)
{
    if (!url || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
        return bs_err_set(err, BS_EINVAL,
                          "only http:// and https:// URLs are supported, got "
                          "'%.64s'",
                          url ? url : "");
    CURLU *u = curl_url();
    if (!u)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    char *h = NULL, *p = NULL;
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK || !h || !*h ||
        curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) != CURLUE_OK)
        rc = bs_err_set(err, BS_EINVAL, "bad URL '%.64s'", url);
    if (!rc) {
        snprintf(host, host_len, "%s", h);
        snprintf(port, port_len, "%s", p ? p : "");
    }
    curl_free(h);
    curl_free(p);
    curl_url_cleanup(u);
    return rc;
}

static int check_method(const char *m, bs_err_t *err)
{
    size_t n = m ? strlen(m) : 0;
    if (n == 0 || n > 16)
        return bs_err_set(err, BS_EINVAL, "bad HTTP method '%.16s'", m ? m : "");
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)m[i]))
            return bs_err_set(err, BS_EINVAL, "bad HTTP method '%.16s'", m);
    return 0;
}

/* 0 if every header line is one line: curl sends a line as given, so a CR or LF in it
 * would start another header (or end the head and smuggle a request: header injection). Any
 * other control character but HTAB is refused too (RFC 9110 §5.5). */
static int check_headers(const char *const *headers, bs_err_t *err)
{
    int i = 0;
    for (const char *const *h = headers; h && *h; h++, i++)
        for (const unsigned char *p = (const unsigned char *)*h; *p; p++)
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                return bs_err_set(err, BS_EINVAL,
                                  "request header %d has a control character at byte %d", i,
                                  (int)(p - (const unsigned char *)*h));
    return 0;
}

/* The request's headers as curl takes them: the caller's, plus "Expect:" (no 100-continue
 * round trip) and "Content-Type:" (curl would add a form type to a body) unless given. */
static struct curl_slist *make_headers(const char *const *headers, int *ok)
{
    struct curl_slist *l = NULL, *t;
    int has_ct = 0;
    *ok = 1;
    for (const char *const *h = headers; h && *h; h++) {
        if (strncasecmp(*h, "content-type:", 13) == 0)
            has_ct = 1;
        if (!(t = curl_slist_append(l, *h)))
            goto fail;
        l = t;
    }
    if (!(t = curl_slist_append(l, "Expect:")))
        goto fail;
    l = t;
    if (!has_ct) {
        if (!(t = curl_slist_append(l, "Content-Type:")))
            goto fail;
        l = t;
    }
    return l;
fail:
    curl_slist_free_all(l);
    *ok = 0;
    return NULL;
}

/* Method, URL, headers and body on an easy handle (body borrowed: it must outlive the
 * transfer). Redirects are not followed: a 3xx is the answer. Proxies come from the
 * environment (http_proxy, https_proxy, no_proxy), as curl's tools take them. */
static void setup_easy(CURL *e, const char *method, const char *url, struct curl_slist *hdrs,
                       const void *body, size_t body_len)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* A transfer that ends (its timeout) while its name is still being resolved leaves the
     * resolver thread behind, detached (it frees its own state when getaddrinfo returns):
     * without this, curl joins it, and the client thread waits as long as the system
     * resolver takes with every other transfer stalled. */
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") == 0 && !body_len) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (body_len || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
               strcmp(method, "PATCH") == 0) {
        /* Content-Length: N, the body from memory (0 bytes: "Content-Length: 0"). */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body_len ? (const char *)body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
}

int bs_http_url_check(const char *url, bs_err_t *err)
{
    char host[256], port[16];
    if (curl_ready(err))
        return err->code;
    return check_url(url, host, sizeof host, port, sizeof port, err);
}

/* ---- bs_http_request ------------------------------------------------------------------------- */

static size_t sync_body(char *p, size_t size, size_t n, void *ud)
{
    bs_buf_append(ud, p, size * n);
    return size * n;
}

int bs_http_request(const char *method, const char *url, const char *const *headers,
                    const void *body, size_t body_len, int timeout_ms, bs_http_response_t *resp,
                    bs_err_t *err)
{
    memset(resp, 0, sizeof *resp);
    char host[256], port[16];
    if (curl_ready(err) || check_method(method, err) ||
        check_url(url, host, sizeof host, port, sizeof port, err) || check_headers(headers, err))
        return err->code;
    int ok;
    struct curl_slist *hdrs = make_headers(headers, &ok);
    CURL *e = ok ? curl_easy_init() : NULL;
    if (!e) {
        curl_slist_free_all(hdrs);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    setup_easy(e, method, url, hdrs, body, body_len);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    /* timeout_ms bounds each wait, not the whole exchange (a long upload that keeps
     * moving is fine): connecting, and any stretch of timeout_ms without a byte moving
     * (curl's low-speed check: under 1 byte/s for that many seconds). */
    if (timeout_ms <= 0)
        timeout_ms = 60000;
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((timeout_ms + 999) / 1000));
    bs_buf_init(&resp->body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sync_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &resp->body);
    CURLcode rc = curl_easy_perform(e);
    int ret = 0;
    if (rc == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        resp->status = (int)status;
    } else {
        long os_errno = 0;
        curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        if (rc == CURLE_COULDNT_CONNECT)
            ret = bs_err_set(err, BS_EIO, "cannot connect to %s:%s: %s", host, port,
                             os_errno ? strerror((int)os_errno) : why);
        else if (rc == CURLE_COULDNT_RESOLVE_HOST)
            ret = bs_err_set(err, BS_EIO, "cannot resolve %s: %s", host, why);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            ret = bs_err_set(err, BS_EIO, "timed out waiting for %s:%s", host, port);
        else
            ret = bs_err_set(err, BS_EIO, "request to %s:%s failed: %s", host, port, why);
        bs_buf_free(&resp->body);
    }
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    return ret;
}

/* ---- Retry-After ----------------------------------------------------------------------------- */

int64_t bs_http_retry_after_ms(const char *value, int64_t now_ms)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 64)
        return -1;
    char v[65];
    memcpy(v, value, n);
    v[n] = '\0';
    if (isdigit((unsigned char)v[0])) {
        /* delta-seconds = 1*DIGIT (RFC 9110 §10.2.3); more than ~31 years is not one. */
        int64_t s = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)v[i]) || s > 1000000000)
                return -1;
            s = s * 10 + (v[i] - '0');
        }
        return s * 1000;
    }
    /* An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms, which
     * recipients must accept: RFC 9110 §5.6.7), parsed by curl's date parser. A date that
     * is not later than now asks for no wait. */
    if (!isalpha((unsigned char)v[0]))
        return -1;
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t ms = (int64_t)t * 1000 - now_ms;
    return ms > 0 ? ms : 0;
}

/* ---- the asynchronous client ----------------------------------------------------------------- */

typedef struct job {
    struct job *next, *prev;
    bs_httpc_t *c;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t body_len;
    bs_buf_t resp;
    size_t max_resp, total;
    int streaming; /* on_data set and the response is a 2xx: chunks go there */
    int aborted;   /* on_data asked to stop */
    int (*on_data)(void *ud, const char *p, size_t n);
    bs_httpc_done_cb done;
    void *ud;
    int64_t timeout_ms;
    uint64_t start_ns;
    char retry_after[HEADER_VALUE_MAX];
    char content_type[HEADER_VALUE_MAX];
    char errbuf[CURL_ERROR_SIZE];
} job_t;

struct bs_httpc {
    CURLM *multi;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    job_t *q_head, *q_tail; /* submitted, not yet added to the multi handle */
    int queued, in_flight, max_queue, stopping;
    char *user_agent;
    job_t *active; /* client thread only */
    uint64_t submitted, completed, failed, timeouts, rejected;
};

static void job_free(job_t *j)
{
    if (!j)
        return;
    if (j->easy)
        curl_easy_cleanup(j->easy);
    curl_slist_free_all(j->headers);
    free(j->body);
    bs_buf_free(&j->resp);
    free(j);
}

/* Copies a header's value (trimmed, bounded) when name matches. */
static void take_header(const char *p, size_t n, const char *name, char *out)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(p, name, nl) != 0)
        return;
    p += nl;
    n -= nl;
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n >= HEADER_VALUE_MAX)
        n = HEADER_VALUE_MAX - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    job_t *j = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) { /* a new response (after a 1xx) */
        j->retry_after[0] = '\0';
        j->content_type[0] = '\0';
        return len;
    }
    take_header(p, len, "retry-after:", j->retry_after);
    take_header(p, len, "content-type:", j->content_type);
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    job_t *j = ud;
    size_t len = size * n;
    if (j->total == 0 && j->on_data) {
        long status = 0;
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
        j->streaming = status >= 200 && status < 300;
    }
    j->total += len;
    if (j->streaming) {
        if (j->on_data(j->ud, p, len)) {
            j->aborted = 1;
            return 0; /* CURLE_WRITE_ERROR ends the transfer */
        }
        return len;
    }
    if (j->resp.len < j->max_resp) {
        size_t room = j->max_resp - j->resp.len;
        bs_buf_append(&j->resp, p, len < room ? len : room);
    }
    return len;
}

static int transport_code(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return BS_EUNAVAIL;
    default:
        return BS_EIO;
    }
}

/* Calls done and frees the job (client thread). code: 0, or the transport error. */
static void finish(bs_httpc_t *c, job_t *j, int code, int timed_out, const char *error)
{
    bs_httpc_resp_t r = {0};
    long status = 0;
    if (j->easy)
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
    r.code = code;
    r.error = code ? error : NULL;
    r.timed_out = timed_out;
    r.status = (int)status;
    bs_buf_putc(&j->resp, '\0'); /* NUL-terminated, not counted */
    if (j->resp.oom) { /* the body (or its terminator) did not fit in memory: none */
        r.body = "";
    } else {
        j->resp.len--;
        r.body = j->resp.data;
        r.body_len = j->resp.len;
    }
    r.body_total = j->total;
    r.retry_after = j->retry_after[0] ? j->retry_after : NULL;
    r.content_type = j->content_type[0] ? j->content_type : NULL;
    r.elapsed_ms = j->start_ns ? (double)(bs_time_mono_ns() - j->start_ns) / 1e6 : 0;
    pthread_mutex_lock(&c->mu);
    if (code == 0)
        c->completed++;
    else
        c->failed++;
    if (timed_out)
        c->timeouts++;
    pthread_mutex_unlock(&c->mu);
    j->done(j->ud, &r);
    job_free(j);
}

static void finish_curl(bs_httpc_t *c, job_t *j, CURLcode rc)
{
    if (rc == CURLE_OK)
        return finish(c, j, 0, 0, NULL);
    char msg[CURL_ERROR_SIZE + 64];
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof msg, "timed out after %lld ms (%s)", (long long)j->timeout_ms,
                 j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
        return finish(c, j, BS_EIO, 1, msg);
    }
    if (rc == CURLE_WRITE_ERROR && j->aborted)
        return finish(c, j, BS_EIO, 0, "transfer aborted by the reader");
    snprintf(msg, sizeof msg, "%s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
    finish(c, j, transport_code(rc), 0, msg);
}

static void active_unlink(bs_httpc_t *c, job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        c->active = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

static void *client_main(void *arg)
{
    bs_httpc_t *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        job_t *take = c->q_head;
        int n = c->queued, stopping = c->stopping;
        if (!stopping) {
            c->q_head = c->q_tail = NULL;
            c->queued = 0;
            c->in_flight += n;
        }
        pthread_mutex_unlock(&c->mu);
        if (stopping)
            break;
        while (take) {
            job_t *j = take;
            take = j->next;
            j->next = c->active;
            j->prev = NULL;
            if (c->active)
                c->active->prev = j;
            c->active = j;
            j->start_ns = bs_time_mono_ns();
            CURLMcode mc = curl_multi_add_handle(c->multi, j->easy);
            if (mc != CURLM_OK) {
                active_unlink(c, j);
                pthread_mutex_lock(&c->mu);
                c->in_flight--;
                pthread_mutex_unlock(&c->mu);
                finish(c, j, BS_EIO, 0, curl_multi_strerror(mc));
            }
        }
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
            job_t *j = (job_t *)priv;
            CURLcode rc = m->data.result;
            curl_multi_remove_handle(c->multi, j->easy);
            active_unlink(c, j);
            pthread_mutex_lock(&c->mu);
            c->in_flight--;
            pthread_mutex_unlock(&c->mu);
            finish_curl(c, j, rc);
        }
        curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
    }
    /* Shutdown: fail what is queued (no submit adds more: stopping is set) and in flight. */
    pthread_mutex_lock(&c->mu);
    job_t *q = c->q_head;
    c->q_head = c->q_tail = NULL;
    c->queued = 0;
    pthread_mutex_unlock(&c->mu);
    while (q) {
        job_t *j = q;
        q = j->next;
        finish(c, j, BS_EUNAVAIL, 0, "the HTTP client is shutting down");
    }
    while (c->active) {
        job_t *j = c->active;
        active_unlink(c, j);
        curl_multi_remove_handle(c->multi, j->easy);
        pthread_mutex_lock(&c->mu);
        c->in_flight--;
        pthread_mutex_unlock(&c->mu);
        finish(c, j, BS_EUNAVAIL, 0, "the HTTP client is shutting down");
    }
    return NULL;
}

bs_httpc_t *bs_httpc_new(const bs_httpc_opts_t *o, bs_err_t *err)
{
    if (curl_ready(err))
        return NULL;
    bs_httpc_opts_t d = {0};
    if (!o)
        o = &d;
    bs_httpc_t *c = calloc(1, sizeof *c);
    if (!c) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->max_queue = o->max_queue > 0 ? o->max_queue : 4096;
    long max_conn = o->max_connections > 0 ? o->max_connections : 64;
    long max_host =
        o->max_host_connections > 0 ? o->max_host_connections : (max_conn > 1 ? max_conn / 2 : 1);
    char ua[64];
    snprintf(ua, sizeof ua, "basalt/%s", BS_VERSION);
    c->user_agent = strdup(o->user_agent ? o->user_agent : ua);
    c->multi = curl_multi_init();
    if (!c->user_agent || !c->multi) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conn);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, max_conn);
    if (pthread_create(&c->thread, NULL, client_main, c) != 0) {
        bs_err_set(err, BS_EINTERNAL, "cannot start the HTTP client thread");
        goto fail;
    }
    c->started = 1;
    return c;
fail:
    if (c->multi)
        curl_multi_cleanup(c->multi);
    free(c->user_agent);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
}

void bs_httpc_free(bs_httpc_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_mutex_unlock(&c->mu);
    if (c->started) {
        curl_multi_wakeup(c->multi);
        pthread_join(c->thread, NULL);
    }
    curl_multi_cleanup(c->multi);
    free(c->user_agent);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int bs_httpc_submit(bs_httpc_t *c, const bs_httpc_req_t *r, bs_httpc_done_cb done, void *ud,
                    bs_err_t *err)
{
    char host[256], port[16];
    const char *method = r->method ? r->method : "GET";
    if (!done)
        return bs_err_set(err, BS_EINVAL, "a request needs a done callback");
    if (check_method(method, err) || check_url(r->url, host, sizeof host, port, sizeof port, err) ||
        check_headers(r->headers, err))
        return err->code;
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    bs_buf_init(&j->resp);
    j->c = c;
    j->done = done;
    j->ud = ud;
    j->on_data = r->on_data;
    j->max_resp = r->max_response_bytes ? r->max_response_bytes : DEFAULT_MAX_RESPONSE;
    j->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : DEFAULT_TIMEOUT_MS;
    int64_t connect_ms = r->connect_timeout_ms > 0                    ? r->connect_timeout_ms
                         : j->timeout_ms < DEFAULT_CONNECT_TIMEOUT_MS ? j->timeout_ms
                                                                      : DEFAULT_CONNECT_TIMEOUT_MS;
    if (r->body_len) {
        j->body = malloc(r->body_len);
        if (!j->body) {
            job_free(j);
            return bs_err_set(err, BS_ENOMEM, "out of memory");
        }
        memcpy(j->body, r->body, r->body_len);
        j->body_len = r->body_len;
    }
    int ok;
    j->headers = make_headers(r->headers, &ok);
    j->easy = ok ? curl_easy_init() : NULL;
    if (!j->easy) {
        job_free(j);
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    }
    CURL *e = j->easy;
    setup_easy(e, method, r->url, j->headers, j->body, j->body_len);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)j);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)j->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (c->stopping) {
        rc = bs_err_set(err, BS_EUNAVAIL, "the HTTP client is shutting down");
    } else if (c->queued + c->in_flight >= c->max_queue) {
        c->rejected++;
        rc = bs_err_set(err, BS_EOVERLOAD,
                        "the outbound HTTP queue is full (%d requests queued "
                        "or in flight)",
                        c->max_queue);
    } else {
        if (c->q_tail)
            c->q_tail->next = j;
        else
            c->q_head = j;
        c->q_tail = j;
        c->queued++;
        c->submitted++;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc) {
        job_free(j);
        return rc;
    }
    curl_multi_wakeup(c->multi);
    return 0;
}

void bs_httpc_stats(bs_httpc_t *c, bs_httpc_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    out->submitted = c->submitted;
    out->completed = c->completed;
    out->failed = c->failed;
    out->timeouts = c->timeouts;
    out->rejected = c->rejected;
    out->in_flight = c->in_flight;
    out->queued = c->queued;
    pthread_mutex_unlock(&c->mu);
}

void bs_httpc_metrics(bs_httpc_t *c, bs_buf_t *b)
{
    if (!c)
        return;
    bs_httpc_stats_t s;
    bs_httpc_stats(c, &s);
    bs_buf_printf(b,
                  "# HELP basalt_http_client_requests_total Outbound HTTP requests by outcome "
                  "(submitted: accepted into the queue; completed: a response came; failed: a "
                  "transport error or timeout; rejected: the queue was full).\n"
                  "# TYPE basalt_http_client_requests_total counter\n"
                  "basalt_http_client_requests_total{outcome=\"submitted\"} %llu\n"
                  "basalt_http_client_requests_total{outcome=\"completed\"} %llu\n"
                  "basalt_http_client_requests_total{outcome=\"failed\"} %llu\n"
                  "basalt_http_client_requests_total{outcome=\"rejected\"} %llu\n"
                  "# HELP basalt_http_client_timeouts_total Outbound requests ended by their "
                  "timeout.\n"
                  "# TYPE basalt_http_client_timeouts_total counter\n"
                  "basalt_http_client_timeouts_total %llu\n"
                  "# HELP basalt_http_client_in_flight Outbound requests running now.\n"
                  "# TYPE basalt_http_client_in_flight gauge\n"
                  "basalt_http_client_in_flight %d\n"
                  "# HELP basalt_http_client_queued Outbound requests waiting for the client "
                  "thread.\n"
                  "# TYPE basalt_http_client_queued gauge\n"
                  "basalt_http_client_queued %d\n",
                  (unsigned long long)s.submitted, (unsigned long long)s.completed,
                  (unsigned long long)s.failed, (unsigned long long)s.rejected,
                  (unsigned long long)s.timeouts, s.in_flight, s.queued);
}
