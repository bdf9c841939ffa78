"""int8 as onnxruntime stores it, for PyTorch models: its per-channel int8 rounding of a layer's weights
(`int8_weight`, the BatchNorm that follows folded in as onnxruntime folds it) and its uint8 rounding of an
embedding table (`uint8_table`), and quantisation-aware copies that learn, by distillation through that rounding,
weights that survive it (`quantization_aware_copy`), or that are int8 numbers (`keep_rounded=True`, what training's
`--int8_ready` makes: onnxruntime's int8 model of such a copy then differs from it only by the rounding of
activations, and of the input where its normalisation puts pixels off int8's grid). `hf_skin.export` makes the
int8 ONNX models; this module is what the PyTorch side knows of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

# How a copy learns: its steps of QAT_BATCH_SIZE among QAT_IMAGES training-split images, and the learning rate that
# training's --int8_ready uses (benchmarks/RESULTS.md, issue 12: on EfficientNet-Lite0 a copy kept rounded at 2e-6
# gave the trained model's top-1 on 99.6% of validation images, at 2e-5 on 99.4%, rounding alone on 99.0%)
QAT_STEPS = 300
QAT_LEARNING_RATE = 2e-6
QAT_BATCH_SIZE = 32
QAT_IMAGES = 2048
# What the copy learns from the fp32 model (quantization_aware_copy's `loss`): name -> the spec's description
QAT_LOSSES = {
    "mse": "mean squared error to the fp32 model's logits",
    "kl": "KL divergence of the copy's probabilities from the fp32 model's",
}
QAT_LOSS = "mse"


def describe_copy(steps: int, training_images: int, loss: str = QAT_LOSS) -> dict:
    """How quantisation-aware copies were made, for a spec or a config (the caller adds the learning rate)."""
    return {"steps": steps, "batch_size": QAT_BATCH_SIZE, "training_images": training_images, "loss": QAT_LOSSES[loss]}


def int8_weight(weight: torch.Tensor, fold: torch.Tensor) -> torch.Tensor:
    """`weight` as onnxruntime's static per-channel quantisation stores it, with a straight-through gradient: the
    weight the runtime sees (`weight` times `fold`, the BatchNorm that follows folded into it), rounded to int8 with
    one symmetric scale per output channel (max |w| / 127), divided by `fold` again."""
    import torch

    shape = (-1,) + (1,) * (weight.dim() - 1)
    folded = weight * fold.view(shape)
    scale = folded.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / 127
    zero_point = torch.zeros(len(scale), dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(folded, scale, zero_point, 0, -127, 127) / fold.view(shape)


def uint8_table(weight: torch.Tensor) -> torch.Tensor:
    """An embedding table as onnxruntime's static quantisation stores a Gather's constant input, with a
    straight-through gradient: as an activation, uint8 with one scale and zero point over the table's range, 0
    included ((max - min) / 255). Rounding it again gives the same numbers: its smallest and largest entries fall
    on 0 and 255, the same range."""
    import torch

    values = weight.detach()
    low, high = float(values.min().clamp(max=0)), float(values.max().clamp(min=0))
    scale = max(high - low, 1e-12) / 255
    return torch.fake_quantize_per_tensor_affine(weight, scale, round(-low / scale), 0, 255)


def _fold_of(norm: torch.nn.BatchNorm2d | None, weight: torch.Tensor) -> torch.Tensor:
    """The per-channel factor BatchNorm `norm` multiplies its input by (1 without one)."""
    import torch

    if norm is None:
        return torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
    fold = gamma * torch.rsqrt(norm.running_var + norm.eps)
    return torch.where(fold.abs() < 1e-8, torch.ones_like(fold), fold)


def _norm_after(model: torch.nn.Module, inputs: dict) -> dict:
    """Every Conv2d and Linear layer that `model` runs on `inputs`, with the BatchNorm that reads its output directly
    (which onnxruntime folds into it before quantising), or None."""
    import torch

    produced, pairs, keep = {}, {}, []

    def on_layer(module, args, output):
        produced[id(output)] = module
        keep.append(output)  # alive, so that no later tensor reuses its id

    def on_norm(module, args, output):
        layer = produced.get(id(args[0]))
        if isinstance(layer, torch.nn.Conv2d):
            pairs[layer] = module

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(on_layer) for m in layers]
    hooks += [m.register_forward_hook(on_norm) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    ran = set(produced.values())
    return {layer: pairs.get(layer) for layer in layers if layer in ran}


def quantization_aware_copy(
    model: torch.nn.Module,
    batches: list[dict[str, np.ndarray]],
    steps: int = QAT_STEPS,
    learning_rate: float = QAT_LEARNING_RATE,
    batch_size: int = QAT_BATCH_SIZE,
    seed: int = 0,
    teacher: torch.nn.Module | None = None,
    loss: str = QAT_LOSS,
    keep_rounded: bool = False,
    progress: bool = True,
) -> torch.nn.Module:
    """A copy of PyTorch `model` fine-tuned so that its int8 model agrees with the original: its Conv2d and Linear
    weights pass through `int8_weight` (BatchNorm folded in, as onnxruntime folds it), its embedding tables through
    `uint8_table`, and it learns, by distillation, to give the original fp32 model's logits on `batches`
    (training-split inputs, flipped at random: a lesion has no up or left). BatchNorm statistics stay frozen. The
    copy's float weights are returned, which onnxruntime's quantisation rounds to what it was trained with; with
    `keep_rounded`, the rounded weights themselves (int8 numbers: the copy is then its own int8 model's weights).
    `teacher` (default: `model`) is the model distilled from: with an earlier copy as `model` and the original as
    `teacher`, fine-tuning goes on. `loss`: one of `QAT_LOSSES`: `"mse"` on the logits, or `"kl"`, the KL
    divergence of the student's probabilities from the teacher's (it weighs the likely classes, whose near-ties
    are what int8 flips). `progress`: show a progress bar."""
    import copy

    import torch
    from torch.nn.utils import parametrize

    if loss not in QAT_LOSSES:
        raise ValueError(f"quantisation-aware loss {loss!r} is not {' or '.join(QAT_LOSSES)}")

    class Int8Weight(torch.nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.norm = [norm]  # a list: the BatchNorm is not this module's child

        def forward(self, weight):
            return int8_weight(weight, _fold_of(self.norm[0], weight))

    class Uint8Table(torch.nn.Module):
        def forward(self, weight):
            return uint8_table(weight)

    student = copy.deepcopy(model).float().eval().requires_grad_(True)
    teacher = (model if teacher is None else teacher).eval()
    device = next(student.parameters()).device
    data = {name: torch.from_numpy(np.concatenate([b[name] for b in batches])) for name in batches[0]}
    del batches  # a list the caller does not keep is freed now: one copy of the images in memory, not two
    layers = _norm_after(student, {name: value[:2].to(device) for name, value in data.items()})
    for layer, norm in layers.items():
        parametrize.register_parametrization(layer, "weight", Int8Weight(norm))
    tables = [m for m in student.modules() if isinstance(m, torch.nn.Embedding)]
    for table in tables:
        parametrize.register_parametrization(table, "weight", Uint8Table())
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    count = len(data["pixel_values"])
    for _ in tqdm(range(steps), desc="Quantisation-aware fine-tuning", unit="step", disable=not progress):
        rows = torch.randperm(count, generator=generator)[:batch_size]
        batch = {name: value[rows].to(device) for name, value in data.items()}
        flips = [dim for dim in (2, 3) if torch.rand((), generator=generator) < 0.5]
        if flips:
            batch["pixel_values"] = batch["pixel_values"].flip(flips)
        with torch.no_grad():
            target = teacher(**batch).logits.float()
        logits = student(**batch).logits
        if loss == "mse":
            error = torch.nn.functional.mse_loss(logits, target)
        else:
            error = torch.nn.functional.kl_div(
                logits.log_softmax(-1), target.log_softmax(-1), reduction="batchmean", log_target=True
            )
        optimizer.zero_grad()
        error.backward()
        optimizer.step()
    for layer in [*layers, *tables]:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=keep_rounded)
    return student.requires_grad_(False)
