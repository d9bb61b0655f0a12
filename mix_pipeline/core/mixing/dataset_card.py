"""A Hugging Face dataset card (README.md) for each mixture, generated from its manifest and the catalog.

The YAML header follows the Hub's dataset-card metadata (pretty_name, license, configs with
the split files, dataset_info with the split sizes, ...) plus a `mix_pipeline` block holding
the manifest's numbers; it is parsed back with huggingface_hub's DatasetCard before it is
written, offline. The card sits next to manifest.json; `output_sha256` covers the data files
only, so the card never moves it.
"""

from __future__ import annotations

import json
import os

import yaml

from mix_pipeline.core.filters.registry import DECONTAMINATION, LANGUAGE, PII
from mix_pipeline.core.io.documents import write_text_atomic
from mix_pipeline.core.mixing.licenses import UNKNOWN, hf_license
from mix_pipeline.core.mixing.splits import SPLITS
from mix_pipeline.names import FATE_DROPPED, FATES


CARD_FILE = "README.md"
# The card header's field listing the languages (Hugging Face's dataset-card metadata), and the
# column of the catalog facts it is read from.
HEADER_LANGUAGE = "language"


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < bound:
            return label
    return "n>1T" if n >= 10**12 else "1B<n<10B"


def _rows(con, sql: str, params=()) -> list[dict]:
    cur = con.execute(sql, list(params))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def catalog_facts(con, sources: list[str]) -> dict:
    """What the catalog knows about the documents of `sources`: fates, drops per filter, PII,
    decontamination. Empty lists where the catalog has no such table yet."""
    marks = ", ".join("?" for _ in sources)
    facts = {
        "fates": _rows(con, f"SELECT * FROM conservation WHERE source IN ({marks}) ORDER BY source", sources),
        "drops": _rows(con, f"""SELECT source, split_part(reason, ':', 1) AS filter, count(*) AS documents
                                FROM document_fates WHERE stage = 'filtered' AND fate = '{FATE_DROPPED}'
                                AND source IN ({marks}) GROUP BY ALL ORDER BY source, filter""", sources),
        PII: _rows(con, f"""SELECT source, kind, sum(documents) AS documents, sum(matches) AS replacements
                              FROM filter_counts WHERE filter = '{PII}' AND source IN ({marks})
                              GROUP BY ALL ORDER BY source, kind""", sources),
        DECONTAMINATION: _rows(con, f"""SELECT source, kind AS eval_set, sum(documents) AS contaminated_documents,
                                                 sum(matches) AS shared_ngrams FROM filter_counts
                                          WHERE filter = '{DECONTAMINATION}' AND source IN ({marks})
                                          GROUP BY ALL ORDER BY source, eval_set""", sources),
        "languages": _rows(con, f"""SELECT kind AS {HEADER_LANGUAGE}, sum(documents) AS documents FROM filter_counts
                                    WHERE filter = '{LANGUAGE}' AND source IN ({marks}) GROUP BY ALL
                                    ORDER BY documents DESC, {HEADER_LANGUAGE}""", sources),
    }
    return facts


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_none_\n"
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


def card_header(recipe, name: str, manifest: dict, facts: dict) -> dict:
    licenses = sorted(manifest.get("licenses", {}))
    hf = sorted({hf_license(part) for lic in licenses for part in lic.split(" AND ")}) or ["unknown"]
    splits = {s: manifest["splits"][s] for s in SPLITS if s in manifest["splits"]}
    rows = sum(v["documents"] for v in splits.values())
    languages = [lang for lang in (r[HEADER_LANGUAGE] for r in facts.get("languages", []))
                 if isinstance(lang, str) and lang.isalpha() and len(lang) in (2, 3)]
    header = {
        "pretty_name": f"{recipe.name}: {name}",
        "license": hf if len(hf) > 1 else hf[0],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(rows)],
        "tags": ["mix_pipeline", "training-data-mixture"],
        "configs": [{"config_name": "default", "data_files": [
            {"split": s, "path": f"{s}/*.parquet"} for s, v in splits.items() if v["files"]]}],
        "dataset_info": {"splits": [{"name": s, "num_examples": v["documents"]} for s, v in splits.items()]},
        "mix_pipeline": {
            "mixture": name,
            "recipe_sha256": manifest["recipe_sha256"],
            "output_sha256": manifest["output_sha256"],
            "seed": manifest["seed"],
            "unit": manifest["unit"],
            "total_target": manifest["total_target"],
            "total_units": manifest["total_units"],
            "sources": {s: {k: row[k] for k in ("requested_weight", "target_weight", "achieved_weight", "units",
                                                "tokens", "documents", "rows", "epochs")}
                        for s, row in sorted(manifest["sources"].items())},
            "splits": {s: {"rows": v["documents"], "units": v["units"], "tokens": v["tokens"]} for s, v in splits.items()},
            "licenses": manifest.get("licenses", {}),
        },
    }
    if languages:
        header[HEADER_LANGUAGE] = languages
    if "license_filter" in manifest:
        lf = manifest["license_filter"]
        header["mix_pipeline"]["license_filter"] = {k: lf[k] for k in (
            "allowed", "excluded_documents", "excluded_tokens", "excluded_share_of_documents", "excluded_share_of_tokens")}
    return header


def card_text(recipe, name: str, manifest: dict, facts: dict) -> str:
    header = card_header(recipe, name, manifest, facts)
    lines = (_composition(recipe, manifest, header) + _processing(recipe, manifest, facts)
             + _pii_and_decontamination(recipe, facts) + _licenses(manifest) + _reproducibility(manifest))
    lines += ["## Known limitations", ""] + [f"- {x}" for x in limitations(recipe, manifest, facts)] + [""]
    body = "\n".join(lines)
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def _composition(recipe, manifest: dict, header: dict) -> list[str]:
    """The card's title, its introduction and the Composition section (sources, splits, rebalancing)."""
    unit = manifest["unit"]
    sources = sorted(manifest["sources"])
    comp = [{"source": s, "domain": recipe.domain_of(s) if s in recipe.sources else "",
             **{k: manifest["sources"][s][k] for k in ("requested_weight", "achieved_weight", "units", "documents",
                                                        "rows", "epochs")}} for s in sources]
    weighting = manifest["weighting"]
    lines = [f"# {header['pretty_name']}", "",
             f"A training-data mixture built by mix_pipeline from recipe `{recipe.name}` "
             f"(recipe sha256 `{manifest['recipe_sha256']}`). This card is generated from the mixture's "
             "manifest.json and the pipeline's catalog; do not edit it by hand.", "",
             "## Composition", "",
             f"{manifest['total_units']:,} {unit} (target {manifest['total_target']:,}), weighting "
             f"{weighting['kind']}" + (f" (temperature {weighting['temperature']})" if "temperature" in weighting else "")
             + f", seed {manifest['seed']}, tokenizer {manifest['tokenizer']}.", "",
             _table(comp, ["source", "domain", "requested_weight", "achieved_weight", "units", "documents", "rows", "epochs"]),
             "### Splits", "",
             _table([{"split": s, **v} for s, v in header["mix_pipeline"]["splits"].items()], ["split", "rows", "units", "tokens"])]
    if manifest.get("rebalanced"):
        lines += ["Rebalanced: " + ", ".join(f"{s} short by {n:,} {unit}" for s, n in sorted(manifest["rebalanced"].items()))
                  + " (moved to the other sources by weight).", ""]
    return lines


def _processing(recipe, manifest: dict, facts: dict) -> list[str]:
    """Processing: every stage's counts per source, from the catalog, and each source's filters."""
    sources = sorted(manifest["sources"])
    drops = {}
    for r in facts.get("drops", []):
        drops.setdefault(r["source"], []).append(f"{r['filter']}: {r['documents']:,}")
    funnel = [{**{k: r.get(k) for k in ("source", "records", *FATES)}, "dropped_by": "; ".join(drops.get(r["source"], []))}
              for r in facts.get("fates", [])]
    return ["## Processing", "",
            "Every input record ends with exactly one fate (records = " + " + ".join(FATES) + "): read and "
            "normalised (unreadable records quarantined), quality and safety filters"
            + (", decontamination against eval sets" if recipe.decontamination is not None else "")
            + ", PII redaction where configured, exact and near-duplicate removal across sources and snapshots, "
            "then weighted sampling. Counts per source over all its snapshots:", "",
            _table(funnel, ["source", "records", *FATES, "dropped_by"]),
            "Filters per source (in order): " + "; ".join(
                f"{s}: {', '.join(([DECONTAMINATION] if recipe.decontamination is not None else []) + [f.name for f in recipe.sources[s].filters]) or 'none'}"
                for s in sources if s in recipe.sources) + ".", ""]


def _pii_and_decontamination(recipe, facts: dict) -> list[str]:
    lines = ["## Personal information (PII)", "",
             "Redactions made (kinds and counts, never the values):", "",
             _table(facts.get(PII, []), ["source", "kind", "documents", "replacements"])]
    lines += ["## Decontamination", ""]
    if recipe.decontamination is None:
        lines += ["Not configured for this recipe.", ""]
    else:
        d = recipe.decontamination
        lines += [f"Word {d.ngram}-grams shared with the eval sets, mode `{d.mode}`:", "",
                  _table(facts.get(DECONTAMINATION, []), ["source", "eval_set", "contaminated_documents", "shared_ngrams"])]
    return lines


def _licenses(manifest: dict) -> list[str]:
    lic_rows = [{"license": k, **v} for k, v in manifest.get("licenses", {}).items()]
    lines = ["## Licenses", "",
             f"Per document: the input's license field, else a detected file header, else the source's license "
             f"in the recipe, else `{UNKNOWN}`. Share of the mixture's {manifest['unit']}:", "",
             _table(lic_rows, ["license", "rows", "units", "share"])]
    if "license_filter" in manifest:
        lf = manifest["license_filter"]
        lines += [f"Only {', '.join(lf['allowed'])} allowed: {lf['excluded_documents']:,} document(s) "
                  f"({lf['excluded_tokens']:,} tokens, {lf['excluded_share_of_documents']:.2%} of the documents "
                  "available) were left out.", ""]
    return lines


def _reproducibility(manifest: dict) -> list[str]:
    return ["## Reproducibility", "",
            f"- recipe sha256: `{manifest['recipe_sha256']}`",
            f"- output sha256 (data files): `{manifest['output_sha256']}`",
            f"- seed: {manifest['seed']}",
            "- trace any row to its origin: `mix-pipeline trace --recipe RECIPE MIXTURE/SPLIT/part-NNNNN.parquet:ROW`", ""]


def limitations(recipe, manifest: dict, facts: dict) -> list[str]:
    out = []
    sources = sorted(manifest["sources"])
    pii_sources = [s for s in sources if s in recipe.sources and any(f.name == PII for f in recipe.sources[s].filters)]
    if pii_sources:
        out.append(f"PII redaction is pattern-based (emails, phone numbers, IPs, card numbers, secret keys) on "
                   f"{', '.join(pii_sources)}; names and addresses are not redacted.")
    others = [s for s in sources if s not in pii_sources]
    if others:
        out.append(f"No PII redaction on {', '.join(others)}.")
    if recipe.decontamination is None:
        out.append("Not decontaminated against any eval set.")
    else:
        out.append(f"Decontamination matches exact word {recipe.decontamination.ngram}-grams: paraphrased eval items are not found.")
    unknown = manifest.get("licenses", {}).get(UNKNOWN)
    if unknown:
        out.append(f"{unknown['share']:.2%} of the {manifest['unit']} have no known license.")
    out.append("Licenses come from the input's fields, file headers and the recipe; they are not legal advice.")
    if manifest.get("rebalanced"):
        out.append(f"Sources could not supply their weight and were rebalanced: {', '.join(sorted(manifest['rebalanced']))}.")
    repeated = [s for s, r in manifest["sources"].items() if r["epochs"] > 1]
    if repeated:
        out.append(f"Repeated data (more than one epoch): {', '.join(sorted(repeated))}.")
    removed = sum(r.get("removed") or 0 for r in facts.get("fates", []))
    if removed:
        out.append(f"{removed:,} document(s) were removed on request and are in no output.")
    if recipe.dedup.minhash is not None:
        out.append(f"Near-duplicates are MinHash estimates (threshold {recipe.dedup.minhash.threshold}); a few may remain.")
    return out


def parse_card(text: str):
    """Parse a card with huggingface_hub's DatasetCard (offline); raises ValueError if its header is not valid."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(text, ignore_metadata_errors=False)
    if not card.data.to_dict().get("mix_pipeline"):
        raise ValueError("the dataset card's YAML header has no mix_pipeline block")
    return card


def write_dataset_card(con, recipe, name: str, folder: str) -> str:
    """Write README.md next to the mixture's manifest.json; returns its path."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    facts = catalog_facts(con, sorted(manifest["sources"])) if con is not None else {}
    text = card_text(recipe, name, manifest, facts)
    parse_card(text)
    path = os.path.join(folder, CARD_FILE)
    write_text_atomic(path, text)
    return path
