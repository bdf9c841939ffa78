"""`SkinTrainer`: the Trainer with class balancing (the oversampling `BalancedSampler` or a class-weighted loss), the
study's step decay, a backbone learning-rate multiplier, channels-last, and the `--int8_ready` step; and
`TrainSampleMetrics`, the callback that scores a fixed training sample beside validation."""

from __future__ import annotations

import datasets
import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..models import backbone_parameters
from ..processing import align_mean_to_pixels
from ..quantization import QAT_LEARNING_RATE, QAT_STEPS, describe_copy, quantization_aware_copy


def class_balance_weights(labels: np.ndarray, num_labels: int, power: float = 1.0) -> np.ndarray:
    """Per-class weights ∝ count**-power, scaled so the average training example weighs 1; 0 for absent classes.

    power 1 is inverse frequency (sklearn's "balanced": N / (K n_c)), every class counting equally; 0.5 is the
    gentler square-root balancing, which gives up less accuracy on the common classes.
    """
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    raw = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    return raw * len(labels) / (counts * raw).sum()


class BalancedSampler(torch.utils.data.Sampler):
    """Oversampling of rare classes: each epoch draws `len(labels)` indices with replacement, each with probability
    ∝ its class's `class_balance_weights` (power 1: every class equally likely in every batch).

    The draw depends only on `seed` and the epoch (the Trainer calls `set_epoch`): every process of a distributed
    run draws the same sequence and accelerate hands each its own shard of the batches, and a resumed run draws
    exactly what the uninterrupted one did.
    """

    def __init__(self, labels: np.ndarray, seed: int = 0, power: float = 1.0):
        class_weights = class_balance_weights(labels, int(labels.max()) + 1, power)
        self.weights = torch.as_tensor(class_weights[labels], dtype=torch.double)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


class SkinTrainer(Trainer):
    """The Trainer with class balancing (oversampling or class-weighted loss) and the study's step decay."""

    def __init__(
        self,
        *args,
        train_labels: np.ndarray | None = None,
        int8_ready_sample: datasets.Dataset | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.train_labels = train_labels
        self.int8_ready_sample = int8_ready_sample
        self.class_weights = (
            torch.tensor(class_balance_weights(train_labels, self.model.config.num_labels, self.args.balance_power))
            if train_labels is not None
            else None
        )

        if self.args.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _prepare_inputs(self, inputs):
        inputs = super()._prepare_inputs(inputs)
        pixel_values = inputs.get("pixel_values")
        if self.args.channels_last and pixel_values is not None and pixel_values.ndim == 4:
            inputs["pixel_values"] = pixel_values.contiguous(memory_format=torch.channels_last)
        return inputs

    def mixed_precision_off(self) -> None:
        """Undoes accelerate's autocast wrapper of the model's forward: what follows (the final evaluation) runs in
        fp32, as serving does. Training stores fp32 weights either way; autocast only changes the arithmetic."""
        self.model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)

    def share_main_process_weights(self) -> None:
        """Gives every process the main process's weights and buffers (batch-norm running statistics), those of the
        saved model.

        DDP keeps the weights in step but each process's running statistics drift after the last broadcast (and
        `make_int8_ready` changes the main process's weights only), so without this the other processes would score
        their share of the final evaluation with a model nobody saved.
        """
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            for tensor in self.model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def make_int8_ready(self) -> None:
        """`--int8_ready`: the model's weights become int8 numbers, as onnxruntime's int8 quantisation stores them
        (`hf_skin.quantization.quantization_aware_copy` with `keep_rounded`: distilled from the trained model on
        `int8_ready_sample`, training images with evaluation transforms), and so do its inputs where a normalisation
        mean of 0.5 would put every 8-bit pixel half-way between two int8 steps (`align_mean_to_pixels`: the
        processor's mean becomes 128/255, and the copy learns on inputs normalised so). Recorded in
        `config.int8_ready`. Made on the main process; `share_main_process_weights` gives it to the others."""
        image_processor = getattr(self.processing_class, "image_processor", self.processing_class)
        old_mean = list(image_processor.image_mean)
        # every process: the evaluation transforms read the processor when called, so the sample's batches (and the
        # final evaluation's) are made with the aligned mean
        aligned = align_mean_to_pixels(image_processor, self.model.config)
        if self.is_world_process_zero():
            loader = torch.utils.data.DataLoader(self.int8_ready_sample, batch_size=64, collate_fn=self.data_collator)
            ready = quantization_aware_copy(
                self.model,
                [{k: v.numpy() for k, v in batch.items() if k != "labels"} for batch in loader],
                steps=QAT_STEPS,
                learning_rate=QAT_LEARNING_RATE,
                seed=self.args.seed,
                keep_rounded=True,
                progress=not self.args.disable_tqdm,
            )
            self.model.load_state_dict(ready.state_dict())
        self.model.config.int8_ready = {
            **describe_copy(QAT_STEPS, len(self.int8_ready_sample)),
            "learning_rate": QAT_LEARNING_RATE,
            "image_mean_before": old_mean if aligned is not None else None,
        }

    def create_optimizer(self, model=None):
        multiplier = self.args.backbone_learning_rate_multiplier
        if multiplier == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        in_backbone = {id(p) for p in backbone_parameters(model)}
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((id(param) in in_backbone, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": params,
                    "lr": self.args.learning_rate * (multiplier if backbone else 1.0),
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
                for (backbone, decays), params in groups.items()
            ],
            lr=self.args.learning_rate,
            **optimizer_kwargs,
        )
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        if self.args.balance != "oversample":
            return super()._get_train_sampler(train_dataset)
        return BalancedSampler(self.train_labels, seed=self.args.seed, power=self.args.balance_power)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.balance != "class_weights":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = self.class_weights.to(device=outputs.logits.device, dtype=outputs.logits.dtype)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.args.step_decay_epochs or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        updates_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        every = max(1, round(self.args.step_decay_epochs * updates_per_epoch))
        warmup = self.args.get_warmup_steps(num_training_steps)
        gamma = self.args.step_decay_gamma

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup if warmup else 1.0) * gamma ** (step // every)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self._created_lr_scheduler = True
        return self.lr_scheduler


class TrainSampleMetrics(TrainerCallback):
    """After each evaluation, scores a fixed sample of the training split with evaluation transforms and logs it as
    `train_sample_accuracy`, `train_sample_balanced_accuracy`, ...: the study's train-vs-validation curve, measured
    the same way on both sides (the Trainer itself logs only the training loss, on augmented, resampled batches)."""

    def __init__(self, trainer: Trainer, sample: datasets.Dataset):
        self.trainer, self.sample = trainer, sample

    def on_evaluate(self, args, state, control, **kwargs):
        # predict() runs no on_evaluate callbacks (no recursion, no early stopping on these numbers). Its DataLoader
        # draws a seed from torch's generator: restored, so that watching the training does not change it.
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            metrics = self.trainer.predict(self.sample, metric_key_prefix="train_sample").metrics
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        self.trainer.log({k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))})
