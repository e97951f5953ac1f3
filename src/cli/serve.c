/*
 * `basalt serve`: loads settings, takes the data directory's lock file,
 * opens the stores, bootstraps the first admin key, starts the HTTP server
 * and shuts down gracefully on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
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
static bs_app_t *volatile running_app;

static void on_signal(int sig)
{
    (void)sig;
    if (running_app)
        running_app->shutting_down = 1;
    if (running_server)
        bs_server_stop(running_server);
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

    int n_routes;
    const bs_route_t *routes = bs_api_routes(&n_routes);
    bs_server_opts_t opts = {.cfg = &app.cfg,
                             .routes = routes,
                             .n_routes = n_routes,
                             .app = &app,
                             .authenticate = bs_api_authenticate,
                             .rate_limit = bs_api_rate_limit,
                             .error_shapes = bs_api_error_shapes()};
    app.server = bs_server_new(&opts, &err);
    if (!app.server) {
        fprintf(stderr, "basalt: cannot listen on %s: %s\n", app.cfg.listen, err.msg);
        bs_api_app_close(&app);
        return 1;
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
    /* Up: from here requests log through the background writer. */
    if (bs_log_async_start() != 0)
        BS_LOG(BS_LOG_WARN, "serve", "no background log writer; logging synchronously");

    bs_server_run(app.server);
    BS_LOG(BS_LOG_INFO, "serve", "shutting down");
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
