"""Parsing speed per strategy and OCR accuracy, on generated documents.

    python -m bench.formats [--pages 3] [--json]

Prints pages/s of the fast path (text PDFs) and of OCR (image-only PDFs: rendered text -> image -> PDF, 200 dpi),
and OCR character accuracy = 1 - normalized Levenshtein distance between the OCR text and the rendered text
(whitespace removed on both sides: Tesseract's spacing of Hangul syllables is not what is measured), English and
Korean. Everything runs in this process, one document at a time (as a parser worker does).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

ENGLISH = [
    "The billing-api service runs on srv-app-01 and srv-app-02.",
    "Payments Platform owns the invoice-store database (PostgreSQL 15).",
    "Deployments happen every Tuesday at 10:00 after the change review.",
    "The search-api depends on the catalog-db and on the cache cluster.",
    "Incident 2024-031: the ledger-ui lost its session store for 14 minutes.",
    "Backups of billing-db are copied to the vault at 02:30 every night.",
    "On-call engineers answer pages within five minutes, day and night.",
    "The network team manages the load balancers lb-edge-1 and lb-edge-2.",
]
KOREAN = [
    "결제 서비스는 srv-app-01 서버에서 실행됩니다.",
    "인보이스 데이터베이스는 결제 플랫폼 팀이 관리합니다.",
    "배포는 매주 화요일 오전 10시에 변경 검토 후 진행합니다.",
    "검색 서비스는 카탈로그 데이터베이스와 캐시 클러스터에 의존합니다.",
    "장애 보고서: 원장 화면이 14분 동안 세션 저장소를 잃었습니다.",
    "결제 데이터베이스 백업은 매일 밤 2시 30분에 보관소로 복사됩니다.",
    "당직 엔지니어는 밤낮으로 5분 안에 호출에 응답합니다.",
    "네트워크 팀은 로드 밸런서 두 대를 관리합니다.",
]


def char_accuracy(found: str, expected: str) -> float:
    from rapidfuzz.distance import Levenshtein

    a, b = re.sub(r"\s+", "", found), re.sub(r"\s+", "", expected)
    return 1.0 - Levenshtein.normalized_distance(a, b)


def parse_timed(path: Path) -> tuple[list[dict], float]:
    from assets.parsing import parse_records

    started = time.perf_counter()
    records = parse_records(path.name, path.suffix, path.read_bytes())
    return records, time.perf_counter() - started


def run(pages: int = 3, fast_docs: int = 20) -> dict:
    from assets.formats import ocr_available
    from tests import formatfactory as ff
    from tests.docfactory import write_pdf

    out: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        parse_timed(write_pdf(root / "warm.pdf", ENGLISH[:2]))  # imports, not measured
        seconds = 0.0
        for n in range(fast_docs):
            _, took = parse_timed(write_pdf(root / f"text-{n}.pdf", ENGLISH))
            seconds += took
        out["fast_text_pdf"] = {"pages": fast_docs, "seconds": round(seconds, 2), "pages_per_s": round(fast_docs / seconds, 2)}
        problem = ocr_available()
        if problem:
            out["ocr"] = {"skipped": problem}
            return out
        for language, lines, font in (("english", ENGLISH, ff.LATIN_FONT), ("korean", KOREAN, ff.KOREAN_FONT)):
            page_lines = [lines[i % len(lines):] + lines[:i % len(lines)] for i in range(pages)]
            path = ff.write_scanned_pdf(root / f"scan-{language}.pdf", page_lines, font=font)
            records, took = parse_timed(path)
            by_page: dict[int, list[str]] = {}
            for record in records:
                by_page.setdefault(record["metadata"].get("page_number") or 1, []).append(record["text"])
            accuracy = [char_accuracy("\n".join(by_page.get(p + 1, [])), "\n".join(page_lines[p])) for p in range(pages)]
            meta = records[0]["metadata"]
            out[f"ocr_{language}"] = {"pages": pages, "seconds": round(took, 2), "pages_per_s": round(pages / took, 3),
                                      "char_accuracy": round(sum(accuracy) / len(accuracy), 4),
                                      "strategy": meta.get("parse_strategy"), "ocr_confidence": meta.get("ocr_confidence")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3, help="pages per scanned PDF (each language)")
    parser.add_argument("--fast-docs", type=int, default=20, help="one-page text PDFs for the fast path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.pages, args.fast_docs)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    fast = result["fast_text_pdf"]
    print(f"fast path (text PDF, strategy fast): {fast['pages']} pages in {fast['seconds']} s = {fast['pages_per_s']} pages/s")
    if "skipped" in result.get("ocr", {}):
        print(f"OCR not measured: {result['ocr']['skipped']}")
        return
    for language in ("english", "korean"):
        r = result[f"ocr_{language}"]
        print(f"OCR {language} (scanned PDF, {r['strategy']}): {r['pages']} pages in {r['seconds']} s = "
              f"{r['pages_per_s']} pages/s; character accuracy {r['char_accuracy']:.3f}; "
              f"Tesseract word confidence {r['ocr_confidence']}")
    ratio = fast["pages_per_s"] / result["ocr_english"]["pages_per_s"]
    print(f"fast path / OCR: {ratio:.0f}x pages/s")


if __name__ == "__main__":
    main()
