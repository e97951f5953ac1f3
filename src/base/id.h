/* UUIDv7 identifiers (RFC 9562 §5.7): 48-bit Unix ms, then random bits, so ids sort by time. */
#ifndef BS_BASE_ID_H
#define BS_BASE_ID_H

#include <stdint.h>

/* Writes a canonical lowercase UUIDv7 (36 chars + NUL) into out[37]. Thread-safe. */
void bs_uuid7(char out[37]);
/* Same, with the caller's wall-clock milliseconds (e.g. an event loop's cached time). */
void bs_uuid7_at(char out[37], int64_t wall_ms);

#endif
