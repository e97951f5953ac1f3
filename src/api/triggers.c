/* The Trigger kind's hooks (kinds.c) for the generic resource handlers: validation
 * through events/triggers (the spec's expressions compiled, its references checked),
 * the live status of GET /v1/triggers/{name}, and the runtime's rebuild from the stored
 * specs. The routes are RESOURCE_ROUTES("triggers", …) in routes.c. */
#include "api/api_int.h"
#include "events/triggers.h"

int bs__api_trigger_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                             const cJSON *spec, cJSON **out, bs_err_t *err)
{
    return bs_triggers_validate(app->triggers, who->tenant, name, spec, out, err);
}

int bs__api_trigger_deleted(bs_app_t *app, const char *tenant, const char *name, bs_err_t *err)
{
    return app->triggers ? bs_triggers_remove(app->triggers, tenant, name, err) : 0;
}

void bs__api_trigger_status(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            cJSON *status)
{
    (void)spec;
    if (app->triggers)
        bs_triggers_status(app->triggers, tenant, name, status);
    else
        cJSON_AddStringToObject(status, "state", "stopped");
}

int bs__api_trigger_rebuild(bs_app_t *app, bs_err_t *err)
{
    return app->triggers ? bs_triggers_rebuild(app->triggers, err) : 0;
}
