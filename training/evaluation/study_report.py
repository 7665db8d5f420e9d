"""Summary and tables of a strategy study (scripts/study.py; metrics.md study protocol).

`summarise` turns the raw per-run results of one corpus (metrics and per-query arrays of
each run's best checkpoint on each test split, and what each run trained on) into per-arm
means with 95% intervals over seeds, differences to the baseline with Welch's t, its
degrees of freedom and interval (study_stats.welch: n/a from a zero-variance arm), and a
cluster bootstrap of the seed-averaged per-query difference. `render_markdown` writes the
tables, every split (seen and unseen) alike. Pure functions of dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from atri.training.evaluation.study_stats import cluster_bootstrap, mean_interval, welch
from atri.training.languages import LANGS

BASELINE = "mlclap"
FINETUNED = "+ft"
# name -> (label, per-query array or None, decimals)
METRICS: dict[str, tuple[str, str | None, int]] = {
    "t2a_R@1": ("T2A R@1", "t2a_R@1", 2),
    "t2a_R@5": ("T2A R@5", None, 2),
    "a2t_R@1": ("A2T R@1", "a2t_R@1", 2),
    "a2t_R@5": ("A2T R@5", None, 2),
    "mrv_var_t2a": ("MRV var T2A", "mrv_var_t2a", 2),
    "agree_t2a": ("top-1 agreement T2A", "agree_t2a", 2),
    "logvar_t2a": ("log-rank var T2A", "logvar_t2a", 4),
    "mrv_var_a2t": ("MRV var A2T", "mrv_var_a2t", 2),
    "agree_a2t": ("top-1 agreement A2T", "agree_a2t", 2),
    "logvar_a2t": ("log-rank var A2T", "logvar_a2t", 4),
    "dis": ("Dis", None, 4),
    "gap": ("Gap", None, 4),
}
RETRIEVAL = ("t2a_R@1", "t2a_R@5", "a2t_R@1", "a2t_R@5")
CONSISTENCY = ("mrv_var_t2a", "agree_t2a", "logvar_t2a", "mrv_var_a2t", "agree_a2t",
               "logvar_a2t", "dis")
DIFFERENCES = ("t2a_R@1", "a2t_R@1", "mrv_var_t2a", "agree_t2a", "logvar_t2a")
BUDGET = ("epochs_budget", "epochs_run", "best_epoch", "steps_best", "caption_updates_best",
          "audio_passes_best", "epoch_seconds", "peak_rss_mb")


def metric_of(metrics: Mapping[str, Any], name: str) -> float:
    """One run's value of a METRICS name from its metrics dict."""
    if name.startswith(("t2a_", "a2t_")):
        direction, _, key = name.partition("_")
        return metrics[direction]["avg"][key]
    if name.startswith("mrv_var_"):
        return metrics["mrv_var"][name.rsplit("_", 1)[1]]
    if name in ("gap", "dis"):
        return metrics[name]["avg"]
    return metrics[name]


def baseline_of(arm: str) -> str:
    """Frozen arms compare with mlclap, fine-tuned ones with mlclap+ft."""
    return BASELINE + FINETUNED if arm.endswith(FINETUNED) else BASELINE


def _stats(runs: list[dict], base: list[dict] | None, split: str, name: str,
           n_bootstrap: int) -> dict:
    values = [metric_of(r["metrics"][split], name) for r in runs]
    low, high = mean_interval(values)
    out: dict[str, Any] = {"values": values, "mean": float(np.mean(values)),
                           "std": float(np.std(values, ddof=1)), "ci": [low, high]}
    if base is None:
        return out
    ref = [metric_of(r["metrics"][split], name) for r in base]
    out["welch"] = asdict(welch(values, ref))
    array = METRICS[name][1]
    if array is not None:
        ours = np.mean([r["arrays"][split][array] for r in runs], axis=0)  # (Q,)
        theirs = np.mean([r["arrays"][split][array] for r in base], axis=0)  # (Q,)
        units = runs[0]["arrays"][split]["units_" + ("a2t" if "a2t" in name else "t2a")]
        out["bootstrap"] = list(cluster_bootstrap(ours - theirs, units, n=n_bootstrap))
    return out


def summarise(results: Mapping[str, Any], n_bootstrap: int = 2000) -> dict:
    """The summary of one corpus's raw results (scripts/study.py run_corpus)."""
    arms: dict[str, list[dict]] = results["arms"]
    out: dict[str, Any] = {"corpus": results["corpus"], "splits": {}, "per_language": {},
                           "budget": {}, "commands": {}, "baselines": {}}
    for arm, runs in arms.items():
        base_name = baseline_of(arm)
        base = arms.get(base_name) if arm != base_name else None
        out["baselines"][arm] = base_name if base is not None else None
        out["commands"][arm] = [r["command"] for r in runs]
        out["budget"][arm] = {k: [r["train"][k] for r in runs] for k in (*BUDGET, "early_stopped")}
        for split in results["splits"]:
            out["splits"].setdefault(split, {})[arm] = {
                name: _stats(runs, base, split, name, n_bootstrap) for name in METRICS
            }
            out["per_language"].setdefault(split, {})[arm] = {
                f"{d}/{lang}": float(np.mean([r["metrics"][split][d][lang]["R@1"] for r in runs]))
                for d in ("t2a", "a2t") for lang in runs[0]["metrics"][split]["languages"]
            }
    return out


def _num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def _mean_cell(s: dict, digits: int) -> str:
    lo, hi = s["ci"]
    return f"{_num(s['mean'], digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _difference_rows(arms: dict[str, dict], baselines: dict[str, str | None]) -> list[list[str]]:
    rows = []
    for arm, metrics in arms.items():
        if baselines[arm] is None:
            continue
        for name in DIFFERENCES:
            s, digits = metrics[name], METRICS[name][2]
            w = s["welch"]
            interval = ("n/a" if w["low"] is None
                        else f"[{_num(w['low'], digits, True)}, {_num(w['high'], digits, True)}]")
            t = "n/a (an arm has zero variance)" if w["t"] is None else (
                f"{w['t']:+.1f} (df {w['df']:.1f})")
            boot = s.get("bootstrap")
            boot_cell = "" if boot is None else (
                f"[{_num(boot[1], digits, True)}, {_num(boot[2], digits, True)}]"
                + ("" if boot[1] <= 0 <= boot[2] else " *"))
            rows.append([arm, f"vs {baselines[arm]}", METRICS[name][0],
                         _num(w["diff"], digits, True), interval, t, boot_cell])
    return rows


def _metric_table(names, arms: dict[str, dict]) -> list[str]:
    """One row per arm: the mean [interval] of each metric in `names`."""
    return _table(["arm", *(METRICS[n][0] for n in names)],
                  [[arm, *(_mean_cell(m[n], METRICS[n][2]) for n in names)]
                   for arm, m in arms.items()])


def render_split(split: str, arms: dict[str, dict], baselines: dict[str, str | None],
                 per_language: dict[str, dict]) -> list[str]:
    """The tables of one test split: retrieval, consistency, differences, per language."""
    lines = [f"#### {split}: retrieval (mean over seeds [95% interval over seeds])", ""]
    lines += _metric_table(RETRIEVAL, arms)
    lines += [f"#### {split}: consistency across the query languages", "",
              "Top-1 agreement: % of query slots whose first result is the same in every "
              "language (right or wrong); log-rank var: variance over languages of ln(rank). "
              "Unlike MRV, neither shrinks merely because ranks get smaller.", ""]
    lines += _metric_table(CONSISTENCY, arms)
    lines += [f"#### {split}: differences to the baseline", "",
              "Welch: over seeds, with its 95% interval and degrees of freedom (n/a when an "
              "arm's seeds agree exactly). Cluster bootstrap: the seed-averaged per-query "
              "difference, resampling minimal-pair clusters joined by shared melodies (not "
              "queries); `*` = its 95% interval excludes 0.", ""]
    lines += _table(["arm", "baseline", "metric", "difference", "Welch 95% interval",
                     "Welch t (df)", "cluster bootstrap 95%"],
                    _difference_rows(arms, baselines))
    langs = [x for x in LANGS if f"t2a/{x}" in next(iter(per_language.values()))]
    for d in ("t2a", "a2t"):
        lines += [f"{d.upper()} R@1 per language ({split}, mean over seeds):", ""]
        lines += _table(["arm", *langs], [[arm, *(f"{v[f'{d}/{x}']:.1f}" for x in langs)]
                                          for arm, v in per_language.items()])
    return lines


def _mean_of(values: list[float | None], digits: int = 0) -> str:
    """Mean over seeds; runs logged before a field existed hold None."""
    known = [v for v in values if v is not None]
    return _num(float(np.mean(known)), digits) if known else "n/a"


def _budget_rows(budget: dict[str, dict]) -> list[list[str]]:
    rows = []
    for arm, b in budget.items():
        early = f"{sum(b['early_stopped'])}/{len(b['early_stopped'])}"
        rows.append([arm, _mean_of(b["epochs_budget"]), early, _mean_of(b["epochs_run"], 1),
                     str(b["best_epoch"]), _mean_of(b["steps_best"]),
                     _mean_of(b["caption_updates_best"]), _mean_of(b["audio_passes_best"], 1),
                     _mean_of(b["epoch_seconds"], 2), _num(max(b["peak_rss_mb"]), 0)])
    return rows


def _replication(summary: Mapping[str, Any]) -> list[str]:
    """Each difference on every corpus, and whether its Welch intervals agree in sign."""
    corpora = summary["corpora"]
    names = list(corpora)
    first = corpora[names[0]]
    lines = ["## Replication across corpora", "",
             "A difference replicates when its Welch 95% interval excludes 0 with the same "
             "sign on every corpus.", ""]
    rows = []
    for split, arms in first["splits"].items():
        for arm in arms:
            if first["baselines"][arm] is None:
                continue
            for name in DIFFERENCES:
                cells, signs = [], set()
                for c in names:
                    s = corpora[c]["splits"].get(split, {}).get(arm)
                    w = s[name]["welch"] if s else None
                    if w is None or w["low"] is None:
                        cells.append("n/a")
                        signs.add(0)
                        continue
                    d = METRICS[name][2]
                    cells.append(f"{_num(w['diff'], d, True)} "
                                 f"[{_num(w['low'], d, True)}, {_num(w['high'], d, True)}]")
                    signs.add(int(np.sign(w["low"])) if w["low"] * w["high"] > 0 else 0)
                rows.append([split, arm, METRICS[name][0], *cells,
                             "yes" if len(signs) == 1 and 0 not in signs else "no"])
    return lines + _table(["split", "arm", "metric", *names, "replicates"], rows)


def render_markdown(summary: Mapping[str, Any]) -> str:
    """results.md of a study: per corpus, every test split's tables, the budget each arm
    took, the commands; then the replication across corpora."""
    lines = [f"Seeds {summary['seeds']}; epoch budget {summary['epochs']} for a 1x arm; "
             f"early stopping with patience {summary['patience']}; batch "
             f"{summary['batch_size']}.", ""]
    for name, corpus in summary["corpora"].items():
        lines += [f"## Corpus {name} (`{corpus['corpus']}`)", ""]
        for split, arms in corpus["splits"].items():
            lines += render_split(split, arms, corpus["baselines"], corpus["per_language"][split])
        lines += [f"#### {name}: what each arm trained on (mean over seeds)", "",
                  "Stopped early: runs whose validation score stalled for `patience` epochs "
                  "before the budget ran out (converged); the others ran their whole "
                  "budget. Audio passes: audio rows trained on / training clips.", ""]
        lines += _table(["arm", "budget (epochs)", "stopped early", "epochs run",
                         "best epoch per seed", "steps at best", "caption updates at best",
                         "audio passes at best", "s/epoch", "peak RSS MB"],
                        _budget_rows(corpus["budget"]))
        lines += [f"![learning curves](curves-{name}.png)", "", "Commands:", "", "```"]
        lines += [c for cmds in corpus["commands"].values() for c in cmds]
        lines += ["```", ""]
    if len(summary["corpora"]) > 1:
        lines += _replication(summary)
    return "\n".join(lines) + "\n"
