"""Korean PII in fine-tune data (issue 10 point 4): landlines without separators, 1588-style numbers, full-width
digits, Korean addresses (ko-pii's recognizer); no false positives on versions, ids, dates or IP addresses."""

import pytest

from assets.finetune.pii import find_pii, fold_width, scrub_pii


@pytest.mark.parametrize("text,label,scrubbed", [
    ("전화 0212345678 로", "PHONE", "전화 [PHONE] 로"),
    ("지점 0311234567 번", "PHONE", "지점 [PHONE] 번"),
    ("부산 0519876543", "PHONE", "부산 [PHONE]"),
    ("인터넷전화 07012345678", "PHONE", "인터넷전화 [PHONE]"),
    ("대표번호 1588-1234 로", "PHONE", "대표번호 [PHONE] 로"),
    ("15881234로 문의", "PHONE", "[PHONE]로 문의"),
    ("고객센터 1544 1234", "PHONE", "고객센터 [PHONE]"),
    ("전화 ０１０－１２３４－５６７８ 로", "PHONE", "전화 [PHONE] 로"),
    ("전화 ０２１２３４５６７８", "PHONE", "전화 [PHONE]"),
    ("주민번호 ９００１０１－１２３４５６７ 기재 금지", "KOREAN_RRN", "주민번호 [KOREAN_RRN] 기재 금지"),
    ("메일 ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ 으로", "EMAIL", "메일 [EMAIL] 으로"),
    ("본사는 서울특별시 강남구 테헤란로 123에 있다", "KOREAN_ADDRESS", "본사는 [KOREAN_ADDRESS]에 있다"),
    ("경기도 성남시 분당구 판교역로 235, 7층", "KOREAN_ADDRESS", "[KOREAN_ADDRESS], 7층"),
    ("주소: 대구광역시 수성구 달구벌대로 2450", "KOREAN_ADDRESS", "주소: [KOREAN_ADDRESS]"),
    ("서울시 중구 세종대로 110 별관", "KOREAN_ADDRESS", "[KOREAN_ADDRESS] 별관"),
])
def test_korean_pii_is_replaced(text, label, scrubbed):
    assert scrub_pii(text) == (scrubbed, {label: 1})
    assert find_pii(text) == [label] and find_pii(scrubbed) == []


@pytest.mark.parametrize("text", [
    "v1.2.3 으로 업그레이드", "버전 2.13.0 배포", "torch 2.13.0+cpu", "서버 10.0.0.12 에서", "192.168.0.1:8080",
    "2024-01-15 장애", "2024.01.15", "build 20240115", "1600-1700년대 문서", "티켓 ABC-1234", "주문 15881234567",
    "법인 id 0212345678901", "commit 0311234567abcdef", "sha 1588a1234", "포트 8080", "uuid 123e4567-e89b-12d3",
    "서버 srv-db-01 은 판교 데이터센터 3층", "결제 서비스는 주문 서비스에 의존한다", "강남구청역 근처 회의",
])
def test_versions_ids_dates_and_ips_are_kept(text):
    assert scrub_pii(text) == (text, {})


def test_full_width_folding_keeps_offsets():
    text = "전화：０１０－１２３４－５６７８，서울"
    folded = fold_width(text)
    assert folded == "전화:010-1234-5678,서울" and len(folded) == len(text)
    # the original characters around a match survive; only the match is replaced
    assert scrub_pii(text)[0] == "전화：[PHONE]，서울"
