/*
 * The prediction log's read route (issue 10): GET /v1/endpoints/{name}/predictions — the
 * records of the tenant's topic `predictions` (serving/predlog.h has the record) for one
 * endpoint, filtered by time, version, variant and shadow, a page at a time.
 *
 * The topic holds every endpoint's records in the order they were logged. A page reads it
 * from the cursor (the next log offset, as an opaque string), or else from the first record
 * logged at or after since − TIME_SLACK_MS (bs_log_offset_at; a record is logged after its
 * prediction time, within the drain period), and keeps the records whose fields (scanned,
 * not parsed: bs_predlog_fields) match. It stops at limit items, at the first record logged
 * at or after until + TIME_SLACK_MS (no later one can have been predicted before until), at
 * the end of the topic, or when it has scanned SCAN_MAX_RECORDS / SCAN_MAX_BYTES of other
 * endpoints' records — then the page may hold fewer than limit items and next_cursor goes
 * on from there. next_cursor is null when nothing more matches right now.
 *
 * Blocking route (the disk for the log; the store when the endpoint is not in the routing
 * snapshot): runs on a worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "serving/endpoints.h"
#include "serving/predlog.h"
#include "store/log.h"
#include "store/resources.h"

#define MAX_LIMIT 10000
#define READ_BATCH 1000
#define READ_BYTES (8u << 20)
#define SCAN_MAX_RECORDS 200000
#define SCAN_MAX_BYTES ((size_t)256 << 20)
#define PAGE_MAX_BYTES ((size_t)32 << 20)
#define TIME_SLACK_MS 2000

typedef struct {
    const char *endpoint;
    size_t endpoint_len;
    int64_t since_ms, until_ms; /* until 0: none */
    int version;                /* 0: any */
    const char *variant;        /* NULL: any */
    int shadow;                 /* -1: both */
    int limit;
    bs_buf_t *b;
    int items;
    size_t scanned_bytes;
    int scanned;
    int64_t next; /* the offset after the last record looked at */
    int done;     /* past until: nothing more can match */
} page_t;

static int page_cb(const bs_log_record_t *r, void *ud)
{
    page_t *pg = ud;
    pg->next = r->offset + 1;
    pg->scanned++;
    pg->scanned_bytes += r->len;
    if (pg->until_ms && r->time_ms >= pg->until_ms + TIME_SLACK_MS) {
        pg->done = 1;
        return 1;
    }
    bs_predlog_fields_t f;
    if (bs_predlog_fields(r->data, r->len, &f) != 0 || !f.endpoint ||
        f.endpoint_len != pg->endpoint_len || memcmp(f.endpoint, pg->endpoint, f.endpoint_len))
        goto next;
    if (pg->since_ms && f.time_ms < pg->since_ms)
        goto next;
    if (pg->until_ms && f.time_ms >= pg->until_ms)
        goto next;
    if (pg->version && f.version != pg->version)
        goto next;
    if (pg->shadow >= 0 && f.shadow != pg->shadow)
        goto next;
    if (pg->variant && (!f.variant || f.variant_len != strlen(pg->variant) ||
                        memcmp(f.variant, pg->variant, f.variant_len)))
        goto next;
    bs_jw_raw(pg->b, r->data, r->len);
    pg->items++;
next:
    return pg->items >= pg->limit || pg->b->len >= PAGE_MAX_BYTES ||
           pg->scanned >= SCAN_MAX_RECORDS || pg->scanned_bytes >= SCAN_MAX_BYTES;
}

/* since / until (query parameter name, value s or NULL): an RFC 3339 timestamp, or a
 * duration meaning that long before now.
 * 0 (and *ms; 0 when absent), or -1 after responding 400. */
static int time_param(bs_req_t *req, const char *name, const char *s, int64_t now_ms, int64_t *ms)
{
    *ms = 0;
    if (!s)
        return 0;
    int64_t d;
    if (bs_time_parse_rfc3339(s, ms) == 0 && *ms > 0)
        return 0;
    if (bs_time_parse_duration(s, &d) == 0 && d < now_ms) {
        *ms = now_ms - d;
        return 0;
    }
    bs_resp_errorf(req, BS_EINVAL, name,
                   "%s must be an RFC 3339 timestamp (2026-05-01T12:00:00Z) or a duration "
                   "before now (1h, 30m), got '%.40s'",
                   name, s);
    return -1;
}

void bs__api_predictions_list(bs_req_t *req)
{
    bs_app_t *app = APP(req);
    const char *name = bs_req_param(req, "name");
    if (!bs_resources_valid_name(name))
        return bs_resp_errorf(req, BS_EINVAL, "name",
                              "an endpoint name must match [a-z0-9][a-z0-9_-]{0,62}, got '%.64s'",
                              name ? name : "");
    page_t pg = {.endpoint = name, .endpoint_len = strlen(name), .shadow = -1};
    int64_t now = bs_time_wall_ms();
    if (time_param(req, "since", bs_req_query(req, "since"), now, &pg.since_ms) ||
        time_param(req, "until", bs_req_query(req, "until"), now, &pg.until_ms))
        return;
    if (pg.until_ms && pg.since_ms >= pg.until_ms)
        return bs_resp_errorf(req, BS_EINVAL, "until", "until must be after since");
    const char *v = bs_req_query(req, "version");
    if (v && !(pg.version = bs__api_parse_version(v, strlen(v))))
        return bs_resp_errorf(req, BS_EINVAL, "version",
                              "version must be a version number (1, 2, …), got '%.32s'", v);
    pg.variant = bs_req_query(req, "variant");
    if (pg.variant && (!*pg.variant || strlen(pg.variant) > 63))
        return bs_resp_errorf(req, BS_EINVAL, "variant",
                              "variant must be a variant name of 1 to 63 characters");
    const char *sh = bs_req_query(req, "shadow");
    if (sh) {
        if (!strcmp(sh, "true"))
            pg.shadow = 1;
        else if (!strcmp(sh, "false"))
            pg.shadow = 0;
        else
            return bs_resp_errorf(req, BS_EINVAL, "shadow",
                                  "shadow must be true (shadow runs only) or false (routed "
                                  "predictions only), got '%.16s'",
                                  sh);
    }
    if (bs__api_limit(req, 100, MAX_LIMIT, &pg.limit) < 0)
        return;
    const char *cur = bs_req_query(req, "cursor");
    int64_t from = 0;
    if (cur && bs__api_parse_offset(cur, &from) != 0)
        return bs_resp_errorf(req, BS_EINVAL, "cursor",
                              "cursor must be the next_cursor of a previous page, got '%.32s'",
                              cur);
    /* The endpoint exists: in this replica's routing snapshot (a worker runs as a QSBR
     * reader), else in the store, the authority (one just stored through another replica
     * may not be in the snapshot yet). */
    bs_err_t err;
    int rc = 0;
    if (!app->endpoints || !bs_endpoints_get(app->endpoints, req->who.tenant, name))
        rc = bs_resources_get(app->meta, req->who.tenant, BS_ENDPOINT_KIND, name, NULL, NULL, &err);
    if (rc == BS_ENOTFOUND)
        return bs_resp_errorf(req, BS_ENOTFOUND, "name", "no endpoint named '%s'", name);
    if (rc)
        return bs_resp_error(req, &err);

    bs_buf_t b;
    bs_buf_init(&b);
    bs_jw_obj_begin(&b);
    bs_jw_key(&b, "items");
    bs_jw_arr_begin(&b);
    pg.b = &b;
    int at_end = 0;
    rc = 0;
    if (!cur && pg.since_ms)
        rc = bs_log_offset_at(app->log, req->who.tenant, BS_PREDLOG_TOPIC,
                              pg.since_ms - TIME_SLACK_MS, &from, &err);
    pg.next = from;
    while (rc == 0) {
        int64_t next = from;
        int n = bs_log_read(app->log, req->who.tenant, BS_PREDLOG_TOPIC, from, READ_BATCH,
                            READ_BYTES, page_cb, &pg, &next, &err);
        if (n < 0) {
            rc = n;
            break;
        }
        if (n == 0) { /* the end of the topic (or from past it) */
            at_end = 1;
            if (next > pg.next)
                pg.next = next;
            break;
        }
        if (pg.done || pg.items >= pg.limit || b.len >= PAGE_MAX_BYTES ||
            pg.scanned >= SCAN_MAX_RECORDS || pg.scanned_bytes >= SCAN_MAX_BYTES)
            break;
        from = pg.next;
    }
    if (rc == BS_ENOTFOUND) { /* no predictions topic (yet): nothing logged */
        rc = 0;
        at_end = 1;
    }
    if (rc) {
        bs_buf_free(&b);
        return bs_resp_error(req, &err);
    }
    char cursor[32];
    snprintf(cursor, sizeof cursor, "%lld", (long long)pg.next);
    bs_jw_arr_end(&b);
    bs_jw_key(&b, "next_cursor");
    if (at_end || pg.done)
        bs_jw_null(&b);
    else
        bs_jw_str(&b, cursor);
    bs_jw_obj_end(&b);
    if (b.oom) {
        bs_buf_free(&b);
        return bs_resp_errorf(req, BS_ENOMEM, NULL, "out of memory rendering the page");
    }
    bs_resp_json(req, 200, &b);
    bs_buf_free(&b);
}
