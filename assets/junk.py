"""Chunks without words (one repeated character, base64/hex blobs, minified code, runs of punctuation): they
crowd real text out of search results and cost encode and graph time, so they are kept out of the index.

Language-neutral: a "word" is a whitespace-separated token made mostly of letters in any script (Hangul, CJK,
Latin...), a number, or a URL; scripts written without spaces (CJK, Thai) may form long tokens."""

from __future__ import annotations

import re
import unicodedata

MIN_WORD_SHARE = 0.3  # below this share of its visible characters in words, a chunk is junk
MIN_JUDGED_CHARS = 120  # a shorter piece (a window's tail: "f_21(x): return {'k_21':") is too small to judge by share
MOSTLY_JUNK_SHARE = 0.8  # a document with more of its chunk text junk than this is skipped as a whole
MAX_MEAN_TOKEN_CHARS = 20  # prose and code in docs average 4-10 characters between spaces, minified code 20+
MAX_WORD_CHARS = 40  # longer space-free tokens are blobs or code, except in scripts written without spaces
_NUMBER = re.compile(r"^[+\-−(]?[$€£¥₩]?[\d][\d.,:/%\-−]*[%)]?$")
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{16,}$")
_URL = re.compile(r"^(https?://|www\.)\S+$", re.IGNORECASE)
_PUNCT_STRIP = "\"'()[]{}<>.,;:!?*_`~|“”‘’«»「」『』（）、。，．：；！？"


def _spaceless_script(ch: str) -> bool:
    """CJK ideographs, kana, Thai/Lao/Khmer/Myanmar: written without spaces between words."""
    code = ord(ch)
    return (0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF
            or 0x20000 <= code <= 0x2FFFF or 0x0E00 <= code <= 0x0EFF or 0x1000 <= code <= 0x109F
            or 0x1780 <= code <= 0x17FF)


def _is_word(token: str) -> bool:
    if _URL.match(token) or "://" in token:
        return True  # a URL, bare or in markup ("[docs](https://...)", 'href="https://..."')
    core = token.strip(_PUNCT_STRIP)
    if not core:
        return False
    if _NUMBER.match(core):
        return sum(c.isdigit() for c in core) <= 24
    if _HEX.match(core) and any(c.isdigit() for c in core):
        return False
    letters = [c for c in core if unicodedata.category(c)[0] in "LM"]
    if len(letters) < 0.4 * len(core):
        return False
    if len(core) <= MAX_WORD_CHARS:
        return True
    return sum(_spaceless_script(c) for c in letters) >= 0.5 * len(letters)


def junk_reason(text: str) -> str | None:
    """Why a chunk has no words (None when it reads as text): what kept it out, for the report."""
    visible = "".join(text.split())
    if not visible:
        return "only whitespace"
    if len(visible) >= 32 and len(set(visible)) <= 3:
        return f"one repeated character ({visible[0]!r})"
    tokens = text.split()
    if len(tokens) >= 20 and len(set(tokens)) <= 2:
        return f"one repeated token ({tokens[0][:20]!r})"
    counted = word_chars = spaced_chars = spaced_tokens = punct_chars = 0
    for token in tokens:
        if not any(unicodedata.category(c)[0] in "LMN" for c in token):
            punct_chars += len(token)  # rules and bullets ("=====", "+---+", "->") neither count for nor against
            continue
        counted += len(token)
        word = _is_word(token)
        if word:
            word_chars += len(token)
        if not _URL.match(token) and "://" not in token and not any(_spaceless_script(c) for c in token):
            spaced_chars, spaced_tokens = spaced_chars + len(token), spaced_tokens + 1
    if counted == 0:
        return "only punctuation"
    if len(visible) >= 200 and punct_chars > 0.95 * len(visible):
        return "a long run of punctuation"
    if spaced_chars >= 200 and spaced_chars / spaced_tokens > MAX_MEAN_TOKEN_CHARS:
        return f"no words (tokens of {spaced_chars / spaced_tokens:.0f} characters on average: minified code or a blob)"
    share = word_chars / counted
    if counted >= MIN_JUDGED_CHARS and share < MIN_WORD_SHARE:
        return f"no words ({share:.0%} of its characters in words: blob, minified code or punctuation)"
    return None


def is_junk_chunk(text: str) -> bool:
    return junk_reason(text) is not None


def junk_share(texts: list[str]) -> float:
    """Share of the characters of texts that sit in junk chunks."""
    total = sum(len(t) for t in texts)
    return sum(len(t) for t in texts if is_junk_chunk(t)) / total if total else 0.0


_CODE_START = re.compile(r"^\s*(?:from\s+[\w.]+\s+import\s|import\s+[\w.]+\s*$|def\s+\w+\s*\(|class\s+\w+\s*[(:]|@[\w.]+\("
                         r"|>>>\s|\.\.\.\s|\$\s|#include\b|return\b|except\b|try:|else:|elif\s"
                         r"|(?:async\s+)?(?:with|for|while|if)\s[^()]*[A-Za-z0-9_]\(.*\)\s*(?:as\s+\w+)?:\s*$)")
_CALL = re.compile(r"[A-Za-z0-9_]\(")  # a name called: 'patch_all()', 'boto3.client('
_ASSIGNMENT = re.compile(r"^\s*(?:[+\-]\s)?[\w.\[\]'\", ]+(?::\s*[\w\[\], |.]+)?\s*[+\-*/|]?=\s*\S")
_OPERATORS = {"=", "==", "!=", "=>", "->", "+=", "-=", "{", "}", "};", "});", ");", "[]", "{}", "()"}
MIN_CODE_TOKEN_SHARE = 0.3  # prose that names a call ('created using recorder.begin()') has far fewer such tokens


def _code_token(token: str) -> bool:
    if "://" in token:
        return False
    return token in _OPERATORS or bool(_CALL.search(token)) or any(c in token.rstrip(".,:;!?") for c in "{};=<>")


def is_code_line(line: str) -> bool:
    """A line of program text ('from x import y', 'client = boto3.client("sqs")', 'patch_all()') rather than a
    sentence: its statements name no fact, and parsing them costs the graph stage time and false names."""
    tokens = line.split()
    if not tokens:
        return False
    if _CODE_START.match(line) or _ASSIGNMENT.match(line):
        return True
    return sum(map(_code_token, tokens)) >= MIN_CODE_TOKEN_SHARE * len(tokens)
