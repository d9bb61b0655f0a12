"""The lab's outputs, all made from a results dict: results.json (strict JSON), recommended.yaml
(the recommendation as a mixture block to paste into the recipe) and the self-contained
report.html, plus the tables and lines the CLI and the `mixture_lab` asset show.
Nothing here imports Dagster.
"""

from __future__ import annotations

import html
import json
import math
import os

import yaml

from mix_pipeline.core.io.documents import write_text_atomic
from mix_pipeline.names import RECOMMENDED_SUFFIX


def _finite(value):
    """NaN (a Spearman over too few candidates) as null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_results(out: str, results: dict) -> None:
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "results.json"), json.dumps(_finite(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    write_text_atomic(os.path.join(out, "recommended.yaml"), recommended_yaml(results))
    write_text_atomic(os.path.join(out, "report.html"), report_html(results))


def recommended_block(experiment: str, prior_spec, weights: dict[str, float]) -> dict:
    """The prior mixture with the recommended weights, as recipe YAML data (only non-default keys)."""
    spec = prior_spec.model_copy(update={"weights": dict(weights), "temperature": None})
    return {experiment + RECOMMENDED_SUFFIX: spec.model_dump(mode="json", exclude_defaults=True)}


def recommended_yaml(results: dict) -> str:
    head = (f"# Recommended by the mixture lab, experiment '{results['experiment']}' (prior: {results['prior']}).\n"
            "# Paste under `mixtures:` in the recipe, or build it with "
            "`mix-pipeline lab --recipe R --experiment E --materialize`.\n")
    return head + yaml.safe_dump(results["recommended_mixture"], sort_keys=True)


def recommended_spec(results: dict):
    from mix_pipeline.recipe import MixtureSpec

    (name, block), = results["recommended_mixture"].items()
    return name, MixtureSpec.model_validate(block)


def candidate_rows(results: dict) -> list[dict]:
    """One flat row per candidate (and the recommendation): weights, per-domain loss, objective."""
    rows = []
    for c in results["candidates"] + [results["recommended"]]:
        row = {"candidate": c["name"], "kind": c["kind"]}
        row |= {f"w_{s}": c["achieved"].get(s) for s in results["sources"]}
        row |= {f"loss_{d}": c["losses"].get(d) for d in results["domains"]}
        row |= {"objective": c["objective"], "predicted": c["predicted"]}
        rows.append(row)
    return rows


def weight_rows(results: dict) -> list[dict]:
    """Recommended weights next to the hand-written ones (the recipe's mixtures among the candidates)."""
    named = [c for c in results["candidates"] if c["kind"] in ("prior", "mixture", "uniform")] + [results["recommended"]]
    return [{"source": s, **{c["name"]: c["weights"].get(s) for c in named}} for s in results["sources"]]


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


def _svg_scatter(results: dict) -> str:
    pts = [(c["predicted"], c["objective"], c["name"]) for c in results["candidates"] + [results["recommended"]]
           if c["predicted"] is not None]
    if len(pts) < 2:
        return "<p>(too few candidates to plot)</p>"
    lo = min(min(p, o) for p, o, _ in pts)
    hi = max(max(p, o) for p, o, _ in pts)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    size, margin = 360, 40

    def xy(p, o):
        return (margin + (p - lo) / (hi - lo) * (size - 2 * margin), size - margin - (o - lo) / (hi - lo) * (size - 2 * margin))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-size="10">',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{margin}" stroke="#bbb"/>',
             f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">predicted objective (leave-one-out)</text>',
             f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">observed objective</text>',
             f'<text x="{margin}" y="{size - margin + 12}">{lo:.3f}</text>',
             f'<text x="{size - margin}" y="{size - margin + 12}" text-anchor="end">{hi:.3f}</text>']
    for p, o, name in pts:
        x, y = xy(p, o)
        colour = "#d62728" if name == results["recommended"]["name"] else "#1f77b4"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{html.escape(name)}: '
                     f'predicted {p:.4f}, observed {o:.4f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def proxy_line(results: dict) -> str:
    p = results["proxy"]
    if p.get("parameters"):
        return (f"neural (byte-level transformer, {p['parameters']:,} parameters, {p['layers']} layers x {p['d_model']}, "
                f"{p['steps']} steps of {p['batch']}x{p['seq_len']} bytes, {p['device']})")
    return str(p["kind"])


def transfer_rows(results: dict) -> list[dict]:
    return [{"check": c["check"], "a": c["a"], "b": c["b"], "candidates": c["candidates"], "spearman": c["spearman"],
             "proxies trained": c["proxies_trained"], "verdict": c["verdict"]}
            for c in (results.get("transfer") or {}).get("checks", [])]


def reuse_line(results: dict) -> str:
    r = results.get("reuse")
    if not r:
        return ""
    if r["mode"] == "unchanged":
        return f"Reuse: no source changed since the last run; its results were reused (0 proxies trained, a fresh experiment trains {r['fresh_proxies']})."
    return (f"Reuse: changed source(s) {', '.join(r['changed_sources'])}; the others moved together in the previous "
            f"recommendation's proportions {r['unchanged_ratios']}. Proxies trained: {r['proxies_trained']} (a fresh "
            f"experiment trains {r['fresh_proxies']}; {100 * r['compute_saved']:.0f}% of the proxy compute saved). "
            f"L1 distance to the previous recommendation: {r['l1_to_previous_recommendation']}.")


def report_html(results: dict) -> str:
    rec = results["recommended"]
    spearman = results["spearman_loo"]
    transfer = results.get("transfer")
    transfer_html = "" if not transfer else (
        f"<h2>Does the ranking transfer?</h2><p><b>{html.escape(transfer['verdict'])}</b></p>"
        f"<p>Spearman rank correlation of the candidates' objectives between proxy kinds, proxy sizes and data "
        f"quantities (1 = same order).</p>{_html_table(transfer_rows(results))}")
    chosen = results.get("chosen", {"verdict": "", "weights": rec["weights"]})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Mixture lab: {html.escape(results['experiment'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Mixture lab: {html.escape(results['experiment'])}</h1>
<p>Prior mixture <b>{html.escape(results['prior'])}</b>; {len(results['candidates'])} candidates of
{results['lab_total']:,} {html.escape(results['unit'])} each, proxy: {html.escape(proxy_line(results))}.
Losses are nats per {'byte' if results['proxy'].get('tokenizer') == 'bytes' else 'word'} on each domain's held-out set (lower is better); the objective weighs them by
{html.escape(json.dumps(results['objective_weights']))}.</p>
<p><b>Recommended</b> ({html.escape(rec['name'])}): observed objective {rec['objective']:.4f}, predicted
{_cell(rec['predicted'])}; {results['improvement_vs_uniform']:+.4f} better than uniform,
{results['improvement_vs_prior']:+.4f} better than the prior (positive = better).
Leave-one-out Spearman (predicted vs observed objective): {_cell(spearman)}.</p>
<p><b>Against the candidates:</b> {html.escape(chosen['verdict'])}. Recommended weights:
{html.escape(json.dumps(chosen['weights']))}.</p>
<p>{html.escape(reuse_line(results))}</p>{transfer_html}
<h2>Recommended weights next to the hand-written ones</h2>{_html_table(weight_rows(results))}
<h2>Loss per candidate</h2>
<p>w_* are the achieved weights of each small mixture; <i>predicted</i> comes from a fit that left that
candidate out (for the recommendation: the fit on every candidate).</p>{_html_table(candidate_rows(results))}
<h2>Predicted vs observed</h2>{_svg_scatter(results)}
<h2>Per-domain leave-one-out Spearman</h2>{_html_table([{'domain': d, 'spearman': v} for d, v in results['spearman_loo_per_domain'].items()])}
<h2>Recommended mixture block</h2><pre>{html.escape(recommended_yaml(results))}</pre>
</body></html>
"""
