/*
 * `basalt serve`: loads settings, takes the data directory's lock file,
 * opens the stores, bootstraps the first admin key, starts the HTTP server
 * and shuts down gracefully on SIGTERM/SIGINT. SIGHUP reloads the API keys
 * from the store (`basalt keys create --data` writes one there and sends it):
 * the handler only posts a semaphore, and a small thread does the reload.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "base/log.h"
#include "base/rcu.h"
#include "base/time.h"
#include "cli/cli.h"

extern char **environ;

static bs_server_t *volatile running_server;
static bs_server_t *volatile running_metrics_server;
static bs_app_t *volatile running_app;

static void on_signal(int sig)
{
    (void)sig;
    if (running_app)
        running_app->shutting_down = 1;
    if (running_server)
        bs_server_stop(running_server);
    if (running_metrics_server)
        bs_server_stop(running_metrics_server);
}

static void *run_metrics_server(void *arg)
{
    bs_server_run(arg);
    return NULL;
}

/* SIGHUP -> key reload: sem_post is async-signal-safe, a reload (SQLite, malloc) is not. */
static sem_t reload_sem;
static atomic_int reload_stop;

static void on_hup(int sig)
{
    (void)sig;
    sem_post(&reload_sem);
}

static void *reload_main(void *arg)
{
    bs_app_t *app = arg;
    for (;;) {
        while (sem_wait(&reload_sem) != 0 && errno == EINTR)
            ;
        if (atomic_load(&reload_stop))
            return NULL;
        bs_err_t err;
        bs_err_clear(&err);
        if (bs_auth_reload(app->auth, &err) == 0)
            BS_LOG(BS_LOG_INFO, "serve", "SIGHUP: reloaded the API keys");
        else
            BS_LOG(BS_LOG_WARN, "serve", "SIGHUP: could not reload the API keys: %s", err.msg);
    }
}

static int mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Takes data/basalt.lock (flock, released by the kernel when the process dies). */
static int take_lock(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/basalt.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "basalt: cannot open lock file %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0)
            pid[n] = '\0';
        for (char *p = pid; *p; p++)
            if (*p == '\n')
                *p = '\0';
        fprintf(stderr,
                "basalt: data directory %s is in use by another basalt server (pid %s); "
                "stop it or pass a different --data\n",
                dir, pid[0] ? pid : "unknown");
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0)
        BS_LOG(BS_LOG_WARN, "serve", "could not write pid to %s", path);
    return fd;
}

int bs_api_app_open(bs_app_t *app, bs_err_t *err);
void bs_api_app_close(bs_app_t *app);

int bs_cli_serve(int argc, char **argv)
{
    static bs_app_t app;
    bs_err_t err;
    bs_err_clear(&err);
    if (bs_config_load(&app.cfg, argc - 1, argv + 1, environ, &err) != 0) {
        fprintf(stderr, "basalt: %s\n", err.msg);
        return 2;
    }
    bs_log_set_level((bs_log_level_t)bs_log_parse_level(app.cfg.log_level));
    if (app.cfg.no_auth)
        BS_LOG(BS_LOG_WARN, "serve",
               "authentication is disabled (--no-auth): every request acts as admin; "
               "use this for local development only");
    if (mkdir_p(app.cfg.data) != 0) {
        fprintf(stderr, "basalt: cannot create data directory %s: %s\n", app.cfg.data,
                strerror(errno));
        return 1;
    }
    if (!realpath(app.cfg.data, app.data_dir))
        snprintf(app.data_dir, sizeof app.data_dir, "%s", app.cfg.data);
    /* From the moment the lock file names this pid, SIGHUP must not kill the server (its
     * default action): it is queued here and served once the reload thread runs. */
    sem_init(&reload_sem, 0, 0);
    struct sigaction hup;
    memset(&hup, 0, sizeof hup);
    hup.sa_handler = on_hup;
    sigemptyset(&hup.sa_mask);
    hup.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &hup, NULL);
    int lock_fd = take_lock(app.data_dir);
    if (lock_fd < 0)
        return 1;

    app.started_ms = bs_time_wall_ms();
    app.started_mono_ns = bs_time_mono_ns();
    if (bs_api_app_open(&app, &err) != 0) {
        fprintf(stderr, "basalt: %s\n", err.msg);
        bs_api_app_close(&app);
        return 1;
    }
    char secret[BS_KEY_SECRET_MAX];
    int created = 0;
    if (bs_auth_bootstrap(app.auth, secret, &created, &err) != 0) {
        fprintf(stderr, "basalt: cannot create the bootstrap key: %s\n", err.msg);
        bs_api_app_close(&app);
        return 1;
    }

    bs_server_opts_t opts = {.cfg = &app.cfg,
                             .routes = app.routes,
                             .n_routes = app.n_routes,
                             .app = &app,
                             .authenticate = bs_api_authenticate,
                             .rate_limit = bs_api_rate_limit,
                             .authorize = bs_api_authorize,
                             .error_shapes = bs_api_error_shapes()};
    app.server = bs_server_new(&opts, &err);
    if (!app.server) {
        fprintf(stderr, "basalt: cannot listen on %s: %s\n", app.cfg.listen, err.msg);
        bs_api_app_close(&app);
        return 1;
    }
    /* metrics_listen: /metrics and /healthz without a key on an address of their own (one
     * I/O thread), for a scraper on a private network; the main listener keeps its rules. */
    static bs_config_t metrics_cfg;
    bs_server_t *metrics_server = NULL;
    pthread_t metrics_tid;
    if (app.cfg.metrics_listen[0]) {
        metrics_cfg = app.cfg;
        snprintf(metrics_cfg.listen, sizeof metrics_cfg.listen, "%s", app.cfg.metrics_listen);
        metrics_cfg.threads = 1;
        int n_metrics;
        bs_server_opts_t mo = {.cfg = &metrics_cfg,
                               .routes = bs_api_metrics_routes(&n_metrics),
                               .app = &app};
        mo.n_routes = n_metrics;
        metrics_server = bs_server_new(&mo, &err);
        if (!metrics_server) {
            fprintf(stderr, "basalt: cannot listen on %s (metrics_listen): %s\n",
                    app.cfg.metrics_listen, err.msg);
            bs_server_free(app.server);
            app.server = NULL;
            bs_api_app_close(&app);
            return 1;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    running_app = &app;
    running_server = app.server;
    running_metrics_server = metrics_server;

    char host[256];
    snprintf(host, sizeof host, "%s", app.cfg.listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    printf("basalt %s listening on http://%s:%d (data: %s)\n", BS_VERSION,
           host[0] && strcmp(host, "0.0.0.0") ? host : "127.0.0.1", bs_server_port(app.server),
           app.data_dir);
    if (created)
        printf("bootstrap admin API key (shown once, store it now):\n  %s\n", secret);
    fflush(stdout);
    BS_LOG(BS_LOG_INFO, "serve", "listening on %s:%d with %s", host[0] ? host : "*",
           bs_server_port(app.server), app.cfg.no_auth ? "auth disabled" : "API keys");
    char shown[1100];
    bs_meta_redact(app.cfg.metadata_url[0] ? app.cfg.metadata_url : "basalt.db in the data directory",
                   shown, sizeof shown);
    BS_LOG(BS_LOG_INFO, "serve", "replica %s, metadata store %s (%s, schema version %d)",
           app.cfg.replica_id, shown, bs_meta_backend(app.meta), bs_meta_schema_version(app.meta));
    /* Up: from here requests log through the background writer. */
    if (bs_log_async_start() != 0)
        BS_LOG(BS_LOG_WARN, "serve", "no background log writer; logging synchronously");

    if (metrics_server) {
        BS_LOG(BS_LOG_INFO, "serve", "serving /metrics and /healthz without a key on %s (port %d)",
               app.cfg.metrics_listen, bs_server_port(metrics_server));
        if (pthread_create(&metrics_tid, NULL, run_metrics_server, metrics_server) != 0) {
            BS_LOG(BS_LOG_ERROR, "serve", "cannot start the metrics listener's thread");
            running_metrics_server = NULL;
            bs_server_free(metrics_server);
            metrics_server = NULL;
        }
    }
    pthread_t reloader;
    int have_reloader = pthread_create(&reloader, NULL, reload_main, &app) == 0;
    if (!have_reloader)
        BS_LOG(BS_LOG_WARN, "serve", "no key reload thread; SIGHUP is ignored");

    bs_server_run(app.server);
    BS_LOG(BS_LOG_INFO, "serve", "shutting down");
    if (have_reloader) {
        atomic_store(&reload_stop, 1);
        sem_post(&reload_sem);
        pthread_join(reloader, NULL);
    }
    if (metrics_server) {
        bs_server_stop(metrics_server);
        pthread_join(metrics_tid, NULL);
        running_metrics_server = NULL;
        bs_server_free(metrics_server);
    }
    running_server = NULL;
    bs_server_free(app.server);
    app.server = NULL;
    bs_rcu_drain();
    bs_api_app_close(&app);
    close(lock_fd);
    BS_LOG(BS_LOG_INFO, "serve", "stopped");
    bs_log_async_stop();
    return 0;
}
