"""Quality gates: every stage's output is checked before it is published.

Each check turns a sample or an aggregate of the staged output (read with DuckDB, never the
whole corpus in pandas) into a small DataFrame and validates it with a Great Expectations 1.x
expectation in an ephemeral context (core/gates/expectations.py). A stage publishes only when none
of its `error` checks failed, so a bad stage never replaces the last good output and never feeds
the next stage.

The catalogue of checks, their defaults and what they guard against live in CHECKS, the one
place the recipe validator, the Dagster check specs and the table in docs/quality-gates.md read from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from mix_pipeline.core.filters.registry import CODE_QUALITY, DECONTAMINATION, FILTER_NAMES, SAFETY
from mix_pipeline.core.gates.expectations import expect
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA, scratch_connection, sql_file_list
from mix_pipeline.names import META_FILTER_REASON, META_FILTER_VALUE, META_LANGUAGE

SEVERITIES = ("error", "warn")
SAMPLE_ROWS = 10_000
EXAMPLES = 5


@dataclass(frozen=True)
class CheckDef:
    stage: str
    defaults: dict[str, Any]
    guards: str
    severity: str = "error"


# stage keys: raw | filtered | dedup_index | deduplicated | mixture
CHECKS: dict[str, CheckDef] = {
    "raw_schema": CheckDef("raw", {}, "a reader that emits the wrong columns or types"),
    "raw_text_not_empty": CheckDef("raw", {"mostly": 1.0}, "a reader yielding empty or missing text"),
    "raw_unique_ids": CheckDef("raw", {"max_duplicate_ids": 0}, "ids that collide within a source (fates become ambiguous)"),
    # Invalid bytes are quarantined by the reader (invalid_utf8); a valid U+FFFD is text (a page about
    # encodings, a README quoting a decoding error). What this catches is a source decoded upstream with
    # errors="replace" or the wrong codec: then most documents with any non-ASCII character carry one.
    "raw_valid_utf8": CheckDef(
        "raw", {"max_fraction": 0.1},
        "mis-decoded input: a share of documents containing U+FFFD replacement characters that no real text has",
    ),
    "raw_length_bounds": CheckDef(
        "raw", {"min_chars": 1, "max_chars": 5_000_000, "mostly": 0.99}, "truncated or concatenated documents"
    ),
    # Empty files and records (an empty __init__.py: 5-20% of some packages' files) are quarantined
    # one by one but lose no text, so they are not counted: a format or field-name mistake
    # quarantines nearly every record, a damaged file a handful.
    "raw_quarantine_rate": CheckDef(
        "raw", {"max_rate": 0.05}, "a format or field-name mistake that quarantines much of a source (empty records aside)"
    ),
    "filter_drop_rate": CheckDef(
        "filtered",
        # On real text one filter can legitimately drop most of what reaches it (the language
        # filter on a multilingual crawl: over half; Gopher quality on technical pages: 70%); a
        # threshold typo or a wrong language code drops nearly everything. Filters meant to remove
        # a small tail get tighter bands: a decontamination or safety drop rate this high means an
        # eval set or word list matching ordinary text, not a dirty source.
        {"min_rate": 0.0, "max_rate": 0.95, "per_filter": {
            DECONTAMINATION: {"max_rate": 0.1}, SAFETY: {"max_rate": 0.1}, CODE_QUALITY: {"max_rate": 0.5},
        }},
        "a threshold typo or wrong parameter that drops nearly everything (or a filter that silently drops nothing)",
    ),
    # A real crawl keeps 10-30% of its documents after language and quality filtering.
    "kept_volume": CheckDef("filtered", {"min_fraction": 0.02, "min_documents": 1}, "a filter chain that leaves almost nothing"),
    "language_share": CheckDef(
        "filtered", {"min_share": 0.99}, "documents of other languages slipping through the language filter"
    ),
    "drift": CheckDef(
        "filtered",
        # Jensen–Shannon distance: 0.3 is a sixth of the documents moving (a language filter suddenly
        # dropping 17% more); sampling noise between two snapshots of one 10-bucket distribution
        # reaches 0.15 at 300 documents, 0.26 at 100 (95th percentiles).
        {"max_score": 0.3},
        "a snapshot whose distribution shifted from the previous one or the baseline (JS distance of "
        "lengths, languages or fates, of what was kept and of the stage input); warns and triggers a re-mix "
        "rather than blocking",
        severity="warn",
    ),
    # Real corpora have big clusters of boilerplate (a crawl's cookie and 404 pages, 80 copies of the
    # MIT licence among 400 package documents); a broken threshold merges most of a source into one.
    # Fails only for a cluster over max_size that also holds over max_fraction of a source's documents.
    "max_cluster_size": CheckDef(
        "dedup_index", {"max_size": 100, "max_fraction": 0.5}, "a runaway near-duplicate cluster collapsing a whole source"
    ),
    # Later snapshots of a crawl repeat most pages, and package docs repeat the same licences: half
    # of a partition can be duplicates; a broken dedup configuration removes nearly all of it.
    "duplicate_rate": CheckDef("deduplicated", {"min_rate": 0.0, "max_rate": 0.9}, "dedup removing an implausible share of a source"),
    "source_not_emptied": CheckDef("deduplicated", {"min_documents": 1}, "a source with nothing left to mix"),
    "weights_within_tolerance": CheckDef("mixture", {}, "a mixture that misses its target proportions"),
    "epochs_within_cap": CheckDef("mixture", {}, "a source repeated more than max_epochs"),
    "splits_disjoint": CheckDef("mixture", {}, "a document (or its repeats) leaking between train/validation/test"),
    "no_pii_left": CheckDef(
        "mixture", {}, "PII (secret keys, card numbers, emails, IPs, phone numbers) left where the recipe asked for redaction"
    ),
    "conservation": CheckDef(
        "mixture", {}, "documents lost or double counted: records ≠ kept + dropped + duplicate + quarantined"
    ),
}
SOURCE_STAGES = ("raw", "filtered", "deduplicated")


def checks_for(stage: str) -> list[str]:
    return [name for name, d in CHECKS.items() if d.stage == stage]


def validate_overrides(overrides: dict[str, Any], allowed_stages: tuple[str, ...]) -> None:
    """Raise ValueError naming the first unknown check, parameter or severity."""
    for name, params in overrides.items():
        if name not in CHECKS or CHECKS[name].stage not in allowed_stages:
            known = [n for n, d in CHECKS.items() if d.stage in allowed_stages]
            raise ValueError(f"{name}: unknown check (known here: {', '.join(known)})")
        if not isinstance(params, dict):
            raise ValueError(f"{name}: must be a mapping of parameters")
        if name == "filter_drop_rate" and isinstance(params.get("per_filter"), dict):
            _validate_per_filter(params["per_filter"])
        for key, value in params.items():
            if key == "severity":
                if value not in SEVERITIES:
                    raise ValueError(f"{name}.severity: must be 'error' or 'warn' (got {value!r})")
            elif key not in CHECKS[name].defaults:
                accepted = ", ".join(sorted([*CHECKS[name].defaults, "severity"]))
                raise ValueError(f"{name}.{key}: unknown parameter (accepted: {accepted})")


def _validate_per_filter(per_filter: dict[str, Any]) -> None:
    for filter_name, band in per_filter.items():
        if filter_name not in (*FILTER_NAMES, DECONTAMINATION):
            raise ValueError(f"filter_drop_rate.per_filter.{filter_name}: unknown filter")
        unknown = set(band or {}) - {"min_rate", "max_rate"}
        if not isinstance(band, dict) or unknown:
            raise ValueError(f"filter_drop_rate.per_filter.{filter_name}: takes min_rate and max_rate only")


def settings(name: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], str]:
    given = dict(overrides.get(name, {}))
    severity = given.pop("severity", CHECKS[name].severity)
    merged = {**CHECKS[name].defaults, **given}
    if "per_filter" in given:
        # Per filter, so overriding one filter's band keeps the built-in bands of the others.
        defaults = CHECKS[name].defaults["per_filter"]
        merged["per_filter"] = {f: {**defaults.get(f, {}), **(given["per_filter"].get(f) or {})}
                                for f in {**defaults, **given["per_filter"]}}
    return merged, severity


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str
    observed: Any
    expected: str
    message: str
    examples: list[dict] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == "error"


class GateFailed(RuntimeError):
    """A stage's error-severity check failed; its output was not published."""

    def __init__(self, stage: str, outcomes: list[CheckOutcome]):
        self.outcomes = outcomes
        failed = [o for o in outcomes if o.blocks]
        super().__init__(
            f"{stage}: quality gate failed, output not published: "
            + "; ".join(f"{o.name}: {o.message}" for o in failed)
        )


def snippet(text: str | None, n: int = 160) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[:n] + "…"


def outcome(name: str, severity: str, ok: bool, observed, expected: str, message: str, examples=None) -> CheckOutcome:
    return CheckOutcome(name, ok, severity, observed, expected, message if not ok else "ok", examples or [])


def band(name: str, severity: str, value: float, low: float | None, high: float | None, what: str, examples=None) -> CheckOutcome:
    """An aggregate checked with GX's ExpectColumnValuesToBeBetween on a one-row frame."""
    import pandas as pd

    ok, _ = expect(pd.DataFrame({name: [value]}), "ExpectColumnValuesToBeBetween", column=name, min_value=low, max_value=high)
    expected = bounds(low, high)
    return outcome(name, severity, ok, value, expected, f"{what} = {_num(value)}, expected {expected}", examples)


def bounds(low: float | None, high: float | None) -> str:
    """A band as a person writes it: "≤ 0.05", "≥ 0.5", "0.1 – 0.9", "= 0" (None: unbounded)."""
    if low is None and high is None:
        return "any value"
    if low is None:
        return f"≤ {_num(high)}"
    if high is None:
        return f"≥ {_num(low)}"
    return f"= {_num(low)}" if low == high else f"{_num(low)} – {_num(high)}"


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _examples(con, sql: str) -> list[dict]:
    return [{"id": str(i), "snippet": snippet(t)} for i, t in con.execute(sql).fetchall()]


def _sample(con, parts: list[str]):
    """The ids and text lengths (`chars`) of up to SAMPLE_ROWS documents: never the texts, so
    memory does not grow with the documents' size."""
    import pandas as pd

    if not parts:
        return pd.DataFrame({"id": pd.Series(dtype="object"), "chars": pd.Series(dtype="int64")})
    return con.sql(
        f"SELECT id, length(text) AS chars FROM read_parquet({sql_file_list(parts)}) "
        f"USING SAMPLE reservoir({SAMPLE_ROWS} ROWS) REPEATABLE (17)"
    ).df()


def _columns(con, parts: list[str]):
    """An empty frame with the shards' columns."""
    import pandas as pd

    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in DOCUMENT_SCHEMA.names})
    return con.sql(f"SELECT * FROM read_parquet({sql_file_list(parts)}) LIMIT 0").df()


# The checks of each stage, in the order of CHECKS.
def raw_checks(parts: list[str], quarantine_parts: list[str], overrides: dict) -> list[CheckOutcome]:
    con = scratch_connection()
    docs = f"read_parquet({sql_file_list(parts)})" if parts else None
    schema, sample = _raw_schema(con, parts, overrides)
    n = con.sql(f"SELECT count(*) FROM {docs}").fetchall()[0][0] if docs else 0
    out = [
        schema,
        _raw_text_not_empty(con, docs, n, quarantine_parts, overrides),
        _raw_unique_ids(con, docs, overrides),
        _raw_valid_utf8(con, docs, n, overrides),
        _raw_length_bounds(con, docs, sample, overrides),
        _raw_quarantine_rate(con, n, quarantine_parts, overrides),
    ]
    con.close()
    return out


def _raw_schema(con, parts: list[str], overrides: dict):
    """`raw_schema`: the shards have exactly the document columns and no null id. Returns the
    outcome and the sample of ids and lengths the length check reads too."""
    cfg, sev = settings("raw_schema", overrides)
    columns, found = DOCUMENT_SCHEMA.names, _columns(con, parts)
    ok, res = expect(found, "ExpectTableColumnsToMatchSet", column_set=columns, exact_match=True)
    sample = _sample(con, parts)
    ok_ids, _ = expect(sample, "ExpectColumnValuesToNotBeNull", column="id") if ok else (False, {})
    return outcome("raw_schema", sev, ok and ok_ids, sorted(found.columns), str(columns),
                   f"columns {sorted(found.columns)} (ids null: {not ok_ids})"), sample


def _raw_text_not_empty(con, docs: str | None, n: int, quarantine_parts: list[str], overrides: dict) -> CheckOutcome:
    """`raw_text_not_empty`: the share of documents with text; with no documents at all, why."""
    cfg, sev = settings("raw_text_not_empty", overrides)
    empty_sql = f"FROM {docs} WHERE text IS NULL OR trim(text) = ''" if docs else None
    empty = con.sql(f"SELECT count(*) {empty_sql}").fetchall()[0][0] if docs else 0
    share = 1.0 - empty / n if n else 0.0
    if n == 0:
        # A source with nothing readable (every file empty, or every record quarantined): say so.
        reasons = con.sql(
            f"""SELECT json_extract_string(metadata, '$.reason') AS r, count(*) FROM read_parquet({sql_file_list(quarantine_parts)})
                GROUP BY r ORDER BY count(*) DESC, r"""
        ).fetchall() if quarantine_parts else []
        total = sum(c for _, c in reasons)
        detail = f"all {total} record(s) were quarantined ({', '.join(f'{r}: {c}' for r, c in reasons)})" if total else "no records"
        return outcome("raw_text_not_empty", sev, False, 0.0, f"≥ {cfg['mostly']} of the documents",
                       f"no documents: {detail}")
    return band("raw_text_not_empty", sev, share, cfg["mostly"], None, f"share of {n} documents with text",
                _examples(con, f"SELECT id, text {empty_sql} LIMIT {EXAMPLES}") if empty else [])


def _raw_unique_ids(con, docs: str | None, overrides: dict) -> CheckOutcome:
    """`raw_unique_ids`: how many ids repeat."""
    cfg, sev = settings("raw_unique_ids", overrides)
    dup_ids = con.sql(f"SELECT count(*) - count(DISTINCT id) FROM {docs}").fetchall()[0][0] if docs else 0
    examples = _examples(con, f"SELECT id, any_value(text) FROM {docs} GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT {EXAMPLES}") if dup_ids else []
    return band("raw_unique_ids", sev, dup_ids, 0, cfg["max_duplicate_ids"], "repeated ids", examples)


def _raw_valid_utf8(con, docs: str | None, n: int, overrides: dict) -> CheckOutcome:
    """`raw_valid_utf8`: the fraction of documents with a replacement character (U+FFFD)."""
    cfg, sev = settings("raw_valid_utf8", overrides)
    bad_sql = f"FROM {docs} WHERE contains(text, '\ufffd')" if docs else None
    bad = con.sql(f"SELECT count(*) {bad_sql}").fetchall()[0][0] if docs else 0
    return band("raw_valid_utf8", sev, bad / n if n else 0.0, None, cfg["max_fraction"],
                "fraction of documents with U+FFFD", _examples(con, f"SELECT id, text {bad_sql} ORDER BY id LIMIT {EXAMPLES}") if bad else [])


def _raw_length_bounds(con, docs: str | None, sample, overrides: dict) -> CheckOutcome:
    """`raw_length_bounds`: the share of a sample whose length is within the bounds."""
    cfg, sev = settings("raw_length_bounds", overrides)
    ok, res = expect(sample, "ExpectColumnValuesToBeBetween", column="chars", min_value=cfg["min_chars"],
                     max_value=cfg["max_chars"], mostly=cfg["mostly"])
    bad_ids = [str(i) for i in sample.id.iloc[res.get("partial_unexpected_index_list") or []].head(EXAMPLES)]
    within = 1.0 - (res.get("unexpected_percent") or 0.0) / 100.0
    return outcome("raw_length_bounds", sev, ok, round(within, 4),
                   f"≥ {cfg['mostly']} of a {len(sample)}-row sample {bounds(cfg['min_chars'], cfg['max_chars'])} chars long",
                   f"{within:.2%} of the sample within the length bounds",
                   [{"id": str(i), "snippet": f"{len(t or '')} chars: {snippet(t)}"} for i, t in con.execute(
                       f"SELECT id, text FROM {docs} WHERE id IN (SELECT unnest(?::VARCHAR[])) ORDER BY id", [bad_ids]
                   ).fetchall()] if bad_ids else [])


def _raw_quarantine_rate(con, n: int, quarantine_parts: list[str], overrides: dict) -> CheckOutcome:
    """`raw_quarantine_rate`: the quarantined share of the records, empty files and texts not counted."""
    cfg, sev = settings("raw_quarantine_rate", overrides)
    from mix_pipeline.core.io.readers import EMPTY_FILE, EMPTY_TEXT

    empty_reasons = f"'{EMPTY_FILE}', '{EMPTY_TEXT}'"
    counted = f"FROM read_parquet({sql_file_list(quarantine_parts)}) WHERE coalesce(json_extract_string(metadata, '$.reason'), '') NOT IN ({empty_reasons})"
    total_q = con.sql(f"SELECT count(*) FROM read_parquet({sql_file_list(quarantine_parts)})").fetchall()[0][0] if quarantine_parts else 0
    q = con.sql(f"SELECT count(*) {counted}").fetchall()[0][0] if quarantine_parts else 0
    examples = []
    if q:
        examples = [{"id": str(i), "snippet": f"{json_reason}: {snippet(t)}"} for i, t, json_reason in con.execute(
            f"SELECT id, text, json_extract_string(metadata, '$.reason') {counted} ORDER BY id LIMIT {EXAMPLES}"
        ).fetchall()]
    empty = f", {total_q - q} empty not counted" if total_q > q else ""
    return band("raw_quarantine_rate", sev, q / (n + q) if n + q else 0.0, None, cfg["max_rate"],
                f"quarantined share of {n + q} records{empty}", examples)


def filtered_checks(input_documents: int, kept_parts: list[str], drops: list[tuple[str, int]],
                    dropped_parts: dict[str, list[str]], languages: list[str] | None, overrides: dict) -> list[CheckOutcome]:
    """`drops` is [(filter, documents dropped)] in pipeline order; each rate is over the documents
    that reached that filter."""
    import pandas as pd

    con = scratch_connection()
    out = []
    cfg, sev = settings("filter_drop_rate", overrides)
    rows, reaching = [], input_documents
    for name, dropped in drops:
        per = {"min_rate": cfg["min_rate"], "max_rate": cfg["max_rate"], **cfg["per_filter"].get(name, {})}
        rows.append({"filter": name, "drop_rate": dropped / reaching if reaching else 0.0, "low": per["min_rate"], "high": per["max_rate"]})
        reaching -= dropped
    frame = pd.DataFrame(rows or [{"filter": "-", "drop_rate": 0.0, "low": 0.0, "high": 1.0}])
    frame["in_band"] = (frame.drop_rate >= frame.low) & (frame.drop_rate <= frame.high)
    ok, res = expect(frame, "ExpectColumnValuesToBeInSet", column="in_band", value_set=[True])
    bad = frame[~frame.in_band]
    examples = []
    for r in bad.itertuples():
        files = dropped_parts.get(r.filter) or []
        if files:
            examples += _examples(con, f"SELECT id, concat_ws(' ', json_extract_string(metadata, '$.{META_FILTER_REASON}'), "
                                       f"json_extract_string(metadata, '$.{META_FILTER_VALUE}')) || ': ' || text "
                                       f"FROM read_parquet({sql_file_list(files)}) ORDER BY id LIMIT 2")
    out.append(outcome("filter_drop_rate", sev, ok, {r["filter"]: round(r["drop_rate"], 4) for r in rows},
                       "; ".join(f"{r['filter']} {bounds(r['low'], r['high'])}" for r in rows) or "no filters",
                       "; ".join(f"{r.filter} dropped {r.drop_rate:.1%} (expected {bounds(r.low, r.high)})" for r in bad.itertuples()),
                       examples))

    kept = con.sql(f"SELECT count(*) FROM read_parquet({sql_file_list(kept_parts)})").fetchall()[0][0] if kept_parts else 0
    cfg, sev = settings("kept_volume", overrides)
    fraction = kept / input_documents if input_documents else 0.0
    vol = band("kept_volume", sev, fraction, cfg["min_fraction"], None, f"kept share ({kept} of {input_documents} documents)")
    if kept < cfg["min_documents"]:
        vol = outcome("kept_volume", sev, False, kept, f"≥ {cfg['min_documents']} documents", f"only {kept} documents kept")
    out.append(vol)

    cfg, sev = settings("language_share", overrides)
    if languages is None or not kept_parts:
        out.append(outcome("language_share", sev, True, None, "n/a", "no language filter configured"))
    else:
        allowed = ", ".join(f"'{l}'" for l in languages)
        share = con.sql(
            f"SELECT avg(CASE WHEN json_extract_string(metadata, '$.{META_LANGUAGE}') IN ({allowed}) THEN 1 ELSE 0 END) "
            f"FROM read_parquet({sql_file_list(kept_parts)})"
        ).fetchall()[0][0] or 0.0
        out.append(band("language_share", sev, float(share), cfg["min_share"], None, f"share of kept documents in {languages}"))
    con.close()
    return out


def drift_check(current: dict, refs: dict[str, tuple[str, dict]], overrides: dict) -> CheckOutcome:
    """Drift of a partition's profile against the previous snapshot and the baseline."""
    from mix_pipeline.core.gates.drift import COMPONENTS, drift

    cfg, sev = settings("drift", overrides)
    if not refs:
        return outcome("drift", sev, True, 0.0, f"≤ {cfg['max_score']}", "first snapshot: nothing to compare")
    scores = {kind: {"snapshot": snap, **drift(current, ref)} for kind, (snap, ref) in refs.items()}
    worst = max(scores.values(), key=lambda d: d["score"])
    parts = ", ".join(f"{k} {worst[k]:.3f}" for k in COMPONENTS)
    return band("drift", sev, worst["score"], None, cfg["max_score"], f"drift against {worst['snapshot']} ({parts})")


def dedup_index_checks(cluster_files: list[str], overrides: dict) -> list[CheckOutcome]:
    con = scratch_connection()
    cfg, sev = settings("max_cluster_size", overrides)
    if not cluster_files:
        return [outcome("max_cluster_size", sev, True, 0, f"≤ {cfg['max_size']} documents", "ok")]
    clusters = f"read_parquet({sql_file_list(cluster_files)})"
    largest = con.sql(f"SELECT coalesce(max(cluster_size), 0) FROM {clusters}").fetchall()[0][0]
    # Per source, the largest share of its documents in one cluster (of more than max_size documents).
    # The clusters (keyed by survivor) with a member over max_size are found first, and only their
    # rows are grouped: the hash tables hold the large clusters, not a group per document.
    worst = con.sql(
        f"""WITH c AS (SELECT source, coalesce(duplicate_of_source, source) AS ks, coalesce(duplicate_of, id) AS k,
                              cluster_size FROM {clusters}),
                 big AS (SELECT DISTINCT ks, k FROM c WHERE cluster_size > {int(cfg["max_size"])}),
                 per AS (SELECT source, ks, k, count(*) AS n, max(cluster_size) AS size
                         FROM c SEMI JOIN big USING (ks, k) GROUP BY ALL),
                 docs AS (SELECT source, count(*) AS docs FROM c GROUP BY source)
            SELECT per.source, n / docs AS share, size FROM per JOIN docs USING (source)
            WHERE size > {int(cfg["max_size"])} ORDER BY share DESC, size DESC, per.source LIMIT 1"""
    ).fetchall()
    source, share, size = worst[0] if worst else (None, 0.0, largest)
    ok = share <= cfg["max_fraction"]
    examples = []
    if not ok:
        examples = [{"id": f"{s}/{i}", "snippet": f"cluster of {n} around {ds}/{d}"} for s, i, ds, d, n in con.execute(
            f"SELECT source, id, duplicate_of_source, duplicate_of, cluster_size FROM {clusters} "
            f"WHERE cluster_size = {size} AND fate = 'duplicate' ORDER BY source, id LIMIT {EXAMPLES}"
        ).fetchall()]
    con.close()
    expected = f"≤ {cfg['max_size']} documents or ≤ {cfg['max_fraction']:g} of a source"
    where = f" ({share:.0%} of {source}'s documents)" if source else ""
    return [outcome("max_cluster_size", sev, ok, int(largest), expected,
                    f"largest duplicate cluster = {int(size)}{where}, expected {expected}", examples)]


def deduplicated_checks(input_documents: int, kept: int, overrides: dict) -> list[CheckOutcome]:
    cfg, sev = settings("duplicate_rate", overrides)
    rate = (input_documents - kept) / input_documents if input_documents else 0.0
    out = [band("duplicate_rate", sev, rate, cfg["min_rate"], cfg["max_rate"], f"duplicate share of {input_documents} documents")]
    cfg, sev = settings("source_not_emptied", overrides)
    out.append(band("source_not_emptied", sev, kept, cfg["min_documents"], None, "documents left after dedup"))
    return out


# What the mixture checks' DuckDB may hold in memory; past it they spill into the stage's scratch
# folder (under data_root's _work), so the process running them stays this size.
MIXTURE_CHECKS_MEMORY_LIMIT = "512MB"


def bounded_connection():
    """A scratch DuckDB connection whose memory is MIXTURE_CHECKS_MEMORY_LIMIT whatever the mixture."""
    con = scratch_connection()
    con.execute(f"SET memory_limit='{MIXTURE_CHECKS_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order=false")
    return con


def mixture_checks(
    ledger: list[dict],
    max_epochs: dict[str, float],
    tolerance: float,
    out_dir: str,
    splits: dict[str, dict],
    pii_sources: dict[str, tuple[str, ...]],
    conservation_rows: list[dict] | None,
    overrides: dict,
    pii_found: list[dict] | None = None,
) -> list[CheckOutcome]:
    """`max_epochs` is each source's cap; `pii_sources` maps each source whose filters redact PII
    to the kinds they redact; they are searched with the redactor's own patterns.
    `conservation_rows` is None when the caller has no catalog (plain library use).
    `pii_found` is what `pii_hits` found in each split, when the tasks that wrote the splits
    searched them (the mixture stage); without it the shards are searched here."""
    import pandas as pd

    frame = pd.DataFrame(ledger)
    out = [_weights_within_tolerance(frame, tolerance, overrides), _epochs_within_cap(frame, max_epochs, overrides)]
    parts = {s: [os.path.join(out_dir, f) for f in info["files"]] for s, info in splits.items()}
    files = [f for fs in parts.values() for f in fs]
    with bounded_connection() as con:
        out.append(_splits_disjoint(con, parts, overrides))
        if pii_found is None:
            pii_found = pii_hits(con, files, pii_sources)
    return out + [_no_pii_left(pii_found, bool(files), pii_sources, overrides), _conservation(conservation_rows, overrides)]


def _weights_within_tolerance(frame, tolerance: float, overrides: dict) -> CheckOutcome:
    """`weights_within_tolerance`: each source's achieved weight is within `tolerance` (relative) of its target."""
    frame["relative_error"] = (frame.achieved_weight - frame.target_weight).abs() / frame.target_weight.where(frame.target_weight > 0, 1.0)
    cfg, sev = settings("weights_within_tolerance", overrides)
    ok, _ = expect(frame, "ExpectColumnValuesToBeBetween", column="relative_error", min_value=0, max_value=tolerance)
    off = frame[frame.relative_error > tolerance]
    return outcome("weights_within_tolerance", sev, ok,
                   {r.source: round(r.achieved_weight, 6) for r in frame.itertuples()},
                   f"relative error ≤ {tolerance}",
                   "; ".join(f"{r.source} achieved {r.achieved_weight:.4f} for target {r.target_weight:.4f}" for r in off.itertuples()))


def _epochs_within_cap(frame, max_epochs: dict[str, float], overrides: dict) -> CheckOutcome:
    """`epochs_within_cap`: no source is repeated more often than its cap."""
    cfg, sev = settings("epochs_within_cap", overrides)
    # Units over the cap, not the rounded `epochs`, so a source exactly at its cap passes.
    frame["cap_units"] = [max_epochs[s] * a for s, a in zip(frame.source, frame.available_units)]
    frame["epochs_headroom"] = frame.cap_units - frame.units
    ok, _ = expect(frame, "ExpectColumnValuesToBeBetween", column="epochs_headroom", min_value=-1e-6)
    over = frame[frame.epochs_headroom < -1e-6]
    return outcome("epochs_within_cap", sev, ok, {r.source: r.epochs for r in frame.itertuples()},
                   "; ".join(f"{s} ≤ {max_epochs[s]:g}" for s in frame.source),
                   "; ".join(f"{r.source} repeated {r.epochs:.2f} times (cap {max_epochs[r.source]:g})"
                             for r in over.itertuples()))


def _splits_disjoint(con, parts: dict[str, list[str]], overrides: dict) -> CheckOutcome:
    """`splits_disjoint`: no document is in more than one split.

    The largest split (train, as a rule) is only streamed past the others' (source, id) pairs, so
    the hash table holds the small splits' documents, not the mixture's."""
    present = {s: files for s, files in parts.items() if files}
    leaked = []
    if present:
        largest = max(present, key=lambda s: (sum(pq.ParquetFile(f).metadata.num_rows for f in present[s]), s))
        others = " UNION ALL ".join(
            f"SELECT DISTINCT source, id, '{s}' AS split FROM read_parquet({sql_file_list(files)})"
            for s, files in present.items() if s != largest
        ) or "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS id, NULL::VARCHAR AS split WHERE false"
        leaked = con.execute(
            f"""WITH others AS ({others}),
                     hits AS (SELECT DISTINCT source, id, '{largest}' AS split
                              FROM read_parquet({sql_file_list(present[largest])}) SEMI JOIN others USING (source, id))
                SELECT source, id, string_agg(split, ',' ORDER BY split)
                FROM (SELECT * FROM others UNION ALL SELECT * FROM hits) GROUP BY source, id
                HAVING count(*) > 1 ORDER BY source, id"""
        ).fetchall()
    cfg, sev = settings("splits_disjoint", overrides)
    return band("splits_disjoint", sev, len(leaked), 0, 0, "documents in more than one split",
                [{"id": f"{s}/{i}", "snippet": f"in {where}"} for s, i, where in leaked[:EXAMPLES]])


def pii_hits(con, files: list[str], pii_sources: dict[str, tuple[str, ...]]) -> list[dict]:
    """The documents of `files` (each distinct source, id and text once) in which the redactor's
    own patterns still find PII, for the sources in `pii_sources`: {id, snippet, text} with
    `text` a digest of the document's text, so hits in several splits count once (`_no_pii_left`)."""
    import xxhash

    from mix_pipeline.core.filters.pii import find_pii

    if not pii_sources or not files:
        return []
    sources = ", ".join(f"'{s}'" for s in pii_sources)
    found: list[dict] = []
    reader = con.sql(
        f"SELECT DISTINCT source, id, text FROM read_parquet({sql_file_list(files)}) WHERE source IN ({sources})"
    ).to_arrow_reader(2000)
    for batch in reader:
        for source, doc_id, text in zip(*(batch.column(c).to_pylist() for c in ("source", "id", "text"))):
            hit = find_pii(text, pii_sources[source])
            if hit:
                kind, m = hit
                found.append({"id": f"{source}/{doc_id}", "text": xxhash.xxh3_128_hexdigest(text.encode("utf-8")),
                              "snippet": f"{kind}: " + snippet(text[max(0, m.start() - 40): m.end() + 40])})
    return found


def _no_pii_left(found: list[dict], any_files: bool, pii_sources: dict[str, tuple[str, ...]], overrides: dict) -> CheckOutcome:
    """`no_pii_left`: the redactor's own patterns find nothing in the sources whose filters redact
    PII (`found`: `pii_hits` of the mixture's splits)."""
    cfg, sev = settings("no_pii_left", overrides)
    if not pii_sources or not any_files:
        return outcome("no_pii_left", sev, True, None, "n/a", "no source of this mixture asks for PII redaction")
    # A document in several splits is one document (its hits there are the same).
    distinct = list({(hit["id"], hit["text"]): hit for hit in found}.values())
    return band("no_pii_left", sev, len(distinct), 0, 0, f"documents of {sorted(pii_sources)} with PII left",
                [{"id": hit["id"], "snippet": hit["snippet"]} for hit in distinct[:EXAMPLES]])


def _conservation(conservation_rows: list[dict] | None, overrides: dict) -> CheckOutcome:
    """`conservation`: the catalog accounts for every record of every source."""
    import pandas as pd

    cfg, sev = settings("conservation", overrides)
    rows = pd.DataFrame(conservation_rows or [])
    if conservation_rows is None:
        return outcome("conservation", sev, True, None, "n/a", "no catalog was given to check against")
    if rows.empty:
        return outcome("conservation", sev, False, None, "a catalog row per source", "the catalog has no conservation rows")
    ok, _ = expect(rows, "ExpectColumnValuesToBeInSet", column="balanced", value_set=[True])
    bad = rows[~rows.balanced.astype(bool)]
    return outcome("conservation", sev, ok,
                   {r.source: "balanced" if r.balanced else "not balanced" for r in rows.itertuples()},
                   "records = kept + dropped + duplicate + quarantined",
                   "; ".join(f"{r.source}: {r.records} records but {r.kept}+{r.dropped}+{r.duplicate}+{r.quarantined}"
                             for r in bad.itertuples()))
