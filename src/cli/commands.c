/*
 * The table of basalt's commands and the dispatcher. Every command is one row:
 * its words, synopsis, help text and function. `basalt --help`, `basalt model
 * --help` and `basalt keys --help` list the rows; `--help`/`-h` anywhere after
 * a command's words prints that row's usage on stdout and exits 0 before the
 * command runs, so a command cannot be added without a usage (and
 * tests/api/test_cli.py asks every row listed by `basalt --help` for it).
 */
#include <stdio.h>
#include <string.h>

#include "base/config.h"
#include "base/version.h"
#include "cli/cli.h"

#define CLIENT_NOTE                                                                                \
    "client commands take --url URL --key KEY, before or after the command (or BASALT_URL,\n"      \
    "BASALT_API_KEY; default http://127.0.0.1:8080), and --json to print the server's JSON\n"     \
    "instead of a table or a one-line summary\n"

static int cmd_version(int argc, char **argv);

static void serve_settings(FILE *f)
{
    fprintf(f, "\nsettings (flag, environment variable; precedence flag > env > config file > "
               "default):\n");
    bs_config_print_help(f);
}

static const bs_cli_command_t commands[] = {
    {NULL, "serve",
     "[--listen ADDR:PORT] [--data DIR] [--threads N] [--config FILE]\n"
     "[--log-level L] [--no-auth] [settings…]",
     "run the server in the foreground (Ctrl-C or SIGTERM stops it)",
     "The first start on an empty data directory prints a bootstrap admin API key (shown\n"
     "once). One server owns a data directory: a second one refuses to start. SIGHUP makes\n"
     "the server reload its API keys from the data directory (basalt keys create --data\n"
     "sends it).\n",
     bs_cli_serve, serve_settings},
    {NULL, "version", "[--json]", "print the version and the git commit of the build", NULL,
     cmd_version, NULL},
    {NULL, "migrate", "[--metadata-url URL | --data DIR] [--json]",
     "apply the metadata store's migrations and print its schema version",
     "  --metadata-url URL  a PostgreSQL database (postgres://…; default BASALT_METADATA_URL)\n"
     "  --data DIR          the SQLite store DIR/basalt.db (default BASALT_DATA, ./data)\n"
     "`serve` applies them at start as well; on PostgreSQL under an advisory lock, so\n"
     "replicas (and this command) starting together migrate once. A store whose schema is\n"
     "newer than this binary is refused (exit 1).\n",
     bs_cli_migrate, NULL},
    {"model", "check", "FILE [--format F] [--rows ROWS.json] [--json]",
     "offline: load a model file as the server would, describe it or predict rows",
     "  --format F      xgboost_json or basalt_json (detected from the file when absent)\n"
     "  --rows R.json   predict these positional rows, [[v1, v2, …], …] in schema order\n"
     "                  (null: missing; a string: a category)\n"
     "  --json          the description or {\"predictions\": [[…], …]} (values at %.17g)\n",
     bs_cli_model_check, NULL},
    {"model", "push",
     "FILE --name NAME [--format F] [--schema S.json] [--metric k=v]…\n"
     "[--param k=v]… [--tag T]… [--run ID] [--description D] [--dataset D]\n"
     "[--source-commit C] [--json]",
     "upload a new version (creating the model if it does not exist)",
     "The file is loaded here first with the server's own loaders, so a broken file fails\n"
     "before anything is created on the server.\n"
     "  --schema S.json  {\"input_schema\": […], \"output_schema\": {…}} or just the input list\n"
     "  --metric k=v     a number; --param k=v a number or a string; both repeatable\n",
     bs_cli_model_push, NULL},
    {"model", "ls", "[--json]", "list the models: name, latest version, aliases", NULL,
     bs_cli_model_ls, NULL},
    {"model", "list", "[--json]", "the same as model ls", NULL, bs_cli_model_ls, NULL},
    {"model", "versions", "NAME [--json]", "list a model's versions, newest first", NULL,
     bs_cli_model_versions, NULL},
    {"model", "approve", "NAME V [--comment C] [--json]",
     "approve a pending version (developer or admin)", NULL, bs_cli_model_review, NULL},
    {"model", "reject", "NAME V [--comment C] [--json]",
     "reject a pending version (it never serves again)", NULL, bs_cli_model_review, NULL},
    {"model", "archive", "NAME V [--comment C] [--json]",
     "retire an approved version that holds no alias", NULL, bs_cli_model_review, NULL},
    {"model", "alias", "NAME ALIAS V [--json]",
     "point ALIAS (e.g. champion) at approved version V", NULL, bs_cli_model_alias, NULL},
    {"model", "pull", "NAME V [-o FILE] [--json]",
     "download a version's artifact, byte for byte as uploaded",
     "Without -o the bytes go to standard output. With -o, --json prints\n"
     "{\"model\", \"version\", \"file\", \"size\"} on stdout.\n",
     bs_cli_model_pull, NULL},
    {NULL, "predict", "REF JSON|@FILE|- [--json]", "predict one or more rows",
     "  REF:  name, name@alias or name/versions/N\n"
     "  JSON: {\"feature\": value, …} (one row) or [{…}, …] (rows) — wrapped in {\"inputs\": …}\n"
     "        for you — or a full predict body ({\"inputs\": …} or {\"instances\": [[…], …]});\n"
     "        @FILE reads it from a file, - from standard input\n",
     bs_cli_predict, NULL},
    {NULL, "apply", "-f FILE|DIR [-f …] [--dry-run] [--json]",
     "create or update resources from YAML or JSON documents {kind, name, spec}",
     "  -f FILE|DIR  a YAML file (several documents separated by ---), a JSON file (one\n"
     "               document or a list), - for standard input, or a directory: its .yaml,\n"
     "               .yml and .json files in name order; repeatable\n"
     "  --dry-run    the server validates and compares, nothing is written; prints the\n"
     "               outcome and a line diff of the spec against the stored one\n"
     "Prints KIND/NAME created|updated|unchanged per document. The kinds (Topic, …) and\n"
     "their paths come from the server (GET /v1/kinds). Every document is tried; the exit\n"
     "status is 1 if any failed (the server's message on stderr), and nothing is sent when\n"
     "a file does not parse.\n" CLIENT_NOTE,
     bs_cli_apply, NULL},
    {NULL, "get", "KIND [NAME] [-o json|yaml]",
     "list resources of a kind (or show one): NAME, GENERATION, UPDATED, UPDATED BY",
     "  KIND     Topic, topic or topics (any kind GET /v1/kinds lists)\n"
     "  -o json  the server's JSON (a list: every page's items as one page)\n"
     "  -o yaml  YAML documents that basalt apply -f takes back\n" CLIENT_NOTE,
     bs_cli_get, NULL},
    {NULL, "delete", "KIND NAME [--json]", "delete a resource (exit status 3 when absent)",
     CLIENT_NOTE, bs_cli_delete, NULL},
    {"predictions", "export",
     "ENDPOINT [--since T] [--until T] [--version N] [--variant V]\n"
     "[--shadow true|false] [-o FILE]",
     "write an endpoint's logged predictions as JSON lines (one record per line)",
     "  --since T, --until T  predictions made in [since, until): RFC 3339 timestamps or\n"
     "                        durations before now (1h, 30m)\n"
     "  --version N           only this model version\n"
     "  --variant V           only this variant (a route's or a shadow's name)\n"
     "  --shadow true|false   only shadow runs / only routed predictions (default: both)\n"
     "  -o FILE               write FILE (renamed into place when complete) and print a\n"
     "                        summary on stderr; default: standard output\n"
     "Records are in log order, as stored (docs/endpoints-predictions.md). Exit status 3\n"
     "when the endpoint does not exist.\n",
     bs_cli_predictions_export, NULL},
    {"keys", "create",
     "--role ROLE [--name N] [--tenant T] [--ttl SECONDS]\n"
     "[--data DIR | --metadata-url URL] [--json]",
     "create an API key (admin); with --data, offline, straight into a data directory",
     "  --role      admin, developer, predictor or viewer\n"
     "  --name      a label for the key (default: cli-ROLE)\n"
     "  --tenant    the key's tenant (default: the caller's; with --data: default)\n"
     "  --ttl       seconds until the key expires (default: never)\n"
     "  --data DIR  no server call: writes the key into DIR/basalt.db (the way back in when\n"
     "              the admin key is lost). With the server stopped it takes the data\n"
     "              directory's lock; with a server running it writes through SQLite and\n"
     "              sends the server (the pid in DIR/basalt.lock) SIGHUP so it loads the key\n"
     "              at once. Run it as the user the server runs as.\n"
     "  --metadata-url URL  no server call either: writes the key into a PostgreSQL metadata\n"
     "              store (postgres://…); each replica loads it at its next key reload\n"
     "              (SIGHUP or a restart).\n"
     "The key is printed once; it is stored only as a salted hash.\n",
     bs_cli_keys_create, NULL},
    {"keys", "ls", "[--tenant T] [--json]", "list API keys (admin; never their secrets)", NULL,
     bs_cli_keys_ls, NULL},
    {"keys", "list", "[--tenant T] [--json]", "the same as keys ls", NULL, bs_cli_keys_ls, NULL},
    {"keys", "delete", "ID [--json]", "delete an API key (admin)", NULL, bs_cli_keys_delete,
     NULL},
    {"job", "ls", "[--state S] [--kind K] [--limit N] [--json]",
     "list jobs, newest first: id, kind, state, attempt, progress",
     "  --state S  available, scheduled, running, retryable, completed, discarded or cancelled\n"
     "  --kind K   one kind (basalt job run's KIND; GET /v1/job-kinds lists them)\n"
     "  --limit N  at most N jobs (1-1000, default 100)\n",
     bs_cli_job_ls, NULL},
    {"job", "list", "[--state S] [--kind K] [--limit N] [--json]", "the same as job ls", NULL,
     bs_cli_job_ls, NULL},
    {"job", "get", "ID [--json]", "show a job: state, attempts, progress, errors, result", NULL,
     bs_cli_job_get, NULL},
    {"job", "watch", "ID [--interval MS] [--json]",
     "follow a job until it is finalized: exit 0 if it completed, 1 otherwise",
     "On a terminal one line is redrawn: a progress bar, done/total, rate, ETA and state;\n"
     "otherwise a plain line is printed each time the state or the progress changes.\n"
     "  --interval MS  how often to ask the server (50-60000, default 500)\n"
     "  --json         print only the finalized job's JSON\n",
     bs_cli_job_watch, NULL},
    {"job", "cancel", "ID [--json]",
     "cancel a job: a waiting one at once; a running one is asked to stop", NULL,
     bs_cli_job_act, NULL},
    {"job", "retry", "ID [--json]", "run a discarded, cancelled or retryable job again now", NULL,
     bs_cli_job_act, NULL},
    {"job", "run",
     "KIND [--args JSON] [--unique-key K] [--run-at TIME] [--max-attempts N]\n"
     "[--priority P] [--watch] [--json]",
     "enqueue a job of KIND (e.g. sleep) and print its id",
     "  --args JSON        the job's arguments, a JSON object (sleep: {\"seconds\": 5, \"steps\": 10,\n"
     "                     \"fail_times\": 1})\n"
     "  --unique-key K     while a job of KIND with key K is not finalized, that job is the answer\n"
     "  --run-at TIME      not before this RFC 3339 time (state scheduled until then)\n"
     "  --max-attempts N   attempts before it is discarded (default: the kind's, 25)\n"
     "  --priority P       -1000..1000, higher runs first (default 0)\n"
     "  --watch            then follow it as basalt job watch does (and exit as it does)\n",
     bs_cli_job_run, NULL},
    {"rollout", "start",
     "ENDPOINT (--version N | --alias A) --steps 5,25,50,100 [--step-interval 5m]\n"
     "[--min-requests N] [--max-error-rate X] [--max-p99-ms X] [--max-psi X]\n"
     "[--metric M --max-drop D] [--watch] [--json]  |  ENDPOINT -f FILE",
     "start a progressive rollout of a candidate version on an endpoint",
     "  --version N, --alias A  the candidate (an approved version of the endpoint's model)\n"
     "  --steps LIST       the candidate's weight at each step, in percent, ending at 100\n"
     "  --step-interval D  how long each step lasts at least (default 5m)\n"
     "  --min-requests N   predictions the candidate serves in a step before it advances\n"
     "                     (default 100)\n"
     "  --max-error-rate X, --max-p99-ms X, --max-psi X\n"
     "                     guards: the candidate's error rate, p99 latency, prediction PSI\n"
     "                     against the stable's, over each step\n"
     "  --metric M --max-drop D  guard: the feedback metric M (accuracy, f1, roc_auc, mae,\n"
     "                     ...) may not drop by more than D below the stable's\n"
     "  -f FILE            the whole rollout as JSON (POST /v1/endpoints/{name}/rollouts)\n"
     "  --watch            then follow it as basalt rollout status --watch does\n",
     bs_cli_rollout_start, NULL},
    {"rollout", "status", "ENDPOINT [ID] [--watch] [--interval MS] [--json]",
     "show a rollout (default: the endpoint's latest): state, step, guards against limits",
     "  --watch        follow it until it ends: exit 0 if promoted, 1 if rolled back or aborted\n"
     "  --interval MS  poll interval with --watch (50-60000, default 1000)\n"
     "  --json         the rollout's JSON (with --watch: only once it ended)\n",
     bs_cli_rollout_status, NULL},
    {"rollout", "ls", "ENDPOINT [--json]", "list an endpoint's rollouts, newest first", NULL,
     bs_cli_rollout_ls, NULL},
    {"rollout", "pause", "ENDPOINT [ID] [--json]",
     "pause a running rollout (the weights stay where they are)", NULL, bs_cli_rollout_act, NULL},
    {"rollout", "resume", "ENDPOINT [ID] [--json]",
     "resume a paused rollout (its current step starts again)", NULL, bs_cli_rollout_act, NULL},
    {"rollout", "abort", "ENDPOINT [ID] [--json]",
     "abort a rollout: the endpoint's spec from before it is restored", NULL, bs_cli_rollout_act,
     NULL},
    {"rollout", "promote", "ENDPOINT [ID] [--json]",
     "promote a rollout now: the candidate takes all the traffic", NULL, bs_cli_rollout_act,
     NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};

static const bs_cli_command_t *find(const char *group, const char *name)
{
    for (const bs_cli_command_t *c = commands; c->name; c++)
        if (!strcmp(c->name, name) && (group ? c->group && !strcmp(c->group, group) : !c->group))
            return c;
    return NULL;
}

static int is_group(const char *w)
{
    for (const bs_cli_command_t *c = commands; c->name; c++)
        if (c->group && !strcmp(c->group, w))
            return 1;
    return 0;
}

/* "PREFIXbasalt [group] name synopsis\n", the synopsis' later lines indented under its
 * first argument. */
static void print_synopsis(FILE *f, const char *prefix, const bs_cli_command_t *c)
{
    int n = 0;
    fprintf(f, "%sbasalt %s%s%s %n", prefix, c->group ? c->group : "", c->group ? " " : "",
            c->name, &n);
    for (const char *p = c->synopsis; *p; p++) {
        fputc(*p, f);
        if (*p == '\n')
            fprintf(f, "%*s", n, "");
    }
    fputc('\n', f);
}

static void print_line(FILE *f, const bs_cli_command_t *c)
{
    print_synopsis(f, "  ", c);
    fprintf(f, "      %s\n", c->summary);
}

static void print_usage(FILE *f, const bs_cli_command_t *c)
{
    print_synopsis(f, "usage: ", c);
    fprintf(f, "\n%s\n", c->summary);
    if (c->details)
        fprintf(f, "\n%s", c->details);
    if (c->group && c->run != bs_cli_model_check) /* the client commands */
        fprintf(f, "\n" CLIENT_NOTE);
    if (c->more_help)
        c->more_help(f);
}

void bs_cli_usage(FILE *f, const char *group, const char *name)
{
    const bs_cli_command_t *c = find(group, name);
    if (c)
        print_usage(f, c);
}

/* `basalt --help` (group NULL) or `basalt model --help`. */
static void group_usage(FILE *f, const char *group)
{
    if (!group)
        fprintf(f, "basalt %s — an AI backend in one binary\n\n", BS_VERSION);
    fprintf(f, "usage:\n");
    for (const bs_cli_command_t *c = commands; c->name; c++)
        if (!group || (c->group && !strcmp(c->group, group)))
            print_line(f, c);
    fprintf(f, "\n" CLIENT_NOTE "basalt %s%sCOMMAND --help shows a command's options\n",
            group ? group : "", group ? " " : "");
    if (!group)
        serve_settings(f);
}

static int is_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h");
}

static int cmd_version(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json")) {
            fprintf(stderr, "basalt: version: unexpected argument '%s'\n", argv[i]);
            bs_cli_usage(stderr, NULL, "version");
            return 2;
        }
        json = 1;
    }
    if (json)
        printf("{\"version\":\"%s\",\"git_sha\":\"%s\"}\n", BS_VERSION, bs_build_sha());
    else
        printf("basalt %s (%s)\n", BS_VERSION, bs_build_sha());
    return 0;
}

/* `basalt --url U --key K --json model ls` (or `basalt model --url U ls`): client flags given
 * before the command's word, from argv[start] on, move to the end, where the client commands
 * read them. */
static void move_leading_client_flags(int argc, char **argv, int start)
{
    int k = start;
    while (k < argc) {
        if (k + 1 < argc && (!strcmp(argv[k], "--url") || !strcmp(argv[k], "--key")))
            k += 2;
        else if (!strcmp(argv[k], "--json"))
            k += 1;
        else
            break;
    }
    if (k == start || k >= argc)
        return;
    char *flags[16];
    int nf = k - start < 16 ? k - start : 16;
    memcpy(flags, argv + start, (size_t)nf * sizeof *flags);
    memmove(argv + start, argv + start + nf, (size_t)(argc - start - nf) * sizeof *argv);
    memcpy(argv + argc - nf, flags, (size_t)nf * sizeof *flags);
}

int bs_cli_run(int argc, char **argv)
{
    move_leading_client_flags(argc, argv, 1);
    if (argc < 2) {
        group_usage(stderr, NULL);
        return 2;
    }
    const char *w = argv[1];
    if (is_help(w) || !strcmp(w, "help")) {
        group_usage(stdout, NULL);
        return 0;
    }
    if (!strcmp(w, "--version"))
        return cmd_version(argc - 1, argv + 1);
    const char *group = NULL;
    int first = 1; /* argv index of the command's own word */
    if (is_group(w)) {
        group = w;
        first = 2;
        move_leading_client_flags(argc, argv, 2);
        if (argc < 3) {
            group_usage(stderr, group);
            return 2;
        }
        if (is_help(argv[2]) || !strcmp(argv[2], "help")) {
            group_usage(stdout, group);
            return 0;
        }
    }
    const bs_cli_command_t *c = find(group, argv[first]);
    if (!c) {
        fprintf(stderr, "basalt: unknown command '%s%s%s' (try basalt %s%s--help)\n",
                group ? group : "", group ? " " : "", argv[first], group ? group : "",
                group ? " " : "");
        if (group)
            group_usage(stderr, group);
        return 2;
    }
    for (int i = first + 1; i < argc; i++)
        if (is_help(argv[i])) {
            print_usage(stdout, c);
            return 0;
        }
    return c->run(argc - first, argv + first);
}
