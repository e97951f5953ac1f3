/*
 * `basalt job ls|get|watch|cancel|retry|run` (usage in commands.c): the job runtime through
 * the API (/v1/jobs). `watch` polls GET /v1/jobs/{id}: on a terminal it redraws one
 * progress line (a bar, done/total, rate, ETA, state), otherwise it prints a plain line
 * each time the state or the progress changes; it exits when the job is finalized, 0 if
 * it completed and 1 otherwise (3 when the job does not exist).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/json.h"
#include "cli/cli.h"

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The string, or "-" when the server left it out (or sent another type). */
static const char *text_of(const cJSON *o, const char *key)
{
    const char *s = str_of(o, key);
    return s ? s : "-";
}

static double num_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* A count, rate or duration as the server sent it: a number from 0 to 1e15, else NAN
 * (unknown). Whatever the server sends, what is printed stays a number or "-". */
static double count_of(const cJSON *o, const char *key)
{
    double v = num_of(o, key);
    return v >= 0 && v <= 1e15 ? v : NAN;
}

/* "%.0f" of a count, "-" when unknown. */
static const char *fmt_count(char out[32], double v)
{
    if (isnan(v))
        return "-";
    snprintf(out, 32, "%.0f", v);
    return out;
}

static int usage(const char *name)
{
    bs_cli_usage(stderr, "job", name);
    return 2;
}

/* "4s", "1m05s", "2h03m"; "-" for an unknown duration. */
static void fmt_duration(char *out, size_t n, double s)
{
    if (!(s >= 0 && s <= 1e15)) {
        snprintf(out, n, "-");
        return;
    }
    long t = (long)llround(s);
    if (t < 60)
        snprintf(out, n, "%lds", t);
    else if (t < 3600)
        snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

/* "50/100 (50%) 12.5/s eta 4s" (or "5 done" without a total) into b. */
static void fmt_progress(bs_buf_t *b, const cJSON *job)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(job, "progress");
    double done = count_of(p, "done"), total = count_of(p, "total"),
           rate = count_of(p, "rate_per_s"), eta = count_of(p, "eta_s");
    if (isnan(done))
        done = 0;
    if (total >= 1)
        bs_buf_printf(b, "%.0f/%.0f (%.0f%%)", done, total, 100.0 * done / total);
    else
        bs_buf_printf(b, "%.0f done", done);
    if (!isnan(rate))
        bs_buf_printf(b, rate >= 1000 ? " %.0f/s" : " %.3g/s", rate);
    if (!isnan(eta)) {
        char d[32];
        fmt_duration(d, sizeof d, eta);
        bs_buf_printf(b, " eta %s", d);
    }
}

static int finalized(const char *state)
{
    return state && (!strcmp(state, "completed") || !strcmp(state, "discarded") ||
                     !strcmp(state, "cancelled"));
}

static const char *last_error(const cJSON *job)
{
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(job, "errors");
    int n = cJSON_GetArraySize(errors);
    return n ? str_of(cJSON_GetArrayItem(errors, n - 1), "error") : NULL;
}

/* GET /v1/jobs/{id} parsed (caller frees) or NULL with *rc the exit code. */
static cJSON *get_job(const bs_cli_remote_t *r, const char *id, int *rc, bs_buf_t *raw)
{
    bs_buf_t path;
    bs_buf_init(&path);
    bs_buf_puts(&path, "/v1/jobs/");
    bs_cli_put_encoded(&path, id);
    bs_buf_reset(raw);
    *rc = bs_cli_call(r, "GET", path.data, NULL, NULL, 0, raw);
    bs_buf_free(&path);
    if (*rc)
        return NULL;
    cJSON *j = cJSON_Parse(raw->data ? raw->data : "");
    if (!j) {
        fprintf(stderr, "basalt: the server's answer is not JSON\n");
        *rc = 1;
    }
    return j;
}

static void print_job(const cJSON *j)
{
    bs_buf_t b;
    bs_buf_init(&b);
    fmt_progress(&b, j);
    char n1[32], n2[32];
    printf("id               %s\n", text_of(j, "id"));
    printf("kind             %s\n", text_of(j, "kind"));
    printf("state            %s\n", text_of(j, "state"));
    printf("attempt          %s of %s\n", fmt_count(n1, count_of(j, "attempt")),
           fmt_count(n2, count_of(j, "max_attempts")));
    printf("progress         %s\n", b.data ? b.data : "-");
    static const char *const fields[] = {"unique_key",   "created_at",     "created_by",
                                         "scheduled_at", "attempted_at",   "finalized_at",
                                         "attempted_by", "result_location"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const char *v = str_of(j, fields[i]);
        printf("%-16s %s\n", fields[i], v && *v ? v : "-");
    }
    printf("lease_token      %s\n", fmt_count(n1, count_of(j, "lease_token")));
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    char *rt = res && !cJSON_IsNull(res) ? cJSON_PrintUnformatted(res) : NULL;
    printf("result           %s\n", rt ? rt : "-");
    free(rt);
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(j, "errors"), *e;
    if (cJSON_GetArraySize(errors)) {
        printf("errors\n");
        cJSON_ArrayForEach(e, errors)
        {
            printf("  attempt %s at %s on %s: %s\n", fmt_count(n1, count_of(e, "attempt")),
                   text_of(e, "at"), text_of(e, "attempted_by"), text_of(e, "error"));
        }
    }
    bs_buf_free(&b);
}

int bs_cli_job_ls(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *state = NULL, *kind = NULL;
    long limit = 100;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage("ls");
        if (!strcmp(argv[i], "--state"))
            state = argv[++i];
        else if (!strcmp(argv[i], "--kind"))
            kind = argv[++i];
        else if (!strcmp(argv[i], "--limit")) {
            char *end;
            limit = strtol(argv[++i], &end, 10);
            if (*end || limit < 1 || limit > 1000) {
                fprintf(stderr, "basalt: --limit must be 1 to 1000\n");
                return 2;
            }
        } else
            return usage("ls");
    }
    bs_buf_t path, out;
    bs_buf_init(&path);
    bs_buf_init(&out);
    bs_buf_printf(&path, "/v1/jobs?limit=%ld", limit);
    if (state) {
        bs_buf_puts(&path, "&state=");
        bs_cli_put_encoded(&path, state);
    }
    if (kind) {
        bs_buf_puts(&path, "&kind=");
        bs_cli_put_encoded(&path, kind);
    }
    int rc = bs_cli_call(&r, "GET", path.data, NULL, NULL, 0, &out);
    bs_buf_free(&path);
    if (rc || r.json) {
        if (!rc)
            printf("%.*s\n", (int)out.len, out.data ? out.data : "");
        bs_buf_free(&out);
        return rc;
    }
    cJSON *page = cJSON_Parse(out.data ? out.data : "");
    bs_buf_free(&out);
    if (!page) {
        fprintf(stderr, "basalt: the server's answer is not JSON\n");
        return 1;
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 6);
    bs_cli_table_row(&t, "ID", "KIND", "STATE", "ATTEMPT", "PROGRESS", "CREATED");
    const cJSON *j;
    cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(page, "items"))
    {
        char attempt[80], n1[32], n2[32];
        snprintf(attempt, sizeof attempt, "%s/%s", fmt_count(n1, count_of(j, "attempt")),
                 fmt_count(n2, count_of(j, "max_attempts")));
        bs_buf_t p;
        bs_buf_init(&p);
        fmt_progress(&p, j);
        bs_cli_table_row(&t, str_of(j, "id"), str_of(j, "kind"), str_of(j, "state"), attempt,
                         p.data, str_of(j, "created_at"));
        bs_buf_free(&p);
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    const char *next = str_of(page, "next_cursor");
    if (next)
        fprintf(stderr, "(more jobs: --limit up to 1000, or GET /v1/jobs?cursor=%s)\n", next);
    cJSON_Delete(page);
    return 0;
}

int bs_cli_job_get(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 2 || argv[1][0] == '-')
        return usage("get");
    bs_buf_t raw;
    bs_buf_init(&raw);
    int rc;
    cJSON *j = get_job(&r, argv[1], &rc, &raw);
    if (j) {
        if (r.json)
            printf("%.*s\n", (int)raw.len, raw.data);
        else
            print_job(j);
    }
    cJSON_Delete(j);
    bs_buf_free(&raw);
    return rc;
}

/* The progress line a terminal shows. */
static void draw_bar(const cJSON *j)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "progress");
    double done = count_of(p, "done"), total = count_of(p, "total");
    enum { W = 30 };
    char bar[W + 1], n[32];
    int fill = total >= 1 && done >= 0 ? (int)(W * (done > total ? 1.0 : done / total)) : 0;
    for (int i = 0; i < W; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[W] = 0;
    bs_buf_t b;
    bs_buf_init(&b);
    fmt_progress(&b, j);
    printf("\r\033[K[%s] %s  %s (attempt %s)", bar, b.data ? b.data : "", text_of(j, "state"),
           fmt_count(n, count_of(j, "attempt")));
    fflush(stdout);
    bs_buf_free(&b);
}

static int watch(const bs_cli_remote_t *r, const char *id, long interval_ms)
{
    int tty = isatty(STDOUT_FILENO);
    bs_buf_t raw, line, last;
    bs_buf_init(&raw);
    bs_buf_init(&line);
    bs_buf_init(&last);
    int rc = 0;
    for (;;) {
        cJSON *j = get_job(r, id, &rc, &raw);
        if (!j)
            break;
        const char *state = str_of(j, "state");
        if (!state) { /* it would never end */
            fprintf(stderr, "basalt: the server's answer has no job state\n");
            rc = 1;
            cJSON_Delete(j);
            break;
        }
        if (tty && !r->json) {
            draw_bar(j);
        } else if (!r->json) {
            /* the rate and ETA move every time: a line per change of state or progress */
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "progress");
            char n1[32], n2[32], n3[32];
            bs_buf_reset(&line);
            bs_buf_printf(&line, "%s attempt %s: ", state, fmt_count(n1, count_of(j, "attempt")));
            size_t prefix = line.len;
            bs_buf_printf(&line, "%s/%s", fmt_count(n2, count_of(p, "done")),
                          fmt_count(n3, count_of(p, "total")));
            if (!last.data || strcmp(last.data, line.data)) {
                bs_buf_reset(&last);
                bs_buf_puts(&last, line.data);
                line.len = prefix;
                fmt_progress(&line, j);
                printf("%.*s\n", (int)line.len, line.data);
                fflush(stdout);
            }
        }
        if (finalized(state)) {
            if (tty && !r->json)
                putchar('\n');
            if (r->json) {
                printf("%.*s\n", (int)raw.len, raw.data);
            } else if (!strcmp(state, "completed")) {
                const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
                char *rt = res && !cJSON_IsNull(res) ? cJSON_PrintUnformatted(res) : NULL;
                printf("job %s completed%s%s\n", id, rt ? ": " : "", rt ? rt : "");
                free(rt);
            } else {
                const char *e = last_error(j);
                char n[32];
                printf("job %s %s after %s attempt(s)%s%s\n", id, state,
                       fmt_count(n, count_of(j, "attempt")), e ? ": " : "", e ? e : "");
            }
            rc = strcmp(state, "completed") ? 1 : 0;
            cJSON_Delete(j);
            break;
        }
        cJSON_Delete(j);
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    bs_buf_free(&raw);
    bs_buf_free(&line);
    bs_buf_free(&last);
    return rc;
}

int bs_cli_job_watch(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *id = NULL;
    long interval = 500;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
            if (bs_cli_parse_interval(argv[++i], &interval))
                return 2;
        } else if (argv[i][0] != '-' && !id)
            id = argv[i];
        else
            return usage("watch");
    }
    if (!id)
        return usage("watch");
    return watch(&r, id, interval);
}

/* cancel and retry: POST /v1/jobs/{id}/<verb>. */
int bs_cli_job_act(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *verb = argv[0];
    if (argc != 2 || argv[1][0] == '-')
        return usage(verb);
    bs_buf_t path, out;
    bs_buf_init(&path);
    bs_buf_init(&out);
    bs_buf_puts(&path, "/v1/jobs/");
    bs_cli_put_encoded(&path, argv[1]);
    bs_buf_printf(&path, "/%s", verb);
    int rc = bs_cli_call(&r, "POST", path.data, NULL, NULL, 0, &out);
    bs_buf_free(&path);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        const char *state = str_of(j, "state");
        if (!strcmp(verb, "cancel") && state && !strcmp(state, "running"))
            printf("job %s is running: asked to stop (it ends cancelled)\n", argv[1]);
        else
            printf("job %s: %s\n", argv[1], state ? state : "?");
        cJSON_Delete(j);
    }
    bs_buf_free(&out);
    return rc;
}

int bs_cli_job_run(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *kind = NULL, *args = NULL, *unique = NULL, *run_at = NULL;
    long max_attempts = 0, priority = 0, interval = 500;
    int do_watch = 0, has_priority = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--watch")) {
            do_watch = 1;
            continue;
        }
        if (a[0] != '-') {
            if (kind)
                return usage("run");
            kind = a;
            continue;
        }
        if (!v)
            return usage("run");
        i++;
        char *end;
        if (!strcmp(a, "--args"))
            args = v;
        else if (!strcmp(a, "--unique-key"))
            unique = v;
        else if (!strcmp(a, "--run-at"))
            run_at = v;
        else if (!strcmp(a, "--max-attempts")) {
            max_attempts = strtol(v, &end, 10);
            if (*end || max_attempts < 1 || max_attempts > 1000000) {
                fprintf(stderr, "basalt: --max-attempts must be 1 to 1000000\n");
                return 2;
            }
        } else if (!strcmp(a, "--priority")) {
            priority = strtol(v, &end, 10);
            if (*end || priority < -1000 || priority > 1000) {
                fprintf(stderr, "basalt: --priority must be -1000 to 1000\n");
                return 2;
            }
            has_priority = 1;
        } else if (!strcmp(a, "--interval")) {
            if (bs_cli_parse_interval(v, &interval))
                return 2;
        } else
            return usage("run");
    }
    if (!kind)
        return usage("run");
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "kind", kind);
    if (args) {
        cJSON *a = cJSON_Parse(args);
        if (!cJSON_IsObject(a)) {
            fprintf(stderr, "basalt: --args must be a JSON object, e.g. '{\"seconds\": 5}'\n");
            cJSON_Delete(a);
            cJSON_Delete(body);
            return 2;
        }
        cJSON_AddItemToObject(body, "args", a);
    }
    if (unique)
        cJSON_AddStringToObject(body, "unique_key", unique);
    if (run_at)
        cJSON_AddStringToObject(body, "run_at", run_at);
    if (max_attempts)
        cJSON_AddNumberToObject(body, "max_attempts", (double)max_attempts);
    if (has_priority)
        cJSON_AddNumberToObject(body, "priority", (double)priority);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    bs_buf_t out;
    bs_buf_init(&out);
    int rc = bs_cli_call(&r, "POST", "/v1/jobs", "application/json", text, strlen(text), &out);
    free(text);
    if (rc) {
        bs_buf_free(&out);
        return rc;
    }
    cJSON *j = cJSON_Parse(out.data ? out.data : "");
    char id[64];
    snprintf(id, sizeof id, "%s", str_of(j, "id") ? str_of(j, "id") : "");
    if (r.json && !do_watch)
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    else if (!r.json && unique) /* 200 and 201 look alike here: say both */
        printf("job %s (%s): enqueued, or the live job of unique key '%s'\n", id, kind, unique);
    else if (!r.json)
        printf("job %s (%s) enqueued\n", id, kind);
    cJSON_Delete(j);
    bs_buf_free(&out);
    if (do_watch && id[0])
        return watch(&r, id, interval);
    return 0;
}
