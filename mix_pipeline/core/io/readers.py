"""Reading raw sources into documents, quarantining what cannot be read.

datatrove's own readers log and skip a bad line, which silently loses it. This reader yields
every readable record as a Document and turns every unreadable one into a quarantine record
(with the file, the line and the reason), so each input record is accounted for.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
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
TEXT_COLUMN_NOT_STRING = "text_column_not_string"
BINARY_FILE = "binary_file"
DOCUMENT_TOO_LARGE = "document_too_large"
BAD_ID = "bad_id"
# Set by the raw stage's post-pass (core.stages), not by the reader: a later record reusing an id.
DUPLICATE_ID = "duplicate_id"

SNIPPET_CHARS = 500
# A file whose first SNIFF_BYTES (after decompression) hold a NUL byte is binary (git's rule):
# one quarantine record for the file, not one per "line" of noise.
SNIFF_BYTES = 8192
# The default of a source's `max_document_bytes`: larger records are quarantined unread.
DEFAULT_MAX_DOCUMENT_BYTES = 10_000_000
# Oversized lines are skipped in chunks of this size, so memory stays bounded by the limit.
_SKIP_CHUNK = 1 << 20


class Quarantined(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


_GZIP_MAGIC, _ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def _compression(path: str) -> str | None:
    """What the file's first bytes say it is, whatever its name: a `.jsonl.gz` that is really plain
    JSON lines is read as such (its name alone would turn it into one `truncated_file` record), and a
    gzipped file without `.gz` is decompressed. JSON text never starts with either magic number."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    kind = "gzip" if head.startswith(_GZIP_MAGIC) else "zstd" if head.startswith(_ZSTD_MAGIC) else None
    if kind is None or path.endswith((".gz", ".zst", ".zstd")):
        return kind
    # Named as plain text: the magic number counts only if the start really decompresses, so a
    # malformed first line that happens to begin with those bytes is still read line by line.
    try:
        if kind == "gzip":
            import zlib

            zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1)
        else:
            import zstandard

            zstandard.ZstdDecompressor().decompressobj().decompress(head)
    except Exception:
        return None
    return kind


def _open_binary(path: str):
    kind = _compression(path)
    if kind == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if kind == "zstd":
        # Buffering gives readline; the raw reader notices a stream cut inside a frame.
        return io.BufferedReader(_ZstdRaw(path), buffer_size=1 << 16)
    return open(path, "rb")


class _ZstdRaw(io.RawIOBase):
    """A zstd file as a raw byte stream (frame after frame). zstandard's own reader returns a
    clean end of file when the stream stops inside a frame, which would pass a cut file off as a
    complete one; this raises EOFError instead, as gzip does."""

    def __init__(self, path: str):
        import zstandard

        self._file = open(path, "rb")
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # the current frame has consumed input and not ended
        self._out = b""

    def readable(self) -> bool:
        return True

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame.eof:
                self._frame = self._dctx.decompressobj()
            out.append(self._frame.decompress(data))
            data = self._frame.unused_data if self._frame.eof else b""
        self._in_frame = not self._frame.eof
        return b"".join(out)

    def readinto(self, buffer) -> int:
        while not self._out:
            chunk = self._file.read(1 << 16)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame")
                return 0
            self._out = self._decompress(chunk)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _bounded_lines(f, limit: int) -> Iterator[tuple[bytes, int]]:
    """(line, size without its newline) per line of a binary stream. A line longer than `limit`
    comes back as its first limit + 1 bytes with its full size: the rest is read past in chunks,
    never held, so a 100 MB line costs `limit` bytes of memory, not 100 MB."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw, len(raw) - 1
            continue
        size = len(raw)
        if size > limit:
            while True:
                chunk = f.readline(_SKIP_CHUNK)
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    size -= 1
                    break
                if not chunk:
                    break
        yield raw, size


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What reading a cut or corrupt compressed stream raises (zstandard has its own error type)."""
    import zstandard

    return (EOFError, OSError, ValueError, zstandard.ZstdError)


def _is_binary(path: str) -> bool:
    """A NUL byte in the first SNIFF_BYTES of the (decompressed) file. JSON text never holds a raw
    NUL (it would be escaped), so such a file is an image, an archive, UTF-16 text or the like."""
    try:
        with _open_binary(path) as f:
            head = f.read(SNIFF_BYTES)
    except PermissionError:
        raise
    except Exception:  # a truncated stream: reading it line by line reports that
        return False
    return b"\x00" in head


_UTF8_BOM = b"\xef\xbb\xbf"
# orjson reads an integer beyond 64 bits as a float (two distinct 30-digit ids would collide) and
# refuses a number beyond the double range (`1e400`): lines with a long run of digits, or that
# orjson refuses for a number, are parsed again by the standard library, keeping numbers exact.
_LONG_DIGITS = re.compile(rb"[0-9][0-9.]{15}")
_DOUBLE_DIGITS = 17  # significant digits a double tells apart


def _exact_float(text: str):
    """A JSON number with a fraction or exponent: a float where a double holds it, else its JSON
    text (`1e400`, or 0.100000000000000000001 next to 0.100000000000000000002, are valid JSON;
    the record is kept with the number as written)."""
    value = float(text)
    digits = text.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return value if math.isfinite(value) and len(digits) <= _DOUBLE_DIGITS else text


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_line(raw: bytes):
    """One JSON value from a line, every number read exactly. Raises Quarantined(MALFORMED_JSON)."""
    import orjson

    try:
        record = orjson.loads(raw)
        if not _LONG_DIGITS.search(raw):
            return record
    except orjson.JSONDecodeError as exc:
        if "number" not in str(exc):
            raise Quarantined(MALFORMED_JSON, str(exc)) from None
        first_error = str(exc)
    else:
        first_error = None
    try:
        record = json.loads(raw.decode("utf-8"), parse_float=_exact_float, parse_constant=_refuse_constant)
        # The standard library accepts lone surrogate escapes (orjson does not): no such text may pass.
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise Quarantined(MALFORMED_JSON, first_error or f"{type(exc).__name__}: {exc}") from None
    return record


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


# Metadata keys the pipeline sets on every document (provenance, the columns it lifts out).
_PIPELINE_KEYS = ("source", "domain", "file", "line", "n_tokens")


def not_regular(path: str) -> str | None:
    """What a path is when it is not a regular file (after symlinks): 'a named pipe', 'a socket',
    'a device', 'a folder'; None for a regular file. Raises OSError when it cannot be stat'ed."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return None  # reading it raises IsADirectoryError: `unreadable_file`, as before
    return "a special file"


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
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
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
        self.max_document_bytes = max_document_bytes

    # Record → Document.
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
        if isinstance(doc_id, (dict, list, bytes)):
            raise Quarantined(BAD_ID, f"'{self.id_field}' is {type(doc_id).__name__}, not a string or number")
        doc_id = f"{rel}:{line}" if doc_id is None or doc_id == "" else str(doc_id)
        metadata = {k: v for k, v in record.items() if k not in (self.text_field, self.id_field)}
        for key in _PIPELINE_KEYS:
            if key in metadata:
                # The record's own field (Dolma's `source`, say) would be overwritten: kept as `input_<key>`.
                name = f"input_{key}"
                while name in metadata:
                    name = f"input_{name}"
                metadata[name] = metadata.pop(key)
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

    # Formats: each yields Document | quarantine Document (flagged).
    def _too_large(self, size: int) -> str:
        return f"{size:,} bytes > max_document_bytes {self.max_document_bytes:,}"

    def _jsonl(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        # Opening is outside the try below: a file we may not open is `unreadable_file` (read_file),
        # not a truncated stream.
        f = _open_binary(path)
        with f:
            if _is_binary(path):
                yield False, self._quarantine(rel, 0, BINARY_FILE, f"a NUL byte in the first {SNIFF_BYTES} bytes")
                return
            line_no = records = 0
            try:
                for raw, size in _bounded_lines(f, self.max_document_bytes):
                    line_no += 1
                    if size <= self.max_document_bytes and not raw.strip():
                        continue
                    records += 1
                    try:
                        if size > self.max_document_bytes:
                            raise Quarantined(DOCUMENT_TOO_LARGE, self._too_large(size))
                        try:
                            raw.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise Quarantined(INVALID_UTF8, str(exc)) from None
                        if raw.startswith(_UTF8_BOM):
                            # A byte order mark, not part of the record (on a later line where
                            # files with one were concatenated).
                            raw = raw[len(_UTF8_BOM):]
                        record = parse_json_line(raw)
                        if not isinstance(record, dict):
                            raise Quarantined(NOT_AN_OBJECT, type(record).__name__)
                        yield True, self._document(record, rel, line_no)
                    except Quarantined as q:
                        yield False, self._quarantine(rel, line_no, q.reason, q.detail, raw)
            except _stream_errors() as exc:
                # A truncated gzip/zstd stream: what was read stands, the rest is one quarantine record.
                yield False, self._quarantine(rel, line_no + 1, TRUNCATED_FILE, f"{type(exc).__name__}: {exc}")
                return
            if records == 0:
                yield False, self._quarantine(rel, 0, EMPTY_FILE, "the file holds no records")

    def _parquet(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        import pyarrow.parquet as pq

        with open(path, "rb"):
            pass  # may we read it at all? (PermissionError → unreadable_file, in read_file)
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
        except Exception as exc:  # pyarrow raises several types for a bad footer
            yield False, self._quarantine(rel, 0, UNREADABLE_FILE, f"{type(exc).__name__}: {exc}")
            return
        sized = False  # whether the text column's byte lengths can be checked before conversion
        if self.fmt != "chat":
            refused, sized = self._text_column(pf, schema, rel)
            if refused is not None:
                yield False, refused
                return
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=self.parquet_batch_size):
                big: dict[int, tuple[int, str]] = {}
                if sized:
                    batch, big = self._set_aside_oversized(batch)
                records = iter(batch.to_pylist())
                for i in range(batch.num_rows + len(big)):
                    row += 1
                    if i in big:
                        size, head = big[i]
                        yield False, self._quarantine(rel, row, DOCUMENT_TOO_LARGE, self._too_large(size), head)
                        continue
                    record = next(records)
                    try:
                        yield True, self._document(record, rel, row)
                    except Quarantined as q:
                        yield False, self._quarantine(rel, row, q.reason, q.detail, json.dumps(record, default=str))
        except Exception as exc:
            yield False, self._quarantine(rel, row + 1, TRUNCATED_FILE, f"{type(exc).__name__}: {exc}")
            return
        if row == 0:
            yield False, self._quarantine(rel, 0, EMPTY_FILE, "the file holds no rows")

    def _text_column(self, pf, schema, rel: str) -> tuple[Document | None, bool]:
        """Check a Parquet file's text column: (a quarantine record refusing the whole file when the
        column is missing or not strings, else None; whether its byte lengths can be checked
        before conversion)."""
        import pyarrow as pa

        if self.text_field not in schema.names:
            return self._quarantine(
                rel, 0, MISSING_TEXT_COLUMN, f"no column '{self.text_field}' (columns: {schema.names})"
            ), False
        kind = schema.field(self.text_field).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            # A different schema (e.g. text stored as numbers or bytes): the file, not each row.
            return self._quarantine(
                rel, 0, TEXT_COLUMN_NOT_STRING,
                f"column '{self.text_field}' is {kind}, not string ({pf.metadata.num_rows} rows)",
            ), False
        return None, not pa.types.is_null(kind)

    def _set_aside_oversized(self, batch):
        """(the batch without its texts over max_document_bytes, {row in the batch: (bytes, snippet)}
        of those). Oversized texts never become Python strings: quarantined from a snippet."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = batch.column(self.text_field)
        lengths = pc.binary_length(column.cast(pa.large_string()) if pa.types.is_dictionary(column.type) else column)
        over = [i for i, n in enumerate(lengths.to_pylist()) if n is not None and n > self.max_document_bytes]
        if not over:
            return batch, {}
        heads = pc.utf8_slice_codeunits(column.take(over).cast(pa.large_string()), 0, SNIPPET_CHARS)
        big = {i: (lengths[i].as_py(), head) for i, head in zip(over, heads.to_pylist())}
        return batch.filter(pa.array([i not in big for i in range(batch.num_rows)])), big

    def _text(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(self.max_document_bytes + 1)
        try:
            if len(raw) > self.max_document_bytes:
                raw = raw[: SNIPPET_CHARS * 4]
                raise Quarantined(DOCUMENT_TOO_LARGE, self._too_large(max(size, self.max_document_bytes + 1)))
            if b"\x00" in raw[:SNIFF_BYTES]:
                raise Quarantined(BINARY_FILE, f"a NUL byte in the first {SNIFF_BYTES} bytes")
            if b"\x00" in raw:
                raise Quarantined(NUL_BYTES)
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte order mark is not text
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
        from mix_pipeline.core.io import storage

        if storage.is_url(path):
            # An object is read from a local copy this task downloads: same bytes, same
            # `file` (relative to the pattern's folder), so the same documents as from local disk.
            rel = storage.relpath(path, self.root)
            copy = storage.local_copy(path)
            try:
                local = copy.__enter__()
            except OSError as exc:  # the download failed: unreadable, as a local file would be
                yield False, self._quarantine(rel, 0, UNREADABLE_FILE, f"{type(exc).__name__}: {exc.strerror or exc}")
                return
            try:
                yield from self._read_file(local, rel)
            finally:
                copy.__exit__(None, None, None)
            return
        yield from self._read_file(path, os.path.relpath(path, self.root))

    def _read_file(self, path: str, rel: str) -> Iterator[tuple[bool, Document]]:
        try:
            kind = not_regular(path)
            if kind:
                # Opening a named pipe or a device would block or never end.
                yield False, self._quarantine(rel, 0, UNREADABLE_FILE, f"{kind}, not a regular file")
                return
            if self.fmt == "text":
                yield from self._text(path, rel)
            elif path.endswith(".parquet"):
                yield from self._parquet(path, rel)
            else:
                yield from self._jsonl(path, rel)
        except OSError as exc:
            # Raised before the file yielded anything: no permission, gone since it was listed, a folder.
            yield False, self._quarantine(rel, 0, UNREADABLE_FILE, f"{type(exc).__name__}: {exc.strerror or exc}")

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
