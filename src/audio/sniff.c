/* Content sniffing: which container do the first bytes of a file look like.
 *
 * Input is untrusted bytes (an upload, a renamed file): every read is checked
 * against n. WAV/RF64, FLAC, Ogg and AIFF have fixed magic numbers. MP3 has
 * none, so it is recognised strictly: after optional ID3v2 tags, three
 * consecutive MPEG audio frame headers must chain by their computed lengths
 * within the first 64 KiB, with the same version, layer, sample rate and
 * mono/stereo. Random bytes pass that with a probability of about 1e-7.
 * Reference: ISO/IEC 11172-3 and 13818-3 header layout; ID3v2.4 section 3.1.
 * Threading: pure functions; safe on any thread. */
#include "audio/audio.h"

#include <string.h>

enum { MP3_SEARCH_BYTES = 64 * 1024, MP3_CHAIN = 3, MAX_ID3_TAGS = 8 };

size_t audio_id3v2_size(const unsigned char *b, size_t n)
{
    if (n < 10 || memcmp(b, "ID3", 3) != 0) return 0;
    /* Version and revision are never 0xFF; the size is 4 "syncsafe" bytes of
     * 7 bits each so that it cannot contain a false MPEG sync. */
    if (b[3] == 0xFF || b[4] == 0xFF) return 0;
    if ((b[6] | b[7] | b[8] | b[9]) & 0x80) return 0;
    size_t body = ((size_t)b[6] << 21) | ((size_t)b[7] << 14) | ((size_t)b[8] << 7) | b[9];
    size_t footer = (b[5] & 0x10) ? 10 : 0;
    return 10 + body + footer;
}

/* Free-format (bitrate index 0) is refused: its length cannot be computed
 * from the header and real encoders almost never write it. */
size_t audio_mpeg_frame_length(const unsigned char *h)
{
    static const short kbps[2][3][15] = {
        { /* MPEG-1, layers I, II, III */
         {0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448},
         {0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384},
         {0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320}},
        { /* MPEG-2 and 2.5 */
         {0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256},
         {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160},
         {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160}}};
    static const int rates[3] = {44100, 48000, 32000}; /* MPEG-1; /2 for 2, /4 for 2.5 */

    if (h[0] != 0xFF || (h[1] & 0xE0) != 0xE0) return 0;
    int version = (h[1] >> 3) & 3; /* 0: 2.5, 1: reserved, 2: 2, 3: 1 */
    int layer = 4 - ((h[1] >> 1) & 3); /* 4 means reserved */
    int bitrate_index = h[2] >> 4;
    int rate_index = (h[2] >> 2) & 3;
    int padding = (h[2] >> 1) & 1;
    int emphasis = h[3] & 3;
    if (version == 1 || layer == 4 || bitrate_index == 0 || bitrate_index == 15 ||
        rate_index == 3 || emphasis == 2)
        return 0;

    int mpeg1 = version == 3;
    long bitrate = 1000L * kbps[mpeg1 ? 0 : 1][layer - 1][bitrate_index];
    long rate = rates[rate_index] >> (mpeg1 ? 0 : version == 2 ? 1 : 2);
    if (layer == 1) return (size_t)((12 * bitrate / rate + padding) * 4);
    /* Layer III of MPEG-2/2.5 carries 576 samples per frame instead of 1152. */
    long coefficient = (layer == 3 && !mpeg1) ? 72 : 144;
    return (size_t)(coefficient * bitrate / rate + padding);
}

/* What stays constant along one stream: sync, version, layer, sample rate,
 * and whether it is mono (the stereo modes may change frame to frame). */
int audio_mpeg_same_stream(const unsigned char *a, const unsigned char *b)
{
    return (a[1] & 0xFE) == (b[1] & 0xFE) && (a[2] & 0x0C) == (b[2] & 0x0C) &&
           ((a[3] >> 6) == 3) == ((b[3] >> 6) == 3);
}

static int mpeg_chain_at(const unsigned char *b, size_t n, size_t pos)
{
    const unsigned char *first = b + pos;
    for (int k = 0; k < MP3_CHAIN; k++) {
        if (pos > n || n - pos < 4) return 0;
        size_t len = audio_mpeg_frame_length(b + pos);
        if (len == 0 || !audio_mpeg_same_stream(first, b + pos)) return 0;
        pos += len;
    }
    return 1;
}

static int looks_like_mp3(const unsigned char *b, size_t n)
{
    size_t end = n < MP3_SEARCH_BYTES ? n : MP3_SEARCH_BYTES;
    for (size_t pos = 0; pos < end; pos++)
        if (b[pos] == 0xFF && mpeg_chain_at(b, n, pos)) return 1;
    return 0;
}

const char *audio_sniff(const unsigned char *bytes, size_t n)
{
    if (!bytes) return "";
    /* Some taggers write more than one ID3v2 tag; FLAC files sometimes carry
     * one too, so the magic numbers are looked for after the tags. */
    for (int t = 0; t < MAX_ID3_TAGS; t++) {
        size_t tag = audio_id3v2_size(bytes, n);
        if (tag == 0) break;
        if (tag >= n) return ""; /* the audio starts beyond what we were given */
        bytes += tag;
        n -= tag;
    }
    if (n >= 12 && (!memcmp(bytes, "RIFF", 4) || !memcmp(bytes, "RF64", 4)) &&
        !memcmp(bytes + 8, "WAVE", 4))
        return "wav";
    if (n >= 4 && !memcmp(bytes, "fLaC", 4)) return "flac";
    if (n >= 4 && !memcmp(bytes, "OggS", 4)) return "ogg";
    if (n >= 12 && !memcmp(bytes, "FORM", 4) &&
        (!memcmp(bytes + 8, "AIFF", 4) || !memcmp(bytes + 8, "AIFC", 4)))
        return "aiff";
    if (looks_like_mp3(bytes, n)) return "mp3";
    return "";
}
