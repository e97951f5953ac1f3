/*
 * Streaming responses (http.h "streaming responses") on an h2o 2.2.5 generator.
 *
 * A stream has two byte buffers. `queue` takes what producers write, from any thread,
 * under the stream's mutex; `inflight` is what h2o is sending right now, owned by the
 * request's I/O thread. flush() runs on that thread whenever h2o is idle for this request
 * (no h2o_send awaiting its proceed callback): it swaps the two buffers under the mutex and
 * hands `inflight` to h2o_send, which must not be touched again until proceed. A writer that
 * makes the queue non-empty posts the stream's one `kick` message to the I/O thread (at most
 * one in the queue at a time), whose handler flushes. Writes are refused with BS_EOVERLOAD
 * while queue + inflight would exceed max_queued; proceed calls on_drain once the bytes
 * unsent fall to half of it. Memory per stream: the two buffers, each at most about
 * max_queued (plus one write larger than that, accepted on an empty queue).
 *
 * References: the producer's (until bs_stream_close), the request's (until its arena is
 * cleaned up, i.e. h2o disposed of it), and one per posted kick. The last one frees.
 *
 * The client going away: h2o reports a failed write by closing the connection, which
 * disposes of the request (on_req_gone). While a stream is idle, HTTP/1 does not read its
 * socket, so nothing would notice a client that hung up: a per-thread tick (every second,
 * while the thread has streams) peeks at each idle stream's socket (recv MSG_PEEK; 0 is the
 * peer's FIN) and aborts the response (H2O_SEND_STATE_ERROR closes the connection). The
 * same tick sends heartbeats on streams idle for heartbeat_ms, aborts writes without
 * progress for stall_timeout_ms (shutdown(2) makes the pending write fail). When the server
 * stops, each loop ends its streams at once (bs__stream_shutdown: the queue is sent, then the
 * last chunk, and on_close tells the producer), so producers hear of it while the process's
 * other parts (worker pools, the log) still run.
 *
 * Callbacks (on_drain, on_close) run on the I/O thread outside the mutex, flagged
 * in_callback; bs_stream_close from another thread waits while one runs, so none runs after
 * it returns.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/time.h"
#include "http/http.h"
#include "http/http_int.h"

#define DEFAULT_MAX_QUEUED (256 * 1024)
#define DEFAULT_STALL_MS 60000
#define TICK_MS 1000

/* One I/O thread's streams and their tick. */
typedef struct {
    h2o_timeout_t tick;
    h2o_timeout_entry_t tick_entry;
    h2o_linklist_t streams; /* bs_stream_t.link: responses not yet disposed of */
} stream_thread_t;

struct bs_stream {
    h2o_generator_t gen; /* first: h2o calls proceed / stop with it */
    bs__http_msg_t kick;
    h2o_linklist_t link;
    bs__http_thread_t *thread;
    stream_thread_t *st;
    bs__stream_stats_t *stats;
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bs_buf_t queue;
    size_t inflight_len;
    int producer_closed; /* bs_stream_close was called */
    int ended;           /* the response cannot take more bytes: writes are refused */
    int kick_posted;
    int want_drain;
    int in_callback;
    int close_notified;
    /* the I/O thread only */
    h2o_req_t *hr; /* NULL once h2o stopped or disposed of the request */
    bs_buf_t inflight;
    int sending;    /* an h2o_send awaits proceed */
    int finishing;  /* the server ends the response: FINAL once the queue is sent */
    int final_sent; /* FINAL or ERROR handed to h2o: no more h2o_send */
    int aborted;    /* ended because the client went away or stalled */
    uint64_t last_send_ns, send_started_ns;
    /* options */
    size_t max_queued;
    char *heartbeat;
    size_t heartbeat_len;
    uint64_t heartbeat_ns, stall_ns;
    void (*on_drain)(void *ud);
    void (*on_close)(void *ud);
    void *ud;
};

static void unref(bs_stream_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    bs_buf_free(&s->queue);
    bs_buf_free(&s->inflight);
    free(s->heartbeat);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void ref(bs_stream_t *s)
{
    atomic_fetch_add(&s->refs, 1);
}

/* Runs fn(ud) on the I/O thread unless the producer closed the stream. */
static void call_cb(bs_stream_t *s, void (*fn)(void *))
{
    if (!fn)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->producer_closed) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->in_callback = 1;
    pthread_mutex_unlock(&s->mu);
    fn(s->ud);
    pthread_mutex_lock(&s->mu);
    s->in_callback = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The response can take no more bytes: refuse writes, and tell the producer (once). */
static void end_early(bs_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    s->want_drain = 0;
    int notify = !s->producer_closed && !s->close_notified;
    s->close_notified = 1;
    pthread_mutex_unlock(&s->mu);
    if (notify)
        call_cb(s, s->on_close);
}

/* On the I/O thread: hands what is queued to h2o when it is idle for this request. */
static void flush(bs_stream_t *s)
{
    if (!s->hr || s->sending || s->final_sent)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->queue.len) {
        bs_buf_t t = s->inflight; /* empty: its bytes were sent */
        s->inflight = s->queue;
        s->queue = t;
        s->inflight_len = s->inflight.len;
    }
    int fin = s->producer_closed || s->finishing;
    if (fin)
        s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    if (!s->inflight.len && !fin)
        return;
    s->last_send_ns = s->send_started_ns = bs_time_mono_ns();
    atomic_fetch_add_explicit(&s->stats->bytes, s->inflight.len, memory_order_relaxed);
    h2o_iovec_t b = h2o_iovec_init(s->inflight.data, s->inflight.len);
    if (fin)
        s->final_sent = 1;
    else
        s->sending = 1;
    h2o_send(s->hr, &b, b.len ? 1 : 0, fin ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *hr)
{
    (void)hr;
    bs_stream_t *s = (bs_stream_t *)gen;
    s->sending = 0;
    s->inflight.len = 0;
    pthread_mutex_lock(&s->mu);
    s->inflight_len = 0;
    int drain = s->want_drain && !s->ended && s->queue.len <= s->max_queued / 2;
    if (drain)
        s->want_drain = 0;
    pthread_mutex_unlock(&s->mu);
    ref(s);
    flush(s);
    if (drain && s->hr)
        call_cb(s, s->on_drain);
    unref(s);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *hr)
{
    (void)hr;
    bs_stream_t *s = (bs_stream_t *)gen;
    s->hr = NULL; /* h2o is ending the response (the connection is closing) */
}

/* Arena cleanup: h2o disposed of the request. */
static void on_req_gone(void *data)
{
    bs_stream_t *s = data;
    s->hr = NULL;
    if (h2o_linklist_is_linked(&s->link))
        h2o_linklist_unlink(&s->link);
    atomic_fetch_sub_explicit(&s->stats->open, 1, memory_order_relaxed);
    if (!s->final_sent || s->aborted)
        atomic_fetch_add_explicit(&s->stats->gone, 1, memory_order_relaxed);
    end_early(s);
    unref(s); /* the request's */
}

static void on_kick(bs__http_msg_t *m)
{
    bs_stream_t *s = H2O_STRUCT_FROM_MEMBER(bs_stream_t, kick, m);
    pthread_mutex_lock(&s->mu);
    s->kick_posted = 0;
    pthread_mutex_unlock(&s->mu);
    flush(s);
    unref(s); /* the kick's */
}

/* Makes sure the I/O thread flushes soon: at once when called on it, else by the kick. */
static void wake(bs_stream_t *s)
{
    if (bs__http_self() == s->thread) {
        ref(s);
        flush(s);
        unref(s);
        return;
    }
    pthread_mutex_lock(&s->mu);
    int post = !s->kick_posted;
    if (post) {
        s->kick_posted = 1;
        ref(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (post && bs__http_post(s->thread, &s->kick) != 0) {
        /* The loop is gone (shutdown timed out): nothing will be sent. */
        pthread_mutex_lock(&s->mu);
        s->kick_posted = 0;
        pthread_mutex_unlock(&s->mu);
        unref(s);
    }
}

/* ---- the tick -------------------------------------------------------------------------- */

/* HTTP/1, idle: 1 when the client closed its side (or the socket failed). */
static int peer_gone(h2o_req_t *hr)
{
    if (hr->version >= 0x200 || !hr->conn->callbacks->get_socket)
        return 0; /* HTTP/2 reads the connection all the time and reports a reset itself */
    h2o_socket_t *sock = hr->conn->callbacks->get_socket(hr->conn);
    if (!sock)
        return 0;
    char c;
    ssize_t n = recv(h2o_socket_get_fd(sock), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Ends the response at once, closing the connection: the client went away or stalled. */
static void abort_stream(bs_stream_t *s)
{
    s->aborted = 1;
    pthread_mutex_lock(&s->mu);
    s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    if (!s->sending) {
        s->final_sent = 1;
        h2o_send(s->hr, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    /* A write is pending: make it fail, and h2o closes the connection. Only for HTTP/1,
     * where the connection is this response's alone (HTTP/2 flow control holds one stream
     * back without the others; its ERROR goes out at the next proceed). */
    if (s->hr->version >= 0x200 || !s->hr->conn->callbacks->get_socket) {
        s->finishing = 1;
        return;
    }
    h2o_socket_t *sock = s->hr->conn->callbacks->get_socket(s->hr->conn);
    if (sock)
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
}

/* The server is stopping: a clean end once the queue is sent, and the producer told. */
static void end_for_shutdown(bs_stream_t *s)
{
    s->hr->http1_is_persistent = 0;
    s->finishing = 1;
    end_early(s);
    flush(s);
}

void bs__stream_shutdown(bs__http_thread_t *t)
{
    stream_thread_t *st = *bs__http_thread_streams(t);
    if (!st)
        return;
    h2o_linklist_t *node = st->streams.next;
    while (node != &st->streams) {
        bs_stream_t *s = H2O_STRUCT_FROM_MEMBER(bs_stream_t, link, node);
        node = node->next;
        if (!s->hr || s->final_sent || s->finishing)
            continue;
        ref(s);
        end_for_shutdown(s);
        unref(s);
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    stream_thread_t *st = H2O_STRUCT_FROM_MEMBER(stream_thread_t, tick_entry, entry);
    bs__http_thread_t *t = bs__http_self();
    int stopping = bs__http_stopping(t);
    uint64_t now = bs_time_mono_ns();
    h2o_linklist_t *node = st->streams.next;
    while (node != &st->streams) {
        bs_stream_t *s = H2O_STRUCT_FROM_MEMBER(bs_stream_t, link, node);
        node = node->next;
        if (!s->hr || s->final_sent)
            continue;
        ref(s);
        if (stopping) {
            if (!s->finishing)
                end_for_shutdown(s);
        } else if (s->sending) {
            if (now - s->send_started_ns > s->stall_ns)
                abort_stream(s);
        } else if (peer_gone(s->hr)) {
            abort_stream(s);
        } else if (s->heartbeat_ns && now - s->last_send_ns >= s->heartbeat_ns) {
            pthread_mutex_lock(&s->mu);
            if (!s->queue.len && !s->ended)
                bs_buf_append(&s->queue, s->heartbeat, s->heartbeat_len);
            s->queue.oom = 0;
            pthread_mutex_unlock(&s->mu);
            flush(s);
        }
        unref(s);
    }
    if (!h2o_linklist_is_empty(&st->streams))
        h2o_timeout_link(bs__http_thread_loop(t), &st->tick, &st->tick_entry);
}

/* ---- the API --------------------------------------------------------------------------- */

bs_stream_t *bs_req_stream(bs_req_t *req, int status, const char *content_type,
                           const bs_stream_opts_t *o)
{
    bs__http_thread_t *t = bs__http_self();
    if (req->worker || !t || req->responded)
        return NULL;
    void **slot = bs__http_thread_streams(t);
    stream_thread_t *st = *slot;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return NULL;
        h2o_timeout_init(bs__http_thread_loop(t), &st->tick, TICK_MS);
        st->tick_entry.cb = on_tick;
        h2o_linklist_init_anchor(&st->streams);
        *slot = st; /* lives as long as the thread's loop */
    }
    bs_stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    static const bs_stream_opts_t none = {0};
    if (!o)
        o = &none;
    s->max_queued = o->max_queued ? o->max_queued : DEFAULT_MAX_QUEUED;
    if (o->heartbeat_ms > 0 && o->heartbeat && o->heartbeat[0]) {
        s->heartbeat_len = strlen(o->heartbeat);
        if (!(s->heartbeat = strdup(o->heartbeat))) {
            free(s);
            return NULL;
        }
        s->heartbeat_ns = (uint64_t)o->heartbeat_ms * 1000000u;
    }
    s->stall_ns =
        (uint64_t)(o->stall_timeout_ms > 0 ? o->stall_timeout_ms : DEFAULT_STALL_MS) * 1000000u;
    s->on_drain = o->on_drain;
    s->on_close = o->on_close;
    s->ud = o->ud;
    s->thread = t;
    s->st = st;
    s->stats = bs__http_stream_stats(bs__http_thread_server(t));
    s->gen.proceed = on_proceed;
    s->gen.stop = on_stop;
    s->kick.fn = on_kick;
    atomic_init(&s->refs, 2); /* the producer's and the request's */
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (bs_arena_on_cleanup(&req->arena, on_req_gone, s) != 0) {
        free(s->heartbeat);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return NULL;
    }
    h2o_req_t *hr = req->h2o;
    s->hr = hr;
    bs__http_start_head(req, status, content_type);
    h2o_start_response(hr, &s->gen);
    h2o_linklist_insert(&st->streams, &s->link);
    if (!h2o_timeout_is_linked(&st->tick_entry))
        h2o_timeout_link(bs__http_thread_loop(t), &st->tick, &st->tick_entry);
    atomic_fetch_add_explicit(&s->stats->open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->total, 1, memory_order_relaxed);
    /* The head goes out now, so the client sees the response before the first event. */
    s->sending = 1;
    s->last_send_ns = s->send_started_ns = bs_time_mono_ns();
    h2o_send(hr, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
    return s;
}

int bs_stream_write(bs_stream_t *s, const void *bytes, size_t len)
{
    pthread_mutex_lock(&s->mu);
    if (s->ended || s->producer_closed) {
        pthread_mutex_unlock(&s->mu);
        return BS_EUNAVAIL;
    }
    size_t queued = s->queue.len + s->inflight_len;
    if (queued > 0 && (len > s->max_queued || queued > s->max_queued - len)) {
        s->want_drain = 1;
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add_explicit(&s->stats->refused, 1, memory_order_relaxed);
        return BS_EOVERLOAD;
    }
    bs_buf_append(&s->queue, bytes, len);
    if (s->queue.oom) {
        s->queue.oom = 0;
        pthread_mutex_unlock(&s->mu);
        return BS_ENOMEM;
    }
    pthread_mutex_unlock(&s->mu);
    wake(s);
    return 0;
}

int bs_stream_writable(bs_stream_t *s, size_t len)
{
    pthread_mutex_lock(&s->mu);
    size_t queued = s->queue.len + s->inflight_len;
    int ok = !s->ended && !s->producer_closed &&
             (queued == 0 || (len <= s->max_queued && queued <= s->max_queued - len));
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void bs_stream_close(bs_stream_t *s)
{
    int on_thread = bs__http_self() == s->thread;
    pthread_mutex_lock(&s->mu);
    s->producer_closed = 1;
    s->want_drain = 0;
    while (!on_thread && s->in_callback)
        pthread_cond_wait(&s->cv, &s->mu);
    int ended = s->ended;
    pthread_mutex_unlock(&s->mu);
    if (!ended)
        wake(s); /* the FINAL once the queue is sent */
    unref(s);    /* the producer's */
}

void bs__stream_metrics(bs_server_t *srv, bs_buf_t *b)
{
    bs__stream_stats_t *st = bs__http_stream_stats(srv);
    bs_buf_printf(
        b,
        "# HELP basalt_http_streams_open Streaming responses (Server-Sent Events) not yet ended.\n"
        "# TYPE basalt_http_streams_open gauge\n"
        "basalt_http_streams_open %lld\n"
        "# HELP basalt_http_streams_total Streaming responses started.\n"
        "# TYPE basalt_http_streams_total counter\n"
        "basalt_http_streams_total %llu\n"
        "# HELP basalt_http_stream_bytes_total Body bytes of streaming responses handed to the "
        "connection.\n"
        "# TYPE basalt_http_stream_bytes_total counter\n"
        "basalt_http_stream_bytes_total %llu\n"
        "# HELP basalt_http_stream_refused_writes_total Stream writes refused because the "
        "client had not read what was queued (backpressure).\n"
        "# TYPE basalt_http_stream_refused_writes_total counter\n"
        "basalt_http_stream_refused_writes_total %llu\n"
        "# HELP basalt_http_streams_lost_total Streams ended because the client went away or "
        "stopped reading.\n"
        "# TYPE basalt_http_streams_lost_total counter\n"
        "basalt_http_streams_lost_total %llu\n",
        (long long)atomic_load(&st->open), (unsigned long long)atomic_load(&st->total),
        (unsigned long long)atomic_load(&st->bytes), (unsigned long long)atomic_load(&st->refused),
        (unsigned long long)atomic_load(&st->gone));
}
