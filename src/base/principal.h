/* Roles and the authenticated caller, shared by the HTTP layer and the domain modules. */
#ifndef BS_BASE_PRINCIPAL_H
#define BS_BASE_PRINCIPAL_H

/* Roles in increasing privilege; a route declares the least role it accepts. */
typedef enum {
    BS_ROLE_PUBLIC = 0, /* no key needed */
    BS_ROLE_VIEWER,
    BS_ROLE_PREDICTOR,
    BS_ROLE_DEVELOPER,
    BS_ROLE_ADMIN,
} bs_role_t;

const char *bs_role_name(bs_role_t r);
/* Parses "viewer|predictor|developer|admin"; -1 if unknown. */
int bs_role_parse(const char *s);

/* Scopes narrow a key to a few routes; a key without scopes has its role's full reach.
 * BS_SCOPE_METRICS: /metrics only (it names every tenant's models). */
#define BS_SCOPE_METRICS 1u
#define BS_SCOPES_ALL BS_SCOPE_METRICS

/* The scope's name ("metrics") for one bit, or NULL. */
const char *bs_scope_name(unsigned scope);
/* The bit of a scope name; 0 if unknown. */
unsigned bs_scope_parse(const char *s);

/* Who is calling: filled by authentication. */
typedef struct {
    char key_id[40];
    char tenant[64];
    bs_role_t role;
    unsigned scopes; /* BS_SCOPE_* bits; 0 = not narrowed */
    double rate_rps, rate_burst; /* 0: the configured default */
} bs_principal_t;

/* The tenant whose admins may manage every tenant. */
#define BS_DEFAULT_TENANT "default"

#endif
