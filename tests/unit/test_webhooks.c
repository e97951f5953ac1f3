/* Webhooks without a server: the Standard Webhooks signature (Svix's published example as
 * the oracle), secrets, spec validation and normalisation (defaults, fields named in
 * errors), the webhook-id of an event id, the retry jitter and the response excerpt.
 * Includes the module to reach its static helpers. */
#include "test_common.h"

#include "events/webhooks.c"

static void test_sign_known_vector(void **state)
{
    (void)state;
    /* docs.svix.com "Verifying payloads manually": this secret, id, timestamp and body
     * sign to this value. */
    char sig[64];
    bs_err_t err;
    const char body[] = "{\"test\": 2432232314}";
    assert_int_equal(bs_webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                      "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                                      strlen(body), sig, sizeof sig, &err),
                     0);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* Any change to the signed content changes it. */
    char other[64];
    assert_int_equal(bs_webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                      "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body,
                                      strlen(body), other, sizeof other, &err),
                     0);
    assert_string_not_equal(sig, other);
    /* An empty body signs "id.ts." */
    assert_int_equal(bs_webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "x", 1, "", 0,
                                      other, sizeof other, &err),
                     0);
    assert_memory_equal(other, "v1,", 3);
}

static void test_sign_bad_secrets(void **state)
{
    (void)state;
    char sig[64];
    bs_err_t err;
    static const char *const bad[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",        /* no prefix */
        "whsec_",                                  /* empty */
        "whsec_a2V5",                              /* 3 bytes */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS*",  /* not base64 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa",    /* 23 bytes */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwM", /* a dangling base64 digit */
        NULL};
    for (const char *const *s = bad; *s; s++) {
        assert_int_equal(bs_webhooks_sign(*s, "id", 1, "b", 1, sig, sizeof sig, &err), BS_EINVAL);
        assert_string_equal(err.field, "secret");
    }
    assert_int_equal(
        bs_webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, "b", 1, sig, 10, &err),
        BS_EINVAL);
    /* Padded or not, the same key (25 bytes: base64 ending "=="). */
    char a[64], b[64];
    unsigned char k25[25];
    memset(k25, 7, sizeof k25);
    char enc[48] = "whsec_";
    EVP_EncodeBlock((unsigned char *)enc + 6, k25, 25);
    assert_int_equal(enc[strlen(enc) - 1], '=');
    assert_int_equal(bs_webhooks_sign(enc, "id", 1, "b", 1, a, sizeof a, &err), 0);
    enc[strlen(enc) - 1] = '\0';
    assert_int_equal(bs_webhooks_sign(enc, "id", 1, "b", 1, b, sizeof b, &err), 0);
    assert_string_equal(a, b);
    /* 25 bytes pad with "==": without either '=' it is the same key too. */
    assert_int_equal(enc[strlen(enc) - 1], '=');
    enc[strlen(enc) - 1] = '\0';
    memset(b, 0, sizeof b);
    assert_int_equal(bs_webhooks_sign(enc, "id", 1, "b", 1, b, sizeof b, &err), 0);
    assert_string_equal(a, b);
}

static cJSON *parse(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    return j;
}

static void test_validate_defaults(void **state)
{
    (void)state;
    cJSON *spec = parse("{\"headers\":{\"X-Team\":\"risk\"},\"url\":\"https://hooks.example/in\"}");
    cJSON *out = NULL;
    bs_err_t err;
    assert_int_equal(bs_webhooks_validate(spec, &out, &err), 0);
    char *txt = cJSON_PrintUnformatted(out);
    const cJSON *secret = cJSON_GetObjectItemCaseSensitive(out, "secret");
    assert_true(cJSON_IsString(secret));
    unsigned char key[64];
    assert_int_equal(secret_key(secret->valuestring, key, &err), 24);
    /* Every field, in one order. */
    char want[512];
    snprintf(want, sizeof want,
             "{\"url\":\"https://hooks.example/in\",\"secret\":\"%s\",\"timeout\":\"15s\","
             "\"headers\":{\"X-Team\":\"risk\"},\"retry_schedule\":[\"0s\",\"5s\",\"5m\",\"30m\","
             "\"2h\",\"5h\",\"10h\",\"10h\"],\"content_type\":\"application/cloudevents+json\"}",
             secret->valuestring);
    assert_string_equal(txt, want);
    /* The normalised spec validates to itself (a re-apply is unchanged). */
    cJSON *again = NULL;
    assert_int_equal(bs_webhooks_validate(out, &again, &err), 0);
    char *txt2 = cJSON_PrintUnformatted(again);
    assert_string_equal(txt, txt2);
    /* Two specs without a secret get different ones. */
    cJSON *third = NULL;
    assert_int_equal(bs_webhooks_validate(spec, &third, &err), 0);
    assert_string_not_equal(cJSON_GetObjectItemCaseSensitive(third, "secret")->valuestring,
                            secret->valuestring);
    /* The parsed form. */
    dest_t d;
    assert_int_equal(parse_spec(out, &d, &err), 0);
    assert_int_equal(d.timeout_ms, 15000);
    assert_int_equal(d.n_schedule, 8);
    assert_int_equal(d.schedule_ms[0], 0);
    assert_int_equal(d.schedule_ms[2], 300000);
    assert_int_equal(d.schedule_ms[7], 36000000);
    assert_int_equal(d.n_headers, 1);
    assert_string_equal(d.headers[0], "X-Team: risk");
    dest_clear(&d);
    free(txt);
    free(txt2);
    cJSON_Delete(spec);
    cJSON_Delete(out);
    cJSON_Delete(again);
    cJSON_Delete(third);
}

static void test_validate_errors(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *field;
    } cases[] = {
        {"[]", ""},
        {"{}", "url"},
        {"{\"url\":\"file:///etc/passwd\"}", "url"},
        {"{\"url\":\"https://\"}", "url"},
        {"{\"url\":\"https://a.example/\",\"secret\":\"whsec_a2V5\"}", "secret"},
        {"{\"url\":\"https://a.example/\",\"timeout\":\"50ms\"}", "timeout"},
        {"{\"url\":\"https://a.example/\",\"timeout\":\"1h\"}", "timeout"},
        {"{\"url\":\"https://a.example/\",\"headers\":{\"Host\":\"x\"}}", "headers.Host"},
        {"{\"url\":\"https://a.example/\",\"headers\":{\"WEBHOOK-SIGNATURE\":\"x\"}}",
         "headers.WEBHOOK-SIGNATURE"},
        {"{\"url\":\"https://a.example/\",\"headers\":{\"X\":\"a\\u0001b\"}}", "headers.X"},
        {"{\"url\":\"https://a.example/\",\"headers\":{\"\":\"x\"}}", "headers."},
        {"{\"url\":\"https://a.example/\",\"retry_schedule\":[\"0s\",\"-1s\"]}",
         "retry_schedule[1]"},
        {"{\"url\":\"https://a.example/\",\"retry_schedule\":[\"8d\"]}", "retry_schedule[0]"},
        {"{\"url\":\"https://a.example/\",\"retry_schedule\":{}}", "retry_schedule"},
        {"{\"url\":\"https://a.example/\",\"content_type\":null}", "content_type"},
        {"{\"url\":\"https://a.example/\",\"timeout_ms\":1000}", "timeout_ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *spec = parse(cases[i].spec);
        cJSON *out = (cJSON *)1;
        bs_err_t err;
        bs_err_clear(&err);
        if (bs_webhooks_validate(spec, &out, &err) != BS_EINVAL)
            fail_msg("%s: accepted", cases[i].spec);
        assert_null(out);
        if (strcmp(err.field, cases[i].field) != 0)
            fail_msg("%s: field '%s', want '%s' (%s)", cases[i].spec, err.field, cases[i].field,
                     err.msg);
        cJSON_Delete(spec);
    }
    /* 33 headers is one too many. */
    cJSON *spec = parse("{\"url\":\"https://a.example/\"}");
    cJSON *h = cJSON_AddObjectToObject(spec, "headers");
    for (int i = 0; i < 33; i++) {
        char name[16];
        snprintf(name, sizeof name, "X-%d", i);
        cJSON_AddStringToObject(h, name, "v");
    }
    cJSON *out;
    bs_err_t err;
    assert_int_equal(bs_webhooks_validate(spec, &out, &err), BS_EINVAL);
    assert_string_equal(err.field, "headers");
    cJSON_Delete(spec);
}

static void test_webhook_id_of(void **state)
{
    (void)state;
    char id[160];
    webhook_id_of("0190b6d2-7c1e-7cc0-a6c4-1f0e5b8d9a10", id);
    assert_string_equal(id, "0190b6d2-7c1e-7cc0-a6c4-1f0e5b8d9a10");
    webhook_id_of("evt_123:abc", id);
    assert_string_equal(id, "evt_123:abc");
    /* A '.' (the signed content's separator), a space or a comma: a stable digest. */
    char hex[65];
    bs_sha256_hex("order.created.17", 16, hex);
    char want[64];
    snprintf(want, sizeof want, "msg_%.32s", hex);
    webhook_id_of("order.created.17", id);
    assert_string_equal(id, want);
    char again[160];
    webhook_id_of("order.created.17", again);
    assert_string_equal(id, again);
    webhook_id_of("a b", id);
    assert_memory_equal(id, "msg_", 4);
    assert_int_equal(strlen(id), 36);
    char longid[200];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    webhook_id_of(longid, id);
    assert_memory_equal(id, "msg_", 4);
}

/* What bs_webhooks_deliver refuses before it touches the store (no store here). */
static void test_deliver_refuses(void **state)
{
    (void)state;
    bs_webhooks_t w = {0};
    char id[37], longid[258];
    bs_err_t err;
    memset(longid, 'e', 257);
    longid[257] = '\0';
    assert_int_equal(bs_webhooks_deliver(&w, "t", "d", "", "{}", NULL, id, &err), BS_EINVAL);
    assert_string_equal(err.field, "id");
    assert_int_equal(bs_webhooks_deliver(&w, "t", "d", NULL, "{}", NULL, id, &err), BS_EINVAL);
    assert_int_equal(bs_webhooks_deliver(&w, "t", "d", longid, "{}", NULL, id, &err), BS_EINVAL);
    assert_string_equal(err.field, "id");
    assert_int_equal(bs_webhooks_deliver(&w, "t", "d", "e1", NULL, NULL, id, &err), BS_EINVAL);
    char *big = malloc(MAX_PAYLOAD + 2);
    assert_non_null(big);
    memset(big, ' ', MAX_PAYLOAD + 1);
    big[MAX_PAYLOAD + 1] = '\0';
    assert_int_equal(bs_webhooks_deliver(&w, "t", "d", "e1", big, NULL, id, &err), BS_EINVAL);
    assert_non_null(strstr(err.msg, "at most"));
    free(big);
}

static void test_jitter_and_excerpt(void **state)
{
    (void)state;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t v = jittered(10000);
        assert_true(v >= 9000 && v <= 11000);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    assert_true(lo < 9500 && hi > 10500); /* spread over the range, not a constant */
    assert_int_equal(jittered(0), 0);
    char *e = excerpt("hello", 5);
    assert_string_equal(e, "hello");
    free(e);
    assert_null(excerpt("", 0));
    char big[3000];
    memset(big, 'x', sizeof big);
    memcpy(big + 1023, "\xc3\xa9", 2); /* é across the 1 KiB cut: cut before it */
    e = excerpt(big, sizeof big);
    assert_int_equal(strlen(e), 1023);
    free(e);
    e = excerpt("\x00\x01\xff", 3);
    assert_string_equal(e, "(3 bytes, not UTF-8 text)");
    free(e);
}

/* The delivery log's retention on a real SQLite store: finished deliveries past it go with
 * their attempts; pending ones and recent ones stay; a pass runs at most every 10 minutes.
 * A pending row whose job the runtime finalized (cancelled, discarded) or that has no job
 * is settled first (cancelled / failed, as of now: kept for the retention from then). */
static void test_cleanup(void **state)
{
    (void)state;
    char dir[64] = "/tmp/bs-test-webhooks-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/basalt.db", dir);
    bs_err_t err;
    bs_meta_t *m = bs_meta_open(path, &err);
    assert_non_null(m);
    bs_webhooks_t w = {.meta = m, .retention_ms = 86400LL * 1000};
    pthread_mutex_init(&w.mu, NULL);
    const int64_t now = 10LL * 86400 * 1000;
    static const struct {
        const char *id, *state;
        int64_t updated_at;
        const char *job_state; /* its job's, NULL: none */
        int kept;
        const char *after; /* the state after the pass */
    } rows[] = {{"d-old-delivered", "delivered", 1000, "completed", 0, NULL},
                {"d-old-failed", "failed", 2000, NULL, 0, NULL},
                {"d-old-cancelled", "cancelled", 2000, NULL, 0, NULL},
                {"d-old-pending", "pending", 1000, "scheduled", 1, "pending"},
                {"d-new-delivered", "delivered", 10LL * 86400 * 1000 - 10, NULL, 1, "delivered"},
                {"d-settle-cancelled", "pending", 1000, "cancelled", 1, "cancelled"},
                {"d-settle-discarded", "pending", 1000, "discarded", 1, "failed"},
                {"d-settle-gone", "pending", 1000, NULL, 1, "failed"}};
    enum { N_ROWS = sizeof rows / sizeof rows[0] };
    for (size_t i = 0; i < N_ROWS; i++) {
        const bs_val_t v[] = {BS_TXT(rows[i].id), BS_TXT(rows[i].state),
                              BS_INT(rows[i].updated_at)};
        assert_int_equal(bs_meta_exec(m,
                                      "INSERT INTO webhook_deliveries (id, tenant, destination, "
                                      "event_id, webhook_id, payload, state, max_attempts, "
                                      "created_at, updated_at) VALUES (?, 'default', 'd', 'e', "
                                      "'e', '{}', ?, 1, 0, ?)",
                                      v, 3, NULL, &err),
                         0);
        const bs_val_t a[] = {BS_TXT(rows[i].id)};
        assert_int_equal(bs_meta_exec(m,
                                      "INSERT INTO webhook_attempts (delivery_id, attempt, at, "
                                      "outcome, status) VALUES (?, 1, 0, 'failed', 500)",
                                      a, 1, NULL, &err),
                         0);
        if (!rows[i].job_state)
            continue;
        const bs_val_t j[] = {BS_TXT(rows[i].id), BS_TXT(rows[i].job_state)};
        assert_int_equal(bs_meta_exec(m,
                                      "INSERT INTO jobs (id, tenant, kind, state, max_attempts, "
                                      "scheduled_at, created_at) VALUES (?, 'default', "
                                      "'webhook.deliver', ?, 1, 0, 0)",
                                      j, 2, NULL, &err),
                         0);
    }
    maybe_cleanup(&w, now);
    for (size_t i = 0; i < N_ROWS; i++) {
        int n = 0, na = 0;
        bs_buf_t b;
        bs_buf_init(&b);
        n = bs_webhooks_get(&w, "default", rows[i].id, &b, &err) == 0;
        na = n && strstr(b.data, "\"attempt\":1") != NULL;
        if (n) {
            char want[64];
            snprintf(want, sizeof want, "\"state\":\"%s\"", rows[i].after);
            if (!strstr(b.data, want))
                fail_msg("%s: want %s in %s", rows[i].id, want, b.data);
        }
        bs_buf_free(&b);
        assert_int_equal(n, rows[i].kept);
        assert_int_equal(na, rows[i].kept);
    }
    /* The settled rows count as of now: the next pass after the retention deletes them. */
    bs_webhook_counts_t counts;
    assert_int_equal(bs_webhooks_counts(&w, "default", "d", &counts, &err), 0);
    assert_int_equal(counts.pending, 1);   /* d-old-pending; the cancelled one in none */
    assert_int_equal(counts.failed, 2);    /* d-settle-discarded, d-settle-gone */
    assert_int_equal(counts.delivered, 1); /* d-new-delivered */
    int left = 0;
    const bs_val_t none[] = {BS_TXT("d-old-failed")};
    assert_int_equal(
        bs_meta_exec(m, "DELETE FROM webhook_attempts WHERE delivery_id = ?", none, 1, &left, &err),
        0);
    assert_int_equal(left, 0); /* its attempts went with it */
    /* The pending one finishes long ago: the next pass is not due yet (10 minutes). */
    assert_int_equal(bs_meta_exec(m,
                                  "UPDATE webhook_deliveries SET state = 'failed' WHERE id = "
                                  "'d-old-pending'",
                                  NULL, 0, NULL, &err),
                     0);
    maybe_cleanup(&w, now + 1000);
    bs_buf_t b;
    bs_buf_init(&b);
    assert_int_equal(bs_webhooks_get(&w, "default", "d-old-pending", &b, &err), 0);
    bs_buf_reset(&b);
    maybe_cleanup(&w, now + CLEANUP_EVERY_MS);
    assert_int_equal(bs_webhooks_get(&w, "default", "d-old-pending", &b, &err), BS_ENOTFOUND);
    /* The list: newest first by id, only this tenant's. */
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", NULL, 10, NULL, &b, &err), 0);
    assert_non_null(strstr(b.data, "d-new-delivered"));
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "other", NULL, 10, NULL, &b, &err), 0);
    assert_string_equal(b.data, "{\"items\":[],\"next_cursor\":null}");
    /* Every variant of the list, one after the other (each its own statement: the store
     * caches them by their SQL text). */
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", "d", 10, NULL, &b, &err), 0);
    assert_non_null(strstr(b.data, "d-new-delivered"));
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", "elsewhere", 10, NULL, &b, &err), 0);
    assert_null(strstr(b.data, "d-new-delivered"));
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", NULL, 10, "d-new-delivered", &b, &err), 0);
    assert_string_equal(b.data, "{\"items\":[],\"next_cursor\":null}");
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", "d", 10, "zzz", &b, &err), 0);
    assert_non_null(strstr(b.data, "d-new-delivered"));
    bs_buf_reset(&b);
    assert_int_equal(bs_webhooks_list(&w, "default", NULL, 10, NULL, &b, &err), 0);
    assert_non_null(strstr(b.data, "d-new-delivered"));
    bs_buf_free(&b);
    pthread_mutex_destroy(&w.mu);
    bs_meta_close(m);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_known_vector), cmocka_unit_test(test_sign_bad_secrets),
        cmocka_unit_test(test_validate_defaults), cmocka_unit_test(test_validate_errors),
        cmocka_unit_test(test_webhook_id_of),     cmocka_unit_test(test_jitter_and_excerpt),
        cmocka_unit_test(test_cleanup),          cmocka_unit_test(test_deliver_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
