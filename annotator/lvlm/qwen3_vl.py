"""Qwen3-VL (`Qwen3VLForConditionalGeneration`: Qwen/Qwen3-VL-2B-Instruct, -4B, -8B, -32B): native resolution,
interleaved M-RoPE, DeepStack, the chat template's user turn.

Image: Qwen's smart resize (transformers' `Qwen2VLImageProcessor`, the one Qwen3-VL's processor uses) makes each
side a multiple of 32 px (patch 16 x merge 2) with the pixel count within [`min_pixels`, `max_pixels`] and the
aspect ratio kept as closely as that allows; the vision tower's 16 px patches are merged 2 x 2 into one LLM token,
so each token is 32 x 32 = 1,024 px of the resized image. The released checkpoints' processors allow 65,536 to
16,777,216 px (64 to 16,384 tokens). A 1000 x 750 photo gives a 31 x 23 grid (713 tokens). No padding: the grid is
the whole image (`ImageFrame(fit="stretch")`, `qwen2_vl.qwen_layout` with 16 px patches).

Text: Qwen3-VL-Instruct's chat template has no default system turn (it writes one only when the messages start
with a system message); the user turn holds the image first, then the expression, and no `<|im_end|>` and no
assistant turn, so the sequence ends on the expression's own last token (the query token of the method):

    <|im_start|>user\\n<|vision_start|><|image_pad|> x tokens <|vision_end|>EXPRESSION

Vision features: `get_image_features` gives the merged tokens put at the image tokens (`VisionFeatures.embeds`)
and DeepStack's features, one per `vision_config.deepstack_visual_indexes` block (`VisionFeatures.extra`); the text
model adds feature k to the hidden states at the image tokens after its decoder layer k. `text_kwargs` passes them
(`deepstack_visual_embeds`, with `visual_pos_masks` marking the image tokens) to a forward holding the image tokens;
an expression run after a cached prefix needs none, as no image token is among its own.

Positions: interleaved M-RoPE (the rotary frequencies cycle through temporal, row and column) gives the image
tokens (temporal, row, column) positions and the text after them positions that continue from the image's; they
come from the model's own `get_rope_index` over the whole sequence, so a cached prefix and the expression after it
get exactly the positions of a full forward.
"""

from __future__ import annotations

import numpy as np
import torch

from annotator.lvlm.family import VisionFeatures
from annotator.lvlm.layout import TokenLayout
from annotator.lvlm.qwen2_vl import QwenVLFamily


class Qwen3VLFamily(QwenVLFamily):
    """Qwen3-VL: Qwen2-VL's grids (16 px patches), positions from Qwen3-VL's own `get_rope_index`, DeepStack, the
    prompt without a system turn.

    `min_pixels` / `max_pixels`: the smart-resize budget (default: the checkpoint's processor's); each LLM token
    costs 32 x 32 = 1,024 pixels of it.
    """

    name = "qwen3-vl"
    system_turn = ""

    def image_features(self, image: np.ndarray, layout: TokenLayout, device: torch.device) -> VisionFeatures:
        """The merged tokens and the DeepStack features (one `[layout.num_tokens, hidden]` tensor each)."""
        inputs = self.pixel_values(image, layout, device)
        out = self.model.model.get_image_features(**inputs, return_dict=True)
        return VisionFeatures(out.pooler_output[0], tuple(feature[0] for feature in out.deepstack_features))

    def text_kwargs(self, features: VisionFeatures, image_positions: slice, length: int) -> dict:
        """DeepStack's inputs: its features and the mask of the image tokens among the forward's `length`."""
        if not features.extra:
            return {}
        mask = torch.zeros(1, length, dtype=torch.bool, device=features.embeds.device)
        mask[0, image_positions] = True
        return {"visual_pos_masks": mask, "deepstack_visual_embeds": list(features.extra)}
