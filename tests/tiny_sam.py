"""A tiny Segment Anything model for mechanics tests: segment_anything's own modeling classes, random weights.

Input 256 px (a 16 x 16 embedding grid, 64 x 64 low-res logits), 2 encoder blocks of width 64, prompt width 32:
about 0.19 M parameters, an embedding in ~0.1 s and a decode in ~0.01 s on the CPU.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

IMG_SIZE = 256
PATCH_SIZE = 16
PROMPT_DIM = 32
GRID = IMG_SIZE // PATCH_SIZE
LOW_RES = 4 * GRID


def build_tiny_sam(seed: int = 0) -> Sam:
    """A `Sam` in eval mode, float32 on the CPU, with weights drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=IMG_SIZE,
                patch_size=PATCH_SIZE,
                embed_dim=64,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=PROMPT_DIM,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=4,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_DIM,
                image_embedding_size=(GRID, GRID),
                input_image_size=(IMG_SIZE, IMG_SIZE),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=PROMPT_DIM,
                transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=64, num_heads=2),
                num_multimask_outputs=3,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
        )
    return sam.eval()
