/* UUIDv7 identifiers (RFC 9562 §5.7): 48-bit Unix ms, then random bits, so ids sort by time. */
#ifndef BS_BASE_ID_H
#define BS_BASE_ID_H

#include <stdint.h>

/* Writes a canonical lowercase UUIDv7 (36 chars + NUL) into out[37]. Thread-safe; ids
 * from one thread are strictly increasing, ids from different threads need not be. */
void bs_uuid7(char out[37]);
/* Same, with the caller's wall-clock milliseconds (e.g. an event loop's cached time). */
void bs_uuid7_at(char out[37], int64_t wall_ms);

/* Strictly increasing across every thread of the process (one atomic counter): for
 * stored records that are listed in id order, such as the audit log. Call it under the
 * lock that orders the writes, so id order is commit order. */
void bs_uuid7_ordered(char out[37]);
/* Like bs_uuid7_ordered, and also greater than floor (an id made by this function,
 * perhaps by another process; NULL or "" = none): for ids ordered across replicas, made
 * under a lock all of them share, with floor the highest id stored so far. */
void bs_uuid7_ordered_after(char out[37], const char *floor);

#endif
