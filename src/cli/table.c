/* The CLI's text tables: cells copied in, columns padded to the widest cell. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

void bs_cli_table_init(bs_cli_table_t *t, int ncols)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
}

/* Room for one more row; 0 or -1 (out of memory: the row is dropped). */
static int grow(bs_cli_table_t *t)
{
    if (t->nrows == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char **cells = realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof *cells);
        if (!cells)
            return -1; /* a CLI out of memory prints a shorter table rather than crash */
        t->cells = cells;
        t->cap = cap;
    }
    return 0;
}

void bs_cli_table_rowv(bs_cli_table_t *t, const char *const *cells)
{
    if (grow(t))
        return;
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->nrows * t->ncols + c] = strdup(cells[c] ? cells[c] : "-");
    t->nrows++;
}

void bs_cli_table_row(bs_cli_table_t *t, ...)
{
    if (grow(t))
        return;
    va_list ap;
    va_start(ap, t);
    for (int c = 0; c < t->ncols; c++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + c] = strdup(s ? s : "-");
    }
    va_end(ap);
    t->nrows++;
}

void bs_cli_table_print(const bs_cli_table_t *t, FILE *f)
{
    size_t width[32] = {0};
    int nc = t->ncols < 32 ? t->ncols : 32;
    for (int r = 0; r < t->nrows; r++)
        for (int c = 0; c < nc; c++) {
            const char *s = t->cells[r * t->ncols + c];
            size_t n = s ? strlen(s) : 0;
            if (n > width[c])
                width[c] = n;
        }
    bs_buf_t line;
    bs_buf_init(&line);
    for (int r = 0; r < t->nrows; r++) {
        bs_buf_reset(&line);
        for (int c = 0; c < nc; c++) {
            const char *s = t->cells[r * t->ncols + c];
            bs_buf_printf(&line, "%-*s  ", (int)width[c], s ? s : "");
        }
        while (line.len && line.data[line.len - 1] == ' ') /* no trailing blanks */
            line.len--;
        fprintf(f, "%.*s\n", (int)line.len, line.data ? line.data : "");
    }
    bs_buf_free(&line);
}

void bs_cli_table_free(bs_cli_table_t *t)
{
    for (int i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}
