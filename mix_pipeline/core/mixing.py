"""Choosing a mixture's documents to hit target weights, and writing it out.

Selection works on (id, units) per source — never on text — so planning a mixture over
millions of documents is arrays and sorting. For each source the target is
`total × weight / Σweights` units. Whole passes over the source are taken while the target
allows (each a new epoch, capped by `max_epochs`), then the remainder is filled from a seeded
order: the longest prefix that fits, then the next documents small enough to fit the gap.
Documents are ranked by a hash of (seed, source, id), so the choice does not depend on shard
layout, worker count or input order, and the same seed always picks the same documents.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

SPLITS = ("train", "validation", "test")
# How many gap-filling picks to try after the prefix; each is one vectorised scan.
_MAX_FILL_STEPS = 10_000
# Exchanges tried after the greedy fill to close the last gap.
_SWAP_ROUNDS = 3


class InfeasibleMixture(ValueError):
    pass


@dataclass
class SourceLedger:
    source: str
    target_weight: float
    achieved_weight: float
    target_units: int
    units: int
    documents: int
    rows: int
    available_units: int
    available_documents: int
    epochs: float


def _hash64(parts: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(p.encode("utf-8")) for p in parts), dtype=np.uint64, count=len(parts))


def seeded_order(seed: int, source: str, ids: list[str]) -> np.ndarray:
    keys = _hash64([f"{seed}\x1f{source}\x1f{i}" for i in ids])
    return np.argsort(keys, kind="stable")


def split_of(source: str, ids: list[str], validation: float, test: float) -> np.ndarray:
    """0 = train, 1 = validation, 2 = test. Keyed on the document alone (not the seed), so a
    document sits in the same split in every mixture and all its repeats go together."""
    u = _hash64([f"split\x1f{source}\x1f{i}" for i in ids]).astype(np.float64) / 2.0**64
    return np.where(u < validation, 1, np.where(u < validation + test, 2, 0)).astype(np.int8)


def fill_remainder(units: np.ndarray, target: int, limit: int | None = None) -> np.ndarray:
    """Boolean mask over `units` (already in seeded order) whose sum lands as close to `target`
    as it cheaply can: the longest prefix that fits, then the next documents small enough for
    the gap, then a few swaps of one taken document for one untaken document that shrink the
    remaining error. The sum never exceeds `limit` (the epoch cap)."""
    take = np.zeros(len(units), dtype=bool)
    if target <= 0 or len(units) == 0:
        return take
    limit = target if limit is None else max(limit, 0)
    prefix = int(np.searchsorted(np.cumsum(units), target, side="right"))
    take[:prefix] = True
    gap = target - int(units[:prefix].sum())
    rest = np.arange(prefix, len(units))
    for _ in range(_MAX_FILL_STEPS):
        if gap <= 0 or len(rest) == 0:
            break
        fits = rest[units[rest] <= gap]
        if len(fits) == 0:
            break
        pick = fits[0]
        take[pick] = True
        gap -= int(units[pick])
        rest = fits[1:]
    for _ in range(_SWAP_ROUNDS):
        if gap == 0:
            break
        gap = _best_swap(units, take, gap, slack=limit - target)
    return take


def _best_swap(units: np.ndarray, take: np.ndarray, gap: int, slack: int) -> int:
    """Apply the single exchange (drop taken i, add untaken j; adding j alone is the case of
    i = nothing) whose change u_j - u_i best closes `gap`; return the new gap."""
    taken, untaken = np.flatnonzero(take), np.flatnonzero(~take)
    if len(untaken) == 0:
        return gap
    order = untaken[np.argsort(units[untaken], kind="stable")]
    sorted_units = units[order]
    out_units = np.concatenate([[0], units[taken]])  # 0: add without removing
    want = out_units + gap
    pos = np.searchsorted(sorted_units, want)
    best = (abs(gap), -1, -1)
    for shift in (-1, 0):
        j = np.clip(pos + shift, 0, len(order) - 1)
        delta = sorted_units[j] - out_units
        new_gap = gap - delta
        ok = -new_gap <= slack  # the sum may pass the target only within the cap
        err = np.where(ok, np.abs(new_gap), np.iinfo(np.int64).max)
        k = int(np.argmin(err))
        if err[k] < best[0]:
            best = (int(err[k]), k, int(order[j[k]]))
    _, k, j = best
    if j < 0:
        return gap
    if k > 0:
        take[taken[k - 1]] = False
    take[j] = True
    return gap - (int(units[j]) - int(out_units[k]))


def plan_source(source: str, ids: list[str], units: np.ndarray, target: int, max_epochs: float, seed: int):
    """Returns (doc index array, repeat array) of the chosen rows."""
    available = int(units.sum())
    if target > 0 and available == 0:
        raise InfeasibleMixture(f"source '{source}' has no documents left after filtering and dedup")
    if target > available * max_epochs:
        raise InfeasibleMixture(
            f"source '{source}' is short: the target needs {target:,} units but {available:,} are available "
            f"and max_epochs={max_epochs:g} allows {math.floor(available * max_epochs):,} "
            f"(short by {target - math.floor(available * max_epochs):,})"
        )
    full = min(target // available, math.floor(max_epochs)) if available else 0
    order = seeded_order(seed, source, ids)
    cap = math.floor(available * max_epochs) - full * available
    rem_mask = fill_remainder(units[order], target - full * available, limit=cap)
    n = len(ids)
    doc_idx = [np.arange(n)] * full + [order[rem_mask]]
    repeats = [np.full(n, r, dtype=np.int32) for r in range(full)] + [np.full(int(rem_mask.sum()), full, dtype=np.int32)]
    return np.concatenate(doc_idx), np.concatenate(repeats)


def _targets(spec, total: float) -> dict[str, int]:
    weight_sum = sum(spec.weights.values())
    return {s: int(round(total * w / weight_sum)) for s, w in spec.weights.items()}


def plan_mixture(name: str, spec, pools: dict[str, tuple[list[str], np.ndarray]]) -> tuple[pa.Table, list[SourceLedger]]:
    """`pools[source] = (ids, units)`. Returns the selection table and the per-source ledger.

    Documents are indivisible, so a source of few large documents can miss its target by up to
    one document. Weights matter more than the exact total, so when a source misses, the total
    is re-anchored on it and the other sources re-planned (a few rounds, only while every
    source stays within its epoch cap); the manifest reports the achieved total.
    """
    weight_sum = sum(spec.weights.values())
    weights = {s: w / weight_sum for s, w in spec.weights.items()}
    available = {s: int(pools[s][1].sum()) for s in spec.weights}
    targets = _targets(spec, spec.total)
    plans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(4):
        for source in sorted(spec.weights):
            ids, units = pools[source]
            try:
                plans[source] = plan_source(source, ids, units, targets[source], spec.max_epochs, spec.seed)
            except InfeasibleMixture as exc:
                raise InfeasibleMixture(f"mixture '{name}': {exc}") from None
        got = {s: int(pools[s][1][plans[s][0]].sum()) for s in spec.weights}
        total_got = sum(got.values())
        errors = {s: abs(got[s] / total_got - weights[s]) / weights[s] for s in spec.weights if weights[s] > 0 and total_got}
        if not errors or max(errors.values()) <= spec.tolerance / 4:
            break
        worst = max(errors, key=lambda s: (errors[s], s))
        anchored = _targets(spec, got[worst] / weights[worst])
        anchored[worst] = targets[worst]
        if any(anchored[s] > available[s] * spec.max_epochs for s in spec.weights):
            break
        targets = anchored

    tables, ledger = [], []
    for source in sorted(spec.weights):
        ids, units = pools[source]
        idx, rep = plans[source]
        chosen_ids = [ids[i] for i in idx.tolist()]
        split = split_of(source, chosen_ids, spec.splits.validation, spec.splits.test)
        order_key = _hash64([f"{spec.seed}\x1forder\x1f{source}\x1f{i}\x1f{r}" for i, r in zip(chosen_ids, rep.tolist())])
        tables.append(
            pa.table(
                {
                    "source": pa.array([source] * len(idx), pa.string()),
                    "id": pa.array(chosen_ids, pa.string()),
                    "repeat": pa.array(rep, pa.int32()),
                    "units": pa.array(units[idx], pa.int64()),
                    "split": pa.array([SPLITS[s] for s in split.tolist()], pa.string()),
                    "order_key": pa.array(order_key.view(np.int64), pa.int64()),
                }
            )
        )
        chosen_units = int(units[idx].sum())
        ledger.append(
            SourceLedger(
                source=source,
                target_weight=round(weights[source], 6),
                achieved_weight=0.0,
                target_units=targets[source],
                units=chosen_units,
                documents=len(set(idx.tolist())),
                rows=len(idx),
                available_units=available[source],
                available_documents=len(ids),
                epochs=round(chosen_units / available[source], 4) if available[source] else 0.0,
            )
        )
    total_units = sum(row.units for row in ledger)
    for row in ledger:
        row.achieved_weight = round(row.units / total_units, 6) if total_units else 0.0
    return pa.concat_tables(tables), ledger


def write_mixture(
    selection: pa.Table,
    source_files: dict[str, list[str]],
    out_dir: str,
    shard_rows: int,
    duckdb_temp_dir: str,
    log=lambda msg: None,
) -> dict[str, dict]:
    """Join the selection with the deduplicated documents and write shuffled shards per split.

    DuckDB streams the join in `order_key` order (spilling to disk when it must); pyarrow writes
    fixed-size shards, so the same selection always yields the same bytes.
    """
    import duckdb

    os.makedirs(duckdb_temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{duckdb_temp_dir}'")
    con.execute("SET memory_limit='1GB'")
    con.register("selection", selection)
    files = [f for source in sorted(source_files) for f in source_files[source]]
    file_list = ", ".join(f"'{f}'" for f in files)
    con.execute(
        f"""CREATE VIEW docs AS SELECT id, text, source, domain, metadata, n_tokens
            FROM read_parquet([{file_list}])"""
    )
    splits: dict[str, dict] = {}
    for split in SPLITS:
        split_dir = os.path.join(out_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        reader = con.sql(
            f"""
            SELECT d.id, d.text, d.source, d.domain, d.n_tokens, s.repeat AS epoch, d.metadata
            FROM selection s JOIN docs d ON d.source = s.source AND d.id = s.id
            WHERE s.split = '{split}'
            ORDER BY s.order_key, s.source, s.id, s.repeat
            """
        ).to_arrow_reader(shard_rows)
        files_out, rows = [], 0
        writer, in_shard = None, 0
        for batch in reader:
            offset = 0
            while offset < batch.num_rows:
                if writer is None:
                    path = os.path.join(split_dir, f"part-{len(files_out):05d}.parquet")
                    writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                    files_out.append(path)
                    in_shard = 0
                take = min(shard_rows - in_shard, batch.num_rows - offset)
                writer.write_table(pa.Table.from_batches([batch.slice(offset, take)]), row_group_size=shard_rows)
                in_shard += take
                offset += take
                if in_shard == shard_rows:
                    writer.close()
                    writer = None
            rows += batch.num_rows
        if writer is not None:
            writer.close()
        units = int(pc.sum(selection.filter(pc.equal(selection["split"], split))["units"]).as_py() or 0)
        splits[split] = {
            "documents": rows,
            "units": units,
            "files": [os.path.relpath(f, out_dir) for f in files_out],
        }
        log(f"mixture: {split}: {rows} rows in {len(files_out)} shard(s)")
    con.close()
    return splits


def output_digest(out_dir: str, splits: dict[str, dict]) -> str:
    """sha256 over the (relative path, sha256) of every output shard, in order."""
    from mix_pipeline.core.documents import file_sha256

    h = hashlib.sha256()
    for split in SPLITS:
        for rel in splits[split]["files"]:
            h.update(f"{rel}\0{file_sha256(os.path.join(out_dir, rel))}\n".encode())
    return h.hexdigest()


def build_manifest(name: str, spec, recipe_sha256: str, tokenizer: str, ledger: list[SourceLedger], splits: dict, output_sha256: str) -> dict:
    return {
        "mixture": name,
        "recipe_sha256": recipe_sha256,
        "seed": spec.seed,
        "unit": spec.unit,
        "tokenizer": tokenizer,
        "total_target": spec.total,
        "total_units": sum(row.units for row in ledger),
        "max_epochs": spec.max_epochs,
        "sources": {
            row.source: {k: v for k, v in asdict(row).items() if k != "source"} for row in ledger
        },
        "splits": splits,
        "output_sha256": output_sha256,
    }


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
