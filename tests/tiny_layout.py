"""Tiny random-weight PP-DocLayoutV2 / PP-DocLayoutV3 checkpoints with the real structure.

The configuration is transformers' own (PPDocLayoutV2Config / PPDocLayoutV3Config: HGNetV2 backbone,
hybrid encoder, deformable decoder, the reading-order pointer network) at the smallest sizes its model
code accepts (the sizes of transformers' tests/models/pp_doclayout_v2 tester, smaller still), with the
published label list (PaddlePaddle/PaddleOCR-VL PP-DocLayoutV2/config.json), class thresholds and class
order (transformers' tests/models/pp_doclayout_v2/test_modeling_pp_doclayout_v2.py, equal to
PaddleOCR-VL.yaml's per-class thresholds), and the published preprocessor_config.json
(PPDocLayoutV2ImageProcessor: rescale 1/255, mean 0, std 1, resample 3) with its 800 x 800 made
256 x 256 (tests/test_paddleocr_vl.py checks the published size separately).

Random weights give every class a score near the initial prior (about 0.04), under every threshold, and
transformers initialises the class heads and the last box layer to zero weights (RT-DETR's init), so
every query gets the same box and the same scores, and a random detector finds at most one region.
Those heads get random weights, and the final classifier's biases of four classes (text, table,
display_formula, image) are raised so that queries pass the thresholds: the stage after the layout
then has several regions of several kinds to read. Everything else is as transformers initialises it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import transformers

from polyocr.engines.hf.pp_doclayout import LABELS, V2_THRESHOLDS

CLASS_ORDER = [4, 2, 14, 1, 5, 7, 8, 6, 11, 11, 9, 13, 10, 10, 1, 2, 3, 0, 2, 2, 12, 1, 2, 15, 6]
PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0, 0, 0],
    "image_processor_type": "PPDocLayoutV2ImageProcessor",
    "image_std": [1, 1, 1],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    # the published 800 x 800, made tiny like the rest: the engine reads the checkpoint's own size
    "size": {"height": 256, "width": 256},
}
# Classes whose final bias is raised (ids in LABELS) and by how much (logits; sigmoid(3) = 0.95).
RAISED = {22: 3.0, 21: 2.0, 5: 2.5, 14: 2.0}
CHANNELS = 16
# Standard deviations of the random weights given to the zero-initialised heads.
BOX_SPREAD = 0.5
SCORE_SPREAD = 0.5


def _backbone(out_features: list[str], return_idx: list[int]) -> dict[str, object]:
    return {
        "model_type": "hgnet_v2",
        "arch": "L",
        "return_idx": return_idx,
        "freeze_stem_only": True,
        "freeze_at": 0,
        "freeze_norm": True,
        "hidden_sizes": [CHANNELS] * 4,
        "stem_channels": [3, CHANNELS, CHANNELS],
        "stage_in_channels": [CHANNELS] * 4,
        "stage_mid_channels": [CHANNELS] * 4,
        "stage_out_channels": [CHANNELS] * 4,
        "stage_num_blocks": [1, 1, 1, 1],
        "stage_numb_of_layers": [1, 1, 1, 1],
        "lr_mult_list": [0, 0.05, 0.05, 0.05, 0.05],
        "out_features": out_features,
        # transformers' default init (std 0.02) shrinks a random image to ~1e-19 by the last stage of
        # so narrow a backbone; a wider init keeps the activations alive (a trained one has its own)
        "initializer_range": 0.2,
    }


COMMON = {
    "initializer_range": 0.2,
    "encoder_hidden_dim": CHANNELS,
    "encoder_in_channels": [CHANNELS] * 3,
    "encoder_ffn_dim": CHANNELS,
    "encoder_attention_heads": 2,
    "d_model": CHANNELS,
    "num_queries": 6,
    "decoder_in_channels": [CHANNELS] * 3,
    "decoder_ffn_dim": CHANNELS,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "num_denoising": 0,
    "id2label": dict(enumerate(LABELS)),
}


def _save(model_cls: type, config: object, path: Path) -> Path:
    torch.manual_seed(0)
    model = model_cls._from_config(copy.deepcopy(config), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # the final classifier (PP-DocLayoutV3 ties the decoder's to enc_score_head)
            if name in ("model.decoder.class_embed.0.bias", "model.enc_score_head.bias"):
                for label, logit in RAISED.items():
                    param[label] = logit
            # The heads transformers initialises to zero weights (RT-DETR's init: class heads and the
            # last box layer), which leave every query the same: given random weights instead.
            if name in ("model.enc_score_head.weight", "model.decoder.class_embed.0.weight"):
                param.copy_(torch.randn(param.shape, generator=generator) * SCORE_SPREAD)
                others = [i for i in range(param.shape[0]) if i not in RAISED]
                param[others] = 0.0  # only the raised classes can pass a threshold
            if name in ("model.decoder.bbox_embed.0.layers.2.weight", "model.enc_bbox_head.layers.2.weight"):
                param.copy_(torch.randn(param.shape, generator=generator) * BOX_SPREAD)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2), encoding="utf-8")
    return path


def build_pp_doclayout_v2(path: Path) -> Path:
    config = transformers.PPDocLayoutV2Config(
        backbone_config=_backbone(["stage2", "stage3", "stage4"], [1, 2, 3]),
        reading_order_config={
            "hidden_size": 16,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
        },
        class_thresholds=list(V2_THRESHOLDS),
        class_order=CLASS_ORDER,
        **COMMON,
    )
    return _save(transformers.PPDocLayoutV2ForObjectDetection, config, path)


def build_pp_doclayout_v3(path: Path) -> Path:
    config = transformers.PPDocLayoutV3Config(
        backbone_config=_backbone(["stage1", "stage2", "stage3", "stage4"], [0, 1, 2, 3]),
        mask_feature_channels=[CHANNELS, CHANNELS],
        x4_feat_dim=CHANNELS,
        num_prototypes=8,
        global_pointer_head_size=16,
        **COMMON,
    )
    preprocessor = dict(PREPROCESSOR, image_processor_type="PPDocLayoutV3ImageProcessor")
    out = _save(transformers.PPDocLayoutV3ForObjectDetection, config, path)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")
    return out
