/*
 * A growable byte buffer (heap-owned) and the JSON writer built on it.
 * The writer tracks whether a comma is due, so callers write
 *   bs_jw_obj_begin(b); bs_jw_key(b, "id"); bs_jw_str(b, id); bs_jw_obj_end(b);
 * Strings are escaped per RFC 8259 §7: quote, backslash and control
 * characters; invalid UTF-8 bytes are replaced by U+FFFD so the output is
 * always valid JSON. Out-of-memory sets `oom` and later writes are ignored.
 */
#ifndef BS_BASE_BUF_H
#define BS_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;
    size_t len, cap;
    int oom;
    int need_comma; /* JSON writer state: a value was written at this level */
    int borrowed;   /* data points to caller storage (e.g. the stack): never realloc'd or freed */
} bs_buf_t;

/* A buffer that starts in caller storage and moves to the heap only if it outgrows it. */
#define BS_BUF_ON(storage) ((bs_buf_t){.data = (storage), .cap = sizeof(storage), .borrowed = 1})

void bs_buf_init(bs_buf_t *b);
void bs_buf_free(bs_buf_t *b);
void bs_buf_reset(bs_buf_t *b);
/* Hands the NUL-terminated contents to the caller (free() it) and resets b. */
char *bs_buf_take(bs_buf_t *b);
void bs_buf_append(bs_buf_t *b, const void *p, size_t n);
void bs_buf_puts(bs_buf_t *b, const char *s);
void bs_buf_putc(bs_buf_t *b, char c);
void bs_buf_printf(bs_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* JSON writer */
void bs_jw_obj_begin(bs_buf_t *b);
void bs_jw_obj_end(bs_buf_t *b);
void bs_jw_arr_begin(bs_buf_t *b);
void bs_jw_arr_end(bs_buf_t *b);
void bs_jw_key(bs_buf_t *b, const char *key);
void bs_jw_str(bs_buf_t *b, const char *s);
void bs_jw_strn(bs_buf_t *b, const char *s, size_t n);
void bs_jw_int(bs_buf_t *b, int64_t v);
/* Non-finite values are written as null. */
void bs_jw_double(bs_buf_t *b, double v);
void bs_jw_bool(bs_buf_t *b, int v);
void bs_jw_null(bs_buf_t *b);
/* Writes ms since the epoch as an RFC 3339 UTC string, or null for 0. */
void bs_jw_time(bs_buf_t *b, int64_t ms);
/* Closes a page opened as {"items": [ … with "], "next_cursor": cursor-or-null}". */
void bs_jw_page_end(bs_buf_t *b, const char *next_cursor);
/* Inserts already-valid JSON text as one value. */
void bs_jw_raw(bs_buf_t *b, const char *json, size_t n);
/* Escapes s into b without quotes or comma handling. */
void bs_jw_escape(bs_buf_t *b, const char *s, size_t n);

/* Length of the valid UTF-8 sequence starting at s (at most n bytes, n >= 1), or 0 when
 * it is not one (overlong forms, surrogates and code points above U+10FFFF included). */
size_t bs_utf8_len(const unsigned char *s, size_t n);
/* 1 if the n bytes at s are valid UTF-8 (RFC 3629). */
int bs_utf8_valid(const char *s, size_t n);

#endif
