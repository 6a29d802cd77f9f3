"""Pages to Phi-3.5-Vision inputs (the HD transform, crops, global view, prompt ids), and ids back to text.

The arithmetic is the reference's (processing_phi3_v.py / image_processing_phi3_v.py of
microsoft/Phi-3.5-vision-instruct, class Phi3VImageProcessor), written here without torchvision:

- HD_transform(hd_num=num_crops): a portrait page is transposed; the largest `scale` with
  scale * ceil(scale / ratio) <= num_crops (ratio = width / height) gives width scale*336 and height
  int(width / ratio); the page is resized to that (torchvision's resize of a PIL image: PIL bilinear),
  its height padded with white to a multiple of 336 (half on top, padding_336), and transposed back;
- ToTensor + Normalize with the CLIP mean/std; the global view is that normalised page resized to
  336x336 (torch bicubic interpolation, align_corners False);
- the page is cut into 336x336 crops in raster order, the global view put first, and zero crops pad
  the stack to num_crops + 1 (pad_to_max_num_crops_tensor);
- image tokens: (h_crop*w_crop + 1)*144 + 1 + (h_crop + 1)*12 (calc_num_image_tokens_from_image_size).

The prompt is the model card's single-image user turn, `<|user|>\\n<|image_1|>\\n{prompt}<|end|>\\n<|assistant|>\\n`.
As the reference processor does, the text around `<|image_1|>` is tokenized chunk by chunk (each chunk
with the tokenizer's own special tokens) and the image's token count is put between the chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from polyocr.engines import vlm
from polyocr.errors import EngineError

if TYPE_CHECKING:
    import torch

CROP = 336  # the CLIP tower's input side
TOKENS_PER_CROP = 144  # 24x24 patches merged 2x2
TOKENS_PER_ROW = 12  # tokens per crop row, each grid row closed by a separator
NUM_CROPS = 4  # preprocessor_config.json of Phi-3.5-vision-instruct ("num_crops": 4)
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN, the reference's default
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)  # OPENAI_CLIP_STD
PAD_FILL = (255, 255, 255)  # padding_336 pads with white

TEMPLATE = "<|user|>\n<|image_1|>\n{prompt}<|end|>\n<|assistant|>\n"  # the model card's chat format
IMAGE_TAG = "<|image_1|>"
IMAGE_TOKEN = "<|image|>"
END_TOKEN = "<|end|>"  # closes each turn in the chat format, so the answer ends with it


def hd_size(width: int, height: int, num_crops: int = NUM_CROPS) -> tuple[int, int]:
    """(width, height) after HD_transform: resized so at most `num_crops` crops fit, height padded to 336."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    transposed = width < height
    if transposed:
        width, height = height, width
    new_w, new_h = resized_size(width, height, num_crops)
    padded_h = math.ceil(new_h / CROP) * CROP
    return (padded_h, new_w) if transposed else (new_w, padded_h)


def resized_size(width: int, height: int, num_crops: int) -> tuple[int, int]:
    """The resize target of a landscape (width >= height) page, before padding."""
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = int(scale * CROP)
    new_h = int(new_w / ratio)
    if new_h < 1:  # the reference would resize to zero rows and fail
        raise ValueError(
            f"a {width}x{height} page is too elongated for the HD transform (aspect ratio {ratio:.0f}:1 "
            f"leaves no row at {new_w} px); crop it first"
        )
    return new_w, new_h


def crop_grid(width: int, height: int, num_crops: int = NUM_CROPS) -> tuple[int, int]:
    """(rows, columns) of 336 px crops the page is cut into."""
    w, h = hd_size(width, height, num_crops)
    return h // CROP, w // CROP


def image_token_count(width: int, height: int, num_crops: int = NUM_CROPS) -> int:
    """Image tokens of a page: sub-crop grid with row separators, one separator, global view with rows."""
    rows, cols = crop_grid(width, height, num_crops)
    return (rows * cols + 1) * TOKENS_PER_CROP + 1 + (rows + 1) * TOKENS_PER_ROW


@dataclass
class PreparedImage:
    """One page as the model sees it."""

    pixel_values: np.ndarray  # (num_crops + 1, 3, 336, 336) float32: global view, crops, zero padding
    hd_size: tuple[int, int]  # (width, height) after the HD transform
    original_size: tuple[int, int]  # (width, height) of the page as loaded
    num_crops: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.hd_size[1] // CROP, self.hd_size[0] // CROP

    @property
    def token_count(self) -> int:
        rows, cols = self.grid
        return (rows * cols + 1) * TOKENS_PER_CROP + 1 + (rows + 1) * TOKENS_PER_ROW


def prepare_image(image: Image.Image, num_crops: int = NUM_CROPS) -> PreparedImage:
    """The reference's Phi3VImageProcessor.preprocess for one page, without torchvision."""
    import torch
    import torch.nn.functional as F

    rgb = image.convert("RGB")
    transposed = rgb.width < rgb.height
    if transposed:
        rgb = rgb.transpose(Image.Transpose.TRANSPOSE)
    new_w, new_h = resized_size(rgb.width, rgb.height, num_crops)
    rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    padded_h = math.ceil(new_h / CROP) * CROP
    top = int((padded_h - new_h) / 2)
    canvas = Image.new("RGB", (new_w, padded_h), PAD_FILL)
    canvas.paste(rgb, (0, top))
    if transposed:
        canvas = canvas.transpose(Image.Transpose.TRANSPOSE)
    pixels = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGE_STD, dtype=np.float32)[:, None, None]
    hd = torch.from_numpy((pixels - mean) / std)
    _, height, width = hd.shape
    global_view = F.interpolate(hd.unsqueeze(0), size=(CROP, CROP), mode="bicubic", align_corners=False)
    crops = hd.reshape(3, height // CROP, CROP, width // CROP, CROP).permute(1, 3, 0, 2, 4).reshape(-1, 3, CROP, CROP)
    stack = torch.cat([global_view, crops])
    if stack.shape[0] > num_crops + 1:  # cannot happen: scale*ceil(scale/ratio) <= num_crops bounds the grid
        raise ValueError(f"{stack.shape[0] - 1} crops for num_crops {num_crops}")
    padded = torch.zeros(num_crops + 1, 3, CROP, CROP)
    padded[: stack.shape[0]] = stack
    return PreparedImage(
        pixel_values=padded.numpy(), hd_size=(width, height), original_size=image.size, num_crops=num_crops
    )


@dataclass
class Phi35VBatch:
    """Model inputs for a batch of pages, left-padded so every prompt ends where generation starts."""

    input_ids: torch.Tensor  # (batch, length) long
    attention_mask: torch.Tensor  # (batch, length) long, 0 on padding
    pixel_values: torch.Tensor  # (batch, num_crops + 1, 3, 336, 336) float32
    image_sizes: torch.Tensor  # (batch, 2) long: (height, width) after the HD transform
    prompt_lengths: list[int]

    def model_inputs(self, device: str | torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "pixel_values": self.pixel_values.to(device=device, dtype=dtype),
            "image_sizes": self.image_sizes.to(device),
        }


class Phi35VProcessor:
    """Prompts with the checkpoint's tokenizer, pages through the HD transform, batches for generate()."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_token_id: int,
        num_crops: int = NUM_CROPS,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        eos_token_ids: Sequence[int] = (),
        source: str = "Phi-3.5-Vision checkpoint",
    ):
        if num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {num_crops}")
        self.tokenizer = tokenizer
        self.num_crops = num_crops
        self.source = source
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        found = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if found != image_token_id:
            raise EngineError(
                "phi35v", f"{source}: the tokenizer has {IMAGE_TOKEN} at id {found}, the model expects {image_token_id}"
            )
        self.image_token_id = image_token_id
        end = tokenizer.convert_tokens_to_ids(END_TOKEN)
        if end is None or end == tokenizer.unk_token_id:
            raise EngineError("phi35v", f"{source}: the tokenizer lacks {END_TOKEN}")
        stops = {end, *eos_token_ids}
        if tokenizer.eos_token_id is not None:
            stops.add(tokenizer.eos_token_id)
        self.eos_token_ids = sorted(stops)
        pad = tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.eos_token_ids[0]

    @classmethod
    def from_pretrained(cls, path: str | Path, *, image_token_id: int, num_crops: int | None = None) -> Phi35VProcessor:
        """The processor of a checkpoint directory; num_crops defaults to its preprocessor_config.json."""
        from transformers import PreTrainedTokenizerFast

        root = Path(path)
        # tokenizer.json defines the tokenizer; AutoTokenizer would consult the remote-code processor.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(root))
        preprocessor = _read_json(root / "preprocessor_config.json")
        settings = _read_json(root / "tokenizer_config.json")
        generation = _read_json(root / "generation_config.json")
        config = _read_json(root / "config.json")
        eos: list[int] = []
        for value in (generation.get("eos_token_id"), config.get("eos_token_id")):
            eos += [value] if isinstance(value, int) else list(value or [])
        bos, eos_flag = settings.get("add_bos_token"), settings.get("add_eos_token")
        return cls(
            tokenizer,
            image_token_id=image_token_id,
            num_crops=num_crops or int(preprocessor.get("num_crops") or NUM_CROPS),
            add_bos_token=bos if isinstance(bos, bool) else None,
            add_eos_token=eos_flag if isinstance(eos_flag, bool) else None,
            eos_token_ids=eos,
            source=str(root),
        )

    def _chunk_ids(self, text: str) -> list[int]:
        """One chunk as the reference tokenizes it (`tokenizer(chunk).input_ids`), honouring
        tokenizer_config.json's add_bos_token / add_eos_token as transformers' Llama tokenizer does."""
        ids = list(self.tokenizer(text).input_ids)
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        if bos is not None and self.add_bos_token is not None:
            if self.add_bos_token and ids[:1] != [bos]:
                ids = [bos, *ids]
            elif not self.add_bos_token and ids[:1] == [bos]:
                ids = ids[1:]
        if eos is not None and self.add_eos_token is not None:
            if self.add_eos_token and ids[-1:] != [eos]:
                ids = [*ids, eos]
            elif not self.add_eos_token and ids[-1:] == [eos]:
                ids = ids[:-1]
        return ids

    def prompt_ids(self, prompt: str, image_tokens: int) -> list[int]:
        before, after = TEMPLATE.format(prompt=prompt).split(IMAGE_TAG)
        return self._chunk_ids(before) + [self.image_token_id] * image_tokens + self._chunk_ids(after)

    def prepare(self, image: Image.Image) -> PreparedImage:
        return prepare_image(image, self.num_crops)

    def batch(self, images: Sequence[PreparedImage], prompts: Sequence[str]) -> Phi35VBatch:
        if len(images) != len(prompts) or not images:
            raise ValueError(f"need one prompt per image, got {len(images)} images and {len(prompts)} prompts")
        import torch

        sequences = [self.prompt_ids(p, im.token_count) for im, p in zip(images, prompts, strict=True)]
        input_ids, attention_mask = vlm.left_pad(sequences, self.pad_token_id)
        return Phi35VBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=torch.from_numpy(np.stack([im.pixel_values for im in images])),
            image_sizes=torch.tensor([[im.hd_size[1], im.hd_size[0]] for im in images], dtype=torch.long),
            prompt_lengths=[len(s) for s in sequences],
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError("phi35v", f"{path}: unreadable ({exc})") from exc
    return data if isinstance(data, dict) else {}
