/*
 * envdump: shows what a container sees -- its environment and its files.
 *
 *   envdump [PATH | write:PATH]...
 *
 * Prints "== env" and every environment variable as KEY=VALUE, sorted.  Then
 * for each argument, in order:
 *   PATH        "== file PATH" and the file's content (a newline is added if
 *               the content does not end in one), or "== dir PATH" and the
 *               entry names, sorted, one a line ("." and ".." left out), or
 *               "== error PATH: <strerror(errno)>".
 *   write:PATH  creates/overwrites PATH with "written by envdump\n" and prints
 *               "== wrote PATH", or "== error PATH: <strerror(errno)>".
 * Always exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

extern char **environ;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void print_error(const char *path, int err) {
    printf("== error %s: %s\n", path, strerror(err));
}

static void dump_env(void) {
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **vars = malloc((n ? n : 1) * sizeof *vars);
    if (!vars) {
        puts("== env");
        return;
    }
    for (size_t i = 0; i < n; i++)
        vars[i] = environ[i];
    qsort(vars, n, sizeof *vars, cmp_str);
    puts("== env");
    for (size_t i = 0; i < n; i++)
        puts(vars[i]);
    free(vars);
}

static void dump_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        print_error(path, errno);
        return;
    }
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    errno = 0;
    while (names && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            char **bigger = realloc(names, 2 * cap * sizeof *names);
            if (!bigger)
                break;
            names = bigger;
            cap *= 2;
        }
        names[n] = strdup(e->d_name);
        if (names[n])
            n++;
    }
    int err = errno;
    closedir(d);
    if (!names) {
        print_error(path, ENOMEM);
        return;
    }
    if (err) {
        print_error(path, err);
    } else {
        qsort(names, n, sizeof *names, cmp_str);
        printf("== dir %s\n", path);
        for (size_t i = 0; i < n; i++)
            puts(names[i]);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void dump_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        print_error(path, errno);
        return;
    }
    /* Read it all before printing, so a read error yields one error line. */
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    int err = 0;
    while (buf) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                err = ENOMEM;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                err = errno ? errno : EIO;
            break;
        }
    }
    if (!buf)
        err = ENOMEM;
    fclose(f);
    if (err) {
        print_error(path, err);
    } else {
        printf("== file %s\n", path);
        fwrite(buf, 1, len, stdout);
        if (len > 0 && buf[len - 1] != '\n')
            putchar('\n');
    }
    free(buf);
}

static void show(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        print_error(path, errno);
        return;
    }
    if (S_ISDIR(st.st_mode))
        dump_dir(path);
    else
        dump_file(path);
}

static void write_file(const char *path) {
    static const char text[] = "written by envdump\n";
    FILE *f = fopen(path, "w");
    if (!f) {
        print_error(path, errno);
        return;
    }
    int err = 0;
    if (fwrite(text, 1, sizeof text - 1, f) != sizeof text - 1)
        err = errno ? errno : EIO;
    if (fclose(f) != 0 && !err)
        err = errno ? errno : EIO;
    if (err)
        print_error(path, err);
    else
        printf("== wrote %s\n", path);
}

int main(int argc, char **argv) {
    dump_env();
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "write:", 6) == 0)
            write_file(argv[i] + 6);
        else
            show(argv[i]);
    }
    fflush(stdout);
    return 0;
}
