/* Growable buffer and JSON writer; see buf.h. */
#include "base/buf.h"
#include "base/numfmt.h"
#include "base/numparse.h"
#include "base/time.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bs_buf_init(bs_buf_t *b) { memset(b, 0, sizeof *b); }

void bs_buf_free(bs_buf_t *b)
{
    if (!b->borrowed)
        free(b->data);
    memset(b, 0, sizeof *b);
}

void bs_buf_reset(bs_buf_t *b)
{
    b->len = 0;
    b->need_comma = 0;
    b->oom = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int reserve(bs_buf_t *b, size_t n)
{
    if (b->oom)
        return -1;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p;
    if (b->borrowed) {
        p = malloc(cap);
        if (p && b->len)
            memcpy(p, b->data, b->len);
    } else {
        p = realloc(b->data, cap);
    }
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->borrowed = 0;
    b->data = p;
    b->cap = cap;
    return 0;
}

char *bs_buf_take(bs_buf_t *b)
{
    if (b->borrowed) {
        char *copy = malloc(b->len + 1);
        if (copy) {
            memcpy(copy, b->data, b->len);
            copy[b->len] = '\0';
        }
        memset(b, 0, sizeof *b);
        return copy;
    }
    if (reserve(b, 0) < 0) {
        bs_buf_free(b);
        return NULL;
    }
    b->data[b->len] = '\0';
    char *p = b->data;
    memset(b, 0, sizeof *b);
    return p;
}

void bs_buf_append(bs_buf_t *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void bs_buf_puts(bs_buf_t *b, const char *s) { bs_buf_append(b, s, strlen(s)); }

void bs_buf_putc(bs_buf_t *b, char c)
{
    if (reserve(b, 1) < 0)
        return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void bs_buf_printf(bs_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        bs_buf_append(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void comma(bs_buf_t *b)
{
    if (b->need_comma)
        bs_buf_putc(b, ',');
}

void bs_jw_obj_begin(bs_buf_t *b)
{
    comma(b);
    bs_buf_putc(b, '{');
    b->need_comma = 0;
}

void bs_jw_obj_end(bs_buf_t *b)
{
    bs_buf_putc(b, '}');
    b->need_comma = 1;
}

void bs_jw_arr_begin(bs_buf_t *b)
{
    comma(b);
    bs_buf_putc(b, '[');
    b->need_comma = 0;
}

void bs_jw_arr_end(bs_buf_t *b)
{
    bs_buf_putc(b, ']');
    b->need_comma = 1;
}

size_t bs_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
        c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
        c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return len;
}

int bs_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = bs_utf8_len(s + i, n - i);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

/* Bytes written as they are inside a JSON string: printable ASCII but '"' and '\\'. */
static const unsigned char json_plain[256] = {
    [0x20 ... '"' - 1] = 1, ['"' + 1 ... '\\' - 1] = 1, ['\\' + 1 ... 0x7F] = 1};

/* Length of the prefix of s[0..n) that needs no escaping. */
static size_t plain_prefix(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && json_plain[(unsigned char)s[i]])
        i++;
    return i;
}

/* Writes [,]"s" (plus ':' when colon is set) in one step when s needs no escaping and
 * the space is there; returns 0 otherwise, without writing anything. */
static int put_plain_string(bs_buf_t *b, const char *s, size_t n, int colon)
{
    if (plain_prefix(s, n) != n || reserve(b, n + 4) < 0)
        return 0;
    char *d = b->data + b->len;
    if (b->need_comma)
        *d++ = ',';
    *d++ = '"';
    memcpy(d, s, n);
    d += n;
    *d++ = '"';
    if (colon)
        *d++ = ':';
    *d = '\0';
    b->len = (size_t)(d - b->data);
    return 1;
}

void bs_jw_escape(bs_buf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = s[i];
        if (json_plain[c]) {
            i++;
            run++;
            continue;
        }
        if (run)
            bs_buf_append(b, s + i - run, run);
        run = 0;
        if (c >= 0x80) {
            size_t l = bs_utf8_len(s + i, n - i);
            if (l) {
                bs_buf_append(b, s + i, l);
                i += l;
            } else {
                bs_buf_append(b, "\xEF\xBF\xBD", 3);
                i++;
            }
            continue;
        }
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            el = 6;
        }
        bs_buf_append(b, esc, el);
        i++;
    }
    if (run)
        bs_buf_append(b, s + n - run, run);
}

void bs_jw_key(bs_buf_t *b, const char *key)
{
    if (put_plain_string(b, key, strlen(key), 1)) {
        b->need_comma = 0;
        return;
    }
    comma(b);
    bs_buf_putc(b, '"');
    bs_jw_escape(b, key, strlen(key));
    bs_buf_append(b, "\":", 2);
    b->need_comma = 0;
}

void bs_jw_strn(bs_buf_t *b, const char *s, size_t n)
{
    if (put_plain_string(b, s, n, 0)) {
        b->need_comma = 1;
        return;
    }
    comma(b);
    bs_buf_putc(b, '"');
    bs_jw_escape(b, s, n);
    bs_buf_putc(b, '"');
    b->need_comma = 1;
}

void bs_jw_str(bs_buf_t *b, const char *s)
{
    if (!s) {
        bs_jw_null(b);
        return;
    }
    bs_jw_strn(b, s, strlen(s));
}

void bs_jw_int(bs_buf_t *b, int64_t v)
{
    comma(b);
    char tmp[24], *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    bs_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
    b->need_comma = 1;
}

void bs_jw_double(bs_buf_t *b, double v)
{
    if (!isfinite(v)) {
        bs_jw_null(b);
        return;
    }
    comma(b);
    char tmp[32];
    int n = bs_fmt_json_double(v, tmp);
    if (n) {
        bs_buf_append(b, tmp, (size_t)n);
        b->need_comma = 1;
        return;
    }
    /* %.17g always reads back exactly. A representation D of at most 15 significant
     * digits exists only when the 17-digit one ends within a few units of 00: D's
     * 16th and 17th digits are 0 and |v - D| <= half an ulp, at most ~11 units of
     * the 17th digit. Only then is %.15g tried, and used if it reads back exactly;
     * most values take one snprintf. bs_fmt_json_double does the same in integers. */
    n = bs_fmt_sig(v, 17, tmp);
    if (!n)
        n = snprintf(tmp, sizeof tmp, "%.17g", v);
    int digits = 0, last2 = 0;
    for (int i = 0; i < n && tmp[i] != 'e'; i++) {
        if (tmp[i] >= '0' && tmp[i] <= '9' && (digits || tmp[i] != '0')) {
            digits++;
            last2 = (last2 * 10 + (tmp[i] - '0')) % 100;
        }
    }
    if (digits == 16)
        last2 = (last2 * 10) % 100;
    if (digits > 15 && (last2 <= 15 || last2 >= 85)) {
        char t15[32];
        int n15 = bs_fmt_sig(v, 15, t15);
        if (!n15)
            n15 = snprintf(t15, sizeof t15, "%.15g", v);
        double back = 0;
        if (bs_parse_json_number(t15, (size_t)n15, &back) == (size_t)n15 && back == v) {
            memcpy(tmp, t15, (size_t)n15 + 1);
            n = n15;
        }
    }
    bs_buf_append(b, tmp, (size_t)n);
    b->need_comma = 1;
}

void bs_jw_bool(bs_buf_t *b, int v)
{
    comma(b);
    bs_buf_puts(b, v ? "true" : "false");
    b->need_comma = 1;
}

void bs_jw_null(bs_buf_t *b)
{
    comma(b);
    bs_buf_append(b, "null", 4);
    b->need_comma = 1;
}

void bs_jw_raw(bs_buf_t *b, const char *json, size_t n)
{
    comma(b);
    bs_buf_append(b, json, n);
    b->need_comma = 1;
}

void bs_jw_time(bs_buf_t *b, int64_t ms)
{
    if (!ms) {
        bs_jw_null(b);
        return;
    }
    char ts[40];
    bs_time_rfc3339(ms, ts, sizeof ts);
    bs_jw_str(b, ts);
}

void bs_jw_page_end(bs_buf_t *b, const char *next_cursor)
{
    bs_jw_arr_end(b);
    bs_jw_key(b, "next_cursor");
    bs_jw_str(b, next_cursor); /* NULL renders as null */
    bs_jw_obj_end(b);
}
