/* Role names; see principal.h. */
#include "base/principal.h"

#include <string.h>

const char *bs_role_name(bs_role_t r)
{
    switch (r) {
    case BS_ROLE_VIEWER: return "viewer";
    case BS_ROLE_PREDICTOR: return "predictor";
    case BS_ROLE_DEVELOPER: return "developer";
    case BS_ROLE_ADMIN: return "admin";
    default: return "public";
    }
}

const char *bs_scope_name(unsigned scope)
{
    return scope == BS_SCOPE_METRICS ? "metrics" : NULL;
}

unsigned bs_scope_parse(const char *s)
{
    for (unsigned bit = 1; bit & BS_SCOPES_ALL; bit <<= 1)
        if (strcmp(s, bs_scope_name(bit)) == 0)
            return bit;
    return 0;
}

int bs_role_parse(const char *s)
{
    for (int r = BS_ROLE_VIEWER; r <= BS_ROLE_ADMIN; r++)
        if (strcmp(s, bs_role_name((bs_role_t)r)) == 0)
            return r;
    return -1;
}

