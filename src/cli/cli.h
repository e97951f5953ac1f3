/*
 * The command-line subcommands of the basalt binary. src/cli/commands.c holds
 * the table of every command (its words, synopsis, help text and function);
 * src/cli/main.c hands argv to bs_cli_run, which finds the command, answers
 * `--help`/`-h` for it from the table (so every command has a usage by
 * construction) and calls its function with the remaining arguments (argv[0]
 * is the command's own last word). Each returns the process exit code: 0 on
 * success, 1 on a failure it has reported on stderr (the server's error
 * message for an HTTP error), 2 on a usage error, 3 when the server answered
 * 404.
 *
 * Output: client commands print a table or a one-line summary by default and,
 * with --json, the server's JSON as it came (one line); `model check` and
 * `version` do the same for what they compute.
 */
#ifndef BS_CLI_CLI_H
#define BS_CLI_CLI_H

#include <stdio.h>

#include "base/buf.h"

typedef int (*bs_cli_fn)(int argc, char **argv);

/* One command: `basalt [group] name synopsis`. */
typedef struct {
    const char *group;    /* "model", "keys", "job", or NULL for a top-level command */
    const char *name;
    const char *synopsis; /* the arguments after the command words */
    const char *summary;  /* one line */
    const char *details;  /* options and notes (several lines), or NULL */
    bs_cli_fn run;
    void (*more_help)(FILE *f); /* printed after details (serve: every setting), or NULL */
} bs_cli_command_t;

/* Runs the command named by argv (the whole argv of main). Returns the exit code. */
int bs_cli_run(int argc, char **argv);
/* Prints the usage of one command (details included) to f. */
void bs_cli_usage(FILE *f, const char *group, const char *name);

/* `basalt serve …` (argv[0] == "serve"). */
int bs_cli_serve(int argc, char **argv);

/*
 * `basalt model check FILE [--format xgboost_json|basalt_json] [--rows ROWS.json] [--json]`
 * (argv[0] == "check"). Loads a model file (format sniffed from its top-level
 * keys unless --format is given). Without --rows describes the model (kind,
 * task, outputs, labels, features); with --rows (a JSON array of rows, each an
 * array of values in schema order; null = missing, a string for a category
 * feature) prints the predictions, with --json as {"predictions": [[...], ...]}
 * with every value at %.17g. Output on stdout, errors on stderr.
 */
int bs_cli_model_check(int argc, char **argv);

/* Client commands against a server (src/cli/remote.c); --url/--key or
 * BASALT_URL/BASALT_API_KEY, --json for the raw JSON. argv[0] is the command's word. */
int bs_cli_model_push(int argc, char **argv);
int bs_cli_model_ls(int argc, char **argv);
int bs_cli_model_versions(int argc, char **argv);
int bs_cli_model_review(int argc, char **argv); /* approve, reject, archive */
int bs_cli_model_alias(int argc, char **argv);
int bs_cli_model_pull(int argc, char **argv);
int bs_cli_predict(int argc, char **argv);

/* `basalt apply|get|delete` (src/cli/apply.c): declarative resources, the kinds learnt from
 * GET /v1/kinds. */
int bs_cli_apply(int argc, char **argv);
int bs_cli_get(int argc, char **argv);
int bs_cli_delete(int argc, char **argv);

/* `basalt keys create|ls|delete` (src/cli/keys.c): through the API, or with
 * `keys create --data DIR` straight into a data directory (see keys.c). */
int bs_cli_keys_create(int argc, char **argv);
/* `basalt migrate` (src/cli/migrate.c). */
int bs_cli_migrate(int argc, char **argv);
int bs_cli_keys_ls(int argc, char **argv);
int bs_cli_keys_delete(int argc, char **argv);

/* `basalt job ls|get|watch|cancel|retry|run` (src/cli/jobs.c). job_act is cancel and
 * retry (argv[0] is the verb). */
int bs_cli_job_ls(int argc, char **argv);
int bs_cli_job_get(int argc, char **argv);
int bs_cli_job_watch(int argc, char **argv);
int bs_cli_job_act(int argc, char **argv);
int bs_cli_job_run(int argc, char **argv);

/* `basalt rollout start|status|ls|pause|resume|abort|promote` (src/cli/rollouts.c).
 * rollout_act is pause, resume, abort and promote (argv[0] is the verb). */
int bs_cli_rollout_start(int argc, char **argv);
int bs_cli_rollout_status(int argc, char **argv);
int bs_cli_rollout_ls(int argc, char **argv);
int bs_cli_rollout_act(int argc, char **argv);

/* `basalt predictions export` (src/cli/predictions.c): an endpoint's prediction log as
 * JSON lines. */
int bs_cli_predictions_export(int argc, char **argv);

/* --- shared by the client commands (remote.c) --- */

typedef struct {
    const char *url;
    int url_len; /* without trailing slashes: "http://host:port/" is the same server */
    const char *key;
    int json;    /* --json: print the server's JSON as it came */
} bs_cli_remote_t;

/* Removes --url/--key/--json from argv (in place) into r; returns the new argc. */
int bs_cli_take_globals(int argc, char **argv, bs_cli_remote_t *r);
/* Appends s to b, percent-encoding all but RFC 3986 unreserved characters (a path segment
 * or a query value). */
void bs_cli_put_encoded(bs_buf_t *b, const char *s);
/* A watch's --interval: milliseconds 50..60000 into *out; 0, or -1 after saying why. */
int bs_cli_parse_interval(const char *s, long *out);
/* Performs a call. On a 2xx, appends the body to out (or prints it when out is
 * NULL); otherwise reports "basalt: METHOD PATH failed with STATUS: message" on
 * stderr. Returns 0, 1 (failed call), or 3 (404). */
int bs_cli_call(const bs_cli_remote_t *r, const char *method, const char *path,
                const char *content_type, const void *body, size_t len, bs_buf_t *out);

/* GETs every page of a list (path already has a query: "…?limit=1000"), following
 * next_cursor. 0 with *items (a cJSON array the caller frees), or the exit code. */
struct cJSON;
int bs__cli_list_all(const bs_cli_remote_t *r, const char *path, struct cJSON **items);
/* --json of a list: every page's items as one page, {"items": […], "next_cursor": null}. */
void bs__cli_print_items(const struct cJSON *items);

/* A text table: columns padded to their widest cell, two spaces apart. */
typedef struct {
    int ncols, nrows, cap;
    char **cells; /* nrows × ncols, owned; row 0 is the header */
} bs_cli_table_t;

void bs_cli_table_init(bs_cli_table_t *t, int ncols);
/* Adds a row of ncols strings (copied; NULL prints as "-"). */
void bs_cli_table_row(bs_cli_table_t *t, ...);
/* The same with the row as an array of ncols strings. */
void bs_cli_table_rowv(bs_cli_table_t *t, const char *const *cells);
void bs_cli_table_print(const bs_cli_table_t *t, FILE *f);
void bs_cli_table_free(bs_cli_table_t *t);

#endif
