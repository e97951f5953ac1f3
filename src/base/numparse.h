/* Fast, exact parsing of a JSON number (RFC 8259 §6). */
#ifndef BS_BASE_NUMPARSE_H
#define BS_BASE_NUMPARSE_H

#include <stddef.h>

/*
 * Parses the JSON number at s (at most n bytes). Returns the bytes consumed and
 * sets *out, or 0 if s does not start with a valid JSON number. Exact: numbers
 * whose significant digits form an integer of at most 2^53 and whose decimal
 * exponent is within ±22 are computed as one correctly rounded multiplication or
 * division of exact doubles (Clinger's fast path); anything else goes through
 * strtod.
 */
size_t bs_parse_json_number(const char *s, size_t n, double *out);

#endif
