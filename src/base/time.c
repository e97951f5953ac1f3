/* Clock helpers; see time.h. */
#include "base/time.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#include "base/err.h"

uint64_t bs_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t bs_time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The hot path (a record per prediction) formats the same second over and over: each thread
 * keeps its last second's "YYYY-MM-DDTHH:MM:SS" and writes only the milliseconds. */
void bs_time_rfc3339(int64_t wall_ms, char *out, size_t n)
{
    static _Thread_local int64_t cached_secs = INT64_MIN;
    static _Thread_local char cached[20]; /* 19 characters and the NUL */
    int64_t secs = wall_ms / 1000;
    int ms = (int)(wall_ms % 1000);
    if (wall_ms < 0 || n < 25) { /* the general path */
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
        return;
    }
    if (secs != cached_secs) {
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        char tmp[64];
        int w = snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (w != 19) { /* a year past 9999: not cached */
            snprintf(out, n, "%s.%03dZ", tmp, ms);
            return;
        }
        memcpy(cached, tmp, 20);
        cached_secs = secs;
    }
    memcpy(out, cached, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

int bs_time_parse_rfc3339(const char *s, int64_t *out_ms)
{
    int y, mo, d, h, mi, sec, consumed = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &consumed) != 6 ||
        consumed != 19)
        return BS_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return BS_EINVAL;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (!digits)
            return BS_EINVAL;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2 || strlen(p) != 6)
            return BS_EINVAL;
        offset_min = (oh * 60 + om) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return BS_EINVAL;
    }
    if (*p)
        return BS_EINVAL;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    *out_ms = ((int64_t)t - offset_min * 60) * 1000 + ms;
    return 0;
}

int bs_time_parse_duration(const char *s, int64_t *out_ms)
{
    if (!s || !*s)
        return BS_EINVAL;
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    double total = 0;
    const char *p = s;
    while (*p) {
        /* digits with an optional fraction, nothing else (strtod alone would take "1e3"
         * and "0x10") */
        const char *q = p;
        int digits = 0, dots = 0;
        for (; (*q >= '0' && *q <= '9') || *q == '.'; q++) {
            digits += *q != '.';
            dots += *q == '.';
        }
        if (!digits || dots > 1 || q - p > 32)
            return BS_EINVAL;
        char num[40];
        memcpy(num, p, (size_t)(q - p));
        num[q - p] = '\0';
        errno = 0;
        double v = strtod(num, NULL);
        if (errno || !isfinite(v))
            return BS_EINVAL;
        p = q;
        double unit;
        if (strncmp(p, "ms", 2) == 0) {
            unit = 1;
            p += 2;
        } else if (*p == 's') {
            unit = 1000;
            p++;
        } else if (*p == 'm') {
            unit = 60000;
            p++;
        } else if (*p == 'h') {
            unit = 3600000;
            p++;
        } else if (*p == 'd') {
            unit = 86400000;
            p++;
        } else {
            return BS_EINVAL;
        }
        total += v * unit;
    }
    if (total > 100.0 * 365 * 86400000)
        return BS_EINVAL;
    *out_ms = (int64_t)llround(total);
    return 0;
}
