/*
 * hostile: misbehaving workloads for testing the node's limits.
 *
 *   hostile loop     spin forever (CPU limit, deletion, activeDeadlineSeconds)
 *   hostile memory   malloc 1 MiB chunks forever, touching every page; prints
 *                    "allocated N MiB" every 16 MiB (memory limit -> OOMKilled).
 *                    If malloc ever fails (4 GiB wasm32 ceiling), prints
 *                    "malloc failed after N MiB" on stderr and exits 1.
 *   hostile recurse  unbounded recursion on the wasm call stack (stack
 *                    exhaustion trap)
 *   hostile trap     executes `unreachable` (trap)
 *   hostile flood    writes 100 MiB to stdout in 64 KiB writes, as 64-byte
 *                    lines, then exits 0 (log volume)
 *   hostile passwd   tries to open /etc/passwd: prints "== error ..." and exits
 *                    0 if it cannot (sandboxed), prints the first line and
 *                    exits 1 if it can (escaped)
 * Anything else: usage on stderr, exit 2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void do_loop(void) {
    volatile unsigned long long counter = 0;
    for (;;)
        counter++;
}

static void do_memory(void) {
    const size_t chunk = 1 << 20;
    unsigned long mib = 0;
    for (;;) {
        /* volatile stores keep the compiler from dropping the allocation. */
        volatile char *p = malloc(chunk);
        if (!p) {
            fprintf(stderr, "malloc failed after %lu MiB\n", mib);
            exit(1);
        }
        for (size_t off = 0; off < chunk; off += 4096)
            p[off] = (char)off;
        mib++;
        if (mib % 16 == 0)
            printf("allocated %lu MiB\n", mib);
    }
}

/* The call goes through a volatile function pointer, so the compiler cannot
 * see the recursion and cannot turn it into a loop or a tail call; the
 * result is used after the call, so the frame must stay.  It has no
 * address-taken locals, so frames grow the engine's native call stack (not
 * the shadow stack in linear memory). */
static unsigned recurse(unsigned depth);
static unsigned (*volatile recurse_ptr)(unsigned) = recurse;

static unsigned recurse(unsigned depth) {
    return recurse_ptr(depth + 1) * 31u + depth;
}

static int do_flood(void) {
    static char buf[64 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 64) {
        memset(buf + i, 'f', 63);
        buf[i + 63] = '\n';
    }
    const long writes = (100L << 20) / (long)sizeof buf; /* 1600 x 64 KiB */
    for (long w = 0; w < writes; w++) {
        size_t done = 0;
        while (done < sizeof buf) {
            ssize_t n = write(STDOUT_FILENO, buf + done, sizeof buf - done);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "flood: write: %s\n", strerror(errno));
                return 1;
            }
            done += (size_t)n;
        }
    }
    return 0;
}

static int do_passwd(void) {
    const char *path = "/etc/passwd";
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("== error %s: %s\n", path, strerror(errno));
        return 0;
    }
    char line[512];
    if (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        if (line[strlen(line) - 1] != '\n')
            putchar('\n');
    }
    fclose(f);
    return 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";

    if (strcmp(mode, "loop") == 0) {
        do_loop();
    } else if (strcmp(mode, "memory") == 0) {
        do_memory();
    } else if (strcmp(mode, "recurse") == 0) {
        return (int)(recurse(0) & 1u);
    } else if (strcmp(mode, "trap") == 0) {
        __builtin_trap();
    } else if (strcmp(mode, "flood") == 0) {
        return do_flood();
    } else if (strcmp(mode, "passwd") == 0) {
        return do_passwd();
    }
    fprintf(stderr, "usage: hostile loop|memory|recurse|trap|flood|passwd\n");
    return 2;
}
