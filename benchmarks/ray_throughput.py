"""Pre-labelling throughput with the planted model: local `prelabel` vs `prelabel --ray` with 1 and 2 CPU actors.

Usage: .venv/bin/python benchmarks/ray_throughput.py [--images 40] [--repeats 3] [--shard-size 8]

A folder of generated scenes (JPEG, 1024-1600 px on the long side, so decoding costs what a photo's does; one
expression per image, boxes only) is pre-labelled, each run on a fresh project store (and a fresh shards folder):
- local: `Prelabeller` (the loop of `annotator prelabel`: loader thread, prefetch) with the proposer loaded in
  this process, with torch's default threads (one per CPU) and with one thread;
- ray, N actors: `RayPrelabeller` (the pipeline of `annotator prelabel --ray`) on a local Ray instance with all of
  this machine's CPUs, N proposal actors (sized by `plan_actors`: fractional CPUs, one torch thread per whole CPU
  asked for, at least one).
Three figures per run:
- end to end (images/s): all images over the wall time from the start of the run to its last store commit, model
  loading included (the local run loads the proposer inside the timed span, the Ray run starts its actors, which
  load it);
- start-up (s): from the start of the run to its first store commit (the local loop commits per image, the Ray run
  per shard);
- steady (images/s): the images committed after every actor has delivered once (after the first commit locally,
  after the N-th shard with N actors) over the time from that commit to the last one.
The Ray instance is started once, before the timed runs. One warm-up run per mode is excluded; the repetitions
rotate the order of the modes so that a change in the machine's load hits all of them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from time import perf_counter

import ray
import torch

from annotator.distributed.ray_prelabel import ProposerSpec, RayPrelabeller, plan_actors
from annotator.grounding.heads import HeadsFile
from annotator.synthetic.planted import PLANTED_MODEL_DIR
from annotator.synthetic.scenes import SceneConfig
from annotator.prelabel import Prelabeller, expression_plan
from annotator.project.images import image_size
from annotator.project.store import ProjectStore
from annotator.synthetic.scene_folder import write_scene_folder
from machine import cpu_name  # benchmarks/machine.py: the script's folder is on sys.path

SCENES = SceneConfig(long_side=(1024, 1600), aspect=(0.75, 1.33), target_width=(0.42, 0.55), other_width=(0.12, 0.3))
CPUS = os.cpu_count() or 1
MODES = {
    f"local prelabel, {CPUS} torch threads (torch's default)": (0, CPUS),
    "local prelabel, 1 torch thread": (0, 1),
    "--ray, 1 CPU actor": (1, None),
    "--ray, 2 CPU actors": (2, None),
}
"""Mode -> (Ray actors, 0 for the local loop; torch threads of the local loop, None for Ray: the actor plan's)."""


@dataclass
class Commits:
    """Wall-clock times of a run's store commits, from its progress calls."""

    start: float
    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __call__(self, done: int, already_done: int, total: int) -> None:
        if done > 0:
            self.times.append(perf_counter())
            self.counts.append(done)

    def end_to_end(self) -> float:
        return self.counts[-1] / (self.times[-1] - self.start)

    def start_up(self) -> float:
        return self.times[0] - self.start

    def steady(self, workers: int) -> float:
        """Images/s after the `workers`-th commit: every worker has then delivered once."""
        first = workers - 1
        if first >= len(self.times) - 1:
            raise ValueError(f"{len(self.times)} commits are too few to measure {workers} workers; use more images")
        return (self.counts[-1] - self.counts[first]) / (self.times[-1] - self.times[first])


def run_once(
    spec: ProposerSpec, folder: Path, plan_file: Path, work: Path, actors: int, threads: int | None, shard_size: int
) -> Commits:
    """One full pre-labelling of the folder on a fresh store: local with `threads` when `actors` is 0, else on Ray."""
    plan = expression_plan(path=plan_file)
    commits = Commits(start=perf_counter())
    with ProjectStore.open(work / "store.sqlite", image_root=folder) as store:
        if actors == 0:
            torch.set_num_threads(threads)
            proposer = spec.load()
            report = Prelabeller(proposer, store, masks=spec.masks, model_id=spec.model).run(plan, progress=commits)
            proposer.close()
        else:
            prelabeller = RayPrelabeller(spec, store, work / "shards", shard_size=shard_size, actors=actors)
            report = prelabeller.run(plan, progress=commits)
    assert report.images_done == report.images_total and not report.skipped, report
    return commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=4, help="images per shard of the Ray runs (default: 4)")
    args = parser.parse_args()

    heads = HeadsFile.load(PLANTED_MODEL_DIR / "heads.json")
    spec = ProposerSpec(str(PLANTED_MODEL_DIR), tuple(map(tuple, heads.heads)), device="cpu")
    load_before = os.getloadavg()
    ray.init(num_cpus=CPUS, include_dashboard=False)
    end_to_end: dict[str, list[float]] = {mode: [] for mode in MODES}
    start_up: dict[str, list[float]] = {mode: [] for mode in MODES}
    steady: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="ray-throughput-") as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "scenes"
        plan_file = write_scene_folder(folder, args.images, seed=2024, config=SCENES, image_format="jpg")
        megapixels = statistics.mean(w * h / 1e6 for w, h in (image_size(p) for p in folder.glob("*.jpg")))
        modes = list(MODES.items())
        for run in range(args.repeats + 1):
            for mode, (actors, threads) in modes[run % len(modes) :] + modes[: run % len(modes)]:
                work = tmp_path / f"run-{run}-{actors}-{threads}"
                work.mkdir()
                commits = run_once(spec, folder, plan_file, work, actors, threads, args.shard_size)
                if run > 0:  # run 0 is the warm-up
                    end_to_end[mode].append(commits.end_to_end())
                    start_up[mode].append(commits.start_up())
                    steady[mode].append(commits.steady(max(1, actors)))
    ray.shutdown()
    load_after = os.getloadavg()

    print("# Pre-labelling throughput: local vs Ray Data (planted model, CPU)\n")
    print(f"- machine: {cpu_name()}, {CPUS} logical CPUs, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after (shared machine)")
    print(f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{version('transformers')}, ray {ray.__version__}, numpy {version('numpy')}, pyarrow {version('pyarrow')}")
    print(f"- {args.images} generated JPEG scenes, mean {megapixels:.2f} MP, one expression each, boxes only; "
          f"Ray shards of {args.shard_size} images; local Ray instance with {CPUS} CPUs, no GPU; "
          f"{args.repeats} runs per mode after one warm-up run; median reported")
    for actors in (1, 2):
        plan = plan_actors(CPUS, 0, 1, actors)
        print(f"- {actors} actor(s): {plan.cpus_per_actor:g} CPU each, {plan.torch_threads} torch thread(s) each, "
              f"decoding tasks {plan.decode_cpus:g} CPU")
    print()
    print("| mode | end to end, images/s (runs) | median | vs row 1 | start-up, s (median) | steady, images/s (runs) "
          "| median | vs row 1 |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    local = next(iter(MODES))
    local_e2e, local_steady = statistics.median(end_to_end[local]), statistics.median(steady[local])
    for mode in MODES:
        e2e, stable = statistics.median(end_to_end[mode]), statistics.median(steady[mode])
        print(f"| {mode} | {', '.join(f'{v:.2f}' for v in end_to_end[mode])} | {e2e:.2f} | {e2e / local_e2e:.2f}x "
              f"| {statistics.median(start_up[mode]):.1f} | {', '.join(f'{v:.2f}' for v in steady[mode])} "
              f"| {stable:.2f} | {stable / local_steady:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
