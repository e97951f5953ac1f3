/*
 * Structured logging: one JSON object per line on stderr with ts, level,
 * module, request_id and msg, plus optional extra fields. Level-checked
 * before formatting. Lines are written with one write(2) so threads do not
 * interleave. User text is truncated to a bounded line length.
 */
#ifndef BS_BASE_LOG_H
#define BS_BASE_LOG_H

typedef enum { BS_LOG_DEBUG = 0, BS_LOG_INFO, BS_LOG_WARN, BS_LOG_ERROR, BS_LOG_OFF } bs_log_level_t;

extern int bs__log_level;

void bs_log_set_level(bs_log_level_t level);
/* Parses "debug|info|warn|error|off"; -1 if unknown. */
int bs_log_parse_level(const char *s);
/* extra: already-valid JSON members without braces (e.g. "\"status\":200"), or NULL. */
void bs_log_write(bs_log_level_t level, const char *module, const char *request_id,
                  const char *extra, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define BS_LOG(level, module, ...)                                                                 \
    do {                                                                                           \
        if ((int)(level) >= bs__log_level)                                                         \
            bs_log_write(level, module, NULL, NULL, __VA_ARGS__);                                  \
    } while (0)

#endif
