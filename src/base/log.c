/* JSON-lines logger; see log.h. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/time.h"

int bs__log_level = BS_LOG_INFO;

static const char *const names[] = {"debug", "info", "warn", "error", "off"};

void bs_log_set_level(bs_log_level_t level) { bs__log_level = (int)level; }

int bs_log_parse_level(const char *s)
{
    for (int i = 0; i <= BS_LOG_OFF; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return BS_LOG_WARN;
    return -1;
}

void bs_log_write(bs_log_level_t level, const char *module, const char *request_id,
                  const char *extra, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char ts[32];
    bs_time_rfc3339(bs_time_wall_ms(), ts, sizeof ts);

    char line[2048];
    bs_buf_t b = BS_BUF_ON(line);
    /* The buffer starts on the stack; bs_buf grows it on the heap only for long lines. */
    bs_buf_t *pb = &b;
    bs_jw_obj_begin(pb);
    bs_jw_key(pb, "ts");
    bs_jw_str(pb, ts);
    bs_jw_key(pb, "level");
    bs_jw_str(pb, names[level < BS_LOG_OFF ? level : BS_LOG_ERROR]);
    bs_jw_key(pb, "module");
    bs_jw_str(pb, module);
    if (request_id) {
        bs_jw_key(pb, "request_id");
        bs_jw_str(pb, request_id);
    }
    bs_jw_key(pb, "msg");
    bs_jw_str(pb, msg);
    if (extra && *extra) {
        bs_buf_putc(pb, ',');
        bs_buf_puts(pb, extra);
    }
    bs_buf_puts(pb, "}\n");
    ssize_t w = write(2, b.data, b.len);
    (void)w;
    bs_buf_free(&b);
}
