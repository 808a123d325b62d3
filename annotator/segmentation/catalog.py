"""Every mask model the app offers, by name, without loading torch: SAM v1's official checkpoints (URL, size,
SHA-256) and the SAM 2.1 and SAM-HQ checkpoints on the Hugging Face Hub. The presets (resources/models.json), the
CLI's `--mask-model` and `Segmenter.load` read these names and never write a hub id or checksum twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointSpec:
    """An official SAM checkpoint: its URL, its size in bytes and its SHA-256 (hex)."""

    url: str
    size_bytes: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


SAM_CHECKPOINTS: dict[str, CheckpointSpec] = {
    "vit_h": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        2_564_550_879,
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        1_249_524_607,
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        375_042_383,
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
}


@dataclass(frozen=True)
class HubMaskModel:
    """A released transformers mask checkpoint: its name (the preset's), its label in words, its Hub id and the
    `model_type`s its config.json may declare."""

    name: str
    label: str
    hub_id: str
    families: tuple[str, ...]


SAM2_FAMILIES = ("sam2", "sam2_video")
"""The released SAM 2.1 checkpoints are saved as `Sam2VideoModel` (sam2_video), whose image part `Sam2Model` loads."""

SAM2_MODELS: dict[str, HubMaskModel] = {
    m.name: m
    for m in (
        HubMaskModel("sam2.1-tiny", "SAM 2.1 tiny", "facebook/sam2.1-hiera-tiny", SAM2_FAMILIES),
        HubMaskModel("sam2.1-small", "SAM 2.1 small", "facebook/sam2.1-hiera-small", SAM2_FAMILIES),
        HubMaskModel("sam2.1-base-plus", "SAM 2.1 base+", "facebook/sam2.1-hiera-base-plus", SAM2_FAMILIES),
        HubMaskModel("sam2.1-large", "SAM 2.1 large", "facebook/sam2.1-hiera-large", SAM2_FAMILIES),
    )
}

SAM_HQ_MODELS: dict[str, HubMaskModel] = {
    m.name: m
    for m in (
        HubMaskModel("sam-hq-vit_b", "SAM-HQ ViT-B", "syscv-community/sam-hq-vit-base", ("sam_hq",)),
        HubMaskModel("sam-hq-vit_l", "SAM-HQ ViT-L", "syscv-community/sam-hq-vit-large", ("sam_hq",)),
        HubMaskModel("sam-hq-vit_h", "SAM-HQ ViT-H", "syscv-community/sam-hq-vit-huge", ("sam_hq",)),
    )
}

MASK_MODELS: tuple[str, ...] = (*SAM_CHECKPOINTS, *SAM2_MODELS, *SAM_HQ_MODELS)
"""Every mask model name `Segmenter.load` builds: the SAM v1 types, the SAM 2.1 sizes, the SAM-HQ sizes."""


AUTO = "auto"
"""The mask model that fits the machine: `default_mask_model` of the device it runs on."""

CPU_DEFAULT = "sam2.1-tiny"
GPU_DEFAULT = "sam2.1-large"


def default_mask_model(device_type: str) -> str:
    """The mask model `auto` stands for on a device of `device_type` ("cpu", "cuda", ...): SAM 2.1 tiny on a CPU
    (its image embedding took 3.3-8.2 s where SAM ViT-B's took 15.8-22.5 s on a 2-core CPU, benchmarks/sam_speed.py),
    SAM 2.1 large on an accelerator, for its masks (SAM 2's paper reports SAM 2 more accurate than SAM on images and
    6x faster); the GPU rows of benchmarks/sam_speed.py have not been measured yet."""
    return CPU_DEFAULT if device_type == "cpu" else GPU_DEFAULT


def hub_model(name: str) -> HubMaskModel | None:
    """The Hub checkpoint of mask model `name`, or None for SAM v1 (an official .pth file) or an unknown name."""
    return SAM2_MODELS.get(name) or SAM_HQ_MODELS.get(name)


def mask_model_label(name: str) -> str:
    """Mask model `name` in words: "SAM vit_b", "SAM 2.1 tiny", "SAM-HQ ViT-B", "the default mask model"."""
    if name == AUTO:
        cpu, gpu = mask_model_label(CPU_DEFAULT), mask_model_label(GPU_DEFAULT)
        return f"the default mask model ({cpu} on a CPU, {gpu} on a GPU)"
    found = hub_model(name)
    return found.label if found is not None else f"SAM {name}"
