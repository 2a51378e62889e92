"""Timings of the response-filtering core on a ~100 KB JSON body (a script, not a test).

    .venv/bin/python scripts/bench_filters.py [--quick]

Prints the median of several runs, in milliseconds per body, for: parsing and
writing JSON, decoding gzip, filtering (3 destroy paths with and without `..`,
3 retain paths, and jsonpath-ng doing the same for comparison), and a full
PII scan with every detector, on a PII-dense and a PII-free body. Parse and
serialise are reported apart from filtering: a filtered response pays
parse + filter + serialise. Machine noise is about ±30 %: compare rows of one run.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import statistics
import time
import uuid

import re2
from typing import Any, Callable

from jsonpath_ng.ext import parse as jsonpath_ng_parse

from rr_addon.policy.bodies import decode_content, dump_json, parse_json
from rr_addon.policy.filters import apply_filters, compile_filter
from rr_addon.policy.redact import BUILTIN, DETECTOR_NAMES, MASK, Redactor


def make_document(users: int, pii: bool) -> dict:
    rnd = random.Random(7)

    def user(i: int) -> dict:
        return {
            "id": str(uuid.UUID(int=rnd.getrandbits(128))),
            "object": "customer",
            "email": f"user{i}@example.com" if pii else f"user{i} at example",
            "name": f"Ünïcode Name {i}",
            "phone": f"+1 415 555 {i % 10000:04d}" if pii else f"ext {i}",
            "balance": rnd.randint(0, 10**6),
            "price": float(f"{rnd.random() * 100:.2f}"),
            "card": {"number": "4242 4242 4242 4242" if pii else "visa ending 4242", "exp": "12/30", "brand": "visa"},
            "address": {"line1": f"{i} Market Street", "city": "San Francisco", "ip": f"10.0.{i % 256}.1" if pii else "n/a"},
            "tags": ["alpha", "beta", "gamma"],
            "active": True,
            "meta": {"created": 1700000000 + i, "note": "lorem ipsum dolor sit amet, consectetur adipiscing elit"},
        }

    return {"object": "list", "data": [user(i) for i in range(users)], "has_more": False, "url": "/v1/customers"}


def timed(fn: Callable[[Any], Any], inputs: list, repeats: int) -> float:
    """Median CPU ms per call (process time: other load on the machine counts
    less than with wall time); `inputs` are consumed (fresh copies per call)."""
    runs = []
    per = len(inputs) // repeats
    for r in range(repeats):
        batch = inputs[r * per : (r + 1) * per]
        start = time.process_time()
        for x in batch:
            fn(x)
        runs.append((time.process_time() - start) / per * 1000)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    args = ap.parse_args()
    repeats, per = (5, 10) if args.quick else (9, 30)
    n = repeats * per

    dense = make_document(210, pii=True)
    clean = make_document(210, pii=False)
    raw = json.dumps(dense, ensure_ascii=False).encode()
    raw_clean = json.dumps(clean, ensure_ascii=False).encode()
    print(f"body: {len(raw)} bytes, {len(dense['data'])} records; PII-free body {len(raw_clean)} bytes")

    def fresh(body: bytes) -> list:
        return [parse_json(body) for _ in range(n)]

    rows: list[tuple[str, float]] = []
    rows.append(("parse_json (exact numbers)", timed(parse_json, [raw] * n, repeats)))
    doc = parse_json(raw)
    rows.append(("dump_json", timed(dump_json, [doc] * n, repeats)))
    rows.append(("json.loads + json.dumps (stdlib, for comparison)", timed(lambda b: json.dumps(json.loads(b)), [raw] * n, repeats)))
    gz = gzip.compress(raw)
    rows.append((f"decode gzip ({len(gz)} -> {len(raw)} bytes)", timed(lambda b: decode_content(b, "gzip", limit=1 << 24), [gz] * n, repeats)))

    destroy_plain = ["$.data[*].card", "$.data[*].meta.note", "$.data[*].phone"]
    destroy_desc = ["$..card", "$..note", "$..phone"]
    retain_paths = ["$.data[*].id", "$.data[*].email", "$.has_more"]
    filter_expr = ["$.data[?(@.balance > 500000)].card", "$.data[?(@.active == true)].meta", "$.data[*].tags[0]"]
    for label, f in [
        ("destroy 3 paths $.data[*].x", compile_filter(None, destroy_plain)),
        ("destroy 3 paths $..x (recursive descent)", compile_filter(None, destroy_desc)),
        ("retain 3 paths", compile_filter(retain_paths, None)),
        ("destroy 3 paths with filter expressions", compile_filter(None, filter_expr)),
    ]:
        rows.append((label, timed(lambda d, f=f: apply_filters(d, [f]), fresh(raw), repeats)))

    ng = [jsonpath_ng_parse(p) for p in destroy_plain]

    def ng_destroy(d: Any) -> Any:
        for p in ng:
            p.filter(lambda _: True, d)
        return d

    rows.append(("jsonpath-ng filter() of the same 3 destroy paths", timed(ng_destroy, fresh(raw), repeats)))
    plain = compile_filter(None, destroy_plain)
    rows.append(("end to end: parse + destroy 3 paths + dump", timed(lambda b: dump_json(apply_filters(parse_json(b), [plain])), [raw] * n, repeats)))
    rows.append(("end to end, naive: json + jsonpath-ng + json", timed(lambda b: json.dumps(ng_destroy(json.loads(b))).encode(), [raw] * n, repeats)))

    redactor = Redactor([(BUILTIN[name], MASK) for name in DETECTOR_NAMES], b"bench-key")
    rows.append(("PII scan, all 7 detectors, PII-dense body", timed(redactor.redact_json, fresh(raw), repeats)))
    rows.append(("PII scan, all 7 detectors, PII-free body", timed(redactor.redact_json, fresh(raw_clean), repeats)))
    counts = redactor.redact_json(copy.deepcopy(doc))[1]
    text = raw.decode()
    rows.append(("PII scan of the same body as plain text", timed(redactor.redact_text, [text] * n, repeats)))

    width = max(len(r[0]) for r in rows)
    for label, ms in rows:
        print(f"{label:<{width}}  {ms:7.3f} ms")
    print(f"(dense body redactions: {counts})")


def redaction_throughput(seconds: float = 0.5) -> dict:
    """MB/s of rr's response processing on scripts/bench.py's 100 KB body, beside
    the physical limit: one RE2 pass over the same bytes (the redactor's
    detector set, and one regex). CPU time of this process, best of 3."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_decision as bd
    from rr_addon.policy.filters_schema import RedactEntry
    from rr_addon.policy.redact import compile_redactor
    from rr_addon.core.responses import Pipeline, process_response
    from rr_addon.testing.upstream import big_document

    doc = json.loads(big_document(100_000))
    doc["usage"] = {"total_tokens": 1234}
    body = json.dumps(doc).encode()  # what the benchmark's upstream sends
    sample: dict = {"targets": [{}], "proxies": [{}]}
    bd._add_filters(sample, ["host"])
    bd._add_redact(sample, [])
    filters = tuple(compile_filter(f.get("retain"), f.get("destroy")) for f in sample["targets"][0]["filters"] + sample["proxies"][0]["filters"])
    redactor = compile_redactor([RedactEntry(**e) for e in sample["proxies"][0]["redact"]], key=b"bench", direction="response")
    clean = body.replace(b"someone@example.com", b"someone at example").replace(b"4242424242424242", b"4242")

    def rate(fn: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(3):
            n, start = 0, time.process_time()
            while (spent := time.process_time() - start) < seconds / 3:
                fn()
                n += 1
            best = min(best, spent / n)
        return round(len(body) / best / 1e6, 1)

    run = lambda p, b: process_response(p, 200, "application/json", None, b, (), 1 << 24)  # noqa: E731
    one = re2.compile(r"[\p{L}\p{N}._%+-]+@(?:[\p{L}\p{N}-]+\.)+\p{L}{2,}")
    return {
        "body_kb": round(len(body) / 1000, 1),
        "rr_filter_redact_mb_s": rate(lambda: run(Pipeline(filters=filters, response_redactor=redactor), body)),
        "rr_redact_mb_s": rate(lambda: run(Pipeline(response_redactor=redactor), body)),
        "rr_redact_clean_mb_s": rate(lambda: run(Pipeline(response_redactor=redactor), clean)),
        "re2_set_scan_mb_s": rate(lambda: getattr(redactor, "_raw_set", redactor._set).Match(body)),
        "re2_one_regex_scan_mb_s": rate(lambda: one.search(clean)),  # no match: the whole body is read
    }


if __name__ == "__main__":
    main()
