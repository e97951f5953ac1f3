/* The basalt command: dispatches to `serve`, `version`, `model …` and `predict`. */
#include <stdio.h>
#include <string.h>

#include "base/config.h"
#include "base/version.h"
#include "cli/cli.h"

int bs_cli_serve(int argc, char **argv);

static void usage(FILE *f)
{
    fprintf(f,
            "basalt %s — an AI backend in one binary\n\n"
            "usage:\n"
            "  basalt serve [--listen ADDR:PORT] [--data DIR] [--threads N] [--config FILE]\n"
            "               [--log-level L] [--no-auth] [settings…]\n"
            "  basalt version\n"
            "  basalt model check FILE [--format F] [--rows ROWS.json]   (offline: validate, predict)\n"
            "  basalt model push FILE --name N [--format F] [--schema S.json] [--metric k=v]…\n"
            "                    [--param k=v]… [--tag T]… [--run ID] [--description D]\n"
            "  basalt model ls | versions NAME | approve NAME V [--comment C] | reject NAME V\n"
            "  basalt model archive NAME V | alias NAME ALIAS V | pull NAME V [-o FILE]\n"
            "                                                   (basalt model --help)\n"
            "  basalt predict REF JSON|@FILE|-   (REF: name, name@alias, name/versions/N)\n"
            "  client commands take --url URL --key KEY, before or after the command\n"
            "  (or BASALT_URL, BASALT_API_KEY)\n"
            "  basalt --help\n\n"
            "settings (flag, environment variable; precedence flag > env > config file > default):\n",
            BS_VERSION);
    bs_config_print_help(f);
}

/* `basalt --url U --key K model ls`: client flags given before the command move after it,
 * where the client commands read them. */
static void move_leading_client_flags(int argc, char **argv)
{
    int k = 1;
    while (k + 1 < argc && (!strcmp(argv[k], "--url") || !strcmp(argv[k], "--key")))
        k += 2;
    if (k == 1 || k >= argc)
        return;
    char *flags[8];
    int nf = k - 1 < 8 ? k - 1 : 8;
    memcpy(flags, argv + 1, (size_t)nf * sizeof *flags);
    memmove(argv + 1, argv + 1 + nf, (size_t)(argc - 1 - nf) * sizeof *argv);
    memcpy(argv + argc - nf, flags, (size_t)nf * sizeof *flags);
}

int main(int argc, char **argv)
{
    move_leading_client_flags(argc, argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("basalt %s (%s)\n", BS_VERSION, bs_build_sha());
        return 0;
    }
    if (!strcmp(argv[1], "serve")) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                usage(stdout);
                return 0;
            }
        return bs_cli_serve(argc - 1, argv + 1);
    }
    if (!strcmp(argv[1], "model") &&
        (argc < 3 || !strcmp(argv[2], "--help") || !strcmp(argv[2], "-h") || !strcmp(argv[2], "help"))) {
        bs_cli_model_usage(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    if (!strcmp(argv[1], "model") && !strcmp(argv[2], "check"))
        return bs_cli_model_check(argc - 2, argv + 2);
    if (!strcmp(argv[1], "model"))
        return bs_cli_model_remote(argc - 2, argv + 2);
    if (!strcmp(argv[1], "predict"))
        return bs_cli_predict(argc - 1, argv + 1);
    fprintf(stderr, "basalt: unknown command '%s' (try basalt --help)\n", argv[1]);
    return 2;
}
