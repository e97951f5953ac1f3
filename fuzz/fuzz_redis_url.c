/*
 * libFuzzer target for bs_kv_parse_url (redis_url): any bytes, as a C string, either
 * parse into a URL whose fields hold their invariants or fail with BS_EINVAL and a
 * message; never a crash or an overrun.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/kv.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    bs_kv_url_t u;
    bs_err_t err;
    bs_err_clear(&err);
    int rc = bs_kv_parse_url(s, &u, &err);
    if (rc == 0) {
        CHECK(memchr(u.host, 0, sizeof u.host) && memchr(u.unix_path, 0, sizeof u.unix_path));
        CHECK(memchr(u.user, 0, sizeof u.user) && memchr(u.password, 0, sizeof u.password));
        CHECK((u.host[0] != 0) != (u.unix_path[0] != 0)); /* one of TCP or a socket */
        CHECK(u.port >= 1 && u.port <= 65535);
        CHECK(u.db >= 0);
        CHECK(!u.unix_path[0] || u.unix_path[0] == '/');
    } else {
        CHECK(rc == BS_EINVAL && err.msg[0]);
    }
    free(s);
    return 0;
}
