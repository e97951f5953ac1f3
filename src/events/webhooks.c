/*
 * Webhooks (webhooks.h): destination specs, Standard Webhooks signing, and deliveries as
 * jobs of kind webhook.deliver whose attempts run on the outbound HTTP client.
 *
 * One attempt, in three steps on three kinds of thread:
 *   1. deliver_run (a job worker): reads the delivery row and the destination's current
 *      spec, signs "webhook-id.webhook-timestamp.body", submits the POST to the client and
 *      returns at once (an async job kind: no worker waits on the receiver);
 *   2. on_response (the client thread): copies what the attempt needs from the response
 *      and hands it to this module's pool (the client thread must never wait on a store);
 *   3. attempt_end (a pool thread): records the attempt (webhook_attempts), updates the
 *      delivery row, counts the outcome, and ends the job attempt: complete on 2xx, fail
 *      for good on 410 Gone or when the schedule is spent, else fail retryable after the
 *      schedule's next delay ± 10% (or the Retry-After's, capped).
 * The delivery row mirrors its job (state, attempts, next attempt) so the delivery log
 * stays readable after the job's retention deleted it.
 *
 * Locking: mu guards stopping (checked around every submit, so bs_webhooks_stop fences
 * the client) and the outcome counters.
 */
#include "events/webhooks.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/crypto.h"
#include "base/id.h"
#include "base/json.h"
#include "base/log.h"
#include "base/pool.h"
#include "base/time.h"
#include "store/resources.h"

#define MAX_SCHEDULE 32
#define MAX_HEADERS 32
#define MAX_URL 2048
#define MAX_HEADER_VALUE 1024
#define MAX_PAYLOAD (16 * 1024 * 1024)
#define RESPONSE_EXCERPT 1024
#define MAX_METRIC_SERIES 1024
#define SHUTDOWN_RETRY_MS 1000
#define DEFAULT_TIMEOUT "15s"
#define DEFAULT_CONTENT_TYPE "application/cloudevents+json"

static const char *const default_schedule[] = {"0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"};

/* A destination's spec, parsed. */
typedef struct {
    char url[MAX_URL + 1];
    char secret[160];
    int64_t timeout_ms;
    int64_t schedule_ms[MAX_SCHEDULE];
    int n_schedule;
    char content_type[64];
    char *headers[MAX_HEADERS + 1]; /* "Name: value", heap */
    int n_headers;
} dest_t;

typedef struct {
    char tenant[64], destination[64];
    uint64_t delivered, failed, timeout, error;
} series_t;

struct bs_webhooks {
    bs_meta_t *meta;
    bs_jobs_t *jobs;
    bs_httpc_t *http;
    bs_pool_t *pool;
    pthread_mutex_t mu;
    int stopping;
    series_t *series;
    int n_series;
    uint64_t series_overflow;
    int64_t retention_ms;    /* finished deliveries older than this are deleted */
    int64_t last_cleanup_ms; /* under mu */
};

/* One attempt in flight (steps 2 and 3). */
typedef struct {
    bs_webhooks_t *w;
    bs_job_run_t *run;
    char id[37], tenant[64], destination[64];
    int attempt, max_attempts;
    int64_t schedule_ms[MAX_SCHEDULE];
    int n_schedule;
    int64_t at_ms;
    int final;              /* no more attempts whatever the schedule says */
    int64_t force_retry_ms; /* >= 0: retry after this instead of the schedule's wait */
    /* the outcome */
    int code, timed_out, status;
    double elapsed_ms;
    char error[256];
    char *response;
    int64_t retry_after_ms; /* -1: none */
} attempt_t;

static void dest_clear(dest_t *d)
{
    for (int i = 0; i < d->n_headers; i++)
        free(d->headers[i]);
    d->n_headers = 0;
}

/* ---- secrets and signatures ------------------------------------------------------------------ */

/* Decodes standard base64 into out, padded or not (the Standard Webhooks libraries accept
 * both). Returns the byte count or -1. */
static int b64_decode(const char *in, size_t n, unsigned char *out, size_t out_len)
{
    char padded[140];
    if (n == 0 || n % 4 == 1 || n + 3 >= sizeof padded)
        return -1;
    memcpy(padded, in, n);
    while (n % 4)
        padded[n++] = '=';
    if (n / 4 * 3 > out_len)
        return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)padded, (int)n);
    if (len < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    if (padded[n - 1] == '=')
        len--;
    if (padded[n - 2] == '=')
        len--;
    return len;
}

/* The key of a "whsec_<base64>" secret: 24 to 64 bytes (Standard Webhooks: at least 192
 * bits, at most 512). Returns its length or BS_EINVAL. */
static int secret_key(const char *secret, unsigned char key[64], bs_err_t *err)
{
    if (!secret || strncmp(secret, "whsec_", 6) != 0)
        return bs_err_setf(err, BS_EINVAL, "secret",
                           "secret must be 'whsec_' followed by the "
                           "base64 of 24 to 64 random bytes");
    unsigned char buf[100];
    size_t n = strlen(secret + 6);
    int len = n <= 4 * 32 ? b64_decode(secret + 6, n, buf, sizeof buf) : -1;
    if (len < 24 || len > 64)
        return bs_err_setf(err, BS_EINVAL, "secret",
                           "secret must be 'whsec_' followed by the base64 of 24 to 64 random "
                           "bytes (got %s)",
                           len < 0 ? "invalid base64" : "another length");
    memcpy(key, buf, (size_t)len);
    return len;
}

int bs_webhooks_sign(const char *secret, const char *id, int64_t timestamp_s, const char *body,
                     size_t body_len, char *out, size_t out_len, bs_err_t *err)
{
    unsigned char key[64];
    int klen = secret_key(secret, key, err);
    if (klen < 0)
        return klen;
    if (out_len < 48)
        return bs_err_set(err, BS_EINVAL, "signature buffer of %zu bytes is too small", out_len);
    char ts[24];
    int tsl = snprintf(ts, sizeof ts, "%lld", (long long)timestamp_s);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mlen = 0;
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    /* The signed content: "{webhook-id}.{webhook-timestamp}.{body}". */
    int ok = ctx && EVP_MAC_init(ctx, key, (size_t)klen, params) &&
             EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
             EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tsl) &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
             (body_len == 0 || EVP_MAC_update(ctx, (const unsigned char *)body, body_len)) &&
             EVP_MAC_final(ctx, mac, &mlen, sizeof mac);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    OPENSSL_cleanse(key, sizeof key);
    if (!ok || mlen != 32)
        return bs_err_set(err, BS_EINTERNAL, "HMAC-SHA256 failed");
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mlen); /* 44 chars + NUL */
    return 0;
}

static int make_secret(char *out, size_t n, bs_err_t *err)
{
    unsigned char key[24];
    if (n < 6 + 33 || bs_random_bytes(key, sizeof key) != 0)
        return bs_err_set(err, BS_EIO, "cannot make a webhook secret: no randomness");
    memcpy(out, "whsec_", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, key, (int)sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    return 0;
}

/* ---- specs ----------------------------------------------------------------------------------- */

static int token_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Headers basalt sets itself, or that would break the framing of the request. */
static int reserved_header(const char *name)
{
    static const char *const reserved[] = {"webhook-id",
                                           "webhook-timestamp",
                                           "webhook-signature",
                                           "content-type",
                                           "content-length",
                                           "host",
                                           "transfer-encoding",
                                           "connection",
                                           "expect",
                                           "te",
                                           "upgrade",
                                           "trailer",
                                           "keep-alive",
                                           "proxy-connection",
                                           NULL};
    for (const char *const *r = reserved; *r; r++)
        if (strcasecmp(name, *r) == 0)
            return 1;
    return 0;
}

static int parse_headers(const cJSON *h, dest_t *d, bs_err_t *err)
{
    if (!cJSON_IsObject(h))
        return bs_err_setf(err, BS_EINVAL, "headers", "headers must be an object of strings");
    int n = 0;
    for (const cJSON *c = h->child; c; c = c->next) {
        char field[64];
        snprintf(field, sizeof field, "headers.%.50s", c->string);
        size_t nl = strlen(c->string);
        if (++n > MAX_HEADERS)
            return bs_err_setf(err, BS_EINVAL, "headers", "at most %d headers, got more",
                               MAX_HEADERS);
        int ok = nl > 0 && nl <= 64;
        for (size_t i = 0; ok && i < nl; i++)
            ok = token_char((unsigned char)c->string[i]);
        if (!ok)
            return bs_err_setf(err, BS_EINVAL, field,
                               "header name '%.64s' is not an HTTP token "
                               "of 1 to 64 characters",
                               c->string);
        if (reserved_header(c->string))
            return bs_err_setf(err, BS_EINVAL, field, "header '%.64s' is set by basalt", c->string);
        if (!cJSON_IsString(c))
            return bs_err_setf(err, BS_EINVAL, field, "header '%.64s' must be a string", c->string);
        size_t vl = strlen(c->valuestring);
        if (vl > MAX_HEADER_VALUE)
            return bs_err_setf(err, BS_EINVAL, field, "header value is %zu bytes, at most %d", vl,
                               MAX_HEADER_VALUE);
        for (size_t i = 0; i < vl; i++) {
            unsigned char ch = (unsigned char)c->valuestring[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return bs_err_setf(err, BS_EINVAL, field,
                                   "header value has a control character at byte %zu", i);
        }
        if (d) {
            size_t len = nl + 2 + vl + 1;
            char *line = malloc(len);
            if (!line)
                return bs_err_set(err, BS_ENOMEM, "out of memory");
            snprintf(line, len, "%s: %s", c->string, c->valuestring);
            d->headers[d->n_headers++] = line;
        }
    }
    return 0;
}

static int parse_duration(const cJSON *v, const char *field, int64_t min_ms, int64_t max_ms,
                          int64_t *out, bs_err_t *err)
{
    if (!cJSON_IsString(v) || bs_time_parse_duration(v->valuestring, out) != 0)
        return bs_err_setf(err, BS_EINVAL, field,
                           "%s must be a duration such as \"250ms\", \"15s\" or \"5m\"", field);
    if (*out < min_ms || *out > max_ms)
        return bs_err_setf(err, BS_EINVAL, field, "%s must be from %lldms to %llds, got %s", field,
                           (long long)min_ms, (long long)(max_ms / 1000), v->valuestring);
    return 0;
}

/* Checks spec; fills d (optional; dest_clear it). Absent fields take the defaults; an
 * absent secret stays empty. */
static int parse_spec(const cJSON *spec, dest_t *d, bs_err_t *err)
{
    dest_t local;
    if (!d)
        d = &local;
    memset(d, 0, sizeof *d);
    if (!cJSON_IsObject(spec))
        return bs_err_set(err, BS_EINVAL, "a Webhook spec must be an object");
    static const char *const allowed[] = {
        "url", "secret", "timeout", "headers", "retry_schedule", "content_type", NULL};
    if (bs_json_reject_unknown(spec, allowed, err))
        return BS_EINVAL;
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(spec, "url");
    if (!cJSON_IsString(url))
        return bs_err_setf(err, BS_EINVAL, "url",
                           "url is required: the receiver's http:// or "
                           "https:// URL");
    bs_err_t uerr;
    if (strlen(url->valuestring) > MAX_URL || bs_http_url_check(url->valuestring, &uerr) != 0)
        return bs_err_setf(err, BS_EINVAL, "url",
                           "url must be an http:// or https:// URL with a "
                           "host, at most %d bytes, got '%.64s'",
                           MAX_URL, url->valuestring);
    snprintf(d->url, sizeof d->url, "%s", url->valuestring);
    const cJSON *secret = cJSON_GetObjectItemCaseSensitive(spec, "secret");
    if (secret) {
        unsigned char key[64];
        if (!cJSON_IsString(secret) || strlen(secret->valuestring) >= sizeof d->secret)
            return bs_err_setf(err, BS_EINVAL, "secret",
                               "secret must be 'whsec_' followed by the "
                               "base64 of 24 to 64 random bytes");
        if (secret_key(secret->valuestring, key, err) < 0)
            return BS_EINVAL;
        OPENSSL_cleanse(key, sizeof key);
        snprintf(d->secret, sizeof d->secret, "%s", secret->valuestring);
    }
    const cJSON *timeout = cJSON_GetObjectItemCaseSensitive(spec, "timeout");
    d->timeout_ms = 15000;
    if (timeout && parse_duration(timeout, "timeout", 100, 300000, &d->timeout_ms, err))
        return BS_EINVAL;
    const cJSON *headers = cJSON_GetObjectItemCaseSensitive(spec, "headers");
    if (headers && parse_headers(headers, d, err)) {
        dest_clear(d);
        return BS_EINVAL;
    }
    const cJSON *sched = cJSON_GetObjectItemCaseSensitive(spec, "retry_schedule");
    if (sched) {
        int n = cJSON_GetArraySize(sched);
        if (!cJSON_IsArray(sched) || n < 1 || n > MAX_SCHEDULE) {
            dest_clear(d);
            return bs_err_setf(err, BS_EINVAL, "retry_schedule",
                               "retry_schedule must be an array of 1 to %d durations (the wait "
                               "before each attempt)",
                               MAX_SCHEDULE);
        }
        int i = 0;
        for (const cJSON *c = sched->child; c; c = c->next, i++) {
            char field[32];
            snprintf(field, sizeof field, "retry_schedule[%d]", i);
            if (parse_duration(c, field, 0, 7LL * 86400 * 1000, &d->schedule_ms[i], err)) {
                dest_clear(d);
                return BS_EINVAL;
            }
        }
        d->n_schedule = n;
    } else {
        d->n_schedule = (int)(sizeof default_schedule / sizeof default_schedule[0]);
        for (int i = 0; i < d->n_schedule; i++)
            bs_time_parse_duration(default_schedule[i], &d->schedule_ms[i]);
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(spec, "content_type");
    snprintf(d->content_type, sizeof d->content_type, "%s", DEFAULT_CONTENT_TYPE);
    if (ct) {
        if (!cJSON_IsString(ct) || (strcmp(ct->valuestring, "application/cloudevents+json") != 0 &&
                                    strcmp(ct->valuestring, "application/json") != 0)) {
            dest_clear(d);
            return bs_err_setf(err, BS_EINVAL, "content_type",
                               "content_type must be application/cloudevents+json or "
                               "application/json");
        }
        snprintf(d->content_type, sizeof d->content_type, "%s", ct->valuestring);
    }
    if (d == &local)
        dest_clear(d);
    return 0;
}

/* The normalised spec: every field, in one order (so an equal spec is equal text and a
 * re-apply is "unchanged"). */
int bs_webhooks_validate(const cJSON *spec, cJSON **out, bs_err_t *err)
{
    *out = NULL;
    if (parse_spec(spec, NULL, err))
        return BS_EINVAL;
    cJSON *n = cJSON_CreateObject();
    if (!n)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    static const char *const order[] = {
        "url", "secret", "timeout", "headers", "retry_schedule", "content_type", NULL};
    for (const char *const *k = order; *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(spec, *k);
        cJSON *item = NULL;
        if (v) {
            item = cJSON_Duplicate(v, 1);
        } else if (strcmp(*k, "secret") == 0) {
            char secret[64];
            if (make_secret(secret, sizeof secret, err)) {
                cJSON_Delete(n);
                return err->code;
            }
            item = cJSON_CreateString(secret);
            OPENSSL_cleanse(secret, sizeof secret);
        } else if (strcmp(*k, "timeout") == 0) {
            item = cJSON_CreateString(DEFAULT_TIMEOUT);
        } else if (strcmp(*k, "headers") == 0) {
            item = cJSON_CreateObject();
        } else if (strcmp(*k, "retry_schedule") == 0) {
            item = cJSON_CreateStringArray(
                default_schedule, (int)(sizeof default_schedule / sizeof default_schedule[0]));
        } else {
            item = cJSON_CreateString(DEFAULT_CONTENT_TYPE);
        }
        if (!item || !cJSON_AddItemToObject(n, *k, item)) {
            cJSON_Delete(item);
            cJSON_Delete(n);
            return bs_err_set(err, BS_ENOMEM, "out of memory");
        }
    }
    *out = n;
    return 0;
}

typedef struct {
    int found;
    char *spec;
} spec_ctx_t;

static int spec_cb(const bs_resource_t *r, void *ud)
{
    spec_ctx_t *s = ud;
    s->found = 1;
    s->spec = strdup(r->spec);
    return 1;
}

/* The destination's stored spec, parsed into d. 0, BS_ENOTFOUND, BS_EINVAL. */
static int load_dest(bs_webhooks_t *w, const char *tenant, const char *name, dest_t *d,
                     bs_err_t *err)
{
    spec_ctx_t s = {0};
    int rc = bs_resources_get(w->meta, tenant, BS_WEBHOOK_KIND, name, spec_cb, &s, err);
    if (rc == BS_ENOTFOUND || (rc == 0 && !s.found))
        return bs_err_set(err, BS_ENOTFOUND, "no webhook '%.64s'", name);
    if (rc)
        return rc;
    if (!s.spec)
        return bs_err_set(err, BS_ENOMEM, "out of memory");
    cJSON *j = cJSON_Parse(s.spec);
    free(s.spec);
    rc = j ? parse_spec(j, d, err) : bs_err_set(err, BS_EINVAL, "stored webhook spec is not JSON");
    cJSON_Delete(j);
    return rc;
}

int bs_webhooks_secret(bs_webhooks_t *w, const char *tenant, const char *destination, char *out,
                       size_t out_len, bs_err_t *err)
{
    dest_t d;
    int rc = load_dest(w, tenant, destination, &d, err);
    if (rc)
        return rc;
    dest_clear(&d);
    snprintf(out, out_len, "%s", d.secret);
    OPENSSL_cleanse(d.secret, sizeof d.secret);
    return 0;
}

/* ---- metrics --------------------------------------------------------------------------------- */

static void count_outcome(bs_webhooks_t *w, const char *tenant, const char *dest,
                          const char *outcome)
{
    pthread_mutex_lock(&w->mu);
    series_t *s = NULL;
    for (int i = 0; i < w->n_series && !s; i++)
        if (strcmp(w->series[i].tenant, tenant) == 0 && strcmp(w->series[i].destination, dest) == 0)
            s = &w->series[i];
    if (!s && w->n_series < MAX_METRIC_SERIES) {
        series_t *grown = realloc(w->series, (size_t)(w->n_series + 1) * sizeof *grown);
        if (grown) {
            w->series = grown;
            s = &w->series[w->n_series++];
            memset(s, 0, sizeof *s);
            snprintf(s->tenant, sizeof s->tenant, "%s", tenant);
            snprintf(s->destination, sizeof s->destination, "%s", dest);
        }
    }
    if (!s)
        w->series_overflow++;
    else if (strcmp(outcome, "delivered") == 0)
        s->delivered++;
    else if (strcmp(outcome, "failed") == 0)
        s->failed++;
    else if (strcmp(outcome, "timeout") == 0)
        s->timeout++;
    else
        s->error++;
    pthread_mutex_unlock(&w->mu);
}

void bs_webhooks_metrics(bs_webhooks_t *w, bs_buf_t *b)
{
    if (!w)
        return;
    bs_buf_puts(b, "# HELP basalt_webhook_attempts_total Webhook delivery attempts by outcome "
                   "(delivered: 2xx; failed: another status; timeout; error: no response).\n"
                   "# TYPE basalt_webhook_attempts_total counter\n");
    pthread_mutex_lock(&w->mu);
    static const char *const names[] = {"delivered", "failed", "timeout", "error"};
    for (int i = 0; i < w->n_series; i++) {
        const series_t *s = &w->series[i];
        const uint64_t v[] = {s->delivered, s->failed, s->timeout, s->error};
        for (int k = 0; k < 4; k++)
            bs_buf_printf(b,
                          "basalt_webhook_attempts_total{tenant=\"%s\",destination=\"%s\","
                          "outcome=\"%s\"} %llu\n",
                          s->tenant, s->destination, names[k], (unsigned long long)v[k]);
    }
    bs_buf_printf(b,
                  "# HELP basalt_webhook_attempts_unlabelled_total Attempts not counted per "
                  "destination (more than %d series).\n"
                  "# TYPE basalt_webhook_attempts_unlabelled_total counter\n"
                  "basalt_webhook_attempts_unlabelled_total %llu\n",
                  MAX_METRIC_SERIES, (unsigned long long)w->series_overflow);
    pthread_mutex_unlock(&w->mu);
}

/* ---- one attempt ----------------------------------------------------------------------------- */

/* The first RESPONSE_EXCERPT bytes of a body as text for the log: cut at a character
 * boundary; a body that is not UTF-8 text is described instead. */
static char *excerpt(const char *body, size_t len)
{
    if (!body || !len)
        return NULL;
    size_t n = len < RESPONSE_EXCERPT ? len : RESPONSE_EXCERPT;
    while (n > 0 && n < len && ((unsigned char)body[n] & 0xC0) == 0x80)
        n--; /* not inside a UTF-8 sequence */
    int text = bs_utf8_valid(body, n) && !memchr(body, '\0', n);
    char *out = malloc(text ? n + 1 : 64);
    if (!out)
        return NULL;
    if (text) {
        memcpy(out, body, n);
        out[n] = '\0';
    } else {
        snprintf(out, 64, "(%zu bytes, not UTF-8 text)", len);
    }
    return out;
}

static int64_t jittered(int64_t ms)
{
    uint32_t r = 0;
    bs_random_bytes(&r, sizeof r);
    double f = 0.9 + 0.2 * ((double)r / 4294967295.0); /* ± 10% */
    return (int64_t)((double)ms * f);
}

static const char *outcome_of(const attempt_t *a)
{
    if (a->code == 0 && a->status >= 200 && a->status < 300)
        return "delivered";
    if (a->code == 0)
        return "failed";
    return a->timed_out ? "timeout" : "error";
}

static void attempt_free(attempt_t *a)
{
    if (!a)
        return;
    free(a->response);
    free(a);
}

/* Deletes up to 1000 finished deliveries (and their attempts) last updated before the
 * retention, at most every CLEANUP_EVERY_MS per process (pool thread, after an attempt:
 * a log that does not grow needs no cleaning). Every replica may run it: deletes are
 * idempotent. First it settles pending rows whose job ended without an attempt recording
 * it (the job runtime finalized it: cancelled, or discarded; or its job is gone), so they
 * neither read "pending" once the job's retention deleted it nor stay forever. */
#define CLEANUP_EVERY_MS (10 * 60 * 1000)
static void maybe_cleanup(bs_webhooks_t *w, int64_t now)
{
    pthread_mutex_lock(&w->mu);
    int64_t retention = w->retention_ms;
    int due = retention > 0 && now - w->last_cleanup_ms >= CLEANUP_EVERY_MS;
    if (due)
        w->last_cleanup_ms = now;
    pthread_mutex_unlock(&w->mu);
    if (!due)
        return;
    bs_err_t err;
    bs_err_clear(&err);
    const bs_val_t v[] = {BS_INT(now - retention)};
    const bs_val_t at[] = {BS_INT(now)};
    static const char *const settle[] = {
        "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_at = NULL, "
        "updated_at = ? WHERE state = 'pending' AND id IN (SELECT id FROM jobs WHERE kind = "
        "'" BS_WEBHOOK_JOB "' AND state = 'cancelled')",
        "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL, updated_at = ? "
        "WHERE state = 'pending' AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = "
        "webhook_deliveries.id AND j.state <> 'discarded')"};
    static const char *const sql[] = {
        "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries "
        "WHERE state IN ('delivered', 'failed', 'cancelled') AND updated_at < ? ORDER BY "
        "updated_at LIMIT 1000)",
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries WHERE "
        "state IN ('delivered', 'failed', 'cancelled') AND updated_at < ? ORDER BY updated_at "
        "LIMIT 1000)"};
    int changes = 0;
    if (bs_meta_tx_begin(w->meta, &err) == 0) {
        int rc = bs_meta_exec(w->meta, settle[0], at, 1, NULL, &err);
        if (rc == 0)
            rc = bs_meta_exec(w->meta, settle[1], at, 1, NULL, &err);
        if (rc == 0)
            rc = bs_meta_exec(w->meta, sql[0], v, 1, NULL, &err);
        if (rc == 0)
            rc = bs_meta_exec(w->meta, sql[1], v, 1, &changes, &err);
        if (rc == 0)
            rc = bs_meta_tx_commit(w->meta, &err);
        else
            bs_meta_tx_rollback(w->meta);
        if (rc == 0 && changes)
            BS_LOG(BS_LOG_INFO, "webhooks", "deleted %d deliveries past the retention", changes);
    }
    if (err.code)
        BS_LOG(BS_LOG_WARN, "webhooks", "delivery log cleanup failed: %s", err.msg);
}

/* Step 3 (a pool thread, or the caller's when the attempt never started): record and end. */
static void attempt_end(void *arg)
{
    attempt_t *a = arg;
    bs_webhooks_t *w = a->w;
    const char *outcome = outcome_of(a);
    int delivered = strcmp(outcome, "delivered") == 0;
    int gone = a->code == 0 && a->status == 410;
    int limit = a->max_attempts < a->n_schedule ? a->max_attempts : a->n_schedule;
    if (a->force_retry_ms >= 0)
        limit = a->max_attempts;
    int more = !delivered && !gone && !a->final && a->attempt < limit;
    int64_t now = bs_time_wall_ms();
    int64_t delay = -1;
    if (more && a->force_retry_ms >= 0) {
        delay = a->force_retry_ms;
    } else if (more) {
        delay = jittered(a->schedule_ms[a->attempt]); /* attempt < n_schedule <= MAX */
        if (a->retry_after_ms >= 0)
            delay = a->retry_after_ms < BS_WEBHOOK_MAX_RETRY_AFTER_MS
                        ? a->retry_after_ms
                        : BS_WEBHOOK_MAX_RETRY_AFTER_MS;
        if (delay < 1)
            delay = 1; /* 0 would ask the job runtime for its own backoff */
    }
    char error[320] = "";
    if (a->code)
        snprintf(error, sizeof error, "%s", a->error);
    else if (!delivered)
        snprintf(error, sizeof error, "HTTP %d%s", a->status,
                 gone ? ": the receiver is gone (410), no more attempts" : "");
    count_outcome(w, a->tenant, a->destination, outcome);
    bs_err_t err;
    const bs_val_t att[] = {BS_TXT(a->id),
                            BS_INT(a->attempt),
                            BS_INT(a->at_ms),
                            BS_TXT(outcome),
                            BS_INT(a->status),
                            BS_DBL(a->elapsed_ms),
                            BS_TXT(error[0] ? error : NULL),
                            BS_TXT(a->response),
                            delay >= 0 ? BS_INT(delay) : BS_NUL};
    int rc =
        bs_meta_exec(w->meta,
                     "INSERT INTO webhook_attempts (delivery_id, attempt, at, outcome, status, "
                     "duration_ms, error, response, retry_in_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                     att, 9, NULL, &err);
    if (rc && rc != BS_ECONFLICT)
        BS_LOG(BS_LOG_ERROR, "webhooks", "cannot record attempt %d of delivery %s: %s", a->attempt,
               a->id, err.msg);
    const char *state = delivered ? "delivered" : more ? "pending" : "failed";
    const bs_val_t upd[] = {BS_TXT(state),
                            BS_INT(a->attempt),
                            BS_INT(a->status),
                            BS_TXT(error[0] ? error : NULL),
                            more ? BS_INT(now + delay) : BS_NUL,
                            BS_INT(now),
                            BS_TXT(a->id)};
    if (bs_meta_exec(w->meta,
                     "UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?, "
                     "last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                     upd, 7, NULL, &err) != 0)
        BS_LOG(BS_LOG_ERROR, "webhooks", "cannot update delivery %s: %s", a->id, err.msg);
    if (delivered) {
        char result[64];
        snprintf(result, sizeof result, "{\"status\":%d,\"attempt\":%d}", a->status, a->attempt);
        bs_job_complete(a->run, result, NULL);
    } else {
        bs_job_fail(a->run, more, more ? delay : 0, error);
    }
    maybe_cleanup(w, now);
    attempt_free(a);
}

/* Step 2 (the client thread): copy, hand over. */
static void on_response(void *ud, const bs_httpc_resp_t *r)
{
    attempt_t *a = ud;
    a->code = r->code;
    a->timed_out = r->timed_out;
    a->status = r->status;
    a->elapsed_ms = r->elapsed_ms;
    if (r->code)
        snprintf(a->error, sizeof a->error, "%s", r->error ? r->error : "transport error");
    a->response = excerpt(r->body, r->body_len);
    a->retry_after_ms = -1;
    if (r->code == 0 && (r->status < 200 || r->status > 299) && r->retry_after)
        a->retry_after_ms = bs_http_retry_after_ms(r->retry_after, bs_time_wall_ms());
    pthread_mutex_lock(&a->w->mu);
    if (a->w->stopping && r->code == BS_EUNAVAIL) /* cut short by the shutdown */
        a->force_retry_ms = SHUTDOWN_RETRY_MS;
    pthread_mutex_unlock(&a->w->mu);
    if (bs_pool_submit(a->w->pool, attempt_end, a) != 0)
        attempt_end(a); /* the pool is stopping: end it here */
}

typedef struct {
    int found;
    char destination[64], webhook_id[160];
    char *payload;
    int max_attempts;
} delivery_row_t;

static int delivery_row_cb(const bs_meta_row_t *row, void *ud)
{
    delivery_row_t *d = ud;
    d->found = 1;
    snprintf(d->destination, sizeof d->destination, "%s", bs_meta_row_text(row, 0));
    snprintf(d->webhook_id, sizeof d->webhook_id, "%s", bs_meta_row_text(row, 1));
    d->payload = strdup(bs_meta_row_text(row, 2));
    d->max_attempts = (int)bs_meta_row_int(row, 3);
    return 1;
}

/* Ends an attempt that sent nothing (error text): the last one (retryable 0), or retried
 * after retry_ms (-1: the schedule's wait) while attempts remain. */
static void end_unsent(attempt_t *a, const char *error, int retryable, int64_t retry_ms)
{
    a->code = BS_EUNAVAIL;
    snprintf(a->error, sizeof a->error, "%s", error);
    a->final = !retryable;
    a->force_retry_ms = retry_ms;
    attempt_end(a);
}

/* Step 1 (a job worker). */
static void deliver_run(void *ud, bs_job_run_t *run)
{
    bs_webhooks_t *w = ud;
    attempt_t *a = calloc(1, sizeof *a);
    if (!a) {
        bs_job_fail(run, 1, 5000, "out of memory");
        return;
    }
    a->w = w;
    a->run = run;
    a->attempt = bs_job_attempt(run);
    a->at_ms = bs_time_wall_ms();
    a->retry_after_ms = -1;
    a->force_retry_ms = -1;
    snprintf(a->id, sizeof a->id, "%s", bs_job_id(run));
    snprintf(a->tenant, sizeof a->tenant, "%s", bs_job_tenant(run));
    bs_err_t err;
    delivery_row_t row = {0};
    const bs_val_t k[] = {BS_TXT(a->id)};
    int rc = bs_meta_query(w->meta,
                           "SELECT destination, webhook_id, payload, max_attempts FROM "
                           "webhook_deliveries WHERE id = ?",
                           k, 1, delivery_row_cb, &row, &err);
    if (rc || !row.found || !row.payload) {
        free(row.payload);
        free(a);
        bs_job_fail(run, rc != 0, rc ? 5000 : 0, rc ? err.msg : "the delivery's row is missing");
        return;
    }
    snprintf(a->destination, sizeof a->destination, "%s", row.destination);
    a->max_attempts = row.max_attempts;
    dest_t d;
    rc = load_dest(w, a->tenant, row.destination, &d, &err);
    if (rc) {
        /* Deleted (or broken): nothing to send to. A store error is worth a retry. */
        free(row.payload);
        int retry = rc != BS_ENOTFOUND && rc != BS_EINVAL;
        end_unsent(a, err.msg, retry, retry ? 5000 : -1);
        return;
    }
    a->n_schedule = d.n_schedule;
    memcpy(a->schedule_ms, d.schedule_ms, sizeof a->schedule_ms);
    /* The Standard Webhooks headers, then the destination's own. */
    char h_id[200], h_ts[48], h_sig[96], h_ct[96];
    int64_t ts = a->at_ms / 1000;
    char sig[64];
    if (bs_webhooks_sign(d.secret, row.webhook_id, ts, row.payload, strlen(row.payload), sig,
                         sizeof sig, &err) != 0) {
        dest_clear(&d);
        free(row.payload);
        end_unsent(a, err.msg, 0, -1);
        return;
    }
    snprintf(h_id, sizeof h_id, "webhook-id: %s", row.webhook_id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    snprintf(h_ct, sizeof h_ct, "Content-Type: %s", d.content_type);
    const char *headers[MAX_HEADERS + 5];
    int nh = 0;
    headers[nh++] = h_id;
    headers[nh++] = h_ts;
    headers[nh++] = h_sig;
    headers[nh++] = h_ct;
    for (int i = 0; i < d.n_headers; i++)
        headers[nh++] = d.headers[i];
    headers[nh] = NULL;
    bs_httpc_req_t req = {.method = "POST",
                          .url = d.url,
                          .headers = headers,
                          .body = row.payload,
                          .body_len = strlen(row.payload),
                          .timeout_ms = d.timeout_ms,
                          .max_response_bytes = RESPONSE_EXCERPT * 4};
    pthread_mutex_lock(&w->mu);
    int stopping = w->stopping;
    rc = stopping ? 0 : bs_httpc_submit(w->http, &req, on_response, a, &err);
    pthread_mutex_unlock(&w->mu);
    OPENSSL_cleanse(d.secret, sizeof d.secret);
    dest_clear(&d);
    free(row.payload);
    if (stopping)
        end_unsent(a, "not sent: shutting down", 1, SHUTDOWN_RETRY_MS);
    else if (rc) /* a full queue: the schedule's wait, as for a receiver that is down */
        end_unsent(a, err.msg, rc != BS_EINVAL, -1);
    /* else on_response ends it */
}

/* ---- deliveries ------------------------------------------------------------------------------ */

/* The webhook-id for an event id (see webhooks.h). */
static void webhook_id_of(const char *event_id, char out[160])
{
    size_t n = strlen(event_id);
    int ok = n >= 1 && n <= 128;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)event_id[i];
        ok = c > 0x20 && c < 0x7f && c != '.' && c != ',';
    }
    if (ok) {
        snprintf(out, 160, "%s", event_id);
        return;
    }
    char hex[65];
    bs_sha256_hex(event_id, n, hex);
    snprintf(out, 160, "msg_%.32s", hex);
}

typedef struct {
    int found;
    char tenant[64], destination[64], event_id[300], webhook_id[160];
    char *payload;
} replay_row_t;

static int replay_row_cb(const bs_meta_row_t *row, void *ud)
{
    replay_row_t *r = ud;
    r->found = 1;
    snprintf(r->destination, sizeof r->destination, "%s", bs_meta_row_text(row, 0));
    snprintf(r->event_id, sizeof r->event_id, "%s", bs_meta_row_text(row, 1));
    snprintf(r->webhook_id, sizeof r->webhook_id, "%s", bs_meta_row_text(row, 2));
    r->payload = strdup(bs_meta_row_text(row, 3));
    return 1;
}

/* The job and the row, in one transaction. unique: collapse onto a live delivery of the
 * same (destination, event id). */
static int enqueue(bs_webhooks_t *w, const char *tenant, const char *destination,
                   const char *event_id, const char *webhook_id, const char *payload,
                   const char *created_by, const char *replay_of, int unique, char id[37],
                   bs_err_t *err)
{
    dest_t d;
    int rc = load_dest(w, tenant, destination, &d, err);
    if (rc)
        return rc;
    dest_clear(&d);
    char args[128], key[400];
    snprintf(args, sizeof args, "{\"destination\":\"%s\"}", destination);
    snprintf(key, sizeof key, "%s/%s", destination, event_id);
    int64_t now = bs_time_wall_ms();
    int64_t run_at = d.schedule_ms[0] > 0 ? now + jittered(d.schedule_ms[0]) : 0;
    bs_job_new_t nj = {.kind = BS_WEBHOOK_JOB,
                       .tenant = tenant,
                       .args = args,
                       .unique_key = unique ? key : NULL,
                       .run_at_ms = run_at,
                       .max_attempts = d.n_schedule,
                       .created_by = created_by ? created_by : "system"};
    if ((rc = bs_meta_tx_begin(w->meta, err)) != 0)
        return rc;
    int existed = 0;
    rc = bs_jobs_enqueue(w->jobs, &nj, id, &existed, err);
    if (rc == 0 && !existed) {
        const bs_val_t v[] = {BS_TXT(id),           BS_TXT(tenant),
                              BS_TXT(destination),  BS_TXT(event_id),
                              BS_TXT(webhook_id),   BS_TXT(payload),
                              BS_INT(d.n_schedule), BS_INT(run_at ? run_at : now),
                              BS_TXT(replay_of),    BS_INT(now),
                              BS_INT(now),          BS_TXT(created_by ? created_by : "system")};
        rc = bs_meta_exec(w->meta,
                          "INSERT INTO webhook_deliveries (id, tenant, destination, event_id, "
                          "webhook_id, payload, max_attempts, next_attempt_at, replay_of, "
                          "created_at, updated_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          v, 12, NULL, err);
    }
    if (rc) {
        bs_meta_tx_rollback(w->meta);
        return rc;
    }
    if ((rc = bs_meta_tx_commit(w->meta, err)) != 0)
        return rc;
    /* The enqueue woke the workers inside the transaction, before the job was visible to
     * another connection (PostgreSQL): wake them again now that it is. */
    bs_jobs_kick(w->jobs);
    return 0;
}

int bs_webhooks_deliver(bs_webhooks_t *w, const char *tenant, const char *destination,
                        const char *event_id, const char *payload, const char *created_by,
                        char delivery_id[37], bs_err_t *err)
{
    if (!event_id || !*event_id || strlen(event_id) > 256)
        return bs_err_setf(err, BS_EINVAL, "id", "an event id of 1 to 256 bytes is required");
    if (!payload || strlen(payload) > MAX_PAYLOAD)
        return bs_err_set(err, BS_EINVAL, "a webhook payload of at most %d bytes is required",
                          MAX_PAYLOAD);
    char webhook_id[160];
    webhook_id_of(event_id, webhook_id);
    return enqueue(w, tenant, destination, event_id, webhook_id, payload, created_by, NULL, 1,
                   delivery_id, err);
}

int bs_webhooks_replay(bs_webhooks_t *w, const char *tenant, const char *id, const char *created_by,
                       char new_id[37], bs_err_t *err)
{
    replay_row_t r = {0};
    const bs_val_t k[] = {BS_TXT(id), BS_TXT(tenant)};
    int rc = bs_meta_query(w->meta,
                           "SELECT destination, event_id, webhook_id, payload FROM "
                           "webhook_deliveries WHERE id = ? AND tenant = ?",
                           k, 2, replay_row_cb, &r, err);
    if (rc == 0 && !r.found)
        rc = bs_err_set(err, BS_ENOTFOUND, "no webhook delivery '%.64s'", id);
    if (rc == 0 && !r.payload)
        rc = bs_err_set(err, BS_ENOMEM, "out of memory");
    if (rc == 0)
        rc = enqueue(w, tenant, r.destination, r.event_id, r.webhook_id, r.payload, created_by, id,
                     0, new_id, err);
    free(r.payload);
    return rc;
}

/* ---- the delivery log ------------------------------------------------------------------------ */

#define DELIVERY_COLS                                                                              \
    "d.id, d.destination, d.event_id, d.webhook_id, d.state, d.attempts, d.max_attempts, "         \
    "d.last_status, d.last_error, d.created_at, d.updated_at, d.next_attempt_at, d.replay_of, "    \
    "d.created_by, j.state"

typedef struct {
    bs_buf_t *b;
    int n, limit;
    char last[64];
} list_ctx_t;

/* A delivery's state from its row's and its job's ("" when the job is gone): the job is
 * the truth while it exists: cancelled there, or an attempt running now. */
static const char *delivery_state(const char *state, const char *job_state)
{
    if (strcmp(job_state, "cancelled") == 0)
        return "cancelled";
    if (strcmp(job_state, "running") == 0 && strcmp(state, "pending") == 0)
        return "delivering";
    return state;
}

static void render_delivery(const bs_meta_row_t *row, bs_buf_t *b, int full)
{
    const char *state = delivery_state(bs_meta_row_text(row, 4), bs_meta_row_text(row, 14));
    bs_jw_key(b, "id");
    bs_jw_str(b, bs_meta_row_text(row, 0));
    bs_jw_key(b, "destination");
    bs_jw_str(b, bs_meta_row_text(row, 1));
    bs_jw_key(b, "event_id");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "webhook_id");
    bs_jw_str(b, bs_meta_row_text(row, 3));
    bs_jw_key(b, "state");
    bs_jw_str(b, state);
    bs_jw_key(b, "attempts");
    bs_jw_int(b, bs_meta_row_int(row, 5));
    bs_jw_key(b, "max_attempts");
    bs_jw_int(b, bs_meta_row_int(row, 6));
    bs_jw_key(b, "last_status");
    if (bs_meta_row_int(row, 5) > 0)
        bs_jw_int(b, bs_meta_row_int(row, 7));
    else
        bs_jw_null(b);
    bs_jw_key(b, "last_error");
    if (bs_meta_row_is_null(row, 8))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 8));
    bs_jw_key(b, "created_at");
    bs_jw_time(b, bs_meta_row_int(row, 9));
    bs_jw_key(b, "updated_at");
    bs_jw_time(b, bs_meta_row_int(row, 10));
    bs_jw_key(b, "next_attempt_at");
    if (bs_meta_row_is_null(row, 11) || strcmp(state, "pending") != 0)
        bs_jw_null(b);
    else
        bs_jw_time(b, bs_meta_row_int(row, 11));
    bs_jw_key(b, "replay_of");
    if (bs_meta_row_is_null(row, 12))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 12));
    if (full) {
        bs_jw_key(b, "created_by");
        bs_jw_str(b, bs_meta_row_text(row, 13));
        const char *payload = bs_meta_row_text(row, 15);
        bs_jw_key(b, "payload");
        cJSON *j = cJSON_Parse(payload);
        if (j)
            bs_jw_raw(b, payload, strlen(payload));
        else
            bs_jw_str(b, payload);
        cJSON_Delete(j);
    }
}

static int list_cb(const bs_meta_row_t *row, void *ud)
{
    list_ctx_t *c = ud;
    if (c->n++ >= c->limit)
        return 1;
    bs_jw_obj_begin(c->b);
    render_delivery(row, c->b, 0);
    bs_jw_obj_end(c->b);
    snprintf(c->last, sizeof c->last, "%s", bs_meta_row_text(row, 0));
    return 0;
}

#define LIST_FROM                                                                                  \
    "SELECT " DELIVERY_COLS " FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.id WHERE "    \
    "d.tenant = ?"
#define LIST_ORDER " ORDER BY d.id DESC LIMIT ?"

int bs_webhooks_list(bs_webhooks_t *w, const char *tenant, const char *destination, int limit,
                     const char *cursor, bs_buf_t *out, bs_err_t *err)
{
    /* One literal per variant (meta.h: a fixed set of texts, each one cached statement). */
    static const char *const sql[4] = {
        LIST_FROM LIST_ORDER,
        LIST_FROM " AND d.destination = ?" LIST_ORDER,
        LIST_FROM " AND d.id < ?" LIST_ORDER,
        LIST_FROM " AND d.destination = ? AND d.id < ?" LIST_ORDER,
    };
    if (limit < 1)
        limit = 100;
    if (cursor && !*cursor)
        cursor = NULL;
    bs_val_t v[4];
    int n = 0;
    v[n++] = BS_TXT(tenant);
    if (destination)
        v[n++] = BS_TXT(destination);
    if (cursor)
        v[n++] = BS_TXT(cursor);
    v[n++] = BS_INT(limit + 1);
    list_ctx_t c = {.b = out, .limit = limit};
    bs_jw_obj_begin(out);
    bs_jw_key(out, "items");
    bs_jw_arr_begin(out);
    int rc = bs_meta_query(w->meta, sql[(destination ? 1 : 0) + (cursor ? 2 : 0)], v, n, list_cb,
                           &c, err);
    if (rc)
        return rc;
    bs_jw_page_end(out, c.n > limit ? c.last : NULL);
    return 0;
}

typedef struct {
    bs_buf_t *b;
    int found;
} get_ctx_t;

static int get_cb(const bs_meta_row_t *row, void *ud)
{
    get_ctx_t *c = ud;
    c->found = 1;
    render_delivery(row, c->b, 1);
    return 1;
}

static int attempt_cb(const bs_meta_row_t *row, void *ud)
{
    bs_buf_t *b = ud;
    bs_jw_obj_begin(b);
    bs_jw_key(b, "attempt");
    bs_jw_int(b, bs_meta_row_int(row, 0));
    bs_jw_key(b, "at");
    bs_jw_time(b, bs_meta_row_int(row, 1));
    bs_jw_key(b, "outcome");
    bs_jw_str(b, bs_meta_row_text(row, 2));
    bs_jw_key(b, "status");
    if (bs_meta_row_int(row, 3) > 0)
        bs_jw_int(b, bs_meta_row_int(row, 3));
    else
        bs_jw_null(b);
    bs_jw_key(b, "duration_ms");
    bs_jw_double(b, bs_meta_row_double(row, 4));
    bs_jw_key(b, "error");
    if (bs_meta_row_is_null(row, 5))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 5));
    bs_jw_key(b, "response");
    if (bs_meta_row_is_null(row, 6))
        bs_jw_null(b);
    else
        bs_jw_str(b, bs_meta_row_text(row, 6));
    bs_jw_key(b, "retry_in_ms");
    if (bs_meta_row_is_null(row, 7))
        bs_jw_null(b);
    else
        bs_jw_int(b, bs_meta_row_int(row, 7));
    bs_jw_obj_end(b);
    return 0;
}

int bs_webhooks_get(bs_webhooks_t *w, const char *tenant, const char *id, bs_buf_t *out,
                    bs_err_t *err)
{
    get_ctx_t c = {.b = out};
    const bs_val_t k[] = {BS_TXT(id), BS_TXT(tenant)};
    bs_jw_obj_begin(out);
    int rc =
        bs_meta_query(w->meta,
                      "SELECT " DELIVERY_COLS ", d.payload FROM webhook_deliveries d LEFT JOIN "
                      "jobs j ON j.id = d.id WHERE d.id = ? AND d.tenant = ?",
                      k, 2, get_cb, &c, err);
    if (rc)
        return rc;
    if (!c.found)
        return bs_err_set(err, BS_ENOTFOUND, "no webhook delivery '%.64s'", id);
    bs_jw_key(out, "attempt_log");
    bs_jw_arr_begin(out);
    rc = bs_meta_query(w->meta,
                       "SELECT attempt, at, outcome, status, duration_ms, error, response, "
                       "retry_in_ms FROM webhook_attempts WHERE delivery_id = ? ORDER BY attempt",
                       k, 1, attempt_cb, out, err);
    if (rc)
        return rc;
    bs_jw_arr_end(out);
    bs_jw_obj_end(out);
    return 0;
}

static int counts_cb(const bs_meta_row_t *row, void *ud)
{
    bs_webhook_counts_t *c = ud;
    const char *state = delivery_state(bs_meta_row_text(row, 0), bs_meta_row_text(row, 1));
    int64_t n = bs_meta_row_int(row, 2);
    if (strcmp(state, "delivered") == 0)
        c->delivered += n;
    else if (strcmp(state, "failed") == 0)
        c->failed += n;
    else if (strcmp(state, "pending") == 0 || strcmp(state, "delivering") == 0)
        c->pending += n;
    return 0;
}

int bs_webhooks_counts(bs_webhooks_t *w, const char *tenant, const char *destination,
                       bs_webhook_counts_t *out, bs_err_t *err)
{
    memset(out, 0, sizeof *out);
    const bs_val_t k[] = {BS_TXT(tenant), BS_TXT(destination)};
    return bs_meta_query(w->meta,
                         "SELECT d.state, j.state, COUNT(*) FROM webhook_deliveries d LEFT JOIN "
                         "jobs j ON j.id = d.id WHERE d.tenant = ? AND d.destination = ? GROUP "
                         "BY d.state, j.state",
                         k, 2, counts_cb, out, err);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

bs_webhooks_t *bs_webhooks_new(bs_meta_t *m, bs_jobs_t *jobs, bs_httpc_t *http, bs_err_t *err)
{
    bs_webhooks_t *w = calloc(1, sizeof *w);
    if (!w) {
        bs_err_set(err, BS_ENOMEM, "out of memory");
        return NULL;
    }
    w->meta = m;
    w->jobs = jobs;
    w->http = http;
    w->retention_ms = 7LL * 86400 * 1000;
    w->last_cleanup_ms = bs_time_wall_ms() - CLEANUP_EVERY_MS + 60000; /* first after a minute */
    pthread_mutex_init(&w->mu, NULL);
    /* Two threads record attempts (a store write each) off the client thread. */
    w->pool = bs_pool_new(2, err);
    if (!w->pool) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    bs_job_kind_t k = {
        .kind = BS_WEBHOOK_JOB,
        .run = deliver_run,
        .ud = w,
        .max_attempts = (int)(sizeof default_schedule / sizeof default_schedule[0]),
        /* In flight at once in this process: bounded by the client's queue, not workers. */
        .concurrency = 1024,
        .api_enqueue = 0,
        .description = "Delivers an event to a webhook destination (Standard Webhooks "
                       "signature; the destination's retry schedule)",
    };
    if (bs_jobs_register(jobs, &k, err) != 0) {
        bs_pool_free(w->pool);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void bs_webhooks_set_retention(bs_webhooks_t *w, int64_t ms)
{
    pthread_mutex_lock(&w->mu);
    w->retention_ms = ms;
    pthread_mutex_unlock(&w->mu);
}

void bs_webhooks_stop(bs_webhooks_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_mutex_unlock(&w->mu);
}

void bs_webhooks_free(bs_webhooks_t *w)
{
    if (!w)
        return;
    bs_webhooks_stop(w);
    bs_pool_free(w->pool); /* ends what is queued there */
    pthread_mutex_destroy(&w->mu);
    free(w->series);
    free(w);
}
