"""Korean particles after a name: which role (subject, topic, object, location, path, agent, goal, source,
conjunct) an argument plays, read from kiwipiepy's tokens or, where kiwi split a glued particle oddly, the raw text."""

from __future__ import annotations

import re


_LOCATIVE_NOUNS = {"위", "안", "내", "상", "쪽", "측", "아래", "밑"}

_GLUED_PARTICLE = re.compile(r"(에\s*의해|를\s*통해서?|을\s*통해서?|에서|에게|으로|로부터|이|가|은|는|을|를|에|로|와|과|도)(만|도|는|은)?(?![가-힣])")
_GLUED_ROLES = {"이": "subject", "가": "subject", "은": "topic", "는": "topic", "도": "topic", "을": "object",
                "를": "object", "에": "location", "에서": "location", "에게": "location", "으로": "goal", "로": "goal",
                "로부터": "source", "와": "conjunct", "과": "conjunct"}


def _role_after(tokens, position: int, text: str) -> tuple[str | None, str, int]:
    """(role, particle, index of the last particle token) for the particle after token `position`.

    kiwi sometimes splits a particle glued to an English word oddly ("service를" -> 르/NNG + ᆯ/JKO); then the
    particle is read from the raw text."""
    role, particle, last = _role_after_tokens(tokens, position, text)
    following = tokens[position + 1] if position + 1 < len(tokens) else None
    if (role is None and following is not None and not following.tag.startswith("J")
            and following.start == tokens[position].end):
        match = _GLUED_PARTICLE.match(text, tokens[position].end)
        if match:
            word = re.sub(r"\s+", " ", match.group(1))
            role = ("agent" if word.startswith("에 의") or word.startswith("에의") else
                    "path" if "통해" in word else _GLUED_ROLES.get(word))
            if role:
                last = max(i for i in range(position, len(tokens)) if tokens[i].start < match.end())
                return role, match.group(0), last
    return role, particle, last


def _role_after_tokens(tokens, position: int, text: str) -> tuple[str | None, str, int]:
    n = len(tokens)
    i = position + 1
    start = tokens[position].end
    while i < n and tokens[i].tag in {"SS", "SSC"} and tokens[i].start == tokens[i - 1].end:
        i += 1  # a closing quote or bracket: "「payments-api」를"
    if i + 1 < n and tokens[i].tag == "NNG" and tokens[i].form in _LOCATIVE_NOUNS and tokens[i + 1].tag == "JKB":
        i += 1  # "web-02 위에서", "클러스터 안에": a place noun before the particle
    if i >= n:
        return None, "", position
    token = tokens[i]

    def span(last: int) -> str:
        return text[start:tokens[last].end]

    def extend_with_delimiters(last: int) -> int:
        while last + 1 < n and tokens[last + 1].tag == "JX" and tokens[last + 1].form in {"만", "도", "는", "은"}:
            last += 1
        return last

    if token.tag == "JC":
        return "conjunct", span(i), i
    if token.tag == "JKS":
        return "subject", span(i), i
    if token.tag == "JX" and token.form in {"은", "는", "도"}:
        return "topic", span(i), i
    if token.tag == "JKO":
        if i + 1 < n and tokens[i + 1].form == "통하" and tokens[i + 1].tag == "VV":
            last = i + 1
            while last + 1 < n and tokens[last + 1].tag == "EC":
                last += 1
            return "path", span(extend_with_delimiters(last)), extend_with_delimiters(last)
        return "object", span(i), i
    if token.tag == "JKB":
        form = token.form
        if form == "에" and i + 1 < n and tokens[i + 1].form in {"대하", "관하"}:
            return None, span(i), i  # "X에 대해/관한": what is talked about, not an argument
        if form in {"에", "에게"} and i + 1 < n and tokens[i + 1].form == "의하" and tokens[i + 1].tag == "VV":
            last = i + 1
            while last + 1 < n and tokens[last + 1].tag in {"EC", "ETM"}:
                last += 1
            return "agent", span(last), last
        last = extend_with_delimiters(i)
        if form in {"로부터", "에서부터", "부터"}:
            return "source", span(last), last
        if form in {"로", "으로"}:
            return "goal", span(last), last
        if form in {"에", "에서", "에게", "한테", "께", "에다", "에다가"}:
            return "location", span(last), last
        if form in {"와", "과", "하고", "랑", "이랑"}:
            return "conjunct", span(last), last
        return None, span(last), last
    return None, "", position
