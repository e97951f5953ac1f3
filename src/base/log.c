/* JSON-lines logger; see log.h. */
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* ---- asynchronous mode ------------------------------------------------------------------ */

#define LOG_BUFFER_BYTES (1u << 20)
#define LOG_FLUSH_MS 50

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    char *buf, *spare; /* callers append to buf; the writer writes spare */
    size_t len;
    int urgent, stopping;
    pthread_t writer;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static atomic_int async_on;
static atomic_ullong dropped;

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: nothing better to do with the line */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    unsigned long long reported = 0;
    pthread_mutex_lock(&A.mu);
    for (;;) {
        if (A.len == 0) {
            if (A.stopping)
                break;
            pthread_cond_wait(&A.wake, &A.mu);
            continue;
        }
        if (!A.urgent && !A.stopping) { /* let a batch gather */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += LOG_FLUSH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&A.wake, &A.mu, &until);
        }
        char *out = A.buf;
        size_t n = A.len;
        A.buf = A.spare;
        A.spare = out;
        A.len = 0;
        A.urgent = 0;
        pthread_mutex_unlock(&A.mu);
        write_all(out, n);
        unsigned long long d = atomic_load(&dropped);
        if (d != reported) { /* goes into the buffer like any line */
            bs_log_write(BS_LOG_WARN, "log", NULL, NULL,
                         "%llu log lines dropped: stderr is not keeping up", d - reported);
            reported = d;
        }
        pthread_mutex_lock(&A.mu);
    }
    pthread_mutex_unlock(&A.mu);
    return NULL;
}

int bs_log_async_start(void)
{
    pthread_mutex_lock(&A.mu);
    if (atomic_load(&async_on)) {
        pthread_mutex_unlock(&A.mu);
        return 0;
    }
    A.buf = malloc(LOG_BUFFER_BYTES);
    A.spare = malloc(LOG_BUFFER_BYTES);
    A.len = 0;
    A.stopping = 0;
    int ok = A.buf && A.spare && pthread_create(&A.writer, NULL, writer_main, NULL) == 0;
    if (!ok) {
        free(A.buf);
        free(A.spare);
        A.buf = A.spare = NULL;
        pthread_mutex_unlock(&A.mu);
        return -1;
    }
    atomic_store(&async_on, 1);
    pthread_mutex_unlock(&A.mu);
    static int registered;
    if (!registered++)
        atexit(bs_log_async_stop);
    return 0;
}

void bs_log_async_stop(void)
{
    pthread_mutex_lock(&A.mu);
    if (!atomic_load(&async_on)) {
        pthread_mutex_unlock(&A.mu);
        return;
    }
    atomic_store(&async_on, 0); /* from now on lines are written directly */
    A.stopping = 1;
    pthread_cond_signal(&A.wake);
    pthread_mutex_unlock(&A.mu);
    pthread_join(A.writer, NULL); /* it writes out what was buffered first */
    free(A.buf);
    free(A.spare);
    A.buf = A.spare = NULL;
}

unsigned long long bs_log_dropped(void) { return atomic_load(&dropped); }

/* Appends a line in asynchronous mode; 0 when not in that mode (write it directly). */
static int async_append(bs_log_level_t level, const char *line, size_t n)
{
    if (!atomic_load_explicit(&async_on, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&A.mu);
    if (!atomic_load(&async_on)) {
        pthread_mutex_unlock(&A.mu);
        return 0;
    }
    if (A.len + n > LOG_BUFFER_BYTES) {
        atomic_fetch_add(&dropped, 1);
    } else {
        int was_empty = A.len == 0;
        memcpy(A.buf + A.len, line, n);
        A.len += n;
        if (level >= BS_LOG_WARN || A.len > LOG_BUFFER_BYTES / 2)
            A.urgent = 1;
        if (was_empty || A.urgent)
            pthread_cond_signal(&A.wake);
    }
    pthread_mutex_unlock(&A.mu);
    return 1;
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
    if (!async_append(level, b.data, b.len))
        write_all(b.data, b.len);
    bs_buf_free(&b);
}
