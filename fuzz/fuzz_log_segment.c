/*
 * libFuzzer target for the log's recovery scanner (store/log_seg_int.h): any bytes as a
 * segment image. The valid prefix it finds is within the input, its records are numbered
 * densely from the header's first offset, each one parses again to the same frame and
 * re-encodes to the same bytes, and scanning just the prefix finds the same records. The
 * same bytes also go through the index file parser and the consumer group journal replay,
 * which must accept or refuse them without a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/log_seg_int.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    const uint8_t *img;
    size_t size;
    int64_t first, n;
    uint64_t last_end;
} scan_t;

static int visit(const bs__rec_view_t *v, uint64_t pos, void *ud)
{
    scan_t *s = ud;
    CHECK(v->offset == s->first + s->n);
    CHECK(pos == s->last_end);
    CHECK(pos + v->frame_len <= s->size);
    CHECK(v->frame_len == bs__rec_frame_len(v->id_len, v->key_len, v->len));
    CHECK(v->id_len <= BS__ID_MAX && v->key_len <= BS__KEY_MAX);
    bs__rec_view_t again;
    size_t need;
    CHECK(bs__rec_parse(s->img + pos, v->frame_len, &again, &need) == 1);
    CHECK(again.frame_len == v->frame_len && again.offset == v->offset);
    /* Re-encoding the parsed fields gives the same bytes. */
    uint8_t *f = malloc(v->frame_len);
    CHECK(f);
    bs__rec_encode(f, (const char *)v->id, v->id_len, (const char *)v->key, v->key_len, v->data,
                   v->len);
    bs__rec_seal(f, v->offset, v->time_ms);
    CHECK(memcmp(f, s->img + pos, v->frame_len) == 0);
    free(f);
    s->n++;
    s->last_end = pos + v->frame_len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    scan_t s = {.img = data, .size = size, .last_end = BS__SEG_HDR};
    s.first = size >= BS__SEG_HDR ? (int64_t)bs__get64(data + 8) : 0;
    int64_t count = -1;
    int64_t valid = bs__seg_scan(data, size, -1, visit, &s, &count);
    if (valid >= 0) {
        CHECK(valid >= BS__SEG_HDR && (uint64_t)valid <= size);
        CHECK(count == s.n && (uint64_t)valid == s.last_end);
        int64_t count2 = -1;
        CHECK(bs__seg_scan(data, (size_t)valid, s.first, NULL, NULL, &count2) == valid);
        CHECK(count2 == count);
    } else {
        CHECK(count == 0 && s.n == 0);
    }

    bs__idx_t *idx = NULL;
    int nidx = 0;
    int64_t end, ft, lt;
    if (bs__idx_parse(data, size, 0, 1 << 20, &idx, &nidx, &end, &ft, &lt) == 0) {
        for (int i = 1; i < nidx; i++)
            CHECK(idx[i].offset > idx[i - 1].offset && idx[i].pos > idx[i - 1].pos);
        CHECK(nidx == 0 || idx[nidx - 1].offset < end);
        free(idx);
    }

    bs__journal_check(data, size);
    return 0;
}
