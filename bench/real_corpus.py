"""Folders of real documents for the ingestion benchmark, built from what this machine already has (nothing downloads).

    python -m bench.real_corpus DIR [--files 40]

- the long descriptions of installed packages (site-packages *.dist-info/METADATA: their PyPI READMEs), written
  as .md (markdown) or .txt (reStructuredText, plain);
- README / *.md / *.rst files shipped inside installed packages and under /usr/share/doc;
- man pages rendered to text with groff, where groff and /usr/share/man are present;
- the bundled Korean sample (sample_corpus/ko-*) multiplied with edits: names, numbers and teams changed, sections
  reordered, so the copies are different documents (about one file in twenty, from 100 files on).

40 files are package descriptions only (what a user trying the README's command on their own notes would have);
larger folders mix all the sources. The choice is deterministic for a given machine: sorted, no randomness
beyond a seeded shuffle of the Korean edits.
"""

from __future__ import annotations

import argparse
import email
import glob
import gzip
import hashlib
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIN_CHARS, MAX_CHARS = 1500, 200_000  # too short says nothing; a 20 MB changelog is not a user's document
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _name(text: str) -> str:
    return _SAFE.sub("-", text).strip("-")[:80] or "file"


def package_descriptions() -> list[tuple[str, str]]:
    """(file name, text) of every installed package's long description that is long enough."""
    site = Path(sysconfig.get_paths()["purelib"])
    out = []
    for metadata in sorted(site.glob("*.dist-info/METADATA")):
        message = email.message_from_string(metadata.read_text(errors="replace"))
        body = (message.get_payload() or message.get("Description") or "").strip()
        if not (MIN_CHARS <= len(body) <= MAX_CHARS):
            continue
        kind = str(message.get("Description-Content-Type") or "")
        suffix = ".md" if "markdown" in kind else ".txt"
        out.append((f"{_name(metadata.parent.name.removesuffix('.dist-info'))}{suffix}", body))
    return out


def shipped_readmes() -> list[tuple[str, str]]:
    """(file name, text) of README / markdown / reST files inside installed packages and /usr/share/doc."""
    site = sysconfig.get_paths()["purelib"]
    paths = set()
    for base in (site, "/usr/share/doc"):
        for pattern in ("**/README*", "**/*.md", "**/*.rst"):
            paths |= set(glob.glob(f"{base}/{pattern}", recursive=True))
    out = []
    for path in sorted(paths):
        p = Path(path)
        if not p.is_file() or p.suffix not in ("", ".md", ".rst", ".txt", ".markdown"):
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            rel = p.relative_to(site) if path.startswith(site) else p.relative_to("/usr/share/doc")
            out.append((_name(str(rel.with_suffix(""))) + (".md" if p.suffix in (".md", ".markdown") else ".txt"), text))
    return out


def man_pages(limit: int) -> list[tuple[str, str]]:
    """(file name, text) of up to limit man pages (section 1 first), rendered by groff; none without groff."""
    groff = shutil.which("groff")
    if not groff or limit <= 0:
        return []
    out = []
    for page in sorted(glob.glob("/usr/share/man/man1/*.gz")) + sorted(glob.glob("/usr/share/man/man[5-8]/*.gz")):
        if len(out) >= limit:
            break
        try:
            source = gzip.decompress(Path(page).read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if source.startswith(b".so "):  # a link to another page
            continue
        rendered = subprocess.run([groff, "-man", "-Tutf8", "-P", "-cbou"], input=source, capture_output=True,
                                  timeout=30, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"}).stdout
        text = rendered.decode("utf-8", errors="replace").strip()
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            out.append((_name(Path(page).name.removesuffix(".gz")) + ".txt", text))
    return out


_KO_TEAMS = ["플랫폼팀", "결제팀", "데이터팀", "보안팀", "인프라팀", "검색팀", "모바일팀", "운영팀"]
_KO_EXTRA = ["이 절은 {n}차 개정에서 추가되었습니다.", "담당자는 분기마다 이 내용을 검토합니다.",
             "변경 사항은 사내 위키의 변경 이력에 기록합니다.", "문의는 {team} 채널로 보내 주세요."]


def korean_variants(count: int, seed: int = 19) -> list[tuple[str, str]]:
    """count edited copies of the bundled Korean sample documents: server/service names and numbers renumbered,
    teams swapped, sections reordered, a sentence added."""
    samples = sorted((REPO / "sample_corpus").glob("ko-*"))
    if not samples or count <= 0:
        return []
    rng = random.Random(seed)
    out = []
    for i in range(count):
        sample = samples[i % len(samples)]
        text = sample.read_text(encoding="utf-8")
        # services first ("order-api" -> "order7-api"; not the "srv-db" of a server name), then servers renumbered
        text = re.sub(r"(?<![\w-])([a-z]+)-(api|db|tracker)\b(?!-)", lambda m: f"{m.group(1)}{i}-{m.group(2)}", text)
        text = re.sub(r"\b(srv-[a-z]+-)(\d+)", lambda m: f"{m.group(1)}{(int(m.group(2)) + i) % 100:02d}", text)
        shift = rng.randrange(1, len(_KO_TEAMS))
        text = re.sub("|".join(_KO_TEAMS), lambda m: _KO_TEAMS[(_KO_TEAMS.index(m.group(0)) + shift) % len(_KO_TEAMS)],
                      text)
        if sample.suffix == ".md":
            head, *sections = re.split(r"\n(?=## )", text)
            rng.shuffle(sections)
            text = "\n".join([head, *sections])
        extra = rng.choice(_KO_EXTRA).format(n=i + 1, team=rng.choice(_KO_TEAMS))
        text = text.replace("</body>", f"<p>{extra}</p></body>") if sample.suffix == ".html" else \
            text.rstrip() + f"\n\n{extra}\n"
        out.append((f"{sample.stem}-{i:04d}{sample.suffix}", text))
    return out


def build_real_corpus(folder: str | Path, files: int = 40) -> dict:
    """Write files real documents under folder (subfolders by source); returns {source: count, "bytes": total}.
    40 or fewer: package descriptions only; more: descriptions, shipped READMEs, man pages, then Korean copies
    (one in twenty). Raises ValueError when this machine has too few."""
    folder = Path(folder)
    korean = files // 20 if files >= 100 else 0
    wanted = files - korean
    chosen: dict[str, list[tuple[str, str]]] = {"packages": [], "readmes": [], "man": []}
    seen: set[str] = set()

    def take(source: str, items) -> None:
        for name, text in items:
            if sum(map(len, chosen.values())) >= wanted:
                return
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest not in seen:  # the same README shipped twice is one document
                seen.add(digest)
                chosen[source].append((name, text))

    descriptions = package_descriptions()
    if files <= 40:  # moderate sizes, as a folder of READMEs is: the 40 were 442 KB, these ~380 KB
        descriptions = [d for d in descriptions if len(d[1]) <= 60_000]
    take("packages", descriptions)
    if files > 40:
        take("readmes", shipped_readmes())
        take("man", man_pages(wanted - sum(map(len, chosen.values()))))
    chosen["korean"] = korean_variants(korean)
    total = sum(map(len, chosen.values()))
    if total < files:
        raise ValueError(f"this machine has only {total} real documents for a folder of {files}")
    written = 0
    for source, items in chosen.items():
        names: set[str] = set()
        for name, text in items:
            while name in names:
                name = f"{Path(name).stem}-{len(names)}{Path(name).suffix}"
            names.add(name)
            path = folder / source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written += path.stat().st_size
    return {source: len(items) for source, items in chosen.items()} | {"bytes": written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args(argv)
    counts = build_real_corpus(args.folder, args.files)
    print(f"{args.folder}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
