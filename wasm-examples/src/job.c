/*
 * job: a run-to-completion workload for Jobs and restartPolicy tests.
 *
 *   job [CODE] [more args...]   print, then exit with CODE (default 0)
 *   job sleep N                 print, then print "tick" once a second for
 *                               N seconds, then exit 0
 *
 * Output (stdout): "job: start", one "arg[i]=<argv[i]>" line per argument
 * (argv[0] included), then "message: <MESSAGE>" when env MESSAGE is set.
 * Env EXIT_CODE, when set, overrides the exit code in both modes.
 *
 * Note: WASI runtimes (wasmtime among them) only accept exit codes 0..125;
 * a larger code makes proc_exit fail as an error instead of an exit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Parses a whole-string decimal integer; returns 0 and leaves *out alone if
 * the string is not one. */
static int parse_int(const char *s, int *out) {
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < -2147483647L - 1 || v > 2147483647L)
        return 0;
    *out = (int)v;
    return 1;
}

static void sleep_seconds(int n) {
    for (int i = 0; i < n; i++) {
        struct timespec ts = {1, 0};
        /* nanosleep -> clock_nanosleep -> WASI poll_oneoff on a clock. */
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        puts("tick");
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);

    puts("job: start");
    for (int i = 0; i < argc; i++)
        printf("arg[%d]=%s\n", i, argv[i]);
    const char *message = getenv("MESSAGE");
    if (message)
        printf("message: %s\n", message);

    int code = 0;
    if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
        int n = 0;
        if (argc > 2 && !parse_int(argv[2], &n)) {
            fprintf(stderr, "job: sleep: not a number of seconds: %s\n", argv[2]);
            return 2;
        }
        sleep_seconds(n);
    } else if (argc > 1) {
        parse_int(argv[1], &code); /* not a number: keep 0 */
    }

    const char *env_code = getenv("EXIT_CODE");
    if (env_code)
        parse_int(env_code, &code);

    fflush(stdout);
    exit(code);
}
