/*
 * `basalt predictions export ENDPOINT [--since T] [--until T] [--version N] [--variant V]
 * [--shadow true|false] [-o FILE]` (usage in commands.c): the endpoint's prediction log as
 * JSON lines, one record per line in log order, paging through GET
 * /v1/endpoints/{name}/predictions (limit 1000, following next_cursor until it is null).
 * Pages are written as they come, so memory stays at one page. Without -o the lines go to
 * standard output; with -o they go to FILE (written next to it and renamed into place at
 * the end, so a failed export leaves no half file) and a summary goes to stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "cli/cli.h"

#define PAGE_LIMIT 1000

static int usage(void)
{
    bs_cli_usage(stderr, "predictions", "export");
    return 2;
}

static void add_param(bs_buf_t *b, const char *name, const char *value)
{
    if (!value)
        return;
    bs_buf_printf(b, "&%s=", name);
    bs_cli_put_encoded(b, value);
}

int bs_cli_predictions_export(int argc, char **argv)
{
    bs_cli_remote_t r;
    argc = bs_cli_take_globals(argc, argv, &r);
    const char *endpoint = NULL, *since = NULL, *until = NULL, *version = NULL, *variant = NULL,
               *shadow = NULL, *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--since")                        ? &since
                           : !strcmp(a, "--until")                      ? &until
                           : !strcmp(a, "--version")                    ? &version
                           : !strcmp(a, "--variant")                    ? &variant
                           : !strcmp(a, "--shadow")                     ? &shadow
                           : !strcmp(a, "-o") || !strcmp(a, "--output") ? &file
                                                                        : NULL;
        if (dst) {
            if (i + 1 >= argc)
                return usage();
            *dst = argv[++i];
        } else if (a[0] == '-' || endpoint) {
            return usage();
        } else {
            endpoint = a;
        }
    }
    if (!endpoint)
        return usage();
    bs_buf_t base;
    bs_buf_init(&base);
    bs_buf_puts(&base, "/v1/endpoints/");
    bs_cli_put_encoded(&base, endpoint);
    bs_buf_printf(&base, "/predictions?limit=%d", PAGE_LIMIT);
    add_param(&base, "since", since);
    add_param(&base, "until", until);
    add_param(&base, "version", version);
    add_param(&base, "variant", variant);
    add_param(&base, "shadow", shadow);

    FILE *out = stdout;
    char tmp[4096] = "";
    if (file) {
        snprintf(tmp, sizeof tmp, "%s.part-%ld", file, (long)getpid());
        out = fopen(tmp, "w");
        if (!out) {
            fprintf(stderr, "basalt: cannot write %s: %s\n", tmp, strerror(errno));
            bs_buf_free(&base);
            return 1;
        }
    }
    bs_buf_t path, page;
    bs_buf_init(&path);
    bs_buf_init(&page);
    bs_buf_puts(&path, base.data);
    long long records = 0;
    int rc = 0;
    for (;;) {
        bs_buf_reset(&page);
        if ((rc = bs_cli_call(&r, "GET", path.data, NULL, NULL, 0, &page)))
            break;
        cJSON *j = cJSON_Parse(page.data ? page.data : "");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items"), *it;
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "next_cursor");
        if (!cJSON_IsArray(items)) {
            fprintf(stderr, "basalt: GET %s: the server's answer has no items list\n", path.data);
            cJSON_Delete(j);
            rc = 1;
            break;
        }
        cJSON_ArrayForEach(it, items)
        {
            char *line = cJSON_PrintUnformatted(it);
            if (!line || fputs(line, out) == EOF || fputc('\n', out) == EOF) {
                fprintf(stderr, "basalt: cannot write the export: %s\n", strerror(errno));
                free(line);
                rc = 1;
                break;
            }
            free(line);
            records++;
        }
        int more = rc == 0 && cJSON_IsString(next) && *next->valuestring;
        if (more) {
            bs_buf_reset(&path);
            bs_buf_puts(&path, base.data);
            add_param(&path, "cursor", next->valuestring);
        }
        cJSON_Delete(j);
        if (!more)
            break;
    }
    bs_buf_free(&path);
    bs_buf_free(&page);
    bs_buf_free(&base);
    if (file) {
        if (fclose(out) != 0 && rc == 0) {
            fprintf(stderr, "basalt: cannot write %s: %s\n", tmp, strerror(errno));
            rc = 1;
        }
        if (rc == 0 && rename(tmp, file) != 0) {
            fprintf(stderr, "basalt: cannot rename %s to %s: %s\n", tmp, file, strerror(errno));
            rc = 1;
        }
        if (rc)
            unlink(tmp);
        else
            fprintf(stderr, "exported %lld predictions of %s to %s\n", records, endpoint, file);
    } else if (fflush(stdout) != 0 && rc == 0) {
        rc = 1;
    }
    return rc;
}
