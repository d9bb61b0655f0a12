"""ground_truth.json: every planted defect with its document id, and the corpus's counts."""

from __future__ import annotations

from mix_pipeline.sample.chat import chat_bytes
from mix_pipeline.sample.defects import LOW_QUALITY_KINDS
from mix_pipeline.sample.docs import PII_DEFECT, Doc
from mix_pipeline.sample.sizes import SOURCE_SHARES


def ground_truth(size_mb: float, seed: int, sources: dict[str, list[Doc]], code: list[tuple[str, bytes]],
                 bad_code: list[tuple[str, str]], evals: dict[str, list[dict]], chat: dict[str, list[dict]]) -> dict:
    gt: dict = {k: [] for k in ("exact_duplicates", "near_duplicates", "cross_source_duplicates", "spam", "short",
                                "long", "non_english", "offensive", "contaminated", PII_DEFECT, "bad_code", "low_quality",
                                "version_strings")}
    for docs in sources.values():
        for d in docs:
            ref = {"source": d.source, "id": d.id}
            if d.kind in ("exact", "near"):
                gt[f"{d.kind}_duplicates"].append(ref | {"of_source": d.of.source, "of_id": d.of.id})
            elif d.kind == "cross":
                gt["cross_source_duplicates"].append(ref | {"of_source": d.of.source, "of_id": d.of.id} | d.info)
            elif d.kind in ("spam", "non_english", "offensive", "contaminated"):
                gt[d.kind].append(ref | d.info)
                if d.kind == "spam":
                    gt["low_quality"].append(ref | {"kind": LOW_QUALITY_KINDS[d.info["kind"]], "planted_as": d.info["kind"]})
            elif d.kind in ("short", "long"):
                gt[d.kind].append(ref)
            elif d.kind == PII_DEFECT:
                gt[PII_DEFECT] += [ref | {"kind": kind, "value": value, "format": fmt} for kind, value, fmt in d.info[PII_DEFECT]]
                gt["version_strings"] += [ref | {"value": v} for v in d.info["versions"]]
    gt["bad_code"] = [{"source": "code", "id": rel, "kind": kind} for rel, kind in bad_code]
    for entries in gt.values():
        entries.sort(key=lambda e: (e["source"], e["id"], e.get("kind", ""), e.get("value", "")))
    counts: dict = {s: {"documents": len(docs), "bytes": sum(d.nbytes for d in docs)} for s, docs in sources.items()}
    counts["code"] = {"documents": len(code), "bytes": sum(len(data) for _, data in code)}
    counts = {s: counts[s] for s in SOURCE_SHARES}
    for kind, records in chat.items():
        counts[f"chat_{kind}"] = {"documents": len(records), "bytes": sum(chat_bytes(r) for r in records)}
    counts["total_documents"] = sum(c["documents"] for c in counts.values())
    gt["eval_sets"] = {name: {"file": f"evals/{name}.jsonl", "items": len(records)} for name, records in sorted(evals.items())}
    return gt | {"counts": counts, "seed": seed, "size_mb": float(size_mb)}
