/*
 * The command-line subcommands of the basalt binary. src/cli/main.c parses
 * the first word(s) of argv and calls one of these with the remaining
 * arguments (argv[0] is the subcommand's own name). Each returns the process
 * exit code: 0 on success, 1 on a failure it has reported on stderr (the
 * server's error message for an HTTP error), 2 on a usage error, 3 when the
 * server answered 404.
 */
#ifndef BS_CLI_CLI_H
#define BS_CLI_CLI_H

#include <stdio.h>

/*
 * `basalt model check FILE [--format xgboost_json|basalt_json] [--rows ROWS.json]`
 * (argv[0] == "check"). Loads a model file (format sniffed from its top-level
 * keys unless --format is given). Without --rows prints a JSON description of
 * the model (kind, task, outputs, labels, features); with --rows (a JSON array
 * of rows, each an array of values in schema order; null = missing, a string
 * for a category feature) prints {"predictions": [[...], ...]} with every
 * value at %.17g. Output on stdout, errors on stderr.
 */
int bs_cli_model_check(int argc, char **argv);

/* `basalt model push|ls|versions|approve|reject|archive|alias …` against a server
 * (argv[0] is the subcommand). --url/--key or BASALT_URL/BASALT_API_KEY. */
int bs_cli_model_remote(int argc, char **argv);
/* The usage of every `basalt model` subcommand. */
void bs_cli_model_usage(FILE *f);
/* `basalt predict REF JSON|@FILE|-` (argv[0] == "predict"). */
int bs_cli_predict(int argc, char **argv);

#endif
