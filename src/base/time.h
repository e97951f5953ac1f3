/* Clocks: monotonic for durations, wall for timestamps; RFC 3339 formatting. */
#ifndef BS_BASE_TIME_H
#define BS_BASE_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic nanoseconds (CLOCK_MONOTONIC). */
uint64_t bs_time_mono_ns(void);
/* Wall clock, milliseconds since the Unix epoch. */
int64_t bs_time_wall_ms(void);
/* Writes "2026-01-02T03:04:05.678Z" (24 chars + NUL) into out (>= 32 bytes). */
void bs_time_rfc3339(int64_t wall_ms, char *out, size_t n);
/* Parses an RFC 3339 UTC or offset timestamp into ms since the epoch. 0 or BS_EINVAL. */
int bs_time_parse_rfc3339(const char *s, int64_t *out_ms);
/* Parses a duration as specs write it: a number followed by a unit, ms, s, m, h or d
 * ("250ms", "30s", "2m", "1.5h", "7d"; several may follow each other: "1h30m"), or "0".
 * Fills *out_ms (rounded to whole ms). 0, or BS_EINVAL for anything else, a negative value
 * or more than 100 years. */
int bs_time_parse_duration(const char *s, int64_t *out_ms);

#endif
