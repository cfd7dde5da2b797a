"""Decoding text documents that are not UTF-8: Korean corporate files are often EUC-KR/CP949.

Order: (UTF-8 and UTF-16 with a BOM are handled by the caller) CP949 strictly (a superset of EUC-KR), accepted only when
what it decodes to reads as Korean (Hangul syllables, not stray Hanja from Latin-1 bytes that happen to pair up);
then charset_normalizer's best guess when it is confident (Windows-1252 among equally clean readings); otherwise the document is refused with a message naming
the encodings tried. Never a silent Latin-1 guess that garbles Hangul.
"""

from __future__ import annotations

import re

_HANGUL_SYLLABLE = re.compile(r"[\uac00-\ud7a3]")
# charset_normalizer "chaos" (mess ratio) above this is not trusted
MAX_CHAOS = 0.2


def _reads_as_korean(text: str) -> bool:
    non_ascii = [ch for ch in text if ord(ch) > 127]
    if not non_ascii:
        return True
    return sum(1 for ch in non_ascii if _HANGUL_SYLLABLE.match(ch)) / len(non_ascii) >= 0.8


def decode_non_utf8(data: bytes) -> tuple[str, str, str]:
    """(text, encoding, problem) of bytes that are not valid UTF-8. problem is "" when the encoding was found; else the
    text is a Latin-1 reading (for the caller's binary-data check) and problem says why the document is refused."""
    try:
        text = data.decode("cp949")
        if _reads_as_korean(text):
            return text, "cp949", ""
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = [m for m in from_bytes(data[: 1 << 20])]
    best = min(matches, key=lambda m: m.chaos, default=None)
    # short Western text fits several code pages equally; prefer Windows-1252 (the old Latin-1 reading) among the
    # nearly-as-clean readings, so "prêt" does not become "prźt"
    western = [m for m in matches if m.encoding in ("cp1252", "latin_1") and m.chaos <= best.chaos + 0.1] if best else []
    best = western[0] if western else best
    if best is not None and best.chaos <= MAX_CHAOS:
        try:
            return data.decode(best.encoding), best.encoding, ""
        except (UnicodeDecodeError, LookupError):
            pass
    guess = f"; best guess {best.encoding} was unreliable (mess ratio {best.chaos:.2f})" if best is not None else ""
    return data.decode("latin-1"), "", (
        "text is neither UTF-8 nor CP949/EUC-KR and its encoding could not be detected" + guess +
        "; save the file as UTF-8 and add it again")
