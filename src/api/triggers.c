/* The Trigger kind's hooks (kinds.c) for the generic resource handlers: validation
 * through events/triggers (the spec's expressions compiled, its references checked),
 * the live status of GET /v1/triggers/{name}, and the runtime's rebuild from the stored
 * specs. The routes are RESOURCE_ROUTES("triggers", …) in routes.c. */
#include <string.h>

#include "api/api_int.h"
#include "events/triggers.h"

int bs__api_trigger_validate(bs_app_t *app, const bs_principal_t *who, const char *name,
                             const cJSON *spec, cJSON **out, bs_err_t *err)
{
    return bs_triggers_validate(app->triggers, who->tenant, name, spec, out, err);
}

/* A registry trigger's topic is an ordinary Topic (readable, tailable, deletable), made
 * with the default spec the first time one is applied. */
int bs__api_trigger_prepare(bs_app_t *app, const char *tenant, const char *name, const char *spec,
                            bs_err_t *err)
{
    (void)name;
    cJSON *j = cJSON_Parse(spec);
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(j, "on");
    int registry = cJSON_IsString(on) && strcmp(on->valuestring, "registry") == 0;
    cJSON_Delete(j);
    if (!registry || !app->log)
        return 0;
    return bs__api_topic_ensure(app, tenant, BS_TRIGGERS_REGISTRY_TOPIC, "system:registry-events",
                                err);
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
