/* events/topics: the Topic spec (defaults, errors naming the field, sizes), publish body
 * parsing (one event, arrays, JSON lines, CloudEvents structured / batched / binary), the
 * dedup key rules, per-item errors by index, size limits, and the snapshot rebuilt from
 * Topic resources over a real log (created, found, changed, removed). */
#include "test_common.h"

#include <unistd.h>

#include "base/arena.h"
#include "base/rcu.h"
#include "events/topics.h"
#include "store/log.h"
#include "store/meta.h"
#include "store/resources.h"

/* ---- the spec ------------------------------------------------------------------------------ */

static cJSON *norm(const char *spec, bs_topic_t *t, bs_err_t *err)
{
    cJSON *j = cJSON_Parse(spec);
    assert_non_null(j);
    cJSON *out = NULL;
    int rc = bs_topic_spec_normalise("orders", j, 1048576, &out, t, err);
    cJSON_Delete(j);
    if (rc)
        assert_null(out);
    return out;
}

static char *norm_text(const char *spec, bs_topic_t *t)
{
    bs_err_t err;
    cJSON *o = norm(spec, t, &err);
    assert_non_null(o);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void test_spec_defaults(void **state)
{
    (void)state;
    bs_topic_t t;
    char *s = norm_text("{}", &t);
    assert_string_equal(s, "{\"retention\":{},\"sync\":\"always\",\"dedup_window\":\"2m\","
                           "\"max_event_bytes\":1048576}");
    free(s);
    assert_int_equal(t.log.sync_interval_ms, 0);
    assert_int_equal(t.log.dedup_window_ms, 120000);
    assert_int_equal(t.log.retention_ms, 0);
    assert_int_equal(t.log.retention_bytes, 0);
    assert_int_equal(t.max_event_bytes, 1048576);
    assert_int_equal(t.log.max_record_bytes, 1048576);
    assert_string_equal(t.dead_letter, "");
    assert_string_equal(t.name, "orders");
}

static void test_spec_values(void **state)
{
    (void)state;
    bs_topic_t t;
    char *s = norm_text("{\"retention\":{\"max_age\":\"7d\",\"max_bytes\":\"10GiB\"},\"sync\":\"250ms\","
                        "\"dedup_window\":\"0\",\"max_event_bytes\":\"64KiB\",\"dead_letter\":\"dlq\"}",
                        &t);
    /* what the user wrote is kept */
    assert_string_equal(s, "{\"retention\":{\"max_age\":\"7d\",\"max_bytes\":\"10GiB\"},\"sync\":\"250ms\","
                           "\"dedup_window\":\"0\",\"max_event_bytes\":\"64KiB\",\"dead_letter\":\"dlq\"}");
    free(s);
    assert_int_equal(t.log.retention_ms, 7LL * 86400 * 1000);
    assert_int_equal(t.log.retention_bytes, 10LL * 1024 * 1024 * 1024);
    assert_int_equal(t.log.sync_interval_ms, 250);
    assert_int_equal(t.log.dedup_window_ms, 0);
    assert_int_equal(t.max_event_bytes, 65536);
    assert_string_equal(t.dead_letter, "dlq");
    /* the normalised spec normalises to itself */
    bs_topic_t t2;
    char *again = norm_text("{\"retention\":{\"max_age\":\"7d\",\"max_bytes\":\"10GiB\"},\"sync\":"
                            "\"250ms\",\"dedup_window\":\"0\",\"max_event_bytes\":\"64KiB\","
                            "\"dead_letter\":\"dlq\"}",
                            &t2);
    assert_memory_equal(&t.log, &t2.log, sizeof t.log);
    free(again);
}

static void test_spec_errors(void **state)
{
    (void)state;
    struct {
        const char *spec, *field;
    } cases[] = {
        {"[]", "spec"},
        {"{\"retension\":{}}", "retension"},
        {"{\"retention\":5}", "retention"},
        {"{\"retention\":{\"max_agee\":\"1d\"}}", "retention.max_agee"},
        {"{\"retention\":{\"max_age\":\"soon\"}}", "retention.max_age"},
        {"{\"retention\":{\"max_age\":7}}", "retention.max_age"},
        {"{\"retention\":{\"max_bytes\":\"10XB\"}}", "retention.max_bytes"},
        {"{\"retention\":{\"max_bytes\":-1}}", "retention.max_bytes"},
        {"{\"retention\":{\"max_bytes\":0}}", "retention.max_bytes"},
        {"{\"sync\":\"sometimes\"}", "sync"},
        {"{\"sync\":\"0\"}", "sync"},
        {"{\"sync\":\"2h\"}", "sync"},
        {"{\"sync\":true}", "sync"},
        {"{\"dedup_window\":\"-1s\"}", "dedup_window"},
        {"{\"dedup_window\":\"30d\"}", "dedup_window"},
        {"{\"dedup_window\":120}", "dedup_window"},
        {"{\"max_event_bytes\":8}", "max_event_bytes"},
        {"{\"max_event_bytes\":\"17MiB\"}", "max_event_bytes"},
        {"{\"max_event_bytes\":1.5}", "max_event_bytes"},
        {"{\"dead_letter\":\"orders\"}", "dead_letter"},
        {"{\"dead_letter\":\"Bad Name\"}", "dead_letter"},
        {"{\"dead_letter\":3}", "dead_letter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bs_topic_t t;
        bs_err_t err;
        bs_err_clear(&err);
        cJSON *o = norm(cases[i].spec, &t, &err);
        if (o)
            fail_msg("accepted %s", cases[i].spec);
        assert_int_equal(err.code, BS_EINVAL);
        if (strcmp(err.field, cases[i].field) != 0)
            fail_msg("%s: field '%s', expected '%s' (%s)", cases[i].spec, err.field,
                     cases[i].field, err.msg);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    struct {
        const char *json;
        int64_t want; /* -1: refused */
    } cases[] = {
        {"512", 512},          {"\"512\"", 512},        {"\"64KiB\"", 65536},
        {"\"64K\"", 65536},    {"\"1.5MB\"", 1572864},  {"\"10GiB\"", 10737418240LL},
        {"\"2 TiB\"", 2199023255552LL}, {"\"100B\"", 100}, {"\"-1\"", -1},
        {"\"10XB\"", -1},      {"\"GiB\"", -1},         {"1.5", -1},
        {"-3", -1},            {"true", -1},            {"\"5KiBs\"", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = cJSON_Parse(cases[i].json);
        int64_t v = 0;
        int rc = bs_topic_parse_size(j, &v);
        cJSON_Delete(j);
        if (cases[i].want < 0) {
            if (rc == 0)
                fail_msg("%s accepted as %lld", cases[i].json, (long long)v);
        } else {
            if (rc != 0 || v != cases[i].want)
                fail_msg("%s: rc %d value %lld", cases[i].json, rc, (long long)v);
        }
    }
}

/* ---- events ------------------------------------------------------------------------------- */

typedef struct {
    bs_arena_t a;
    bs_topic_parse_opts_t o;
    bs_topic_batch_t b;
    bs_err_t err;
    bs_topic_attr_t ce[16];
} px_t;

static int px_setup(void **state)
{
    px_t *p = calloc(1, sizeof *p);
    bs_arena_init(&p->a, 4096);
    p->o.max_event_bytes = 1048576;
    p->o.max_depth = 32;
    *state = p;
    return 0;
}

static int px_teardown(void **state)
{
    px_t *p = *state;
    bs_arena_deinit(&p->a);
    free(p);
    return 0;
}

static int parse(px_t *p, const char *ct, const char *body)
{
    p->o.content_type = ct;
    return bs_topic_events_parse(&p->a, body, body ? strlen(body) : 0, &p->o, &p->b, &p->err);
}

static void assert_data(const bs_topic_event_t *ev, const char *want)
{
    assert_int_equal(ev->code, 0);
    assert_int_equal(ev->rec.len, strlen(want));
    assert_memory_equal(ev->rec.data, want, strlen(want));
}

static void test_single_event(void **state)
{
    px_t *p = *state;
    assert_int_equal(parse(p, "application/json; charset=utf-8", "  {\"amount\": 1.50, \"x\":[1,2]}\n"), 0);
    assert_int_equal(p->b.n, 1);
    assert_true(p->b.single);
    assert_string_equal(p->b.mode, "json");
    assert_int_equal(p->b.accepted, 1);
    assert_data(&p->b.events[0], "{\"amount\": 1.50, \"x\":[1,2]}"); /* as sent, trimmed */
    assert_null(p->b.events[0].rec.id);
    assert_null(p->b.events[0].rec.dedup_key);
    /* no content type, and what curl -d sends */
    assert_int_equal(parse(p, NULL, "{\"a\":1}"), 0);
    assert_int_equal(parse(p, "application/x-www-form-urlencoded", "{\"a\":1}"), 0);
    /* a single event that is not an object is the request's error */
    assert_int_equal(parse(p, "application/json", "42"), BS_EINVAL);
    assert_int_equal(parse(p, "application/json", "{\"a\":"), BS_EPARSE);
    assert_int_equal(parse(p, "application/json", "   "), BS_EINVAL);
    assert_int_equal(parse(p, "application/json", NULL), BS_EINVAL);
}

static void test_array_per_item_errors(void **state)
{
    px_t *p = *state;
    p->o.max_event_bytes = 40;
    const char *body = "[ {\"a\": 1.50} ,\"str\", {\"big\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},"
                       "{\"specversion\":\"1.0\",\"id\":\"e1\",\"type\":\"t\"}, {\"b\":[1,{\"c\":\"]\"}]} ]";
    assert_int_equal(parse(p, "application/json", body), 0);
    assert_false(p->b.single);
    assert_string_equal(p->b.mode, "array");
    assert_int_equal(p->b.n, 5);
    assert_int_equal(p->b.accepted, 2);
    assert_data(&p->b.events[0], "{\"a\": 1.50}");
    assert_int_equal(p->b.events[1].code, BS_EINVAL);
    assert_non_null(strstr(p->b.events[1].message, "JSON object"));
    assert_int_equal(p->b.events[2].code, BS_ETOOBIG);
    assert_non_null(strstr(p->b.events[2].message, "max_event_bytes is 40"));
    assert_int_equal(p->b.events[3].code, BS_EINVAL); /* a CloudEvent without source */
    assert_string_equal(p->b.events[3].field, "source");
    assert_data(&p->b.events[4], "{\"b\":[1,{\"c\":\"]\"}]}");
    /* a body that is not JSON fails as a whole */
    assert_int_equal(parse(p, "application/json", "[{\"a\":1}, {\"a\":}]"), BS_EPARSE);
    assert_int_equal(parse(p, "application/json", "[]"), BS_EINVAL);
}

static void test_single_oversized(void **state)
{
    px_t *p = *state;
    p->o.max_event_bytes = 16;
    assert_int_equal(parse(p, "application/json", "{\"a\":\"0123456789abcdef\"}"), BS_ETOOBIG);
    assert_non_null(strstr(p->err.msg, "max_event_bytes is 16"));
    assert_int_equal(parse(p, "application/json", "{\"a\":\"0123\"}"), 0);
}

static void test_too_many_events(void **state)
{
    px_t *p = *state;
    bs_buf_t b;
    bs_buf_init(&b);
    bs_buf_putc(&b, '[');
    for (int i = 0; i <= BS_LOG_MAX_BATCH; i++)
        bs_buf_puts(&b, i ? ",{}" : "{}");
    bs_buf_putc(&b, ']');
    bs_buf_putc(&b, 0);
    assert_int_equal(parse(p, "application/json", b.data), BS_ETOOBIG);
    bs_buf_free(&b);
}

static void test_dedup_keys(void **state)
{
    px_t *p = *state;
    const char *ce = "{\"specversion\":\"1.0\",\"id\":\"ce-7\",\"source\":\"/s\",\"type\":\"t\"}";
    char body[512];
    snprintf(body, sizeof body, "[{\"a\":1},%s]", ce);
    /* nothing: no key; a CloudEvent: its id (and its id as the record id) */
    assert_int_equal(parse(p, NULL, body), 0);
    assert_null(p->b.events[0].rec.dedup_key);
    assert_string_equal(p->b.events[1].rec.dedup_key, "ce-7");
    assert_string_equal(p->b.events[1].rec.id, "ce-7");
    /* Nats-Msg-Id: after the CloudEvents id, with the index in a batch */
    p->o.nats_msg_id = "n1";
    assert_int_equal(parse(p, NULL, body), 0);
    assert_string_equal(p->b.events[0].rec.dedup_key, "n1:0");
    assert_string_equal(p->b.events[1].rec.dedup_key, "ce-7");
    assert_int_equal(parse(p, NULL, "{\"a\":1}"), 0);
    assert_string_equal(p->b.events[0].rec.dedup_key, "n1");
    /* Idempotency-Key: first of all */
    p->o.idempotency_key = "k9";
    assert_int_equal(parse(p, NULL, body), 0);
    assert_string_equal(p->b.events[0].rec.dedup_key, "k9:0");
    assert_string_equal(p->b.events[1].rec.dedup_key, "k9:1");
    assert_string_equal(p->b.events[1].rec.id, "ce-7");
    assert_int_equal(parse(p, NULL, ce), 0);
    assert_string_equal(p->b.events[0].rec.dedup_key, "k9");
    /* too long a key */
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    p->o.idempotency_key = longkey;
    assert_int_equal(parse(p, NULL, "{\"a\":1}"), BS_EINVAL);
    assert_string_equal(p->err.field, "Idempotency-Key");
}

static void test_json_lines(void **state)
{
    px_t *p = *state;
    const char *body = "{\"a\":1}\r\n\n  {\"a\":2\n[1]\n{\"a\":3}";
    assert_int_equal(parse(p, "application/x-ndjson", body), 0);
    assert_string_equal(p->b.mode, "lines");
    assert_int_equal(p->b.n, 4); /* blank lines are no events */
    assert_data(&p->b.events[0], "{\"a\":1}");
    assert_int_equal(p->b.events[1].code, BS_EINVAL);
    assert_non_null(strstr(p->b.events[1].message, "line 3"));
    assert_int_equal(p->b.events[2].code, BS_EINVAL);
    assert_data(&p->b.events[3], "{\"a\":3}");
    /* the other names of the format, and lines sent as application/json */
    assert_int_equal(parse(p, "application/jsonl", "{\"a\":1}\n{\"a\":2}\n"), 0);
    assert_int_equal(p->b.n, 2);
    assert_int_equal(parse(p, "application/json", "{\"a\":1}\n{\"a\":2}\n"), 0);
    assert_string_equal(p->b.mode, "lines");
    assert_int_equal(p->b.accepted, 2);
    /* an idempotency key covers the lines by index */
    p->o.idempotency_key = "k";
    assert_int_equal(parse(p, "application/x-ndjson", "{\"a\":1}\n{\"a\":2}"), 0);
    assert_string_equal(p->b.events[1].rec.dedup_key, "k:1");
    p->o.idempotency_key = NULL;
    /* not lines: the first line is not JSON on its own */
    assert_int_equal(parse(p, "application/json", "{\"a\":\n1}\n{"), BS_EPARSE);
}

static void test_cloudevents_structured(void **state)
{
    px_t *p = *state;
    const char *ok = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/orders\",\"type\":\"order.created\","
                     "\"time\":\"2024-05-01T12:00:00Z\",\"subject\":\"o-1\",\"tenantid\":\"x\",\"n\":3,"
                     "\"data\":{\"amount\":10}}";
    assert_int_equal(parse(p, "application/cloudevents+json; charset=utf-8", ok), 0);
    assert_string_equal(p->b.mode, "cloudevent");
    assert_string_equal(p->b.events[0].rec.id, "1");
    struct {
        const char *ev, *field;
    } bad[] = {
        {"{\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}", "specversion"},
        {"{\"specversion\":\"0.3\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}", "specversion"},
        {"{\"specversion\":\"1.0\",\"source\":\"s\",\"type\":\"t\"}", "id"},
        {"{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"s\",\"type\":\"t\"}", "id"},
        {"{\"specversion\":\"1.0\",\"id\":1,\"source\":\"s\",\"type\":\"t\"}", "id"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\"}", "source"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\"}", "type"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"time\":\"yesterday\"}", "time"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"Bad_Name\":1}", "Bad_Name"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"ext\":{\"a\":1}}", "ext"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"data\":1,\"data_base64\":\"AA==\"}", "data_base64"},
        {"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"datacontenttype\":5}", "datacontenttype"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(p, "application/cloudevents+json", bad[i].ev);
        if (rc != BS_EINVAL || strcmp(p->err.field, bad[i].field) != 0)
            fail_msg("%s: rc %d field '%s' (%s)", bad[i].ev, rc, p->err.field, p->err.msg);
    }
    /* an object with specversion sent as application/json is a CloudEvent too */
    assert_int_equal(parse(p, "application/json", bad[1].ev), BS_EINVAL);
    /* structured mode takes one event */
    assert_int_equal(parse(p, "application/cloudevents+json", "[]"), BS_EINVAL);
    /* other CloudEvents formats are not taken */
    assert_int_equal(parse(p, "application/cloudevents+protobuf", "x"), BS_EMEDIA);
    assert_int_equal(parse(p, "text/csv", "a,b"), BS_EMEDIA);
}

static void test_cloudevents_batch(void **state)
{
    px_t *p = *state;
    const char *body = "[{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"s\",\"type\":\"t\"},"
                       "{\"amount\":3},"
                       "{\"specversion\":\"1.0\",\"id\":\"c\",\"source\":\"s\",\"type\":\"t\"}]";
    assert_int_equal(parse(p, "application/cloudevents-batch+json", body), 0);
    assert_string_equal(p->b.mode, "cloudevents-batch");
    assert_int_equal(p->b.n, 3);
    assert_int_equal(p->b.accepted, 2);
    assert_int_equal(p->b.events[1].code, BS_EINVAL); /* in a batch every event is a CloudEvent */
    assert_string_equal(p->b.events[1].field, "specversion");
    assert_string_equal(p->b.events[2].rec.dedup_key, "c");
    assert_int_equal(parse(p, "application/cloudevents-batch+json", "{\"a\":1}"), BS_EINVAL);
}

static void binary(px_t *p, int n, const char *const *kv)
{
    for (int i = 0; i < n; i++) {
        p->ce[i].name = kv[2 * i];
        p->ce[i].value = kv[2 * i + 1];
    }
    p->o.ce = p->ce;
    p->o.n_ce = n;
}

static cJSON *event_json(const bs_topic_event_t *ev)
{
    cJSON *j = cJSON_ParseWithLength(ev->rec.data, ev->rec.len);
    assert_non_null(j);
    return j;
}

static void test_cloudevents_binary(void **state)
{
    px_t *p = *state;
    const char *kv[] = {"specversion", "1.0", "id", "b-1", "source", "/shop", "type", "order.paid",
                        "subject", "caf%C3%A9%20au%20lait", "partitionkey", "7"};
    binary(p, 6, kv);
    assert_int_equal(parse(p, "application/json", "{\"amount\": 5}"), 0);
    assert_string_equal(p->b.mode, "binary");
    assert_true(p->b.single);
    assert_string_equal(p->b.events[0].rec.id, "b-1");
    assert_int_equal(parse(p, "application/json", "{\"amount\": 5}"), 0);
    cJSON *j = event_json(&p->b.events[0]);
    assert_string_equal(cJSON_GetObjectItem(j, "specversion")->valuestring, "1.0");
    assert_string_equal(cJSON_GetObjectItem(j, "subject")->valuestring, "caf\xc3\xa9 au lait");
    assert_string_equal(cJSON_GetObjectItem(j, "partitionkey")->valuestring, "7");
    assert_string_equal(cJSON_GetObjectItem(j, "datacontenttype")->valuestring, "application/json");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "amount")->valueint, 5);
    assert_int_equal(bs_topic_cloudevent_check(j, &p->err), 0);
    cJSON_Delete(j);
    /* text data as a string, other bytes as data_base64 */
    assert_int_equal(parse(p, "text/plain", "hello"), 0);
    j = event_json(&p->b.events[0]);
    assert_string_equal(cJSON_GetObjectItem(j, "data")->valuestring, "hello");
    cJSON_Delete(j);
    static const char nul[] = "a\0b";
    p->o.content_type = "text/plain";
    assert_int_equal(bs_topic_events_parse(&p->a, nul, 3, &p->o, &p->b, &p->err), BS_EINVAL);
    assert_string_equal(p->err.field, "data");
    assert_int_equal(parse(p, "application/octet-stream", "\x01\x02\xff"), 0);
    j = event_json(&p->b.events[0]);
    assert_string_equal(cJSON_GetObjectItem(j, "data_base64")->valuestring, "AQL/");
    assert_null(cJSON_GetObjectItem(j, "data"));
    cJSON_Delete(j);
    /* no body: no data */
    assert_int_equal(parse(p, NULL, ""), 0);
    j = event_json(&p->b.events[0]);
    assert_null(cJSON_GetObjectItem(j, "data"));
    cJSON_Delete(j);
    /* JSON data that is not JSON */
    assert_int_equal(parse(p, "application/json", "{nope"), BS_EPARSE);
    /* missing and malformed attributes */
    const char *nosrc[] = {"specversion", "1.0", "id", "b-1", "type", "t"};
    binary(p, 3, nosrc);
    assert_int_equal(parse(p, "application/json", "{}"), BS_EINVAL);
    assert_string_equal(p->err.field, "source");
    const char *badpct[] = {"specversion", "1.0", "id", "b%zz", "source", "s", "type", "t"};
    binary(p, 4, badpct);
    assert_int_equal(parse(p, "application/json", "{}"), BS_EINVAL);
    assert_string_equal(p->err.field, "id");
    const char *badtime[] = {"specversion", "1.0", "id", "1", "source", "s", "type", "t", "time", "noon"};
    binary(p, 5, badtime);
    assert_int_equal(parse(p, "application/json", "{}"), BS_EINVAL);
    assert_string_equal(p->err.field, "time");
    const char *badver[] = {"specversion", "0.3", "id", "1", "source", "s", "type", "t"};
    binary(p, 4, badver);
    assert_int_equal(parse(p, "application/json", "{}"), BS_EINVAL);
    assert_string_equal(p->err.field, "specversion");
    /* structured mode wins over ce-* headers (HTTP binding section 3.1) */
    binary(p, 4, kv);
    assert_int_equal(parse(p, "application/cloudevents+json",
                           "{\"specversion\":\"1.0\",\"id\":\"s1\",\"source\":\"s\",\"type\":\"t\"}"),
                     0);
    assert_string_equal(p->b.events[0].rec.id, "s1");
    /* oversized after building the structured form */
    p->o.max_event_bytes = 64;
    assert_int_equal(parse(p, "application/json", "{\"pad\":\"0123456789\"}"), BS_ETOOBIG);
}

/* cJSON skips any byte up to 0x20 between tokens; a stored text must be JSON a strict
 * reader takes (it is sent back verbatim): such bytes are trimmed off an event's ends and
 * refused between its tokens. */
static void test_control_bytes(void **state)
{
    px_t *p = *state;
    static const char around[] = "\v{\"b\":2} \0\0";
    p->o.content_type = "application/json";
    assert_int_equal(bs_topic_events_parse(&p->a, around, sizeof around - 1, &p->o, &p->b,
                                           &p->err),
                     0);
    assert_data(&p->b.events[0], "{\"b\":2}");
    assert_int_equal(parse(p, "application/json", "{\"a\":\x01 1}"), BS_EPARSE);
    assert_non_null(strstr(p->err.msg, "control character 0x01 at byte 5"));
    assert_int_equal(parse(p, "application/json", " [{\"d\":4}\x0c,{\"e\":5}]"), BS_EPARSE);
    assert_non_null(strstr(p->err.msg, "0x0c at byte 9"));
    assert_int_equal(parse(p, "application/cloudevents+json",
                           "{\"specversion\":\"1.0\",\x1b\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}"),
                     BS_EPARSE);
    /* JSON lines: that line's error, the others stand */
    assert_int_equal(parse(p, "application/x-ndjson", "{\"a\":1}\n{\"b\":\x1f" "2}\n\v{\"c\":3}\n"),
                     0);
    assert_int_equal(p->b.n, 3);
    assert_int_equal(p->b.accepted, 2);
    assert_int_equal(p->b.events[1].code, BS_EINVAL);
    assert_non_null(strstr(p->b.events[1].message, "line 2"));
    assert_non_null(strstr(p->b.events[1].message, "0x1f"));
    assert_data(&p->b.events[2], "{\"c\":3}");
    /* binary mode: the JSON data likewise */
    const char *kv[] = {"specversion", "1.0", "id", "c-1", "source", "/s", "type", "t"};
    binary(p, 4, kv);
    assert_int_equal(parse(p, "application/json", "{\"a\":\x02 1}"), BS_EPARSE);
    assert_int_equal(parse(p, "application/json", "\v[1, 2]\v"), 0);
    cJSON *j = event_json(&p->b.events[0]);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), 2);
    assert_null(memchr(p->b.events[0].rec.data, '\v', p->b.events[0].rec.len));
    cJSON_Delete(j);
}

static void test_json_member(void **state)
{
    (void)state;
    const char *s = "{\"topic\":\"o\",\"offset\":3,\"x\":{\"event\":1},\"event\": {\"a\": 1.50, \"s\":\"}\"} }";
    const char *v;
    size_t n;
    assert_int_equal(bs_topic_json_member(s, strlen(s), "event", &v, &n), 1);
    assert_int_equal(n, strlen("{\"a\": 1.50, \"s\":\"}\"}"));
    assert_memory_equal(v, "{\"a\": 1.50, \"s\":\"}\"}", n);
    assert_int_equal(bs_topic_json_member(s, strlen(s), "offset", &v, &n), 1);
    assert_memory_equal(v, "3", n);
    assert_int_equal(bs_topic_json_member(s, strlen(s), "missing", &v, &n), 0);
    assert_int_equal(bs_topic_json_member("[1]", 3, "event", &v, &n), 0);
}

/* ---- the snapshot over a real store and log ------------------------------------------------- */

typedef struct {
    char dir[64];
    bs_meta_t *m;
    bs_log_t *log;
    bs_topics_t *t;
} sx_t;

static int sx_setup(void **state)
{
    sx_t *s = calloc(1, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/bs-test-topics-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    char path[128];
    bs_err_t err;
    snprintf(path, sizeof path, "%s/basalt.db", s->dir);
    if (!(s->m = bs_meta_open(path, &err)))
        return -1;
    snprintf(path, sizeof path, "%s/log", s->dir);
    bs_log_opts_t lo = {.dir = path};
    if (!(s->log = bs_log_open(&lo, &err))) {
        fprintf(stderr, "log: %s\n", err.msg);
        return -1;
    }
    if (!(s->t = bs_topics_new(s->log, s->m, 1048576, &err)))
        return -1;
    bs_rcu_register();
    *state = s;
    return 0;
}

static int sx_teardown(void **state)
{
    sx_t *s = *state;
    bs_rcu_unregister();
    bs_log_close(s->log);
    bs_topics_free(s->t);
    bs_meta_close(s->m);
    bs_rcu_drain();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    if (system(cmd) != 0)
        return -1;
    free(s);
    return 0;
}

static void put(sx_t *s, const char *tenant, const char *name, const char *spec)
{
    bs_err_t err;
    assert_int_equal(bs_resources_put(s->m, tenant, BS_TOPIC_KIND, name, spec, "test", 0, NULL, NULL,
                                      &err),
                     0);
}

static void test_snapshot_rebuild(void **state)
{
    sx_t *s = *state;
    bs_err_t err;
    assert_null(bs_topics_find(s->t, "acme", "orders"));
    put(s, "acme", "orders", "{\"retention\":{},\"sync\":\"always\",\"dedup_window\":\"2m\",\"max_event_bytes\":2048}");
    put(s, "acme", "audit", "{\"sync\":\"1s\"}");
    put(s, "zeta", "orders", "{\"dedup_window\":\"0\",\"dead_letter\":\"dlq\"}");
    put(s, "acme", "other-kind", "{}");
    /* a resource of another kind is not a topic */
    assert_int_equal(bs_resources_put(s->m, "acme", "Webhook", "hook", "{}", "t", 0, NULL, NULL, &err), 0);
    assert_int_equal(bs_topics_rebuild(s->t, &err), 0);
    assert_int_equal(bs_topics_count(s->t), 4);
    const bs_topic_t *o = bs_topics_find(s->t, "acme", "orders");
    assert_non_null(o);
    assert_int_equal(o->max_event_bytes, 2048);
    assert_null(bs_topics_find(s->t, "acme", "hook"));
    bs_topic_t z;
    assert_int_equal(bs_topics_get(s->t, "zeta", "orders", &z), 1);
    assert_string_equal(z.tenant, "zeta");
    assert_string_equal(z.dead_letter, "dlq");
    assert_int_equal(z.log.dedup_window_ms, 0);
    assert_int_equal(bs_topics_get(s->t, "zeta", "audit", &z), 0);
    /* each one exists in the log */
    bs_log_topic_stats_t st;
    assert_int_equal(bs_log_topic_stats(s->log, "acme", "audit", &st, &err), 0);
    assert_int_equal(bs_log_topic_stats(s->log, "zeta", "orders", &st, &err), 0);
    /* appends work on what the rebuild ensured */
    bs_log_record_in_t r = {.data = "{\"a\":1}", .len = 7};
    bs_log_append_result_t res;
    assert_int_equal(bs_log_append(s->log, "acme", "orders", &r, 1, &res, &err), 0);
    assert_int_equal(res.offset, 0);
    /* a change: the new config; a delete: gone from the snapshot (the log's topic is the
     * deleting handler's to drop, not every replica's rebuild) */
    put(s, "acme", "orders", "{\"max_event_bytes\":4096}");
    assert_int_equal(bs_resources_delete(s->m, "acme", BS_TOPIC_KIND, "audit", "test", &err), 0);
    bs_rcu_quiescent();
    assert_int_equal(bs_topics_rebuild(s->t, &err), 0);
    assert_int_equal(bs_topics_count(s->t), 3);
    assert_int_equal(bs_topics_find(s->t, "acme", "orders")->max_event_bytes, 4096);
    assert_null(bs_topics_find(s->t, "acme", "audit"));
    assert_int_equal(bs_topics_get(s->t, "acme", "audit", &z), 0);
    assert_int_equal(bs_log_topic_stats(s->log, "acme", "audit", &st, &err), 0);
    /* the records of a topic that stays are kept */
    assert_int_equal(bs_log_topic_stats(s->log, "acme", "orders", &st, &err), 0);
    assert_int_equal(st.next_offset, 1);
    /* an unchanged topic costs the log nothing: dropped behind the snapshot's back, it
     * stays dropped; once its spec changes it is ensured again */
    assert_int_equal(bs_log_topic_drop(s->log, "zeta", "orders", &err), 0);
    bs_rcu_quiescent();
    assert_int_equal(bs_topics_rebuild(s->t, &err), 0);
    assert_string_equal(bs_topics_find(s->t, "zeta", "orders")->dead_letter, "dlq");
    assert_int_equal(bs_log_topic_stats(s->log, "zeta", "orders", &st, &err), BS_ENOTFOUND);
    put(s, "zeta", "orders", "{\"dedup_window\":\"0\"}");
    bs_rcu_quiescent();
    assert_int_equal(bs_topics_rebuild(s->t, &err), 0);
    assert_string_equal(bs_topics_find(s->t, "zeta", "orders")->dead_letter, "");
    assert_int_equal(bs_log_topic_stats(s->log, "zeta", "orders", &st, &err), 0);
    bs_rcu_quiescent();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_defaults),
        cmocka_unit_test(test_spec_values),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test_setup_teardown(test_single_event, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_array_per_item_errors, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_single_oversized, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_events, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_dedup_keys, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_json_lines, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_cloudevents_structured, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_cloudevents_batch, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_cloudevents_binary, px_setup, px_teardown),
        cmocka_unit_test_setup_teardown(test_control_bytes, px_setup, px_teardown),
        cmocka_unit_test(test_json_member),
        cmocka_unit_test_setup_teardown(test_snapshot_rebuild, sx_setup, sx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
