/*
 * hello-wagi: a WAGI (CGI-style) HTTP handler, run once per request.
 *
 * Reads the CGI environment (REQUEST_METHOD, PATH_INFO, QUERY_STRING,
 * CONTENT_LENGTH, HTTP_HOST) plus HOSTNAME (the pod name), and the request
 * body on stdin.  Writes a CGI response on stdout:
 *
 *     [Status: NNN Custom]          only for PATH_INFO = /status/NNN
 *     Content-Type: text/plain
 *
 *     hello from <HOSTNAME>
 *     [<request body>]              only for PATH_INFO = /echo
 *     [arg[i]=... and KEY=VALUE]    only for PATH_INFO = /env: argv, then
 *                                   the environment sorted
 *
 * and one log line on stderr: "hello-wagi: <METHOD> <PATH_INFO>".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return (v && *v) ? v : fallback;
}

/* Copies the request body from stdin to stdout: CONTENT_LENGTH bytes, or up
 * to end of input when CONTENT_LENGTH is absent or not a number.  Stops early
 * at end of input. */
static void echo_body(void) {
    const char *cl = getenv("CONTENT_LENGTH");
    long long want = -1; /* -1: read to EOF */
    if (cl && *cl) {
        char *end;
        errno = 0;
        long long n = strtoll(cl, &end, 10);
        if (errno == 0 && *end == '\0' && n >= 0)
            want = n;
    }
    char buf[16384];
    while (want != 0) {
        size_t chunk = sizeof buf;
        if (want > 0 && (unsigned long long)want < chunk)
            chunk = (size_t)want;
        size_t got = fread(buf, 1, chunk, stdin);
        if (got == 0)
            break;
        fwrite(buf, 1, got, stdout);
        if (want > 0)
            want -= (long long)got;
    }
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Prints argv, then every environment variable sorted, one a line. */
static void dump_env(int argc, char **argv) {
    extern char **environ;
    for (int i = 0; i < argc; i++)
        printf("arg[%d]=%s\n", i, argv[i]);
    size_t n = 0;
    while (environ[n])
        n++;
    char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return;
    memcpy(sorted, environ, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, compare_strings);
    for (size_t i = 0; i < n; i++)
        puts(sorted[i]);
    free(sorted);
}

/* "/status/NNN" with exactly three digits -> pointer to the digits, else NULL. */
static const char *status_code(const char *path) {
    static const char prefix[] = "/status/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return NULL;
    const char *d = path + sizeof prefix - 1;
    for (int i = 0; i < 3; i++)
        if (d[i] < '0' || d[i] > '9')
            return NULL;
    return d[3] == '\0' ? d : NULL;
}

int main(int argc, char **argv) {
    const char *method = env_or("REQUEST_METHOD", "GET");
    const char *path = env_or("PATH_INFO", "/");
    const char *host = env_or("HOSTNAME", "unknown");

    fprintf(stderr, "hello-wagi: %s %s\n", method, path);

    const char *status = status_code(path);
    if (status)
        printf("Status: %s Custom\n", status);
    fputs("Content-Type: text/plain\n\n", stdout);
    printf("hello from %s\n", host);

    if (strcmp(path, "/echo") == 0)
        echo_body();
    else if (strcmp(path, "/env") == 0)
        dump_env(argc, argv);

    fflush(stdout);
    return 0;
}
