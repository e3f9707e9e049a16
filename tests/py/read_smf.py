#!/usr/bin/env python3
"""Read a Standard MIDI File with mido (an implementation independent of ours)
and print a one-line JSON summary for tests/unit/test_smf.c to check:

  {"type":1,"ticks_per_beat":480,"tempo":500000,"time_signature":[4,4,24,8],
   "track_names":["name","Drums"],"end_ticks":[1920,1920],
   "events":[[abs_tick,"note_on",note,velocity,channel],...]}

Compact separators so the C side can match substrings. Exit 77 with a line
starting "SKIP" when mido is not installed; exit 1 if mido rejects the file.
"""
import json
import sys

try:
    import mido
except ImportError:
    print("SKIP: python3 mido is not installed")
    sys.exit(77)


def main(path):
    mf = mido.MidiFile(path)  # strict: raises on malformed data
    summary = {"type": mf.type, "ticks_per_beat": mf.ticks_per_beat, "tempo": None,
               "time_signature": None, "track_names": [], "end_ticks": [], "events": []}
    for track in mf.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "track_name":
                summary["track_names"].append(msg.name)
            elif msg.type == "set_tempo":
                summary["tempo"] = msg.tempo
            elif msg.type == "time_signature":
                summary["time_signature"] = [msg.numerator, msg.denominator,
                                             msg.clocks_per_click, msg.notated_32nd_notes_per_beat]
            elif msg.type == "end_of_track":
                summary["end_ticks"].append(tick)
            elif msg.type in ("note_on", "note_off"):
                summary["events"].append([tick, msg.type, msg.note, msg.velocity, msg.channel])
            else:
                summary.setdefault("other", []).append(msg.type)
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_smf.py FILE.mid")
    main(sys.argv[1])
