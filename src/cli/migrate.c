/*
 * `basalt migrate [--metadata-url URL | --data DIR] [--json]`: opens the metadata store,
 * which applies the pending migrations (on PostgreSQL under an advisory lock, so it is
 * safe next to replicas starting at the same time), and prints the schema version. The
 * URL also comes from BASALT_METADATA_URL, the directory from BASALT_DATA (default
 * ./data). The URL is printed without its password.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/rcu.h"
#include "cli/cli.h"
#include "store/meta.h"

int bs_cli_migrate(int argc, char **argv)
{
    const char *url = getenv("BASALT_METADATA_URL"), *data = getenv("BASALT_DATA");
    int json = 0, have_url = 0, have_data = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if ((!strcmp(a, "--metadata-url") || !strcmp(a, "--data")) && i + 1 < argc) {
            if (a[2] == 'm')
                url = argv[++i], have_url = 1;
            else
                data = argv[++i], have_data = 1;
        } else if (!strncmp(a, "--metadata-url=", 15)) {
            url = a + 15, have_url = 1;
        } else if (!strncmp(a, "--data=", 7)) {
            data = a + 7, have_data = 1;
        } else {
            fprintf(stderr, "basalt migrate: unexpected argument '%.64s'\n", a);
            bs_cli_usage(stderr, NULL, "migrate");
            return 2;
        }
    }
    if (have_url && have_data) {
        fprintf(stderr, "basalt migrate: give --metadata-url or --data, not both\n");
        return 2;
    }
    if (have_data)
        url = NULL;
    char path[1200];
    if (url && *url) {
        if (!bs_meta_is_url(url)) {
            fprintf(stderr, "basalt migrate: --metadata-url must be a postgres:// or "
                            "postgresql:// URL\n");
            return 2;
        }
        snprintf(path, sizeof path, "%s", url);
    } else {
        if (!data || !*data)
            data = "./data";
        mkdir(data, 0755); /* one level, as serve's first start would make it */
        snprintf(path, sizeof path, "%s/basalt.db", data);
    }
    char shown[1200];
    bs_meta_redact(path, shown, sizeof shown);
    bs_err_t err;
    bs_err_clear(&err);
    bs_meta_t *m = bs_meta_open(path, &err);
    if (!m) {
        fprintf(stderr, "basalt migrate: %s: %s\n", shown, err.msg);
        return 1;
    }
    int version = bs_meta_schema_version(m);
    if (json) {
        bs_buf_t b;
        bs_buf_init(&b);
        bs_jw_obj_begin(&b);
        bs_jw_key(&b, "backend");
        bs_jw_str(&b, bs_meta_backend(m));
        bs_jw_key(&b, "metadata");
        bs_jw_str(&b, shown);
        bs_jw_key(&b, "schema_version");
        bs_jw_int(&b, version);
        bs_jw_obj_end(&b);
        printf("%.*s\n", (int)b.len, b.data);
        bs_buf_free(&b);
    } else {
        printf("schema version %d (%s, %s)\n", version, bs_meta_backend(m), shown);
    }
    bs_meta_close(m);
    bs_rcu_drain();
    return 0;
}
