/* Standard MIDI File writer for drum parts. */
#ifndef D2M_SMF_H
#define D2M_SMF_H

#include "drums/drums.h"

#include <stddef.h>

/* SMF type 1: track 0 = conductor (name, tempo, 4/4 time signature), track 1
 * = "Drums" on channel 10 with explicit note-offs (note-offs sort before
 * note-ons on the same tick). end_tick places the End of Track (the file's
 * length). *out is malloc'ed; the caller frees it. Returns 0, D2M_ERR_INVALID
 * or D2M_ERR_NOMEM. */
int smf_write_drums(unsigned char **out, size_t *out_len, const d2m_notes *notes, double bpm,
                    int ppq, int64_t end_tick, const char *name, d2m_error *err);

#endif
