"""`splitserve predict --input FILE --output FILE` in fresh processes against a real gateway (every
tier on a tiny text-classification bundle): exact accounting over 10^5 records, failed records kept
with their error, the three file formats, retries of an overloaded gateway, resume after SIGTERM and
SIGKILL, and one clear line for a mistake. Issue 21, item 5."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from splitserve.client import Client
from tests.support.cli import SPLITSERVE, one_error_line, run
from tests.support.stack import Stack

IN_FLIGHT_RECORDS = 2048  # the gateway's max_in_flight_records: more get RESOURCE_EXHAUSTED (retried)


@pytest.fixture(scope="module")
def gateway(tiny_bundles):
    with Stack(
        tiny_bundles[("text-classification", "bert")].local_dir,
        gateway={"max_in_flight_records": IN_FLIGHT_RECORDS},
    ) as stack:
        yield stack.gateway


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_labels(got: list[dict], expected: list[dict]) -> None:
    """The same labels, the scores as close as batches of other sizes keep them."""
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def score(gateway: str, source: Path, target: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = run("predict", "--target", gateway, "--input", str(source), "--output", str(target), *flags, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return out, json.loads(out.stdout)


def test_a_hundred_thousand_records_each_answered_once_in_order(gateway, tmp_path) -> None:
    """10^5 small records: in == out + failed, every answer in its record's place, each empty text
    written with its own error (found by splitting its batch), the others with their labels."""
    n, bad = 100_000, set(range(777, 100_000, 9_973))
    source = write_jsonl(
        tmp_path / "docs.jsonl",
        [{"id": f"r{i}", "text": "" if i in bad else f"doc {i % 97} is fine"} for i in range(n)],
    )
    target = tmp_path / "out.jsonl"
    t = time.perf_counter()
    out, summary = score(gateway, source, target, "--batch-size", "1024", "--concurrency", "2")
    seconds = time.perf_counter() - t
    assert summary == {"in": n, "out": n - len(bad), "failed": len(bad), "retried": 0, "output": str(target)}
    assert f"records in: {n}, out: {n - len(bad)}, failed: {len(bad)}" in out.stderr
    answers = read_jsonl(target)
    assert [a["id"] for a in answers] == [f"r{i}" for i in range(n)]
    failed = {i: a["error"] for i, a in enumerate(answers) if "error" in a}
    assert set(failed) == bad
    i = min(bad)
    assert failed[i] == {"code": "INVALID_ARGUMENT", "message": f"record {i} (id='r{i}'): field 'text' is empty"}
    assert all(set(a) == {"id", "labels"} for a in answers if "error" not in a)
    assert answers[0]["labels"] == answers[97]["labels"]  # the same text, the same answer, batches apart
    print(f"\n{n} records scored in {seconds:.1f}s ({n / seconds:.0f} records/s, 2 shared cores)")


def test_formats_give_the_same_answers(gateway, tmp_path) -> None:
    """JSON lines, CSV and Parquet in and out: columns are record fields (`content` for text, an
    `id` column the id, none: its position); a line that is no record and a record the gateway
    refuses are answered with their error, never dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["Florida has nice beaches", "", "I did not like it", "Paris in the spring"]
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    source.write_text(source.read_text() + "not json\n" + json.dumps("a bare string is a text") + "\n")
    score(gateway, source, tmp_path / "out.jsonl")
    answers = read_jsonl(tmp_path / "out.jsonl")
    assert [a["id"] for a in answers] == ["d0", "d1", "d2", "d3", "4", "5"]
    assert answers[1]["error"]["message"] == "record 1 (id='d1'): field 'text' is empty"
    assert answers[4]["error"]["code"] == "INVALID_ARGUMENT"
    assert answers[4]["error"]["message"].startswith("record 4: line 5 is not valid JSON")
    assert "labels" in answers[5]
    with Client(gateway) as client:  # the file's answers are the client's (the gateway's own checked elsewhere)
        direct = client.predict([texts[0], texts[2], texts[3], "a bare string is a text"])
    for got, expected in zip([answers[0], *answers[2:4], answers[5]], direct, strict=True):
        assert_same_labels(got["labels"], expected["labels"])

    with (tmp_path / "in.csv").open("w", newline="") as f:  # `content` for text; no id column
        csv.writer(f).writerows([["content"], *[[t] for t in texts]])
    score(gateway, tmp_path / "in.csv", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[1]["result"] == "" and rows[1]["error"].startswith("INVALID_ARGUMENT: record 1 (id='1'): ")
    for row, answer in zip([rows[0], *rows[2:]], [answers[0], *answers[2:4]], strict=True):
        assert row["error"] == ""
        assert_same_labels(json.loads(row["result"])["labels"], answer["labels"])

    pq.write_table(pa.table({"id": [7, 8, 9], "text": [texts[0], texts[2], texts[3]]}), tmp_path / "in.parquet")
    score(gateway, tmp_path / "in.parquet", tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in table] == ["7", "8", "9"] and all(r["error"] is None for r in table)
    for row, answer in zip(table, (answers[0], answers[2], answers[3]), strict=True):
        assert_same_labels(json.loads(row["result"])["labels"], answer["labels"])
    assert not (tmp_path / "out.parquet.partial").exists()


def test_requests_refused_as_a_whole(gateway, tmp_path) -> None:
    """A batch past the gateway's max_records is halved until it is taken; a wrong param or model
    name is no record's fault: the run stops with one line, no record written with it."""
    source = write_jsonl(tmp_path / "in.jsonl", [f"text {i}" for i in range(2_000)])
    _, summary = score(gateway, source, tmp_path / "big.jsonl", "--batch-size", "1500", "--concurrency", "1")
    assert summary["out"] == 2_000 and [a["id"] for a in read_jsonl(tmp_path / "big.jsonl")] == [
        str(i) for i in range(2_000)
    ]
    for i, (flags, expected) in enumerate(
        [(["--param", "top_k=-3"], "error: INVALID_ARGUMENT: param 'top_k'"), (["--model-name", "nope"], "NOT_FOUND")]
    ):
        target = tmp_path / f"out{i}.jsonl"
        out = run("predict", "--target", gateway, "--input", str(source), "--output", str(target), *flags)
        assert out.returncode == 1
        line = one_error_line(out, expected, f"0 of 2000 records are in {target}")
        assert line.endswith("run again with --resume to score the rest")
        assert target.read_text() == ""


def test_an_overloaded_gateway_is_retried(gateway, tmp_path) -> None:
    """Requests past the gateway's max_in_flight_records are refused RESOURCE_EXHAUSTED: tried again
    with backoff, every record answered."""
    n = 6_000
    source = write_jsonl(tmp_path / "in.jsonl", [f"text {i}" for i in range(n)])
    _, summary = score(gateway, source, tmp_path / "out.jsonl", "--batch-size", "1000", "--concurrency", "6")
    assert summary["in"] == summary["out"] == n and summary["failed"] == 0
    assert summary["retried"] > 0  # 6 x 1000 records in flight, 2048 admitted
    assert [a["id"] for a in read_jsonl(tmp_path / "out.jsonl")] == [str(i) for i in range(n)]


def _started(gateway: str, source: Path, target: Path, *flags: str) -> subprocess.Popen[str]:
    args = ["predict", "--target", gateway, "--input", str(source), "--output", str(target), *flags]
    return subprocess.Popen([*SPLITSERVE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines_once(target: Path, at_least: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if target.exists() and target.read_bytes().count(b"\n") >= at_least:
            return target.read_bytes().count(b"\n")
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} answers in time: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_resume_after_sigterm_and_sigkill(gateway, tmp_path, fmt) -> None:
    """SIGTERM: the run stops saying how to go on; SIGKILL: no word, and a torn last line. Each
    time --resume skips what is written and appends the rest: exactly one answer per record, in order.
    (A Parquet output grows as JSON lines in OUT.partial, which becomes the Parquet file at the end.)"""
    n = 3_000
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"k{i}", "text": f"text number {i}"} for i in range(n)])
    target, flags = tmp_path / f"out.{fmt}", ("--batch-size", "4", "--concurrency", "2")
    growing = tmp_path / "out.parquet.partial" if fmt == "parquet" else target

    proc = _started(gateway, source, target, *flags)
    _lines_once(growing, 50, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "records are in" in err and "run again with --resume" in err

    proc = _started(gateway, source, target, *flags, "--resume")
    written = _lines_once(growing, growing.read_bytes().count(b"\n") + 100, proc)
    proc.kill()
    proc.wait(30)
    with growing.open("ab") as f:
        f.write(b'k99,"{""lab' if fmt == "csv" else b'{"id": "k9')  # a write cut short by the kill
    assert written < n

    out, summary = score(gateway, source, target, "--batch-size", "256", "--resume")  # batches of any size
    assert summary["in"] == summary["out"] == n and summary["failed"] == 0
    ids = _ids(target, fmt)
    assert ids == [f"k{i}" for i in range(n)]
    assert "were there before" in out.stderr
    assert not (tmp_path / "out.parquet.partial").exists()

    if fmt == "parquet":  # all done: nothing to add (the finished file read back as the answers so far)
        _, summary = score(gateway, source, target, "--resume")
        assert summary["out"] == n and _ids(target, fmt) == ids


def _ids(target: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return [str(i) for i in pq.read_table(target, columns=["id"]).column("id").to_pylist()]
    if fmt == "jsonl":
        return [a["id"] for a in read_jsonl(target)]
    with target.open(newline="") as f:
        return [r["id"] for r in csv.DictReader(f)]


def test_mistakes_give_one_line(tmp_path) -> None:
    """Each refused before any record is sent (the last: no gateway there), in a fresh process for
    the everyday ones and in this one for the rest (the parsed command run as `main` runs it)."""
    from splitserve.cli import build_parser

    source = write_jsonl(tmp_path / "in.jsonl", ["a text"])
    (tmp_path / "in.txt").write_text("a text\n")
    (tmp_path / "done.jsonl").write_text("")

    def predict(*args: str) -> subprocess.CompletedProcess[str]:
        return run("predict", "--target", "127.0.0.1:1", *args)

    one_error_line(predict("--input", str(tmp_path / "nope.jsonl"), "--output", "o.jsonl"), "nope.jsonl: no such file")
    one_error_line(predict("--input", str(tmp_path / "in.txt"), "--output", "o.jsonl"), "unknown extension '.txt'")
    one_error_line(predict("--input", str(source), "--output", str(tmp_path / "done.jsonl")), "exists", "--resume")
    one_error_line(predict("--input", str(source), "--output", str(tmp_path / "o.jsonl")), "UNAVAILABLE")
    assert not (tmp_path / "o.jsonl").exists()  # nothing made: the same command works once the gateway is up
    for args, expected in [
        (["--output", "o.xlsx"], "--output o.xlsx: unknown extension '.xlsx'; use .jsonl, .csv or .parquet"),
        (["--output", str(tmp_path / "no" / "o.csv")], "no such folder"),
        (["--output", str(source)], "--output is the --input file"),
        ([], "score a file with --input FILE and --output FILE together"),
    ]:
        with pytest.raises(SystemExit, match=re.escape(expected)):
            parsed = build_parser().parse_args(["predict", "--target", "127.0.0.1:1", "--input", str(source), *args])
            parsed.func(parsed)


def test_a_templated_bundle_answers_with_its_rows(tiny_bundles, tmp_path) -> None:
    """A template that answers one row per record with its id (templates/rules_classification): the
    file's other columns reach it, its rows are the answers."""
    import mlflow

    from splitserve.export import export_bundle

    source = tiny_bundles[("text-classification", "bert")].source_uri
    template = Path(__file__).resolve().parents[2] / "templates" / "rules_classification"
    local = mlflow.artifacts.download_artifacts(export_bundle(source, template=template, show_progress=False))
    with (tmp_path / "in.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["id", "text", "customer"], ["t1", "I love it", "42"], ["t2", "Meh.", "7"]])
    with Stack(local) as stack:
        score(stack.gateway, tmp_path / "in.csv", tmp_path / "out.jsonl", "--param", "threshold=0")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["id"], r["customer"]) for r in rows] == [("t1", "42"), ("t2", "7")]
    assert all(r["label"] in ("happy", "unhappy", "meh") for r in rows)
