"""Reading raw sources into documents, quarantining what cannot be read.

datatrove's own readers log and skip a bad line, which silently loses it. This reader yields
every readable record as a Document and turns every unreadable one into a quarantine record
(with the file, the line and the reason), so each input record is accounted for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

# Quarantine reasons, one place so tests, docs and the catalog agree.
MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
NUL_BYTES = "nul_bytes"
BAD_MESSAGES = "bad_messages"
EMPTY_FILE = "empty_file"
TRUNCATED_FILE = "truncated_file"
UNREADABLE_FILE = "unreadable_file"
MISSING_TEXT_COLUMN = "missing_text_column"

SNIPPET_CHARS = 500


class Quarantined(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _compression(path: str) -> str | None:
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith(".zst") or path.endswith(".zstd"):
        return "zstd"
    return None


def _open_binary(path: str):
    kind = _compression(path)
    if kind == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if kind == "zstd":
        import io

        import zstandard

        # zstandard's reader has no readline; buffering gives line iteration.
        return io.BufferedReader(zstandard.open(path, "rb"))
    return open(path, "rb")


def render_messages(messages) -> str:
    """Chat records are filtered and deduplicated on this rendering of their turns."""
    if not isinstance(messages, list) or not messages:
        raise Quarantined(BAD_MESSAGES, "messages must be a non-empty list")
    parts = []
    for turn in messages:
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or not isinstance(turn.get("role"), str):
            raise Quarantined(BAD_MESSAGES, "each message needs string 'role' and 'content'")
        parts.append(f"{turn['role']}: {turn['content']}")
    return "\n\n".join(parts)


class SourceReader(PipelineStep):
    """Reads one source's files (jsonl[.gz|.zst], parquet, chat jsonl, or a directory of text files).

    Rank r of N reads files[r::N]. Good records become Documents with `source`, `domain` and
    provenance (`file`, `line`) in metadata; bad ones go to `quarantine_writer`.
    """

    type = "📖 - READER"
    name = "🧾 Source reader"

    def __init__(
        self,
        files: list[str],
        root: str,
        source: str,
        domain: str,
        fmt: str,
        text_field: str,
        id_field: str,
        quarantine_writer,
        parquet_batch_size: int = 1000,
    ):
        super().__init__()
        self.files = files
        self.root = root
        self.source = source
        self.domain = domain
        self.fmt = fmt
        self.text_field = text_field
        self.id_field = id_field
        self.quarantine_writer = quarantine_writer
        self.parquet_batch_size = parquet_batch_size

    # ---- record → Document ----------------------------------------------------------
    def _document(self, record: dict, rel: str, line: int) -> Document:
        if self.fmt == "chat":
            text = render_messages(record.get("messages"))
        else:
            if self.text_field not in record or record[self.text_field] is None:
                raise Quarantined(MISSING_TEXT, f"no '{self.text_field}' field")
            text = record[self.text_field]
            if not isinstance(text, str):
                raise Quarantined(TEXT_NOT_STRING, f"'{self.text_field}' is {type(text).__name__}")
        if "\x00" in text:
            raise Quarantined(NUL_BYTES)
        if not text.strip():
            raise Quarantined(EMPTY_TEXT)
        doc_id = record.get(self.id_field)
        doc_id = f"{rel}:{line}" if doc_id is None or doc_id == "" else str(doc_id)
        metadata = {k: v for k, v in record.items() if k not in (self.text_field, self.id_field)}
        metadata.update(source=self.source, domain=self.domain, file=rel, line=line)
        return Document(text=text, id=doc_id, metadata=metadata)

    def _quarantine(self, rel: str, line: int, reason: str, detail: str, raw: bytes | str = b"") -> Document:
        if isinstance(raw, bytes):
            raw = raw[: SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
        snippet = raw[:SNIPPET_CHARS].replace("\x00", "\\x00")
        return Document(
            text=snippet,
            id=f"{rel}:{line}",
            metadata={
                "source": self.source,
                "domain": self.domain,
                "file": rel,
                "line": line,
                "reason": reason,
                "detail": detail,
            },
        )

    # ---- formats: each yields Document | quarantine Document (flagged) -------------------
    def _jsonl(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        import orjson

        line_no = 0
        try:
            with _open_binary(path) as f:
                for line_no, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    try:
                        try:
                            raw.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise Quarantined(INVALID_UTF8, str(exc)) from None
                        try:
                            record = orjson.loads(raw)
                        except orjson.JSONDecodeError as exc:
                            raise Quarantined(MALFORMED_JSON, str(exc)) from None
                        if not isinstance(record, dict):
                            raise Quarantined(NOT_AN_OBJECT, type(record).__name__)
                        yield True, self._document(record, rel, line_no)
                    except Quarantined as q:
                        yield False, self._quarantine(rel, line_no, q.reason, q.detail, raw)
        except (EOFError, OSError, ValueError) as exc:
            # A truncated gzip/zstd stream: what was read stands, the rest is one quarantine record.
            yield False, self._quarantine(rel, line_no + 1, TRUNCATED_FILE, f"{type(exc).__name__}: {exc}")
            return
        if line_no == 0:
            yield False, self._quarantine(rel, 0, EMPTY_FILE, "the file holds no records")

    def _parquet(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad footer
            yield False, self._quarantine(rel, 0, UNREADABLE_FILE, f"{type(exc).__name__}: {exc}")
            return
        if self.fmt != "chat" and self.text_field not in pf.schema_arrow.names:
            yield False, self._quarantine(
                rel, 0, MISSING_TEXT_COLUMN, f"no column '{self.text_field}' (columns: {pf.schema_arrow.names})"
            )
            return
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=self.parquet_batch_size):
                for record in batch.to_pylist():
                    row += 1
                    try:
                        yield True, self._document(record, rel, row)
                    except Quarantined as q:
                        yield False, self._quarantine(rel, row, q.reason, q.detail, json.dumps(record, default=str))
        except Exception as exc:
            yield False, self._quarantine(rel, row + 1, TRUNCATED_FILE, f"{type(exc).__name__}: {exc}")
            return
        if row == 0:
            yield False, self._quarantine(rel, 0, EMPTY_FILE, "the file holds no rows")

    def _text(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            if b"\x00" in raw:
                raise Quarantined(NUL_BYTES, "binary file")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Quarantined(INVALID_UTF8, str(exc)) from None
            if not text.strip():
                raise Quarantined(EMPTY_FILE if not raw else EMPTY_TEXT)
            yield True, Document(
                text=text,
                id=rel,
                metadata={"source": self.source, "domain": self.domain, "file": rel, "line": 0},
            )
        except Quarantined as q:
            yield False, self._quarantine(rel, 0, q.reason, q.detail, raw)

    def read_file(self, path: str) -> Iterator[tuple[bool, Document]]:
        rel = os.path.relpath(path, self.root)
        try:
            if self.fmt == "text":
                yield from self._text(path, rel)
            elif path.endswith(".parquet"):
                yield from self._parquet(path, rel)
            else:
                yield from self._jsonl(path, rel)
        except PermissionError as exc:
            yield False, self._quarantine(rel, 0, UNREADABLE_FILE, str(exc))

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        with self.quarantine_writer as quarantine:
            for path in self.files[rank::world_size]:
                self.stat_update("input_files")
                for ok, doc in self.read_file(path):
                    self.stat_update("records")
                    if ok:
                        self.stat_update("documents")
                        self.update_doc_stats(doc)
                        yield doc
                    else:
                        self.stat_update("quarantined", f"quarantined_{doc.metadata['reason']}")
                        quarantine.write(doc, rank)
