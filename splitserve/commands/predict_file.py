"""`splitserve predict --target HOST:PORT --input FILE --output FILE`: score a file of records
through a gateway, `--concurrency` requests of `--batch-size` records in flight, the answers written
in input order (`splitserve.recordfiles`), one per record.

A request refused for a passing reason (`errors.RETRIABLE`: the gateway overloaded, restarting, a
rollout under way, a deadline missed) is tried again with backoff, `--retries` times. A request
refused for what one of its records holds (`RECORD_FAULTS`, the message naming the record: "record 3
(id='a7'): ...") is split around that record, halving the rest, until the record is alone: it is
written with its error, the others with their results (a request too large is halved likewise).
Anything else (a wrong param, model name or token, a server error, the retries used up) stops the
run with one line; what was written stays a valid prefix, and `--resume` continues it, as after
Ctrl-C, SIGTERM or a kill."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from itertools import islice
from pathlib import Path
from typing import Any

import grpc

from splitserve import errors
from splitserve.recordfiles import Answer, Item, Output, count, file_format, read

# Refused for what one of its records holds, the message naming the record ("record 3 (id='a7'): ..."): the
# request is split until the record is alone, written with its error. One that names none (too many records or
# characters in one request, a wrong param) is split in halves; a record alone refused so stops the run.
RECORD_FAULTS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
NAMED_RECORD = re.compile(r"^record (\d+)\b")
RETRY_BACKOFF_S = (0.5, 10.0)  # the first pause after a retriable refusal, and the longest (doubling, with jitter)
WINDOW_PER_WORKER = 2  # batches read ahead per request in flight, so no worker waits for the writer


class Stopped(Exception):
    """The run stops; its argument says why (an error of the servers, one line)."""


def run(args: Any, params: dict[str, Any]) -> int:
    from splitserve.client import Client
    from splitserve.steps import Progress

    if args.retries < 0:
        raise SystemExit(f"error: --retries {args.retries}: expected a whole number of at least 0")
    source, target = Path(args.input), Path(args.output)
    in_fmt, out_fmt = file_format(source, "--input"), file_format(target, "--output")
    if not source.is_file():
        raise SystemExit(f"error: --input {source}: no such file")
    if not target.parent.is_dir():
        raise SystemExit(f"error: --output {target}: no such folder {target.parent}")
    if target.resolve() == source.resolve():
        raise SystemExit("error: --output is the --input file; write the answers to another file")
    total = count(source, in_fmt)
    output = Output(target, out_fmt, resume=args.resume)
    items = read(source, in_fmt)
    skipped = _skip_done(items, output.done_ids, target)
    started = time.monotonic()
    with Client(args.target, timeout_s=args.timeout, token=args.token, tls_ca=args.tls_ca) as client:
        client.info()  # a wrong address or token: one line, before any record
        output.open()
        scorer = Scorer(client, params, args.model_name, args.retries)
        with Progress("Scoring", total, done=skipped, failed=output.done_failed) as progress:
            try:
                scorer.score(items, args.batch_size, args.concurrency, output, progress)
            except (KeyboardInterrupt, SystemExit, Stopped) as exc:
                output.close()
                why = exc.args[0] if isinstance(exc, Stopped) else "interrupted"
                progress.say(
                    f"{why}: {progress.done} of {total} records are in {output.journal}; "
                    "run again with --resume to score the rest"
                )
                if isinstance(exc, Stopped):
                    return 1
                raise
    output.finish()
    seconds = time.monotonic() - started
    summary = {
        "in": total,
        "out": progress.done - progress.failed,
        "failed": progress.failed,
        "retried": scorer.retried,
        "output": str(target),
    }
    rate = (progress.done - skipped) / max(seconds, 1e-9)
    progress.say(
        f"records in: {total}, out: {summary['out']}, failed: {summary['failed']} → {target} "
        f"({seconds:.1f}s, {rate:.0f} records/s{f'; {skipped} were there before' if skipped else ''})"
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _skip_done(items: Iterator[Item], done_ids: list[str], target: Path) -> int:
    """Past the records an earlier run answered (`done_ids`), checking they are this input's."""
    for n, done_id in enumerate(done_ids):
        item = next(items, None)
        if item is None:
            raise SystemExit(f"error: --resume: {target} holds {len(done_ids)} answers, more than the input's records")
        if item.id != done_id:
            raise SystemExit(
                f"error: --resume: answer {n} in {target} is for id {done_id!r}, but the input's record {n} "
                f"has id {item.id!r}: not an output of this input"
            )
    return len(done_ids)


class Scorer:
    """Batches of records through one client, each answered in full: every record gets its result
    or its own error."""

    def __init__(self, client: Any, params: dict[str, Any], model: str, retries: int):
        self.client, self.params, self.model, self.retries = client, params, model, retries
        self.stopping = threading.Event()
        self.retried = 0  # requests tried again
        self.lock = threading.Lock()

    def score(self, items: Iterator[Item], batch_size: int, concurrency: int, output: Output, progress: Any) -> None:
        """Every item of `items` answered and written in order, `concurrency` requests in flight."""
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="score")
        pending: deque[Future[list[Answer]]] = deque()
        try:
            for batch in _batches(items, batch_size):
                while len(pending) >= concurrency * WINDOW_PER_WORKER:
                    self._write(_result(pending.popleft()), output, progress)
                pending.append(pool.submit(self.answers, batch))
            while pending:
                self._write(_result(pending.popleft()), output, progress)
        except BaseException:  # stop at once: no more tries, the calls in flight cancelled (none of theirs written)
            self.stopping.set()
            self.client.close()
            raise
        finally:
            pool.shutdown(wait=not self.stopping.is_set(), cancel_futures=True)

    @staticmethod
    def _write(answers: list[Answer], output: Output, progress: Any) -> None:
        output.write(answers)
        progress.advance(len(answers), failed=sum(a.code is not None for a in answers))

    def answers(self, batch: list[Item]) -> list[Answer]:
        """The batch's answers, in its order: a request refused for a record's sake is split into the
        records before it, the record alone, and the rest in halves (where more bad records may be),
        until the record is alone and answered with its error."""
        readable = [item for item in batch if item.fields is not None]
        if len(readable) < len(batch):  # lines of the file that are no record: their error, the rest as one
            found = iter(self.answers(readable) if readable else [])
            return [_unreadable(item) if item.fields is None else next(found) for item in batch]
        try:
            results = self._predict(batch)
        except errors.SplitServeError as exc:
            named = NAMED_RECORD.match(exc.message)
            if len(batch) == 1:
                if named is None:  # the request's own fault (a param), whatever its records
                    raise Stopped(f"error: {exc.code().name}: {exc.message}") from None
                return [_failed(batch[0], exc)]
            k = int(named.group(1)) if named else len(batch)
            if k >= len(batch):  # none named (the request too large?): halves
                parts = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
            else:
                rest = batch[k + 1 :]
                parts = [batch[:k], batch[k : k + 1], rest[: len(rest) // 2], rest[len(rest) // 2 :]]
            return [answer for part in parts if part for answer in self.answers(part)]
        if len(results) != len(batch) or any(str(r.get("id")) != i.id for r, i in zip(results, batch, strict=False)):
            raise Stopped(
                f"error: the gateway answered {len(results)} rows for {len(batch)} records, not one per record with "
                "its id (a template's rows?); scoring a file needs one answer per record"
            )
        return [Answer(item.id, result=result) for item, result in zip(batch, results, strict=True)]

    def _predict(self, batch: list[Item]) -> list[dict[str, Any]]:
        """The batch's results; a retriable refusal tried again with backoff. Raises the error of a
        record fault (for the caller to split on); Stopped for anything else."""
        for tries in range(self.retries + 1):
            if self.stopping.is_set():
                raise Stopped("stopped")
            try:
                return list(self.client.predict([item.fields for item in batch], self.params, self.model))
            except errors.SplitServeError as exc:
                code = exc.code()
                if code in RECORD_FAULTS:
                    raise
                if code not in errors.RETRIABLE or tries == self.retries:
                    after = f" after {tries + 1} tries" if code in errors.RETRIABLE else ""
                    raise Stopped(f"error: {code.name}{after}: {exc.message}") from None
            except ValueError:  # the client was closed by stop()
                raise Stopped("stopped") from None
            pause = min(RETRY_BACKOFF_S[0] * 2**tries, RETRY_BACKOFF_S[1]) * random.uniform(0.5, 1.0)
            with self.lock:
                self.retried += 1
            self.stopping.wait(pause)
        raise AssertionError("unreachable")


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while batch := list(islice(items, size)):
        yield batch


def _result(future: Future[list[Answer]]) -> list[Answer]:
    """A batch's answers; waits in short steps, so that Ctrl-C and SIGTERM are seen at once."""
    while True:
        try:
            return future.result(timeout=0.5)
        except FutureTimeout:
            continue


def _failed(item: Item, exc: errors.SplitServeError) -> Answer:
    """A record's own error, its message naming it by its place in the input ("record 0" of its request)."""
    message = NAMED_RECORD.sub(f"record {item.index}", exc.message)
    return Answer(item.id, code=exc.code().name, message=message)


def _unreadable(item: Item) -> Answer:
    return Answer(item.id, code=grpc.StatusCode.INVALID_ARGUMENT.name, message=f"record {item.index}: {item.error}")
