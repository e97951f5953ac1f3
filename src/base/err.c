/* Error table lookups and formatting; see err.h. */
#include "base/err.h"

#include <stdio.h>
#include <string.h>

static void vset(bs_err_t *err, int code, const char *field, const char *fmt, va_list ap)
{
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int bs_err_set(bs_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, NULL, fmt, ap);
        va_end(ap);
    }
    return code;
}

int bs_err_setf(bs_err_t *err, int code, const char *field, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, field, fmt, ap);
        va_end(ap);
    }
    return code;
}

void bs_err_clear(bs_err_t *err)
{
    if (err) {
        err->code = 0;
        err->field[0] = '\0';
        err->msg[0] = '\0';
    }
}

int bs_err_index(int code)
{
    if (code <= BS_ERR_FIRST_ || code >= BS_ERR_LAST_)
        return -1;
    return code - BS_ERR_FIRST_ - 1;
}

const char *bs_err_name(int code)
{
    switch (code) {
#define XX(name, str, status, desc)                                                                \
    case BS_##name:                                                                                \
        return str;
        BS_ERR_MAP(XX)
#undef XX
    default:
        return "internal";
    }
}

int bs_err_status(int code)
{
    switch (code) {
#define XX(name, str, status, desc)                                                                \
    case BS_##name:                                                                                \
        return status;
        BS_ERR_MAP(XX)
#undef XX
    default:
        return 500;
    }
}

const char *bs_err_desc(int code)
{
    switch (code) {
#define XX(name, str, status, desc)                                                                \
    case BS_##name:                                                                                \
        return desc;
        BS_ERR_MAP(XX)
#undef XX
    default:
        return "an internal error occurred";
    }
}
