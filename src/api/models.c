/* Model registry and prediction handlers (filled in with the registry). */
#include "api/api_int.h"

void bs__api_model_metrics(bs_app_t *app, bs_buf_t *out)
{
    (void)app;
    (void)out;
}
