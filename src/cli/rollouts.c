/*
 * `basalt rollout start|status|ls|pause|resume|abort|promote` (usage in commands.c): the
 * progressive rollouts of an endpoint through the API (/v1/endpoints/{name}/rollouts).
 * Without an ID a command acts on the endpoint's latest rollout. `status --watch` polls
 * GET …/rollouts/{id}: on a terminal it redraws the view (state, step and weight, the last
 * check's candidate and stable numbers, every guard's value against its limit), otherwise it
 * prints the view again each time the rollout changes; it exits when the rollout ends, 0 if
 * it was promoted and 1 if it was rolled back or aborted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/json.h"
#include "base/time.h"
#include "cli/cli.h"

static int usage(const char *name)
{
    bs_cli_usage(stderr, "rollout", name);
    return 2;
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

static const char *fmt_num(char out[32], double v)
{
    if (isnan(v))
        return "-";
    snprintf(out, 32, "%.4g", v);
    return out;
}

static void base_path(bs_buf_t *b, const char *endpoint)
{
    bs_buf_puts(b, "/v1/endpoints/");
    bs_cli_put_encoded(b, endpoint);
    bs_buf_puts(b, "/rollouts");
}

static int finished(const char *state)
{
    return state && (!strcmp(state, "promoted") || !strcmp(state, "rolled_back") ||
                     !strcmp(state, "aborted"));
}

/* GET path parsed into *out (caller frees): 0 or the exit code. */
static int get_json(const bs_cli_remote_t *r, const char *path, bs_buf_t *raw, cJSON **out)
{
    bs_buf_reset(raw);
    *out = NULL;
    int rc = bs_cli_call(r, "GET", path, NULL, NULL, 0, raw);
    if (rc)
        return rc;
    *out = cJSON_Parse(raw->data ? raw->data : "");
    if (!*out) {
        fprintf(stderr, "basalt: the server's answer is not JSON\n");
        return 1;
    }
    return 0;
}

/* The id of the endpoint's latest rollout into id[64]: 0, or the exit code (3: none). */
static int latest_id(const bs_cli_remote_t *r, const char *endpoint, char id[64])
{
    bs_buf_t path, raw;
    bs_buf_init(&path);
    bs_buf_init(&raw);
    base_path(&path, endpoint);
    bs_buf_puts(&path, "?limit=1");
    cJSON *page;
    int rc = get_json(r, path.data, &raw, &page);
    if (!rc) {
        const char *s =
            str_of(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(page, "items"), 0), "id");
        if (s) {
            snprintf(id, 64, "%s", s);
        } else {
            fprintf(stderr, "basalt: endpoint %s has no rollouts\n", endpoint);
            rc = 3;
        }
    }
    cJSON_Delete(page);
    bs_buf_free(&path);
    bs_buf_free(&raw);
    return rc;
}

static void one_path(bs_buf_t *b, const char *endpoint, const char *id)
{
    base_path(b, endpoint);
    bs_buf_putc(b, '/');
    bs_cli_put_encoded(b, id);
}

static void print_side(bs_buf_t *b, const char *label, const cJSON *s)
{
    char n1[32], n2[32], n3[32], n4[32];
    if (!s)
        return;
    double req = num_of(s, "requests"), er = num_of(s, "error_rate");
    bs_buf_printf(
        b, "  %-10s %s predictions, error rate %s, p99 %s ms, mean prediction %s", label,
        fmt_num(n1, req), isnan(er) ? "-" : (snprintf(n2, sizeof n2, "%.3g%%", er * 100), n2),
        fmt_num(n3, num_of(s, "latency_p99_ms")), fmt_num(n4, num_of(s, "mean_prediction")));
    double lab = num_of(s, "labelled");
    if (lab > 0)
        bs_buf_printf(b, ", %s labelled", fmt_num(n2, lab));
    bs_buf_putc(b, '\n');
}

/* The human view of a rollout object into b. */
static void render_view(bs_buf_t *b, const cJSON *j)
{
    char n1[32], n2[32];
    const cJSON *cand = cJSON_GetObjectItemCaseSensitive(j, "candidate");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps"), *it;
    bs_buf_printf(b, "rollout %s of endpoint %s: %s\n", str_of(j, "id") ? str_of(j, "id") : "-",
                  str_of(j, "endpoint") ? str_of(j, "endpoint") : "-",
                  str_of(j, "state") ? str_of(j, "state") : "-");
    bs_buf_printf(
        b, "candidate   version %s (route %s) at %s%%", fmt_num(n1, num_of(cand, "version")),
        str_of(cand, "route") ? str_of(cand, "route") : "-", fmt_num(n2, num_of(j, "weight")));
    int n = cJSON_GetArraySize(steps);
    double step = num_of(j, "step");
    if (!finished(str_of(j, "state")) && !isnan(step))
        bs_buf_printf(b, ", step %.0f of %d", step + 1, n);
    bs_buf_puts(b, " [");
    int k = 0;
    cJSON_ArrayForEach(it, steps)
    {
        bs_buf_printf(b, "%s%s", k++ ? " " : "",
                      fmt_num(n1, cJSON_IsNumber(it) ? it->valuedouble : NAN));
    }
    bs_buf_puts(b, "]\n");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stable");
    bs_buf_puts(b, "stable      ");
    k = 0;
    cJSON_ArrayForEach(it, st)
    {
        bs_buf_printf(b, "%s%s (version %s, base weight %s)", k++ ? ", " : "",
                      str_of(it, "name") ? str_of(it, "name") : "-",
                      fmt_num(n1, num_of(it, "version")), fmt_num(n2, num_of(it, "weight")));
    }
    bs_buf_putc(b, '\n');
    bs_buf_printf(b, "step since  %s, interval %s, min %s predictions per step\n",
                  str_of(j, "step_started_at") ? str_of(j, "step_started_at") : "-",
                  str_of(j, "step_interval") ? str_of(j, "step_interval") : "-",
                  fmt_num(n1, num_of(j, "min_requests_per_step")));
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(j, "last_check");
    if (cJSON_IsObject(lc)) {
        bs_buf_printf(b, "last check  %s (%s)\n", str_of(lc, "at") ? str_of(lc, "at") : "-",
                      str_of(lc, "decision") ? str_of(lc, "decision") : "-");
        print_side(b, "candidate", cJSON_GetObjectItemCaseSensitive(lc, "candidate"));
        print_side(b, "stable", cJSON_GetObjectItemCaseSensitive(lc, "stable"));
        static const char *const guards[] = {"max_error_rate", "max_p99_latency_ms",
                                             "max_prediction_psi", "max_metric_drop", NULL};
        for (int i = 0; guards[i]; i++) {
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(lc, guards[i]);
            if (!cJSON_IsObject(g))
                continue;
            const cJSON *ok = cJSON_GetObjectItemCaseSensitive(g, "ok");
            const char *verdict = cJSON_IsTrue(ok)    ? "ok"
                                  : cJSON_IsFalse(ok) ? "FAILED"
                                                      : "pending";
            bs_buf_printf(b, "  guard %-20s %-10s limit %-10s %s", guards[i],
                          fmt_num(n1, num_of(g, "value")), fmt_num(n2, num_of(g, "limit")),
                          verdict);
            if (str_of(g, "pending"))
                bs_buf_printf(b, ": %s", str_of(g, "pending"));
            bs_buf_putc(b, '\n');
        }
        if (str_of(lc, "waiting_for"))
            bs_buf_printf(b, "waiting     %s\n", str_of(lc, "waiting_for"));
    }
    if (str_of(j, "reason"))
        bs_buf_printf(b, "reason      %s\n", str_of(j, "reason"));
}

static int status(const bs_cli_remote_t *r, const char *endpoint, const char *id, int watch,
                  long interval_ms)
{
    int tty = isatty(STDOUT_FILENO);
    bs_buf_t path, raw, view, last;
    bs_buf_init(&path);
    bs_buf_init(&raw);
    bs_buf_init(&view);
    bs_buf_init(&last);
    one_path(&path, endpoint, id);
    int rc = 0;
    for (;;) {
        cJSON *j;
        if ((rc = get_json(r, path.data, &raw, &j)))
            break;
        const char *state = str_of(j, "state");
        if (r->json) {
            if (!watch || finished(state))
                printf("%.*s\n", (int)raw.len, raw.data);
        } else {
            bs_buf_reset(&view);
            render_view(&view, j);
            if (!last.data || strcmp(last.data, view.data)) {
                if (watch && tty)
                    fputs("\033[H\033[J", stdout);
                else if (last.data)
                    putchar('\n');
                fputs(view.data, stdout);
                fflush(stdout);
                bs_buf_reset(&last);
                bs_buf_puts(&last, view.data);
            }
        }
        int done = !state || finished(state);
        rc = watch && state && finished(state) ? (strcmp(state, "promoted") ? 1 : 0) : 0;
        cJSON_Delete(j);
        if (!watch || done)
            break;
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    bs_buf_free(&path);
    bs_buf_free(&raw);
    bs_buf_free(&view);
    bs_buf_free(&last);
    return rc;
}

int bs_cli_rollout_status(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *endpoint = NULL, *id = NULL;
    int watch = 0;
    long interval = 1000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--watch"))
            watch = 1;
        else if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
            if (bs_cli_parse_interval(argv[++i], &interval))
                return 2;
        } else if (argv[i][0] != '-' && !endpoint)
            endpoint = argv[i];
        else if (argv[i][0] != '-' && !id)
            id = argv[i];
        else
            return usage("status");
    }
    if (!endpoint)
        return usage("status");
    char latest[64];
    if (!id) {
        int rc = latest_id(&r, endpoint, latest);
        if (rc)
            return rc;
        id = latest;
    }
    return status(&r, endpoint, id, watch, interval);
}

int bs_cli_rollout_ls(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    if (argc != 2 || argv[1][0] == '-')
        return usage("ls");
    bs_buf_t path;
    bs_buf_init(&path);
    base_path(&path, argv[1]);
    bs_buf_puts(&path, "?limit=1000");
    cJSON *items = NULL;
    int rc = bs__cli_list_all(&r, path.data, &items);
    bs_buf_free(&path);
    if (rc)
        return rc;
    if (r.json) {
        bs__cli_print_items(items);
        cJSON_Delete(items);
        return 0;
    }
    bs_cli_table_t t;
    bs_cli_table_init(&t, 6);
    bs_cli_table_row(&t, "ID", "STATE", "CANDIDATE", "WEIGHT", "STEP", "CREATED");
    const cJSON *j;
    cJSON_ArrayForEach(j, items)
    {
        char v[32], w[32], s[48];
        double step = num_of(j, "step");
        fmt_num(v, num_of(cJSON_GetObjectItemCaseSensitive(j, "candidate"), "version"));
        snprintf(w, sizeof w, "%.0f%%", isnan(num_of(j, "weight")) ? 0 : num_of(j, "weight"));
        snprintf(s, sizeof s, "%.0f/%d", isnan(step) ? 0 : step + 1,
                 cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "steps")));
        bs_cli_table_row(&t, str_of(j, "id"), str_of(j, "state"), v, w, s, str_of(j, "created_at"));
    }
    bs_cli_table_print(&t, stdout);
    bs_cli_table_free(&t);
    cJSON_Delete(items);
    return 0;
}

/* pause, resume, abort, promote (argv[0] is the verb): ENDPOINT [ID]. */
int bs_cli_rollout_act(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *verb = argv[0];
    if (argc < 2 || argc > 3 || argv[1][0] == '-' || (argc == 3 && argv[2][0] == '-'))
        return usage(verb);
    char id[64];
    if (argc == 3) {
        snprintf(id, sizeof id, "%s", argv[2]);
    } else {
        int rc = latest_id(&r, argv[1], id);
        if (rc)
            return rc;
    }
    bs_buf_t path, out;
    bs_buf_init(&path);
    bs_buf_init(&out);
    one_path(&path, argv[1], id);
    bs_buf_printf(&path, "/%s", verb);
    int rc = bs_cli_call(&r, "POST", path.data, NULL, NULL, 0, &out);
    bs_buf_free(&path);
    if (!rc && r.json) {
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    } else if (!rc) {
        cJSON *j = cJSON_Parse(out.data ? out.data : "");
        char w[32];
        printf("rollout %s of endpoint %s: %s (candidate at %s%%)\n", id, argv[1],
               str_of(j, "state") ? str_of(j, "state") : "?", fmt_num(w, num_of(j, "weight")));
        cJSON_Delete(j);
    }
    bs_buf_free(&out);
    return rc;
}

/* "5,25,50,100" into a JSON array; NULL when malformed. */
static cJSON *parse_steps(const char *s)
{
    cJSON *a = cJSON_CreateArray();
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 100 || (*end && *end != ',')) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v));
        s = *end ? end + 1 : end;
    }
    return a;
}

static int parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    if (end == s || *end || !isfinite(*out)) {
        fprintf(stderr, "basalt: %s must be a number\n", flag);
        return -1;
    }
    return 0;
}

int bs_cli_rollout_start(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *endpoint = NULL, *file = NULL, *alias = NULL, *steps = NULL, *step_interval = NULL,
               *metric = NULL;
    long version = 0, min_requests = -1, interval = 1000;
    double max_err = NAN, max_p99 = NAN, max_psi = NAN, max_drop = NAN;
    int watch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--watch")) {
            watch = 1;
            continue;
        }
        if (a[0] != '-') {
            if (endpoint)
                return usage("start");
            endpoint = a;
            continue;
        }
        if (!v)
            return usage("start");
        i++;
        char *end;
        if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            file = v;
        else if (!strcmp(a, "--version")) {
            version = strtol(v, &end, 10);
            if (*end || version < 1) {
                fprintf(stderr, "basalt: --version must be a version number\n");
                return 2;
            }
        } else if (!strcmp(a, "--alias"))
            alias = v;
        else if (!strcmp(a, "--steps"))
            steps = v;
        else if (!strcmp(a, "--step-interval"))
            step_interval = v;
        else if (!strcmp(a, "--min-requests")) {
            min_requests = strtol(v, &end, 10);
            if (*end || min_requests < 0) {
                fprintf(stderr, "basalt: --min-requests must be a count\n");
                return 2;
            }
        } else if (!strcmp(a, "--max-error-rate")) {
            if (parse_double(a, v, &max_err))
                return 2;
        } else if (!strcmp(a, "--max-p99-ms")) {
            if (parse_double(a, v, &max_p99))
                return 2;
        } else if (!strcmp(a, "--max-psi")) {
            if (parse_double(a, v, &max_psi))
                return 2;
        } else if (!strcmp(a, "--metric"))
            metric = v;
        else if (!strcmp(a, "--max-drop")) {
            if (parse_double(a, v, &max_drop))
                return 2;
        } else if (!strcmp(a, "--interval")) {
            if (bs_cli_parse_interval(v, &interval))
                return 2;
        } else
            return usage("start");
    }
    if (!endpoint)
        return usage("start");
    cJSON *body = NULL;
    if (file) {
        FILE *f = !strcmp(file, "-") ? stdin : fopen(file, "rb");
        if (!f) {
            fprintf(stderr, "basalt: cannot open %s\n", file);
            return 1;
        }
        bs_buf_t b;
        bs_buf_init(&b);
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len < (16u << 20))
            bs_buf_append(&b, chunk, n);
        if (f != stdin)
            fclose(f);
        body = cJSON_Parse(b.data ? b.data : "");
        bs_buf_free(&b);
        if (!cJSON_IsObject(body)) {
            fprintf(stderr, "basalt: %s must hold the rollout as a JSON object\n", file);
            cJSON_Delete(body);
            return 2;
        }
    } else {
        if (!!version == !!alias || !steps) {
            fprintf(stderr, "basalt: rollout start needs --version N or --alias A, and --steps "
                            "(or -f FILE)\n");
            return usage("start");
        }
        body = cJSON_CreateObject();
        cJSON *c = cJSON_AddObjectToObject(body, "candidate");
        if (version)
            cJSON_AddNumberToObject(c, "version", (double)version);
        else
            cJSON_AddStringToObject(c, "alias", alias);
        cJSON *st = parse_steps(steps);
        if (!st) {
            fprintf(stderr, "basalt: --steps must be percents like 5,25,50,100\n");
            cJSON_Delete(body);
            return 2;
        }
        cJSON_AddItemToObject(body, "steps", st);
        if (step_interval)
            cJSON_AddStringToObject(body, "step_interval", step_interval);
        if (min_requests >= 0)
            cJSON_AddNumberToObject(body, "min_requests_per_step", (double)min_requests);
        cJSON *g = cJSON_AddObjectToObject(body, "guards");
        if (!isnan(max_err))
            cJSON_AddNumberToObject(g, "max_error_rate", max_err);
        if (!isnan(max_p99))
            cJSON_AddNumberToObject(g, "max_p99_latency_ms", max_p99);
        if (!isnan(max_psi))
            cJSON_AddNumberToObject(g, "max_prediction_psi", max_psi);
        if (metric || !isnan(max_drop)) {
            if (!metric || isnan(max_drop)) {
                fprintf(stderr, "basalt: --metric and --max-drop go together\n");
                cJSON_Delete(body);
                return 2;
            }
            cJSON *md = cJSON_AddObjectToObject(g, "max_metric_drop");
            cJSON_AddStringToObject(md, "metric", metric);
            cJSON_AddNumberToObject(md, "delta", max_drop);
        }
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    bs_buf_t path, out;
    bs_buf_init(&path);
    bs_buf_init(&out);
    base_path(&path, endpoint);
    int rc = bs_cli_call(&r, "POST", path.data, "application/json", text, strlen(text), &out);
    free(text);
    bs_buf_free(&path);
    if (rc) {
        bs_buf_free(&out);
        return rc;
    }
    cJSON *j = cJSON_Parse(out.data ? out.data : "");
    char id[64], v[32], w[32];
    snprintf(id, sizeof id, "%s", str_of(j, "id") ? str_of(j, "id") : "");
    if (r.json && !watch)
        printf("%.*s\n", (int)out.len, out.data ? out.data : "");
    else if (!r.json)
        printf("rollout %s of endpoint %s started: version %s at %s%%\n", id, endpoint,
               fmt_num(v, num_of(cJSON_GetObjectItemCaseSensitive(j, "candidate"), "version")),
               fmt_num(w, num_of(j, "weight")));
    cJSON_Delete(j);
    bs_buf_free(&out);
    if (watch && id[0])
        return status(&r, endpoint, id, 1, interval);
    return 0;
}
