"""Localization-head discovery (docs/method.md, part 1): attention sums, the elbow threshold, spatial entropy, votes.

Every function is pure numpy. `select_localization_heads` streams its samples: it keeps running sums of the
per-head image attention and one entropy per head per sample (N x L x H scalars, 4 MB for 1000 samples of a
32 x 32-head model), never the attention maps themselves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
from scipy import ndimage

from annotator.paths import HEADS_DIR

Head = tuple[int, int]
EntropyWeighting = Literal["area", "mass"]

_EIGHT_CONNECTED_WITHIN_SLICE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_WITHIN_SLICE[1] = True


def spatial_entropy(attn_map: np.ndarray, weighting: EntropyWeighting = "area") -> float:
    """Spatial entropy of a 2-D attention map; lower means more localized.

    `weighting="area"` is the paper's definition (the default): B = ReLU(A - mean(A)), 8-connected components of
    B > 0, P(C_i) = |C_i| / sum_j |C_j|, H = -sum_i P(C_i) ln P(C_i); a map with no component gives +inf.
    `weighting="mass"` is the official code's variant: components weighted by their mass of B, and 0.0 for a map
    with no component (which ranks an empty map as the best head; kept only to reproduce that code).
    """
    a = np.asarray(attn_map)
    if a.ndim != 2:
        raise ValueError(f"spatial_entropy expects a 2-D map, got shape {a.shape}")
    return float(spatial_entropies(a[None], weighting)[0])


def spatial_entropies(maps: np.ndarray, weighting: EntropyWeighting = "area") -> np.ndarray:
    """`spatial_entropy` of each map of an `[n, h, w]` stack, labelled in one pass -> `[n]` float64."""
    if weighting not in ("area", "mass"):
        raise ValueError(f"unknown entropy weighting {weighting!r}; use 'area' or 'mass'")
    a = np.asarray(maps, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"spatial_entropies expects [n, h, w], got shape {a.shape}")
    n = a.shape[0]
    b = np.maximum(a - a.mean(axis=(1, 2), keepdims=True), 0.0)
    flat = a.reshape(n, -1)
    b[flat.max(axis=1) == flat.min(axis=1)] = 0.0  # a flat map has no cell above its mean (no rounding noise)
    labels, count = ndimage.label(b > 0, structure=_EIGHT_CONNECTED_WITHIN_SLICE)
    empty_value = math.inf if weighting == "area" else 0.0
    entropy = np.full(n, empty_value)
    if count == 0:
        return entropy
    flat_labels = labels.ravel()
    slice_of_label = np.zeros(count + 1, dtype=np.int64)
    slice_of_label[flat_labels] = np.repeat(np.arange(n), a.shape[1] * a.shape[2])
    weights = np.bincount(flat_labels, weights=None if weighting == "area" else b.ravel(), minlength=count + 1)[1:]
    owners = slice_of_label[1:]
    totals = np.bincount(owners, weights=weights, minlength=n)
    p = weights / totals[owners]
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    has_component = np.bincount(owners, minlength=n) > 0
    entropy[has_component] = np.bincount(owners, weights=terms, minlength=n)[has_component]
    return entropy


def elbow_index(values: Iterable[float]) -> int:
    """Index, in ascending order, of the point farthest from the chord joining the first and last sorted points.

    The perpendicular distance to the chord is the vertical gap times a constant, so the chosen point does not
    change when either axis is scaled.
    """
    v = _sorted_values(values)
    if v.size == 0:
        raise ValueError("elbow of an empty sequence")
    if v.size < 3 or v[-1] == v[0]:
        return int(v.size - 1)
    x = np.arange(v.size, dtype=np.float64) / (v.size - 1)
    y = (v - v[0]) / (v[-1] - v[0])
    distance = np.abs(y - x) / math.sqrt(2.0)
    return int(np.argmax(distance))


def elbow_threshold(values: Iterable[float]) -> float:
    """The threshold tau: the value at the elbow of the ascending-sorted values (docs/method.md: discovery, step 2)."""
    v = _sorted_values(values)
    return float(v[elbow_index(v)])


def _sorted_values(values: Iterable[float]) -> np.ndarray:
    array = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.float64)
    return np.sort(np.asarray(array, dtype=np.float64).ravel())


def image_attention_sums(sample: np.ndarray) -> np.ndarray:
    """Per-head attention sum over the image positions: `[L, H, h, w]` -> `[L, H]`."""
    s = np.asarray(sample)
    if s.ndim != 4:
        raise ValueError(f"a sample must be [L, H, h, w], got shape {s.shape}")
    return s.reshape(s.shape[0], s.shape[1], -1).sum(axis=-1, dtype=np.float64)


def head_entropies(sample: np.ndarray, weighting: EntropyWeighting = "area") -> np.ndarray:
    """Spatial entropy of every head of one `[L, H, h, w]` sample -> `[L, H]`."""
    s = np.asarray(sample)
    return spatial_entropies(s.reshape(-1, *s.shape[2:]), weighting).reshape(s.shape[:2])


@dataclass(frozen=True)
class HeadSelection:
    """Result of head discovery.

    `heads`: the k localization heads as 0-based (layer, head), most voted first. `tau`: the elbow threshold on
    the mean sums. `votes`: per head, the number of samples that put it among its `top_n` lowest-entropy
    candidates (heads with no vote are absent). `mean_sums`: `[L, H]` mean image-attention sum over the samples.
    `mean_entropy`: `[L, H]` mean spatial entropy (inf where a head had no component in some sample).
    `candidates`: heads above tau outside the skipped layers. `num_samples`: N.
    """

    heads: list[Head]
    tau: float
    votes: dict[Head, int]
    mean_sums: np.ndarray
    mean_entropy: np.ndarray = field(repr=False)
    candidates: list[Head] = field(default_factory=list, repr=False)
    num_samples: int = 0

    def frequencies(self) -> dict[Head, float]:
        """Selection frequency per voted head: votes / number of samples, most voted first."""
        ranked = sorted(self.votes.items(), key=lambda kv: (-kv[1], kv[0]))
        return {h: n / max(self.num_samples, 1) for h, n in ranked}


def select_localization_heads(
    samples: Iterable[np.ndarray],
    k: int = 3,
    top_n: int = 10,
    skip_layers: int = 2,
    *,
    weighting: EntropyWeighting = "area",
    use_threshold: bool = True,
    use_entropy: bool = True,
) -> HeadSelection:
    """The paper's head discovery over a stream of `[L, H, h, w]` last-token image-attention samples.

    1. mean image-attention sum per head; 2. tau = elbow of the sorted means; 3. candidates: mean sum > tau,
    layer >= `skip_layers`; 4-5. per sample, the `top_n` candidates with the lowest spatial entropy get a vote;
    the `k` most voted heads win (ties broken by lower mean entropy, then by (layer, head)).
    `use_threshold=False` and `use_entropy=False` switch off one rule each (for ablations; with the entropy rule
    off, each sample votes for its `top_n` candidates with the highest attention sum instead).
    """
    if k < 1 or top_n < 1:
        raise ValueError("k and top_n must be at least 1")
    sum_total: np.ndarray | None = None
    entropy_rows: list[np.ndarray] = []
    sum_rows: list[np.ndarray] = []
    for sample in samples:
        sums = image_attention_sums(sample)
        if sum_total is None:
            sum_total = np.zeros_like(sums)
        elif sums.shape != sum_total.shape:
            raise ValueError(f"sample of {sums.shape} heads after samples of {sum_total.shape}")
        sum_total += sums
        entropy_rows.append(head_entropies(sample, weighting).astype(np.float32))
        if not use_entropy:
            sum_rows.append(sums.astype(np.float32))
    if sum_total is None:
        raise ValueError("head discovery needs at least one sample")

    n = len(entropy_rows)
    num_layers, num_heads = sum_total.shape
    mean_sums = sum_total / n
    tau = elbow_threshold(mean_sums.ravel())
    eligible = np.zeros_like(mean_sums, dtype=bool)
    eligible[skip_layers:] = True
    if use_threshold:
        eligible &= mean_sums > tau
    candidates = [(int(l), int(h)) for l, h in zip(*np.nonzero(eligible))]
    flat_candidates = np.flatnonzero(eligible.ravel())

    entropies = np.stack(entropy_rows)
    with np.errstate(invalid="ignore"):
        mean_entropy = entropies.astype(np.float64).mean(axis=0)
    vote_counts = np.zeros(num_layers * num_heads, dtype=np.int64)
    for i in range(n):
        if use_entropy:
            score = entropies[i].ravel()[flat_candidates].astype(np.float64)
            finite = np.isfinite(score)
        else:
            score = -sum_rows[i].ravel()[flat_candidates].astype(np.float64)
            finite = np.ones_like(score, dtype=bool)
        order = np.lexsort((flat_candidates, score))
        chosen = [flat_candidates[j] for j in order if finite[j]][:top_n]
        vote_counts[chosen] += 1

    flat_mean_entropy = mean_entropy.ravel()
    voted = np.flatnonzero(vote_counts)
    ranked = sorted(voted, key=lambda f: (-vote_counts[f], flat_mean_entropy[f], f))
    heads = [(int(f // num_heads), int(f % num_heads)) for f in ranked[:k]]
    votes = {(int(f // num_heads), int(f % num_heads)): int(vote_counts[f]) for f in ranked}
    return HeadSelection(
        heads=heads,
        tau=tau,
        votes=votes,
        mean_sums=mean_sums,
        mean_entropy=mean_entropy,
        candidates=candidates,
        num_samples=n,
    )


@dataclass(frozen=True)
class HeadsFile:
    """A model's localization heads as stored in `resources/heads/*.json` or written by `find-heads`.

    `heads` are 0-based (layer, head). `model` is the hub id or path the heads belong to; `aliases` are other
    ids of the same checkpoint. `source` says where the heads come from.
    """

    model: str
    heads: list[Head]
    source: str = ""
    aliases: tuple[str, ...] = ()
    tau: float | None = None
    votes: dict[Head, int] = field(default_factory=dict)
    num_samples: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    created: str | None = None

    @classmethod
    def from_selection(cls, selection: HeadSelection, model: str, source: str) -> "HeadsFile":
        num_layers, num_heads = selection.mean_sums.shape
        return cls(
            model=model,
            heads=list(selection.heads),
            source=source,
            tau=selection.tau,
            votes=dict(selection.votes),
            num_samples=selection.num_samples,
            num_layers=int(num_layers),
            num_heads=int(num_heads),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    def to_json(self) -> dict:
        data = {
            "model": self.model,
            "aliases": list(self.aliases),
            "indexing": "0-based",
            "heads": [list(h) for h in self.heads],
            "source": self.source,
        }
        optional = {
            "tau": self.tau,
            "num_samples": self.num_samples,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "created": self.created,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        if self.votes:
            data["votes"] = [[l, h, n] for (l, h), n in sorted(self.votes.items(), key=lambda kv: (-kv[1], kv[0]))]
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "heads file") -> "HeadsFile":
        """A heads file from its parsed JSON; `ValueError` naming `where` and the key that is missing or wrong."""
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: not a valid heads file: expected a JSON object with 'model' and 'heads', "
                f"got {_json_type(data)}"
            )
        problem = _heads_file_problem(data)
        if problem is not None:
            raise ValueError(f"{where}: not a valid heads file: {problem}")
        return cls(
            model=data["model"],
            heads=[(layer, head) for layer, head in data["heads"]],
            source=str(data.get("source", "")),
            aliases=tuple(data.get("aliases", ())),
            tau=None if data.get("tau") is None else float(data["tau"]),
            votes={(layer, head): count for layer, head, count in data.get("votes", [])},
            num_samples=data.get("num_samples"),
            num_layers=data.get("num_layers"),
            num_heads=data.get("num_heads"),
            created=data.get("created"),
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "HeadsFile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: cannot read heads file: not UTF-8 text ({exc.reason})") from exc
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or a number too long to read
            raise ValueError(f"{path}: cannot read heads file ({exc})") from exc
        return cls.from_json(data, where=str(path))

    def names(self, model_id: str) -> bool:
        """Whether this file is for `model_id` (its id, an alias, or a local folder of that name)."""
        wanted = _normalise_model_id(model_id)
        known = {_normalise_model_id(m) for m in (self.model, *self.aliases)}
        return wanted in known or Path(wanted).name in {Path(m).name for m in known}


def head_label(head: Head) -> str:
    """A head as the paper names it: 'L14 H24' (0-based layer and head)."""
    return f"L{head[0]} H{head[1]}"


def _is_count(value: object) -> bool:
    """A JSON whole number >= 0 (not a bool, not 14.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _heads_file_problem(data: dict) -> str | None:
    """What is missing or wrong in a parsed heads file, or None."""
    if data.get("indexing", "0-based") != "0-based":
        return f"'indexing' is {data['indexing']!r} (only 0-based is read)"
    if "model" not in data:
        return "'model' is missing (the hub id or folder the heads belong to)"
    if not isinstance(data["model"], str) or not data["model"].strip():
        return f"'model' must be a non-empty string (the hub id or folder), got {_json_type(data['model'])}"
    if "heads" not in data:
        return "'heads' is missing (a list of [layer, head] pairs, 0-based)"
    heads = data["heads"]
    if not isinstance(heads, list) or not heads:
        return "'heads' must be a non-empty list of [layer, head] pairs, 0-based"
    for index, pair in enumerate(heads):
        if not isinstance(pair, list) or len(pair) != 2 or not all(_is_count(v) for v in pair):
            return (
                f"'heads' entry {index} is {json.dumps(pair)[:60]}; each must be [layer, head], two non-negative "
                "whole numbers (0-based)"
            )
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        return "'aliases' must be a list of strings"
    votes = data.get("votes", [])
    if not isinstance(votes, list) or not all(
        isinstance(v, list) and len(v) == 3 and all(_is_count(n) for n in v) for v in votes
    ):
        return "'votes' must be a list of [layer, head, votes] whole numbers"
    tau = data.get("tau")
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))):
        return f"'tau' must be a number, got {_json_type(tau)}"
    for key in ("num_samples", "num_layers", "num_heads"):
        if data.get(key) is not None and not _is_count(data[key]):
            return f"'{key}' must be a whole number, got {json.dumps(data[key])[:60]}"
    return None


def _normalise_model_id(model_id: str) -> str:
    return str(model_id).strip().rstrip("/").lower()


def known_heads_files(folder: str | Path = HEADS_DIR) -> list[HeadsFile]:
    """Every heads file shipped in `folder` (default `resources/heads/`)."""
    return [HeadsFile.load(p) for p in sorted(Path(folder).glob("*.json"))]


def find_heads_file(model_id: str, folder: str | Path = HEADS_DIR) -> HeadsFile | None:
    """The shipped heads of `model_id` (hub id, alias, or a local folder named like one), or None."""
    for heads_file in known_heads_files(folder):
        if heads_file.names(model_id):
            return heads_file
    local = Path(model_id) / "heads.json"
    if local.is_file():
        return HeadsFile.load(local)
    return None
