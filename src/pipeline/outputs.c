/* Output folder handling: create it, check it is writable before any long
 * work starts, write every file under a temporary ".part" name and rename
 * them all when the job has succeeded (report.json last), so a folder never
 * holds a partial result that looks complete. Not thread-safe per set. */
#include "pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int outputs_prepare_dir(const char *dir, d2m_error *err)
{
    char path[1024];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return d2m_fail(err, D2M_ERR_INVALID, "%s: output path too long", dir);
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return d2m_fail(err, D2M_ERR_IO, "%s: cannot create the output folder: %s", path,
                            strerror(errno));
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return d2m_fail(err, D2M_ERR_IO, "%s: not a folder", dir);
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/.drum2midi-write-test", dir);
    FILE *f = fopen(probe, "wb");
    if (!f)
        return d2m_fail(err, D2M_ERR_IO, "%s: the output folder is not writable: %s", dir,
                        strerror(errno));
    fclose(f);
    unlink(probe);
    return 0;
}

const char *outputs_part_path(output_set *s, char *buf, size_t n, const char *name)
{
    if (s->n < (int)(sizeof s->names / sizeof s->names[0])) {
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
        s->n++;
    }
    snprintf(buf, n, "%s/.%s.part", s->dir, name);
    return buf;
}

int outputs_commit(output_set *s, d2m_error *err)
{
    for (int i = 0; i < s->n; i++) {
        char from[1400], to[1400];
        snprintf(from, sizeof from, "%s/.%s.part", s->dir, s->names[i]);
        snprintf(to, sizeof to, "%s/%s", s->dir, s->names[i]);
        if (rename(from, to) != 0) {
            int e = errno;
            outputs_discard(s);
            return d2m_fail(err, D2M_ERR_IO, "%s: cannot rename into place: %s", to, strerror(e));
        }
        s->names[i][0] = '\0';
    }
    s->n = 0;
    return 0;
}

void outputs_discard(output_set *s)
{
    for (int i = 0; i < s->n; i++) {
        if (!s->names[i][0]) continue;
        char part[1400];
        snprintf(part, sizeof part, "%s/.%s.part", s->dir, s->names[i]);
        unlink(part);
    }
    s->n = 0;
}
