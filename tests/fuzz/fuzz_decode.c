/* libFuzzer target for the audio parsers of untrusted bytes: the content
 * sniffer, the MP3 decoder (libmpg123 behind our reader and damage checks)
 * and the libsndfile path through virtual I/O. A duration limit keeps each
 * input's output small, as the server's limit does.
 * Build with cmake -DD2M_FUZZ=ON (clang), or compile the base and audio
 * sources with this file using -fsanitize=fuzzer,address,undefined. Seeds:
 * any short WAV, FLAC, Ogg, AIFF and MP3 files.
 * Threading: libFuzzer calls it on one thread. */
#include "audio/audio.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { FUZZ_MAX_SECONDS = 20 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libvorbis leaks its info block when libsndfile gives up on a damaged Ogg
 * header (inside libsndfile, not ours); without this every run stops there. */
const char *__lsan_default_suppressions(void) { return "leak:vorbis_info_init\n"; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    d2m_audio audio;
    d2m_decode_info info;
    d2m_error err;

    const char *format = audio_sniff(data, size);
    if (strlen(format) > 4) __builtin_trap(); /* the contract: a short static name */

    if (audio_decode_mp3_memory(&audio, &info, data, size, FUZZ_MAX_SECONDS, &err) == 0) {
        /* Touch every sample so an undersized buffer shows up. */
        float sum = 0;
        for (int64_t i = 0; i < audio.frames * audio.channels; i++) sum += audio.data[i];
        (void)sum;
    }
    d2m_audio_free(&audio);

    if (audio_decode_memory(&audio, &info, data, size, FUZZ_MAX_SECONDS, &err) == 0) {
        if (audio.frames < 1 || audio.channels < 1 || audio.sample_rate < 1) __builtin_trap();
    }
    d2m_audio_free(&audio);
    return 0;
}
