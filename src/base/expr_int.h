/*
 * Private to the expression module: the compiled program that expr_parse.c builds and
 * expr_eval.c runs.
 *
 * A program is a flat array of instructions for a stack machine (postfix order, with
 * forward jumps for &&, ||, if() and coalesce()), a constant pool, a pool of literal lists
 * (the right side of `in`, the edges of bucketize) and the table of fields it reads, each
 * with its dotted path split into segments once at compile time. Nothing in it changes
 * after bs_expr_compile returns, so any number of threads may evaluate one program at once.
 * The compiler tracks the stack height of every instruction and records the maximum, which
 * is bounded by BS_EXPR_MAX_STACK: evaluation uses a fixed array on the C stack.
 */
#ifndef BS_BASE_EXPR_INT_H
#define BS_BASE_EXPR_INT_H

#include <stdint.h>

#include "base/expr.h"

/* Limits, each refused with an error naming it (never a crash). */
#define BS_EXPR_MAX_DEPTH 64   /* nesting of parentheses, unary operators, calls */
#define BS_EXPR_MAX_CODE 4096  /* instructions */
#define BS_EXPR_MAX_ARGS 64    /* arguments of one call (min, max, coalesce) */
#define BS_EXPR_MAX_LIST 1024  /* elements of one literal list */
#define BS_EXPR_MAX_FIELDS 128 /* distinct fields one program reads */
#define BS_EXPR_MAX_STACK 256  /* evaluation stack slots */
#define BS_EXPR_MAX_SEGS 16    /* segments of one dotted path */

/* Sets of dynamic types (a static type is the set of types a value may have). */
enum {
    BS__EXPR_M_NULL = 1,
    BS__EXPR_M_BOOL = 2,
    BS__EXPR_M_NUM = 4,
    BS__EXPR_M_STR = 8,
    BS__EXPR_M_ANY = 15,
};

typedef enum {
    BS__EXPR_OP_CONST,  /* push consts[arg] */
    BS__EXPR_OP_FIELD,  /* push the value of fields[arg] */
    BS__EXPR_OP_NEG,    /* unary - */
    BS__EXPR_OP_NOT,    /* ! */
    BS__EXPR_OP_ADD,    /* + */
    BS__EXPR_OP_SUB,    /* - */
    BS__EXPR_OP_MUL,    /* * */
    BS__EXPR_OP_DIV,    /* / */
    BS__EXPR_OP_MOD,    /* % */
    BS__EXPR_OP_EQ,     /* == */
    BS__EXPR_OP_NE,     /* != */
    BS__EXPR_OP_LT,     /* < */
    BS__EXPR_OP_LE,     /* <= */
    BS__EXPR_OP_GT,     /* > */
    BS__EXPR_OP_GE,     /* >= */
    BS__EXPR_OP_IN,     /* top in lists[arg] */
    BS__EXPR_OP_AND,    /* pop; not true: push false, jump to arg; true: go on */
    BS__EXPR_OP_OR,     /* pop; true: push true, jump to arg; else go on */
    BS__EXPR_OP_TOBOOL, /* the right side of && / ||: bool or null (false) */
    BS__EXPR_OP_JFALSE, /* pop the condition of if(); not true: jump to arg */
    BS__EXPR_OP_JMP,    /* jump to arg */
    BS__EXPR_OP_JNNULL, /* coalesce: top not null: jump to arg (keep it); else pop */
    BS__EXPR_OP_CALL,   /* fn with arg arguments */
} bs__expr_op_t;

typedef enum {
    BS__EXPR_FN_LOG,
    BS__EXPR_FN_EXP,
    BS__EXPR_FN_SQRT,
    BS__EXPR_FN_ABS,
    BS__EXPR_FN_MIN,
    BS__EXPR_FN_MAX,
    BS__EXPR_FN_CLAMP,
    BS__EXPR_FN_COALESCE, /* compiled to JNNULL jumps; never a CALL */
    BS__EXPR_FN_IF,       /* compiled to JFALSE/JMP; never a CALL */
    BS__EXPR_FN_BUCKETIZE,
    BS__EXPR_FN_LOWER,
    BS__EXPR_FN_LEN,
    BS__EXPR_FN_HASH_BUCKET,
    BS__EXPR_FN_HOUR_OF_DAY,
    BS__EXPR_FN_DAY_OF_WEEK,
} bs__expr_fn_t;

typedef struct {
    uint8_t op;    /* bs__expr_op_t */
    uint8_t fn;    /* bs__expr_fn_t for CALL */
    uint16_t list; /* lists[] index for IN and bucketize */
    int32_t arg;   /* constant, field, jump target or argument count */
    int32_t pos;   /* byte offset in the source, for errors */
} bs__expr_ins_t;

/* A literal list: n constants from consts[first] (bucketize: ascending numbers). */
typedef struct {
    int first, n;
} bs__expr_list_t;

typedef struct {
    const char *seg;
    size_t len;
    long index; /* the segment as an array index (all digits), or -1 */
} bs__expr_seg_t;

typedef struct {
    char *name; /* dotted, canonical: segments that are not identifiers in backquotes */
    int n_segs;
    bs__expr_seg_t segs[BS_EXPR_MAX_SEGS]; /* point into seg_text */
    char *seg_text;
    int pos; /* where the field first appears */
} bs__expr_field_t;

struct bs_expr {
    bs__expr_ins_t *code;
    int n_code;
    bs_expr_value_t *consts; /* strings point into their own malloc'd copies */
    int n_consts;
    bs__expr_list_t *lists;
    int n_lists;
    bs__expr_field_t *fields;
    int n_fields;
    int max_stack;
    int result_mask; /* BS__EXPR_M_* */
    char *src;       /* the source as given (NUL-terminated), for positions */
    size_t src_len;
    char *normalised; /* without leading and trailing whitespace */
};

/* "at LINE:COL: " prefix for byte offset pos of src (lines 1-based; columns count code
 * points from 1). Writes into out (>= 32 bytes). */
void bs__expr_where(const char *src, size_t len, int pos, char *out, size_t n);
/* Strict RFC 3339 date-time ("2026-01-02T03:04:05.678Z", offsets, 't'/'z'/' ' allowed).
 * 0 and *ms (floored to whole ms), or -1. */
int bs__expr_parse_time(const char *s, size_t len, double *ms);
/* FNV-1a 64 of the n bytes. */
uint64_t bs__expr_fnv1a64(const char *s, size_t n);

#endif
