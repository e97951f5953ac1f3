/* Fast exact formatting of doubles for JSON output. */
#ifndef BS_BASE_NUMFMT_H
#define BS_BASE_NUMFMT_H

/*
 * Writes finite v with `sig` (1..17) significant digits, correctly rounded
 * (ties to even), in printf's %g style, into out (>= 32 bytes): the same text
 * as snprintf("%.*g", sig, v). Uses 128-bit integer arithmetic for values with
 * a decimal exponent in about [-6, 16); returns 0 outside that range so the
 * caller falls back to snprintf. Returns the length written.
 */
int bs_fmt_sig(double v, int sig, char *out);

/*
 * Writes finite v as bs_jw_double renders it, into out (>= 32 bytes): the %.15g
 * text when it reads back as v, else the %.17g text. Same range as bs_fmt_sig
 * (returns 0 outside it, and for NaN/Inf); returns the length written.
 */
int bs_fmt_json_double(double v, char *out);

#endif
