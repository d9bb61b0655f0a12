"""Licenses per document: the input's own field, a detected file header, or the source's.

A document's license is, first found: the per-document field (`license_field` of its source,
`license` by default, carried in metadata from the input record), the license its text declares
in its header (only for sources with `detect_license: true`: SPDX identifiers and the common
license texts, read from the first HEADER_CHARS characters), the source's `license` in the
recipe, or `unknown`. Several licenses in one header become an SPDX `AND` expression.

Licenses are read at mixture time from the deduplicated shards (nothing is added to the
documents), so a mixture can keep only `allowed_licenses` and its manifest can report each
license's share, without changing any stage's output.
"""

from __future__ import annotations

import json
import re

# Headers sit at the top of a file; a license text further down is a quotation, not the file's.
HEADER_CHARS = 8192
UNKNOWN = "unknown"
PUBLIC_DOMAIN = "LicenseRef-Public-Domain"

_SPDX = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9][A-Za-z0-9.+\-() ]*?)\s*(?:\*/|-->|\"\"\"|$)", re.M)

# (SPDX id, pattern) in the order they are tried; the matches are reported in the order they
# appear in the header. Patterns allow any whitespace and comment markers between words.
def _words(text: str) -> str:
    return r"[\s#*/;'\"-]+".join(re.escape(w) for w in text.split())


_HEADERS: list[tuple[str, re.Pattern]] = [
    (sid, re.compile(pattern, re.I)) for sid, pattern in [
        ("Apache-2.0", _words("Licensed under the Apache License, Version 2.0")),
        ("MIT", _words("Permission is hereby granted, free of charge, to any person obtaining a copy")),
        ("AGPL-3.0-or-later", _words("GNU Affero General Public License")),
        ("LGPL-2.1-or-later", _words("GNU Lesser General Public License") + r".{0,200}?" + _words("version 2.1")),
        ("LGPL-3.0-or-later", _words("GNU Lesser General Public License")),
        ("GPL-2.0-or-later", _words("GNU General Public License") + r".{0,200}?" + _words("version 2")),
        ("GPL-3.0-or-later", _words("GNU General Public License")),
        ("MPL-2.0", _words("Mozilla Public License, v. 2.0")),
        ("BSD-3-Clause", _words("Redistribution and use in source and binary forms") + r"[\s\S]{0,1500}?"
         + _words("Neither the name")),
        ("BSD-2-Clause", _words("Redistribution and use in source and binary forms, with or without modification")),
        ("ISC", _words("Permission to use, copy, modify, and/or distribute this software for any purpose with or "
                       "without fee is hereby granted")),
        ("HPND", _words("Permission to use, copy, modify, and distribute this software") + r"[\s\S]{0,120}?"
         + _words("without fee is hereby granted")),
        ("PSF-2.0", r"Licensed[\s#]+to[\s#]+(?:the[\s#]+)?PSF[\s#]+under[\s#]+a[\s#]+Contributor[\s#]+Agreement"),
        ("PSF-2.0", _words("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2")),
        ("BSL-1.0", _words("Boost Software License")),
        ("EPL-2.0", _words("Eclipse Public License")),
        ("Unlicense", _words("This is free and unencumbered software released into the public domain")),
        (PUBLIC_DOMAIN, r"\b(?:released|placed|dedicated|is)\s+(?:in|into|to)\s+the\s+public\s+domain"),
    ]
]
# A broader match that another already explains (BSD-3 contains BSD-2's words; LGPL contains GPL's).
_SUBSUMED = {"BSD-2-Clause": "BSD-3-Clause", "GPL-3.0-or-later": "LGPL", "GPL-2.0-or-later": "LGPL",
             "LGPL-3.0-or-later": "LGPL-2.1-or-later"}


def detect(text: str) -> str | None:
    """The license(s) a file's header declares, as an SPDX expression, or None."""
    head = text[:HEADER_CHARS]
    spdx = [m.group(1).strip() for m in _SPDX.finditer(head)]
    if spdx:
        return " AND ".join(dict.fromkeys(spdx))
    found: dict[str, int] = {}
    for sid, pattern in _HEADERS:
        m = pattern.search(head)
        if m and sid not in found:
            found[sid] = m.start()
    for narrow, broad in _SUBSUMED.items():
        if narrow in found and any(k.startswith(broad) for k in found if k != narrow):
            del found[narrow]
    if not found:
        return None
    return " AND ".join(sorted(found, key=lambda s: (found[s], s)))


def document_license(spec, metadata: dict, text: str) -> dict:
    """{license, origin}: origin is `field`, `header`, `source` or `none` (see the module doc)."""
    value = metadata.get(spec.license_field) if spec.license_field else None
    if isinstance(value, str) and value.strip():
        return {"license": value.strip(), "origin": "field"}
    if spec.detect_license:
        found = detect(text or "")
        if found:
            return {"license": found, "origin": "header"}
    if spec.license:
        return {"license": spec.license, "origin": "source"}
    return {"license": UNKNOWN, "origin": "none"}


def needs_text(spec) -> bool:
    return bool(spec.detect_license)


def hf_license(spdx: str) -> str:
    """The Hugging Face dataset-card license id of an SPDX id (lower case; `other` where the Hub has none)."""
    known = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "isc", "mpl-2.0", "gpl-2.0", "gpl-3.0",
             "lgpl-2.1", "lgpl-3.0", "agpl-3.0", "bsl-1.0", "epl-2.0", "unlicense", "unknown", "cc0-1.0",
             "cc-by-4.0", "cc-by-sa-4.0", "odc-by", "odbl", "pddl", "openrail"}
    s = spdx.lower().removesuffix("-or-later").removesuffix("-only")
    return s if s in known else ("unknown" if s == UNKNOWN else "other")


def _license_batches(con, files: list[str], specs: dict, columns: str = ""):
    """(source, license, n_tokens, ...) batches over Parquet shards with our columns; text is read
    (its head only) just for the sources that detect headers."""
    from mix_pipeline.core.io.documents import sql_file_list

    detecting = [s for s, spec in specs.items() if needs_text(spec)]
    head = (f"CASE WHEN source IN ({', '.join(repr(s) for s in detecting)}) THEN left(text, {HEADER_CHARS}) END"
            if detecting else "NULL")
    reader = con.sql(
        f"""SELECT source, metadata, {head} AS head, n_tokens{columns}
            FROM read_parquet({sql_file_list(files)}, file_row_number = true, filename = true)
            ORDER BY filename, file_row_number"""
    ).to_arrow_reader(10_000)
    for batch in reader:
        sources = batch.column("source").to_pylist()
        metas = batch.column("metadata").to_pylist()
        heads = batch.column("head").to_pylist()
        licenses = []
        for src, meta, h in zip(sources, metas, heads):
            spec = specs.get(src)
            licenses.append(document_license(spec, json.loads(meta or "{}"), h or "")["license"] if spec else UNKNOWN)
        yield batch, licenses


def restrict_licenses(files: dict[str, list[str]], specs: dict, allowed: list[str], work_dir: str
                      ) -> tuple[dict[str, list[str]], dict]:
    """Each source's deduplicated shards less the documents whose license is not in `allowed`.

    A shard with nothing to leave out is used as it is; others are rewritten into `work_dir`
    (same rows in the same order, less the excluded). Returns the files to draw from and what
    was left out (documents and tokens per source and license)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mix_pipeline.core.io.documents import scratch_connection

    allowed_set = set(allowed)
    excluded: dict[str, dict[str, dict[str, int]]] = {}
    available = {"documents": 0, "tokens": 0}
    out: dict[str, list[str]] = {}
    with scratch_connection() as con:
        for source in sorted(files):
            out[source] = []
            for k, path in enumerate(files[source]):
                keep = []
                for batch, licenses in _license_batches(con, [path], specs):
                    tokens = batch.column("n_tokens").to_pylist()
                    for lic, n in zip(licenses, tokens):
                        ok = lic in allowed_set
                        keep.append(ok)
                        available["documents"] += 1
                        available["tokens"] += n or 0
                        if not ok:
                            e = excluded.setdefault(source, {}).setdefault(lic, {"documents": 0, "tokens": 0})
                            e["documents"] += 1
                            e["tokens"] += n or 0
                if all(keep):
                    out[source].append(path)
                    continue
                os.makedirs(os.path.join(work_dir, source), exist_ok=True)
                target = os.path.join(work_dir, source, f"part-{k:05d}.parquet")
                table = pq.read_table(path)
                pq.write_table(table.filter(pa.array(keep)), target, compression="zstd")
                out[source].append(target)
    lost_docs = sum(e["documents"] for per in excluded.values() for e in per.values())
    lost_tokens = sum(e["tokens"] for per in excluded.values() for e in per.values())
    report = {
        "allowed": sorted(allowed_set),
        "excluded_documents": lost_docs,
        "excluded_tokens": lost_tokens,
        "available_documents": available["documents"],
        "available_tokens": available["tokens"],
        "excluded_share_of_documents": round(lost_docs / available["documents"], 6) if available["documents"] else 0.0,
        "excluded_share_of_tokens": round(lost_tokens / available["tokens"], 6) if available["tokens"] else 0.0,
        "excluded": {s: dict(sorted(per.items())) for s, per in sorted(excluded.items())},
    }
    return out, report


def license_counts(files: list[str], specs: dict, unit: str) -> dict[str, dict[str, int]]:
    """Per license over output shards: rows and units (the mixture's unit). Counts add up, so
    each split's may be counted on its own (by the task that wrote it) and summed (`add_counts`).
    Read a shard at a time: the order of the rows changes no count."""
    from mix_pipeline.core.io.documents import scratch_connection

    counts: dict[str, dict[str, int]] = {}
    if files:
        with scratch_connection() as con:
            for path in files:
                for batch, licenses in _license_batches(con, [path], specs):
                    tokens = batch.column("n_tokens").to_pylist()
                    for lic, n in zip(licenses, tokens):
                        c = counts.setdefault(lic, {"rows": 0, "units": 0})
                        c["rows"] += 1
                        c["units"] += (n or 0) if unit == "tokens" else 1
    return counts


def add_counts(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """The sum of several `license_counts`."""
    total: dict[str, dict[str, int]] = {}
    for counts in parts:
        for lic, c in counts.items():
            t = total.setdefault(lic, {"rows": 0, "units": 0})
            t["rows"] += c["rows"]
            t["units"] += c["units"]
    return total


def shares_of(counts: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Each license's rows, units and share of the units, by license."""
    total = sum(c["units"] for c in counts.values())
    return {lic: c | {"share": round(c["units"] / total, 6) if total else 0.0} for lic, c in sorted(counts.items())}


def license_shares(files: list[str], specs: dict, unit: str) -> dict[str, dict]:
    """Per license over a mixture's output shards: rows, units (the mixture's unit) and share of units."""
    return shares_of(license_counts(files, specs, unit))
