"""`annotator models`: list, download, verify or remove the model presets."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from annotator.commands.options import OneLineParser, help_formatter
from annotator.commands.runtime import EXIT_OK, byte_progress, fail

if TYPE_CHECKING:
    from annotator.models.presets import Preset, Presets

MODELS_HELP = """\
The model presets (resources/models.json): LLaVA-1.5 7B/13B, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-NeXT,
LLaVA-OneVision, DeepSeek-VL and InternVL3 checkpoints from the Hugging Face Hub, the mask models (SAM ViT-H/L/B,
SAM 2.1 tiny/small/base-plus/large, SAM-HQ ViT-B/L/H) and the planted demo models. The HEADS column says whether
a model's localization heads ship with the app or must be found with `annotator find-heads` first. A download
fetches only the shards up to the deepest localization head unless --full is given (a model whose heads are unknown
is fetched whole); it goes into the Hugging Face cache (HF_HOME), resumes after a cut connection and checks the free
disk space first. SAM 2.1 and SAM-HQ go the same way; the official SAM
checkpoints go into the user cache, resumable and SHA-256 checked.

examples:
  annotator models list
  annotator models download llava-1.5-7b
  annotator models download Qwen2-VL-7B-Instruct
  annotator models download sam-vit_h
  annotator models download sam2.1-tiny
  annotator models verify llava-1.5-7b
  annotator models remove llava-1.5-13b
"""


def build_parser() -> argparse.ArgumentParser:
    """The `annotator models` parser, one sub-command per action."""
    parser = OneLineParser(prog="annotator models", description=MODELS_HELP, formatter_class=help_formatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=OneLineParser)
    actions.add_parser("list", help="every preset: on this machine or not, size on disk, heads known or not, path")
    download = actions.add_parser("download", help="download a preset (only the shards grounding needs)")
    download.add_argument("name", metavar="NAME", help="preset name (see 'annotator models list')")
    download.add_argument("--full", action="store_true", help="every shard, for uses beyond grounding")
    for action, what in (("verify", "check a downloaded preset's SHA-256"), ("remove", "delete a downloaded preset")):
        actions.add_parser(action, help=what).add_argument("name", metavar="NAME", help="preset name")
    parser.set_defaults(handler=run, prog=parser.prog)
    return parser


def run(args: argparse.Namespace) -> int:
    """List, download, verify or remove a preset; the exit code."""
    from annotator.models import hub
    from annotator.download import file_sha256
    from annotator.models.presets import DemoPreset, LvlmPreset, SamPreset, download_sam, load_presets, local_copy

    presets = load_presets()
    if args.action == "list":
        _print_list(presets)
        return EXIT_OK
    preset = _preset(presets, args.name)
    if isinstance(preset, DemoPreset):
        if args.action == "remove":
            return fail(args.prog, f"{preset.name} ships with the app in {preset.folder} and is not removed")
        print(f"{preset.name}: ships with the app in {preset.folder}")
        return EXIT_OK
    if args.action == "download":
        progress = byte_progress()
        if isinstance(preset, SamPreset):
            path = download_sam(preset, progress)
        else:
            if not preset.heads_known and not args.full:
                print(f"{preset.name}: no localization heads are known yet, so every shard is fetched")
            plan = hub.plan_download(preset.hub_id, None if args.full else preset.deepest_head_layer)
            saved = f", {hub.format_bytes(plan.bytes_saved)} of later layers skipped" if plan.bytes_saved else ""
            print(f"{preset.hub_id}: {len(plan.files)} files, {hub.format_bytes(plan.bytes_needed)}{saved}")
            path = hub.download(plan, progress)
        print(f"\n{preset.name}: ready in {path}")
        return EXIT_OK
    copy = local_copy(preset)
    official_sam = isinstance(preset, SamPreset) and preset.hub_id is None
    if args.action == "remove":
        if official_sam:
            freed = 0 if copy is None else copy.size_bytes
            if copy is not None:
                copy.path.unlink()
        else:
            freed = hub.remove(preset.hub_id)
        print(f"{preset.name}: removed, {hub.format_bytes(freed)} freed")
        return EXIT_OK
    if copy is None or not copy.complete:
        return fail(args.prog, f"{preset.name} is not downloaded; run 'annotator models download {preset.name}'")
    if official_sam:
        digest, expected = file_sha256(copy.path), preset.checkpoint.sha256
        problems = [] if digest == expected else [f"{copy.path} has SHA-256 {digest}, expected {expected}"]
        checked = 1
    else:
        layer = preset.deepest_head_layer if isinstance(preset, LvlmPreset) else None
        report = hub.verify(hub.require_cached(preset.hub_id, layer, preset.name))
        problems, checked = list(report.problems), report.checked
    if problems:
        return fail(args.prog, f"{preset.name} is damaged: {'; '.join(problems)}; remove it and download it again")
    if checked == 0:
        print(f"{preset.name}: complete, but no weight file carries a known SHA-256 to check ({copy.path})")
    else:
        print(f"{preset.name}: {checked} weight file(s) match their SHA-256 ({copy.path})")
    return EXIT_OK


def _preset(presets: "Presets", name: str) -> "Preset":
    """The preset called `name`; a SAM 2.1 or SAM-HQ model the presets file does not list is found by its
    `segmentation.catalog` name, so every mask model can be downloaded, verified and removed."""
    from annotator.errors import ModelUnavailable
    from annotator.models.presets import SamPreset
    from annotator.segmentation.catalog import hub_model

    try:
        return presets.get(name)
    except ModelUnavailable:
        found = hub_model(name)
        if found is None:
            raise
        return SamPreset(found.name, found.name, found.label)


HEADS_SHIPPED = "shipped"
HEADS_OWN = "own heads.json"
HEADS_TO_FIND = "find-heads first"


def heads_state(preset: "Preset") -> str:
    """The HEADS column: shipped in resources/heads/, the demo folder's own heads.json, to be found with
    `annotator find-heads` first, or "-" (SAM, a demo folder not there)."""
    from annotator.models.presets import DemoPreset, LvlmPreset

    if isinstance(preset, LvlmPreset):
        return HEADS_SHIPPED if preset.heads_known else HEADS_TO_FIND
    if isinstance(preset, DemoPreset) and preset.folder.is_dir():
        return HEADS_OWN if preset.heads_known else HEADS_TO_FIND
    return "-"


def _print_list(presets: "Presets") -> None:
    from annotator.models import hub
    from annotator.models.presets import local_copy

    width = max(len(preset.name) for preset in presets.all)
    print(f"{'NAME':<{width}} {'ON DISK':<34} {'SIZE':>9}  {'HEADS':<16}  PATH")
    for preset in presets.all:
        copy = local_copy(preset)
        state, size, path = (
            ("no", "", "") if copy is None else (copy.note, hub.format_bytes(copy.size_bytes), copy.path)
        )
        print(f"{preset.name:<{width}} {state[:34]:<34} {size:>9}  {heads_state(preset):<16}  {path}".rstrip())
    print("\nGPU memory for the weights (estimates): whole model / truncated for grounding / truncated in 4-bit")
    for lvlm in presets.lvlm:
        memory = lvlm.gpu_memory
        truncated = "-" if memory.truncated_gb is None else f"{memory.truncated_gb:.1f} GB"
        four_bit = "-" if memory.truncated_4bit_gb is None else f"{memory.truncated_4bit_gb:.1f} GB (--4bit)"
        print(f"{lvlm.name:<{width}} {memory.full_gb:.1f} GB / {truncated} / {four_bit}")
    unknown = [lvlm.name for lvlm in presets.lvlm if not lvlm.heads_known]
    if unknown:
        print(
            f"\n{', '.join(unknown)}: no localization heads are known yet; find them once with "
            "'annotator find-heads --model NAME --data FILE' or the app's Find heads on this folder (then they can be "
            "truncated)"
        )
