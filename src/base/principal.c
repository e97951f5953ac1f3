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

int bs_role_parse(const char *s)
{
    for (int r = BS_ROLE_VIEWER; r <= BS_ROLE_ADMIN; r++)
        if (strcmp(s, bs_role_name((bs_role_t)r)) == 0)
            return r;
    return -1;
}

