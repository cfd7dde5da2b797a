"""PII scrubbing for fine-tune data (plain functions): emails, Korean resident registration numbers, phone numbers
(international, Korean with or without separators, 1588-style representative numbers, North American) and Korean
street/lot addresses (ko-pii's rule-based address recognizer).

Full-width characters (０１０－１２３４) are folded to ASCII before matching, one character for one, so matches map
back onto the original text unchanged in length.
"""

import re
import unicodedata

# Boundaries are ASCII-only on purpose: Korean text glues particles and labels to numbers and addresses
# ("전화010-1234-5678로", "메일은alice@example.com으로"), and Hangul counts as \w for Python's re.
EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                      r"(?![A-Za-z0-9-])", re.ASCII)
# Korean resident registration number: YYMMDD-GNNNNNN (G = 1..8), with or without the hyphen.
KOREAN_RRN_RE = re.compile(r"(?<![A-Za-z0-9])\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-?\s?[1-8]\d{6}"
                           r"(?![A-Za-z0-9])",
                           re.ASCII)
# Phone numbers, three shapes (anything else - dates, versions, IPs, runs of ordinary numbers - is left alone):
#   international  +country code, then 2-6 digit groups: +82 10-1234-5678, +821012345678, +49 30 12345678,
#                  +33 1 23 45 67 89, +1 (555) 123-4567, +82 (0)2 123 4567 (at least 8 digits in all)
#   Korean         0 + area/carrier code, then 3-4 and 4 digits: 010-1234-5678, 02-123-4567, (02) 123-4567,
#                  031.123.4567, and without separators: mobiles 01012345678, landlines 0212345678,
#                  0311234567, 07012345678 (a known area code: 02, 031-033, 041-044, 051-055, 061-064, 070)
#   Korean 1588    representative numbers 1588-1234, 15881234, 1544 1234 (known 15xx/16xx/18xx prefixes)
#   North American (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567 (area/exchange 2-9 when spaced)
_PHONE_END = r"(?![A-Za-z0-9]|-[A-Za-z0-9]|\.\d)"
PHONE_RE = re.compile(
    r"(?<![A-Za-z0-9+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){2,6}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])(?:\(0\d{1,3}\)[ .-]?|0\d{1,3}[ .-]|0\d{1,3}\)\s?)\d{3,4}[ .-]\d{4}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])01[016789]\d{7,8}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])0(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70)\d{7,8}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])(?:15(?:22|44|66|77|88|99)|16(?:00|44|61|66|68|70|88)|18(?:00|11|33|55|77|99))"
      r"[ -]?\d{4}" + _PHONE_END
    + r"|(?<![A-Za-z0-9.+-])(?:\(\d{3}\) ?\d{3}[.-]|\d{3}-\d{3}-|\d{3}\.\d{3}\.|[2-9]\d{2} [2-9]\d{2} )\d{4}"
    + _PHONE_END,
    re.ASCII,
)


_YEAR_RANGE = re.compile(r"(1[5-9]\d\d)[ -](1[5-9]\d\d|20\d\d)")


def _phone_digits_ok(match: re.Match) -> bool:
    """International matches need at least 8 digits (+1 2 3 is not a phone number); '1600-1700' is a year range."""
    text = match.group(0)
    if text.startswith("+"):
        return sum(c.isdigit() for c in text) >= 8
    years = _YEAR_RANGE.fullmatch(text)
    return not (years and 0 < int(years.group(2)) - int(years.group(1)) <= 200)


def fold_width(text: str) -> str:
    """NFKC for full-width/compatibility characters that fold to one ASCII character (０１０－ -> 010-); everything
    else (Hangul included) is left as is, so offsets in the result are offsets in the input."""
    if text.isascii():
        return text
    out = []
    for char in text:
        if ord(char) > 0x7F:
            folded = unicodedata.normalize("NFKC", char)
            if len(folded) == 1 and folded.isascii():
                char = folded
        out.append(char)
    return "".join(out)


def korean_address_spans(text: str) -> list[tuple[int, int]]:
    """Spans of Korean road-name / lot-number addresses (시/도 + 시/군/구 + 로/길 + number, 동/읍/면 + 번지) found by
    ko-pii's rule-based recognizer; only texts with Hangul are looked at."""
    if not _HANGUL.search(text):
        return []
    from ko_pii.patterns import address

    return [(d.start, d.end) for d in address.detect(text)]


_HANGUL = re.compile(r"[\uac00-\ud7a3]")


PII_PATTERNS = [("EMAIL", EMAIL_RE), ("KOREAN_RRN", KOREAN_RRN_RE), ("PHONE", PHONE_RE)]
PII_LABELS = [label for label, _ in PII_PATTERNS] + ["KOREAN_ADDRESS"]


def pii_spans(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, label) spans of PII in text, in order; earlier patterns win overlaps."""
    folded = fold_width(text or "")
    spans: list[tuple[int, int, str]] = []

    def free(start, end):
        return all(end <= s or start >= e for s, e, _ in spans)

    for label, pattern in PII_PATTERNS:
        for match in pattern.finditer(folded):
            if label == "PHONE" and not _phone_digits_ok(match):
                continue
            if free(match.start(), match.end()):
                spans.append((match.start(), match.end(), label))
    for start, end in korean_address_spans(folded):
        if free(start, end):
            spans.append((start, end, "KOREAN_ADDRESS"))
    return sorted(spans)


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace emails, Korean resident registration numbers, phone numbers and Korean addresses by [EMAIL] etc."""
    counts: dict[str, int] = {}
    spans = pii_spans(text)
    if not spans:
        return text, counts
    out, last = [], 0
    for start, end, label in spans:
        out.append(text[last:start] + f"[{label}]")
        counts[label] = counts.get(label, 0) + 1
        last = end
    out.append(text[last:])
    return "".join(out), counts


def find_pii(text: str) -> list[str]:
    """The PII labels present in text (empty when it is clean)."""
    return sorted({label for _, _, label in pii_spans(text)}, key=PII_LABELS.index)
