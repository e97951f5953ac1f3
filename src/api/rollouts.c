/*
 * /v1/endpoints/{name}/rollouts: start a progressive rollout (201), list an endpoint's
 * rollouts (newest first), get one with its guard values, and pause / resume / abort /
 * promote it. serving/rollouts.h does the work; these handlers parse and render. Every
 * route waits on the metadata store (BS_ROUTE_BLOCKING), scoped to the caller's tenant.
 */
#include <string.h>

#include "api/api_int.h"
#include "serving/rollouts.h"

#define MAX_PAGE 1000

static int rollouts_ready(bs_req_t *req)
{
    if (APP(req)->rollouts)
        return 1;
    bs_resp_errorf(req, BS_EUNAVAIL, NULL, "rollouts are not available on this server");
    return 0;
}

static void respond(bs_req_t *req, int rc, int status, bs_buf_t *b, const bs_err_t *err)
{
    if (rc)
        bs_resp_error(req, err);
    else
        bs_resp_json(req, status, b);
    bs_buf_free(b);
}

void bs__api_rollouts_create(bs_req_t *req)
{
    if (!rollouts_ready(req))
        return;
    bs_err_t err;
    bs_err_clear(&err);
    cJSON *body = bs_req_json(req, &err);
    if (!body)
        return bs_resp_error(req, &err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_rollouts_create(APP(req)->rollouts, &req->who, bs_req_param(req, "name"), body, &b,
                                &err);
    respond(req, rc, 201, &b, &err);
}

void bs__api_rollouts_list(bs_req_t *req)
{
    if (!rollouts_ready(req))
        return;
    int limit;
    if (bs__api_limit(req, 20, MAX_PAGE, &limit) < 0)
        return;
    const char *cursor = bs_req_query(req, "cursor");
    if (cursor && !*cursor)
        cursor = NULL;
    bs_err_t err;
    bs_err_clear(&err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_rollouts_list(APP(req)->rollouts, req->who.tenant, bs_req_param(req, "name"),
                              cursor, limit, &b, &err);
    respond(req, rc, 200, &b, &err);
}

void bs__api_rollouts_get(bs_req_t *req)
{
    if (!rollouts_ready(req))
        return;
    bs_err_t err;
    bs_err_clear(&err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_rollouts_get(APP(req)->rollouts, req->who.tenant, bs_req_param(req, "name"),
                             bs_req_param(req, "id"), &b, &err);
    respond(req, rc, 200, &b, &err);
}

static void action(bs_req_t *req, const char *verb)
{
    if (!rollouts_ready(req))
        return;
    bs_err_t err;
    bs_err_clear(&err);
    bs_buf_t b;
    bs_buf_init(&b);
    int rc = bs_rollouts_action(APP(req)->rollouts, &req->who, bs_req_param(req, "name"),
                                bs_req_param(req, "id"), verb, &b, &err);
    respond(req, rc, 200, &b, &err);
}

void bs__api_rollouts_pause(bs_req_t *req)
{
    action(req, "pause");
}
void bs__api_rollouts_resume(bs_req_t *req)
{
    action(req, "resume");
}
void bs__api_rollouts_abort(bs_req_t *req)
{
    action(req, "abort");
}
void bs__api_rollouts_promote(bs_req_t *req)
{
    action(req, "promote");
}
