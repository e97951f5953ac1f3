/*
 * Structured logging: one JSON object per line on stderr with ts, level,
 * module, request_id and msg, plus optional extra fields. Level-checked
 * before formatting. User text is truncated to a bounded line length.
 *
 * By default each line is one write(2), so threads do not interleave. A server
 * switches to asynchronous mode once it is up (bs_log_async_start): lines are
 * appended, in call order, to a shared buffer that a background thread writes
 * out within LOG_FLUSH_MS (at once for warnings and errors, or when it is half
 * full), so a request never waits on stderr. If stderr stalls and the buffer
 * fills, lines are dropped and counted (bs_log_dropped), never blocking.
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

/* Starts / stops (writing out everything buffered) asynchronous mode; both idempotent.
 * start registers stop with atexit, so a normal exit loses nothing. */
int bs_log_async_start(void);
void bs_log_async_stop(void);
/* Lines dropped because the asynchronous buffer was full. */
unsigned long long bs_log_dropped(void);

#define BS_LOG(level, module, ...)                                                                 \
    do {                                                                                           \
        if ((int)(level) >= bs__log_level)                                                         \
            bs_log_write(level, module, NULL, NULL, __VA_ARGS__);                                  \
    } while (0)

#endif
