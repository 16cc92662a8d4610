/* main() for a fuzz target built without libFuzzer: runs LLVMFuzzerTestOneInput once on every
 * file named on the command line (a folder: every file in it, sorted). Prints one line per file
 * with -v; a crash or an oracle failure kills the process, which the caller (tests/fuzz/run.sh)
 * reports with the file's name (printed before each run). Exit 0: every input ran. */
#include "fuzz.h"

#include <dirent.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

static bool is_verbose;
static int nrun;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    size_t cap = 4096, len = 0, n;
    uint8_t *buf = malloc(cap);
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf == NULL) {
        fprintf(stderr, "%s: out of memory\n", path);
        return 1;
    }
    if (is_verbose)
        fprintf(stderr, "replay %s (%zu bytes)\n", path, len);
    /* An exact-size copy, so that reading one byte past the input is caught under ASan. */
    uint8_t *exact = malloc(len ? len : 1);
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    nrun++;
    return 0;
}

static int filter(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    struct dirent **names;
    int n = scandir(path, &names, filter, alphasort), rc = 0;
    if (n < 0) {
        perror(path);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", path, names[i]->d_name);
        rc |= run_path(sub);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 0, first = 1;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        is_verbose = true;
        first = 2;
    }
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = first; i < argc; i++)
        rc |= run_path(argv[i]);
    printf("replayed %d inputs\n", nrun);
    return rc;
}
