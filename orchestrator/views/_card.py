"""A robustness card for a registered model version: its evidence on one page, logged next to it in MLflow.

``qshield card models:/<name>@champion`` (or ``/<version>``) builds ``card/index.html`` plus the PNGs it shows and
logs them as artifacts of the version's trial run (``select`` does it automatically for the champion):

* the model's configuration (the trial's searched parameters and the model config of its weights);
* clean accuracy and worst-case robust accuracy (and ASR, the smallest flipping ε) with their 95% intervals, the
  per-attack table with its costs (queries and seconds per example), the masking verdict with each check's
  numbers — all **read from what the trial recorded** (run metrics, ``attacks.json``, ``worst_case.json``,
  ``masking_diagnostics.json``, ``min_eps.json``), never recomputed;
* ASR-vs-ε curves of the sweep's white-box ε attacks, computed from the reloaded model on the trial's own test
  images (seeded), next to the PGD curve the masking check recorded, and the same for the comparison model;
* a gallery of a few correctly classified test images: clean, adversarial (the model's strongest recorded attack,
  at the trial's settings), the amplified perturbation, the predicted class before and after; for hybrids the
  classical and quantum branch probabilities and the fusion weight on those images — for the model and, side by
  side on the same images and attack, the sweep's comparison model (:func:`orchestrator.views._probe.partner_of`: the
  best classical control for a hybrid, the best hybrid for a classical model).

The HTML is self-contained: inline CSS, no script, no external fetch; its pictures are embedded as ``data:`` PNGs,
because MLflow's artifact viewer shows HTML in a sandboxed frame that cannot follow relative links, and are also
logged beside it as files (``card/asr_vs_eps.png``, ``card/gallery_*.png``, ``card/branches_*.png`` for hybrids).
``card/card.json`` holds every number shown and ``card/gallery.npz`` the gallery's clean and adversarial images
(for checking the card).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from mlflow import MlflowClient

from qshield.attacks import ATTACKS
from qshield.evaluation import AsrCurve, asr_vs_eps

from ._probe import (
    LoadedModel,
    Partner,
    amplify,
    attack_images,
    inspect_batch,
    open_model,
    partner_of,
    resolve_ref,
    test_data,
)
from ..tracking import call_mlflow, existing_store, resolve_tracking_uri

log = logging.getLogger(__name__)

#: artifact folder of the card inside the version's run
CARD_DIR = "card"
#: model-version tag pointing at the card (``runs:/<run>/card/index.html``), or saying why it failed
CARD_TAG = "qshield.card"
#: ε grid of the ASR curves, as multiples of the sweep's threat ε (capped at 1)
CURVE_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: metrics read from the run for the headline (each with its 95% interval when recorded)
HEADLINE = ("accuracy", "robust_accuracy", "asr", "adversary_cost")


class GalleryData(NamedTuple):
    """What a gallery shows for one model (plot from data: tests assert on this).

    ``indices`` are positions in the trial's test split; ``p_classical`` / ``p_quantum`` ``[N][K]`` and
    ``fusion_weight`` ``[N]`` are None for a classical model; ``*_adv`` are on the adversarial images.
    """

    label: str
    role: str
    attack: str
    eps: float | None
    indices: tuple[int, ...]
    labels: tuple[int, ...]
    clean_pred: tuple[int, ...]
    adv_pred: tuple[int, ...]
    clean_conf: tuple[float, ...]
    adv_conf: tuple[float, ...]
    amplification: tuple[float, ...]
    linf: tuple[float, ...]
    p_classical: tuple[tuple[float, ...], ...] | None = None
    p_quantum: tuple[tuple[float, ...], ...] | None = None
    fusion_weight: tuple[float, ...] | None = None
    p_classical_adv: tuple[tuple[float, ...], ...] | None = None
    p_quantum_adv: tuple[tuple[float, ...], ...] | None = None
    fusion_weight_adv: tuple[float, ...] | None = None


@dataclass
class ModelSection:
    """One model's part of the card: what it is and what its trial recorded."""

    label: str
    role: str
    uri: str
    run_id: str
    arch: str
    params: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    attack_rows: list[dict[str, Any]] = field(default_factory=list)
    worst_case: dict[str, Any] | None = None
    masking: dict[str, Any] | None = None
    min_eps: dict[str, Any] | None = None


@dataclass
class RobustnessCard:
    """Everything the card shows (``card.json`` is this, as JSON)."""

    model: ModelSection
    partner: ModelSection | None
    dataset: str
    class_names: tuple[str, ...]
    threat_eps: float
    curves: tuple[AsrCurve, ...]
    galleries: tuple[GalleryData, ...]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "model": asdict(self.model), "partner": asdict(self.partner) if self.partner else None,
            "dataset": self.dataset, "class_names": list(self.class_names), "threat_eps": self.threat_eps,
            "curves": [c._asdict() for c in self.curves], "galleries": [g._asdict() for g in self.galleries],
            "notes": self.notes,
        })


@dataclass(frozen=True)
class CardResult:
    """Where a card went: the local folder, and the artifact URI of ``index.html`` when it was logged."""

    directory: Path | None
    card: RobustnessCard
    artifact_uri: str | None = None


# ----------------------------------------------------------------------------------------------------------------
# reading what the trial recorded


def _run_json(client: MlflowClient, run_id: str, name: str) -> Any:
    """A JSON artifact of a run, or None when the run has none (e.g. no masking diagnostics in the sweep)."""
    from mlflow.exceptions import MlflowException

    names = {a.path for a in client.list_artifacts(run_id)}
    if name not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def _table_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of an MLflow table artifact (``{"columns": [...], "data": [[...]]}``)."""
    if not table:
        return []
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def read_section(client: MlflowClient, loaded: LoadedModel, role: str) -> ModelSection:
    """The recorded evidence of ``loaded``'s trial run (see the module docstring)."""
    run = client.get_run(loaded.ref.run_id)
    config = _jsonable(loaded.config.to_dict())
    return ModelSection(
        label=loaded.ref.label, role=role, uri=loaded.ref.resolved, run_id=loaded.ref.run_id, arch=loaded.arch,
        params=dict(loaded.params), config=config, metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if k.startswith("qshield.")},
        attack_rows=_table_rows(_run_json(client, run.info.run_id, "attacks.json")),
        worst_case=_run_json(client, run.info.run_id, "worst_case.json"),
        masking=_run_json(client, run.info.run_id, "masking_diagnostics.json"),
        min_eps=_run_json(client, run.info.run_id, "min_eps.json"),
    )


# ----------------------------------------------------------------------------------------------------------------
# computing from the model: curves and gallery


def curve_eps(threat_eps: float) -> tuple[float, ...]:
    """The ε grid of the ASR curves: :data:`CURVE_FACTORS` × the threat ε, capped at 1, increasing."""
    values = sorted({round(min(1.0, f * threat_eps), 10) for f in CURVE_FACTORS})
    return tuple(values)


def curve_attacks(loaded: LoadedModel) -> tuple[str, ...]:
    """The sweep's white-box attacks with an ε budget (the ones an ASR-vs-ε curve is cheap and meaningful for);
    PGD when the sweep has none."""
    names = [n.value for n in loaded.space.attacks.names]
    chosen = tuple(n for n in names if ATTACKS[n].uses_eps and ATTACKS[n].white_box)
    return chosen or ("pgd",)


def model_curves(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor, eps: Sequence[float], *,
                 label: str, seed: int) -> list[AsrCurve]:
    """ASR at each ε for each of :func:`curve_attacks`, with the trial's settings for that attack (step sizes
    that reach each ε)."""
    curves = []
    for name in curve_attacks(loaded):
        base = loaded.attack_config(name)
        params = {k: v for k, v in base.params.items() if k != "alpha"}  # α follows ε (AttackConfig.resolve)
        from qshield.attacks import AttackConfig

        curve = asr_vs_eps(loaded.model, images, labels, eps, attack=AttackConfig(name, params=params),
                           label=f"{label} · {name}", seed=seed)
        curves.append(curve)
    return curves


def recorded_curve(section: ModelSection, eps_max: float = 1.0, label: str | None = None) -> AsrCurve | None:
    """The PGD ASR-vs-ε the trial's masking check recorded, at its ε up to ``eps_max`` (None when the sweep ran
    no diagnostics)."""
    m = section.masking
    if not m or not m.get("pgd_asr") or len(m["pgd_asr"]) != len(m.get("eps_schedule") or ()):
        return None
    points = [(float(e), float(a)) for e, a in zip(m["eps_schedule"], m["pgd_asr"], strict=True) if e <= eps_max + 1e-9]
    if not points:
        return None
    return AsrCurve(f"{label or section.label} · pgd (recorded by the masking check)", "pgd",
                    tuple(e for e, _ in points), tuple(a for _, a in points), int(m.get("n_examples") or 0))


def pick_gallery(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> list[int]:
    """``n`` test images the model classifies correctly, in a seeded random order (fewer if it gets fewer right)."""
    with torch.no_grad():
        pred = inspect_batch(loaded.model, images).pred
    order = np.random.default_rng(seed).permutation(len(labels))
    right = [int(i) for i in order if int(pred[i]) == int(labels[i])]
    return sorted(right[:n])


def gallery(loaded: LoadedModel, images: torch.Tensor, labels: torch.Tensor, indices: Sequence[int], attack: str,
            *, role: str, seed: int) -> tuple[GalleryData, np.ndarray, np.ndarray]:
    """Attack the images at ``indices`` with ``attack`` (the trial's settings) and read the model on them.

    Returns the data and the clean and adversarial images ``[N, C, H, W]``.
    """
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    x, y = images[idx], labels[idx]
    config = loaded.attack_config(attack)
    if not len(idx):  # the model got no test image right: nothing to attack, an empty gallery says so
        return (GalleryData(loaded.ref.label, role, config.name, config.eps, (), (), (), (), (), (), (), ()),
                x.numpy(), x.numpy())
    adv = attack_images(loaded.model, x, y, config, seed=seed)
    before, after = inspect_batch(loaded.model, x), inspect_batch(loaded.model, adv)
    amps = [amplify(adv[i] - x[i])[1] for i in range(len(idx))]
    linf = [float((adv[i] - x[i]).abs().max()) if adv[i].numel() else 0.0 for i in range(len(idx))]

    def rows(a: np.ndarray | None) -> tuple[tuple[float, ...], ...] | None:
        return None if a is None else tuple(tuple(float(v) for v in r) for r in a)

    def vec(a: np.ndarray | None) -> tuple[float, ...] | None:
        return None if a is None else tuple(float(v) for v in a)

    data = GalleryData(
        label=loaded.ref.label, role=role, attack=config.name, eps=config.eps, indices=tuple(int(i) for i in idx),
        labels=tuple(int(v) for v in y), clean_pred=tuple(int(v) for v in before.pred),
        adv_pred=tuple(int(v) for v in after.pred),
        clean_conf=tuple(float(before.probs[i, p]) for i, p in enumerate(before.pred)),
        adv_conf=tuple(float(after.probs[i, p]) for i, p in enumerate(after.pred)),
        amplification=tuple(amps), linf=tuple(linf),
        p_classical=rows(before.p_classical), p_quantum=rows(before.p_quantum), fusion_weight=vec(before.fusion_weight),
        p_classical_adv=rows(after.p_classical), p_quantum_adv=rows(after.p_quantum),
        fusion_weight_adv=vec(after.fusion_weight),
    )
    return data, x.numpy(), adv.numpy()


def plot_gallery(data: GalleryData, clean: np.ndarray, adv: np.ndarray, class_names: Sequence[str],
                 path: str | Path) -> GalleryData:
    """One row per image: clean (prediction, true class), adversarial (prediction after), amplified perturbation
    (its factor and L∞ size). Returns ``data``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(data.indices)
    fig = Figure(figsize=(6.3, 2.0 * max(n, 1) + 0.4))
    FigureCanvasAgg(fig)
    if n == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no correctly classified test image to attack", ha="center", va="center")
    name = lambda k: class_names[k] if 0 <= k < len(class_names) else str(k)  # noqa: E731
    for i in range(n):
        def show(col: int, img: np.ndarray, title: str) -> None:
            ax = fig.add_subplot(n, 3, i * 3 + col)
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1
                      else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)

        show(1, clean[i], f"clean: {name(data.clean_pred[i])} ({data.clean_conf[i]:.2f})\ntrue {name(data.labels[i])}")
        mark = "" if data.adv_pred[i] == data.labels[i] else "  ✗"
        show(2, adv[i], f"{data.attack}: {name(data.adv_pred[i])} ({data.adv_conf[i]:.2f}){mark}")
        delta, _ = amplify(torch.from_numpy(adv[i] - clean[i]))
        show(3, delta.numpy(), f"perturbation ×{data.amplification[i]:.1f}\nL∞ {data.linf[i] * 255:.1f}/255")
    fig.suptitle(f"{data.label}", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(path), format="png", dpi=110)
    return data


def plot_branches(data: GalleryData, path: str | Path) -> GalleryData:
    """For a hybrid's gallery: per image, the classical and quantum branch probabilities on the clean and on the
    adversarial image, with the fusion weight (classical share) in the titles. Returns ``data``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if data.p_classical is None or data.p_quantum is None:
        raise ValueError(f"{data.label} is not a hybrid: it has no branch probabilities to plot")
    n = len(data.indices)
    fig = Figure(figsize=(6.3, 1.7 * max(n, 1) + 0.5))
    FigureCanvasAgg(fig)
    for i in range(n):
        for col, (pc, pq, w, when) in enumerate((
            (data.p_classical[i], data.p_quantum[i], data.fusion_weight, "clean"),
            (data.p_classical_adv[i], data.p_quantum_adv[i],  # type: ignore[index]
             data.fusion_weight_adv, data.attack),
        ), start=1):
            ax = fig.add_subplot(n, 2, i * 2 + col)
            k = np.arange(len(pc))
            ax.bar(k - 0.2, pc, width=0.4, label="classical branch", color="#4c72b0")
            ax.bar(k + 0.2, pq, width=0.4, label="quantum branch", color="#dd8452")
            ax.set_ylim(0, 1)
            ax.set_xticks(k)
            ax.set_xticklabels([str(v) for v in k], fontsize=6)
            ax.tick_params(axis="y", labelsize=6)
            weight = f", w_c = {w[i]:.2f}" if w is not None else ""
            ax.set_title(f"#{data.indices[i]} {when}{weight}", fontsize=8)
            if i == 0 and col == 1:
                ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{data.label}: branch probabilities", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(path), format="png", dpi=110)
    return data


def plot_curves(curves: Sequence[AsrCurve], threat_eps: float, path: str | Path) -> tuple[AsrCurve, ...]:
    """ASR (%) against ε (×1/255) for every curve, the threat ε marked, the legend beside the axes (the card's
    figure; :func:`qshield.evaluation.plot_asr_vs_eps` draws the same data in the library's style). Returns the
    curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = tuple(curves)
    fig = Figure(figsize=(9.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for c in data:
        style = ":" if "recorded" in c.label else "-"
        ax.plot([e * 255 for e in c.eps], [100 * a for a in c.asr], style, marker="o", ms=4, label=c.label)
    ax.axvline(threat_eps * 255, color="grey", lw=1, ls="--", label=f"threat ε = {threat_eps * 255:.0f}/255")
    ax.set_xlabel("ε (×1/255)")
    ax.set_ylabel("ASR (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(Path(path), format="png", dpi=110)
    return data


# ----------------------------------------------------------------------------------------------------------------
# the card


def build_card(model_uri: str, tracking_uri: str | None = None, *, n_images: int = 6, curve_images: int = 32,
               seed: int = 0) -> tuple[RobustnessCard, dict[str, np.ndarray]]:
    """Read the recorded evidence of ``model_uri`` and its sweep's comparison model, compute the curves and the
    gallery. Returns the card and the gallery images (``{"<role>_clean": ..., "<role>_adv": ...}``).

    Raises:
        ValueError: ``n_images`` / ``curve_images`` not a positive integer, or a model URI naming nothing (the
            message lists what exists); all before anything is loaded.
    """
    for field_name, value, hi in (("n_images", n_images, 32), ("curve_images", curve_images, 1000)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise ValueError(f"{field_name}={value!r} is invalid; allowed values: an integer in 1..{hi}")
    tracking_uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    ref = resolve_ref(client, model_uri)
    loaded = open_model(ref, tracking_uri)
    bundle = test_data(loaded.space)
    images, labels = bundle.test.tensors
    section = read_section(client, loaded, "model")
    notes: list[str] = []

    partner: Partner | None = partner_of(client, ref)
    partner_loaded: LoadedModel | None = None
    partner_section: ModelSection | None = None
    if partner is not None:
        partner_loaded = open_model(partner.ref, tracking_uri)
        if partner_loaded.input_shape != loaded.input_shape or partner_loaded.dataset != loaded.dataset:
            notes.append(f"the sweep's {partner.role} takes other inputs ({partner_loaded.dataset}, "
                         f"{partner_loaded.input_shape}); not shown")
            partner_loaded = None
        else:
            partner_section = read_section(client, partner_loaded, partner.role)
            partner_section.label = f"{partner.role}: trial {partner.trial_id} ({partner.arch})"
    else:
        notes.append("no comparison model: the sweep recorded no classical control and hybrid pair "
                     "(quantum_gain.json), or this model is that pair's only member")

    n_eval = min(int(loaded.space.attacks.n_eval), len(labels))
    curve_x, curve_y = images[:min(n_eval, curve_images)], labels[:min(n_eval, curve_images)]
    eps = curve_eps(loaded.space.threat_eps())
    own_label = f"v{ref.version} {loaded.arch}" if ref.version else loaded.arch
    curves: list[AsrCurve] = model_curves(loaded, curve_x, curve_y, eps, label=own_label, seed=seed)
    recorded = recorded_curve(section, max(eps), own_label)
    if recorded is not None:
        curves.append(recorded)
    if partner_loaded is not None:
        assert partner is not None
        curves += model_curves(partner_loaded, curve_x, curve_y, eps, label=f"{partner.role} {partner_loaded.arch}",
                               seed=seed)

    strongest = (section.tags.get("qshield.strongest_attack") or (section.worst_case or {}).get("strongest_attack")
                 or loaded.space.attacks.names[0].value)
    strongest = str(strongest).split("#")[0]
    indices = pick_gallery(loaded, images, labels, n_images, seed)
    galleries = []
    arrays: dict[str, np.ndarray] = {}
    data, clean, adv = gallery(loaded, images, labels, indices, strongest, role="model", seed=seed)
    galleries.append(data)
    arrays.update(model_clean=clean, model_adv=adv, model_indices=np.asarray(indices, dtype=np.int64))
    if partner_loaded is not None:
        data, clean, adv = gallery(partner_loaded, images, labels, indices, strongest, role="partner", seed=seed)
        galleries.append(data._replace(label=partner_section.label if partner_section else data.label,
                                       role=partner.role))  # type: ignore[union-attr]
        arrays.update(partner_clean=clean, partner_adv=adv)
    card = RobustnessCard(section, partner_section, loaded.dataset, loaded.class_names, loaded.space.threat_eps(),
                          tuple(curves), tuple(galleries), notes)
    return card, arrays


def render_card(card: RobustnessCard, arrays: dict[str, np.ndarray], out_dir: str | Path) -> Path:
    """Write ``index.html``, ``asr_vs_eps.png``, ``gallery_<role>.png``, ``card.json`` and ``gallery.npz`` into
    ``out_dir``; returns the path of ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, Path] = {}
    if card.curves:
        pngs["asr_vs_eps"] = out / "asr_vs_eps.png"
        plot_curves(card.curves, card.threat_eps, pngs["asr_vs_eps"])
    for g in card.galleries:
        key = "model" if g.role == "model" else "partner"
        pngs[f"gallery_{key}"] = out / f"gallery_{key}.png"
        plot_gallery(g, arrays[f"{key}_clean"], arrays[f"{key}_adv"], card.class_names, pngs[f"gallery_{key}"])
        if g.p_classical is not None:
            pngs[f"branches_{key}"] = out / f"branches_{key}.png"
            plot_branches(g, pngs[f"branches_{key}"])
    np.savez(out / "gallery.npz", **arrays)
    (out / "card.json").write_text(json.dumps(card.to_dict(), indent=2))
    page = out / "index.html"
    page.write_text(card_html(card, {k: p.read_bytes() for k, p in pngs.items()}), encoding="utf-8")
    return page


def make_card(model_uri: str, tracking_uri: str | None = None, *, out: str | Path | None = None, log: bool = True,
              n_images: int = 6, seed: int = 0) -> CardResult:
    """Build and render the card of ``model_uri``; with ``log``, log it to the version's run as ``card/`` and
    tag the version ``qshield.card = runs:/<run>/card/index.html``. ``out``: also keep it in this folder."""
    if not log and out is None:
        raise ValueError("out: missing; a card that is not logged to MLflow (--no-log) needs a folder (--out DIR)")
    tracking_uri = existing_store(tracking_uri)  # reading a registered model: never creates a store
    card, arrays = build_card(model_uri, tracking_uri, n_images=n_images, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out) if out is not None else Path(tmp) / CARD_DIR
        page = render_card(card, arrays, target)
        uri = None
        if log:
            client = MlflowClient(tracking_uri)
            client.log_artifacts(card.model.run_id, str(target), CARD_DIR)
            uri = f"runs:/{card.model.run_id}/{CARD_DIR}/{page.name}"
            ref = resolve_ref(client, model_uri)
            if ref.name is not None:  # selections racing each other tag the same version at once: retried
                call_mlflow(f"tag {model_uri} with its card", lambda: client.set_model_version_tag(
                    ref.name, ref.version, CARD_TAG, uri), tracking_uri)
    return CardResult(Path(out) if out is not None else None, card, uri)


# ----------------------------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1em} table{border-collapse:collapse;margin:.4em 0;font-size:.88em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top} th{background:#f3f3f3}
.num{text-align:right;font-variant-numeric:tabular-nums} .ok{color:#176317;font-weight:600}
.bad{color:#a31515;font-weight:600} .muted{color:#666;font-size:.9em} .cols{display:flex;gap:2em;flex-wrap:wrap}
.cols>div{flex:1 1 520px;min-width:0} img{max-width:100%;height:auto;border:1px solid #eee}
.big{font-size:1.5em;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def with_ci(metrics: dict[str, float], key: str) -> str:
    """``0.800 [0.682, 0.882]`` from a run's ``key``, ``key_ci_low`` and ``key_ci_high`` (``n/a`` if not logged)."""
    if key not in metrics:
        return "n/a"
    text = _fmt(metrics[key])
    if f"{key}_ci_low" in metrics and f"{key}_ci_high" in metrics:
        text += f" [{_fmt(metrics[f'{key}_ci_low'])}, {_fmt(metrics[f'{key}_ci_high'])}]"
    return text


def _count(value: Any) -> str:
    """A count logged as a float metric (``60.0``) as ``60``."""
    return "n/a" if value is None else str(int(round(float(value))))


def _eps255(eps: Any) -> str:
    return "—" if eps is None else f"{float(eps) * 255:.1f}/255"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v, 4))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _headline(s: ModelSection) -> str:
    m = s.metrics
    cost = m.get("adversary_cost")
    cost_text = "n/a" if cost is None else (
        f"{cost * 255:.1f}/255 (quartiles {_eps255(m.get('adversary_cost_q25'))}–"
        f"{_eps255(m.get('adversary_cost_q75'))}"
        f", {_count(m.get('adversary_cost_censored'))} never flipped)")
    trust = s.tags.get("qshield.trustworthy")
    verdict = ('<span class="ok">trustworthy</span>' if trust == "true" else
               f'<span class="bad">not trustworthy: '
               f'{_e(s.tags.get("qshield.flag") or "masking diagnostics failed or did not run")}</span>')
    return (
        '<table class="headline">'
        f'<tr><th>clean accuracy [95% CI]</th><td class="num" data-metric="accuracy">{_e(with_ci(m, "accuracy"))}</td>'
        f'<td class="muted">{_count(m.get("n_test"))} test images</td></tr>'
        f'<tr><th>worst-case robust accuracy [95% CI]</th><td class="num" data-metric="robust_accuracy">'
        f'{_e(with_ci(m, "robust_accuracy"))}</td><td class="muted">first {_count(m.get("n_eval"))} test images; '
        'robust = '
        'correct clean and after every attack</td></tr>'
        f'<tr><th>worst-case ASR [95% CI]</th><td class="num" data-metric="asr">{_e(with_ci(m, "asr"))}</td>'
        f'<td class="muted">strongest attack: {_e(s.tags.get("qshield.strongest_attack", "n/a"))}</td></tr>'
        f'<tr><th>smallest flipping ε (median)</th><td class="num" data-metric="adversary_cost">{_e(cost_text)}</td>'
        '<td class="muted">the adversary cost that measures the model</td></tr>'
        f'<tr><th>verdict</th><td colspan="2">{verdict}</td></tr></table>'
    )


def _attack_table(s: ModelSection) -> str:
    if not s.attack_rows:
        return '<p class="muted">no per-attack table was recorded</p>'
    head = ("<tr><th>attack</th><th>ε</th><th>attacked</th><th>ASR [95% CI]</th><th>robust accuracy [95% CI]</th>"
            "<th>queries / example</th><th>seconds / example</th><th>reaches ε</th></tr>")
    body = []
    for r in s.attack_rows:
        queries = (r.get("forward_per_example") or 0) + (r.get("backward_per_example") or 0)
        body.append(
            f'<tr data-attack="{_e(r.get("attack"))}"><td>{_e(r.get("attack"))}</td>'
            f'<td class="num">{_eps255(r.get("eps"))}</td>'
            f'<td class="num">{_fmt(r.get("n_attacked"))}/{_fmt(r.get("n_total"))}</td>'
            f'<td class="num">{_fmt(r.get("asr"))} [{_fmt(r.get("asr_ci_low"))}, {_fmt(r.get("asr_ci_high"))}]</td>'
            f'<td class="num">{_fmt(r.get("robust_accuracy"))} [{_fmt(r.get("robust_accuracy_ci_low"))}, '
            f'{_fmt(r.get("robust_accuracy_ci_high"))}]</td><td class="num">{_fmt(float(queries), 1)}</td>'
            f'<td class="num">{_fmt(r.get("seconds_per_example"), 4)}</td><td>{_fmt(r.get("reaches_eps"))}</td></tr>')
    wc = s.worst_case or {}
    extra = ""
    if wc:
        fooled = ", ".join(f"{k}: {v} ({wc.get('only_fooled_by', {}).get(k, 0)} only by it)"
                           for k, v in (wc.get("fooled_by") or {}).items())
        extra = (f'<p class="muted">worst case over the suite: {_fmt(wc.get("n_robust"))} of '
                 f'{_fmt(wc.get("n_attacked"))} '
                 f'attacked images survive every attack; fooled by {_e(fooled)}</p>')
    return f"<table>{head}{''.join(body)}</table>{extra}"


def _masking(s: ModelSection) -> str:
    m = s.masking
    if not m:
        return ('<p class="muted">the sweep ran no gradient-masking diagnostics (attacks.diagnostics: false), so the '
                'model is not marked trustworthy</p>')
    rows = "".join(
        f'<tr data-check="{_e(c["name"])}"><td>{_e(c["name"])}</td><td class="{"ok" if c["passed"] else "bad"}">'
        f'{"passed" if c["passed"] else "FAILED"}</td><td>{_e(c["detail"])}</td></tr>' for c in m.get("checks", []))
    passed = all(c["passed"] for c in m.get("checks", []))
    numbers = {
        "images checked": m.get("n_examples"), "ε of the white-box vs black-box check": _eps255(m.get("eps")),
        "PGD ASR at ε": m.get("pgd_asr_at_eps"), "Square ASR at ε": m.get("square_asr_at_eps"),
        "zero-gradient fraction": m.get("zero_grad_fraction"), "gradients finite": m.get("grad_finite"),
        "randomized": m.get("randomized"), "outputs are probabilities": m.get("outputs_are_probabilities"),
    }
    verdict = ('<span class="ok">all checks passed</span>' if passed else
               '<span class="bad">a check failed: the robustness numbers may be inflated by gradient masking</span>')
    head = "<tr><th>check</th><th>result</th><th>numbers</th></tr>"
    return f"<p>{verdict}</p><table>{head}{rows}</table>{_kv_table(numbers)}"


def _gallery_table(g: GalleryData, names: Sequence[str]) -> str:
    def name(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    hybrid = g.p_classical is not None
    head = ("<tr><th>test image</th><th>true</th><th>before</th><th>after</th><th>L∞</th>"
            + ("<th>classical branch before → after</th><th>quantum branch before → after</th>"
               "<th>fusion weight w_c before → after</th>" if hybrid else "") + "</tr>")
    body = []
    for i, idx in enumerate(g.indices):
        cells = (f'<td class="num">#{idx}</td><td>{_e(name(g.labels[i]))}</td>'
                 f'<td data-before="{g.clean_pred[i]}">{_e(name(g.clean_pred[i]))} ({g.clean_conf[i]:.2f})</td>'
                 f'<td data-after="{g.adv_pred[i]}" class="{"ok" if g.adv_pred[i] == g.labels[i] else "bad"}">'
                 f'{_e(name(g.adv_pred[i]))} ({g.adv_conf[i]:.2f})</td><td class="num">{g.linf[i] * 255:.1f}/255</td>')
        if hybrid:
            pc, pq = g.p_classical[i], g.p_quantum[i]  # type: ignore[index]
            pca, pqa = g.p_classical_adv[i], g.p_quantum_adv[i]  # type: ignore[index]
            kc, kq, kca, kqa = (int(np.argmax(v)) for v in (pc, pq, pca, pqa))
            cells += (f"<td>{_e(name(kc))} ({pc[kc]:.2f}) → {_e(name(kca))} ({pca[kca]:.2f})</td>"
                      f"<td>{_e(name(kq))} ({pq[kq]:.2f}) → {_e(name(kqa))} ({pqa[kqa]:.2f})</td>"
                      f'<td class="num">{g.fusion_weight[i]:.3f} → '  # type: ignore[index]
                      f'{g.fusion_weight_adv[i]:.3f}</td>')  # type: ignore[index]
        body.append(f"<tr>{cells}</tr>")
    flipped = sum(int(a != y) for a, y in zip(g.adv_pred, g.labels, strict=True))
    return (f'<p class="muted">{_e(g.attack)} at ε = {_eps255(g.eps)}: {flipped} of {len(g.indices)} images '
            'flipped</p>'
            f"<table>{head}{''.join(body)}</table>")


def card_html(card: RobustnessCard, pngs: dict[str, bytes]) -> str:
    """The card as one self-contained HTML page (pictures embedded; see the module docstring)."""
    s, p = card.model, card.partner
    sections = [s] + ([p] if p else [])
    title = f"Robustness card — {s.label}"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="muted">{_e(s.uri)} · trial run {_e(s.run_id)} · trial '
             f'{_e(s.tags.get("qshield.trial_id", ""))} · dataset {_e(card.dataset)} · threat ε = '
             f'{_eps255(card.threat_eps)}. Numbers are what the trial recorded '
             "(MLflow run metrics and artifacts); curves and gallery are recomputed from the registered weights on the "
             "trial's own test images.</p>"]
    parts.append("<h2>Headline</h2><div class='cols'>")
    for sec in sections:
        parts.append(f"<div><h3>{_e(sec.label)}</h3>{_headline(sec)}</div>")
    parts.append("</div>")
    parts.append("<h2>Configuration</h2><div class='cols'>")
    for sec in sections:
        parts.append(f"<div><h3>{_e(sec.label)}</h3><details open><summary>trial parameters</summary>"
                     f"{_kv_table(sec.params)}</details>"
                     "<details><summary>model config (from the weights file)</summary>"
                     f"{_kv_table(sec.config)}</details></div>")
    parts.append("</div><h2>Attacks and their costs</h2><div class='cols'>")
    for sec in sections:
        parts.append(f"<div><h3>{_e(sec.label)}</h3>{_attack_table(sec)}</div>")
    parts.append("</div><h2>Gradient-masking verdict</h2><div class='cols'>")
    for sec in sections:
        parts.append(f"<div><h3>{_e(sec.label)}</h3>{_masking(sec)}</div>")
    parts.append("</div><h2>ASR vs ε</h2>")
    if "asr_vs_eps" in pngs:
        n = card.curves[0].n_attacked if card.curves else 0
        parts.append(f"<p class='muted'>white-box ε attacks of the sweep with the trial's settings (step size scaled "
                     f"to reach each ε), on the first test images ({n} attacked for the first curve); the recorded "
                     "curve is the masking check's PGD sweep.</p>" + _img(pngs["asr_vs_eps"], "ASR vs eps"))
        rows = "".join(f"<tr><td>{_e(c.label)}</td>" + "".join(f'<td class="num">{a:.3f}</td>' for a in c.asr) + "</tr>"
                       for c in card.curves if c.eps == card.curves[0].eps)
        heads = "".join(f"<th>{_eps255(e)}</th>" for e in card.curves[0].eps) if card.curves else ""
        parts.append(f"<table><tr><th>curve</th>{heads}</tr>{rows}</table>")
    parts.append("<h2>Gallery</h2><p class='muted'>correctly classified test images, attacked by the model's strongest "
                 "recorded attack at the trial's settings; the same images and attack for both models. Perturbation: "
                 "grey = unchanged, amplified to full contrast.</p><div class='cols'>")
    for g in card.galleries:
        key = "model" if g.role == "model" else "partner"
        parts.append(f"<div class='gallery' data-role='{_e(key)}'><h3>{_e(g.label)}</h3>"
                     + (_img(pngs[f"gallery_{key}"], f"gallery {key}") if f"gallery_{key}" in pngs else "")
                     + _gallery_table(g, card.class_names)
                     + (_img(pngs[f"branches_{key}"], f"branches {key}") if f"branches_{key}" in pngs else "")
                     + "</div>")
    parts.append("</div>")
    if card.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in card.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return getattr(obj, "value", str(obj))


__all__ = [
    "CARD_DIR", "CARD_TAG", "CardResult", "GalleryData", "ModelSection", "RobustnessCard", "build_card",
    "card_html", "curve_eps", "make_card", "plot_branches", "plot_curves", "plot_gallery", "render_card", "with_ci",
]


def champion_card(selection: Any, tracking_uri: str) -> str | None:
    """The robustness card of a selection's champion (made once per version; kept when it exists), recorded in
    ``selection.card``. A failure is logged as a warning and recorded in the version's ``qshield.card`` tag; the
    registration stands."""
    tracking_uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    name, version = selection.model_name, str(selection.version)
    existing = call_mlflow(f"read models:/{name}/{version}", lambda: client.get_model_version(name, version),
                           tracking_uri).tags.get(CARD_TAG, "")
    if existing.startswith("runs:/"):
        selection.card = existing
        return existing
    try:
        selection.card = make_card(f"models:/{name}/{version}", tracking_uri).artifact_uri
    except Exception as exc:  # noqa: BLE001 - the card is evidence about the champion, not a condition for it
        message = f"failed: {type(exc).__name__}: {exc}"
        log.warning("robustness card of models:/%s/%s %s (the registration stands; retry with "
                    "`qshield card models:/%s/%s`)", name, version, message, name, version)
        call_mlflow(f"tag models:/{name}/{version} with its card's failure", lambda: client.set_model_version_tag(
            name, version, CARD_TAG, message[:5000]), tracking_uri)
        selection.card = None
    return selection.card


def select_and_card(sweep: str, *, card: bool = True, **kwargs: Any) -> Any:
    """:func:`orchestrator.tracking.select_champion` (same keyword arguments), then, with ``card``, the
    champion's robustness card (:func:`champion_card`)."""
    from ..tracking import select_champion

    selection = select_champion(sweep, **kwargs)
    if card:
        champion_card(selection, kwargs.get("tracking_uri") or resolve_tracking_uri(None))
    return selection
