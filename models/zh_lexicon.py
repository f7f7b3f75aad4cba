"""Generates the Mandarin TTS front end's tables from pypinyin's data files and misaki's
pinyin-to-IPA rules (both from their PyPI wheels in models/cache):

  chars.tsv       char TAB reading[,reading...]       (tone3, neutral tone as 5; first = default)
  phrases.tsv     phrase TAB syllable syllable ...    (one reading per character)
  pinyin_ipa.tsv  syllable TAB phonemes               (every syllable in the tables, all 5 tones)

The phoneme strings are Kokoro's Mandarin alphabet: IPA with tone arrows (→ first, ↗ second,
↓ third, ↘ fourth, none for the neutral tone), as misaki's Mandarin path produces them.
"""
import importlib.util
import json
import sys
import zipfile

from pypinyin.contrib.tone_convert import to_tone3

# Tone contours (Chao letters) as misaki writes them, and Kokoro's arrows for them. Longest first.
CONTOURS = [("˧˩˧", "↓"), ("˧˥", "↗"), ("˥˩", "↘"), ("˥", "→")]
SYLLABIC_MARK = "\u0329"  # combining vertical line below
NON_SYLLABIC = "\u032f"  # combining inverted breve below


def kokoro_phonemes(parts):
    s = "".join(parts)
    for contour, arrow in CONTOURS:
        s = s.replace(contour, arrow)
    # Syllabic retroflex/dental approximants (zhi, chi, shi, ri, zi, ci, si) become ɨ.
    s = s.replace("ɻ" + SYLLABIC_MARK, "ɨ").replace("ɹ" + SYLLABIC_MARK, "ɨ")
    if SYLLABIC_MARK in s:
        raise ValueError(f"unexpected syllabic mark in {s!r}")
    return s.replace(NON_SYLLABIC, "")


def tone3(marked):
    return to_tone3(marked, neutral_tone_with_five=True)


def load_misaki_transcription(wheel):
    """misaki/transcription.py from the wheel, imported as a module (no install)."""
    with zipfile.ZipFile(wheel) as z:
        code = z.read("misaki/transcription.py").decode("utf-8")
    spec = importlib.util.spec_from_loader("misaki_transcription", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(code, "misaki/transcription.py", "exec"), mod.__dict__)
    return mod


def generate(pypinyin_wheel, misaki_wheel, out_dir):
    with zipfile.ZipFile(pypinyin_wheel) as z:
        chars = json.loads(z.read("pypinyin/pinyin_dict.json"))
        phrases = json.loads(z.read("pypinyin/phrases_dict.json"))
    syllables = set()
    char_lines = []
    for code in sorted(chars, key=int):
        readings = []
        for r in chars[code].split(","):
            t = tone3(r.strip())
            if t and t not in readings:
                readings.append(t)
        if readings:
            syllables.update(readings)
            char_lines.append(f"{chr(int(code))}\t{','.join(readings)}\n")
    phrase_lines = []
    for phrase in sorted(phrases):
        readings = [tone3(p[0]) for p in phrases[phrase]]
        if len(readings) != len(phrase) or not all(readings):
            continue
        syllables.update(readings)
        phrase_lines.append(f"{phrase}\t{' '.join(readings)}\n")
    tr = load_misaki_transcription(misaki_wheel)
    bases = {s.rstrip("12345") for s in syllables}
    ipa_lines = []
    for base in sorted(bases):
        for tone in "12345":
            try:
                ipa = tr.pinyin_to_ipa(base + tone)
            except Exception:  # noqa: BLE001 - syllables misaki has no rule for are left out
                continue
            if ipa:
                ipa_lines.append(f"{base}{tone}\t{kokoro_phonemes(ipa[0])}\n")
    for name, lines in (("chars.tsv", char_lines), ("phrases.tsv", phrase_lines), ("pinyin_ipa.tsv", ipa_lines)):
        with open(f"{out_dir}/{name}", "w", encoding="utf-8") as f:
            f.writelines(lines)
    return len(char_lines), len(phrase_lines), len(ipa_lines)


if __name__ == "__main__":
    print(generate(*sys.argv[1:4]))
