"""hf_skin.quantization: the PyTorch side of onnxruntime's int8 models (its weight rounding, reproduced exactly)."""

import numpy as np
import pytest
import torch
from transformers.modeling_outputs import ImageClassifierOutput

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from hf_skin.export import quantize  # noqa: E402
from hf_skin.quantization import _fold_of, _norm_after, int8_weight, quantization_aware_copy, uint8_table  # noqa: E402


class Net(torch.nn.Module):
    """A Conv2d with a BatchNorm, a depthwise one with a BatchNorm, a Linear head and an embedding table (as the
    multi-input model's metadata), with BatchNorm statistics a trained network could have, some scales negative."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.norm = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.dw, self.norm2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)
        self.table = torch.nn.Embedding(4, 8)
        for norm in (self.norm, self.norm2):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.1, 3)
            norm.weight.data.uniform_(-2, 2)
            norm.bias.data.uniform_(-1, 1)
        self.eval()

    def forward(self, pixel_values, sex):
        x = torch.nn.functional.relu6(self.norm(self.conv(pixel_values)))
        x = torch.nn.functional.relu6(self.norm2(self.dw(x)))
        return ImageClassifierOutput(logits=self.fc(x.mean((2, 3)) + self.table(sex)))


def batches(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"pixel_values": rng.normal(size=(n, 3, 16, 16)).astype(np.float32), "sex": rng.integers(0, 4, n)}]


def stored_weights(net, tmp_path):
    """`net` exported to ONNX and quantised as the export does (static, per channel): layer name -> the weights
    onnxruntime's int8 model computes with (int8 or uint8 numbers times their scales)."""
    import onnx
    from onnx import numpy_helper

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, pixel_values, sex):
            return self.net(pixel_values, sex).logits

    example = {name: torch.from_numpy(value[:1]) for name, value in batches()[0].items()}
    path = tmp_path / "net.onnx"
    torch.onnx.export(Logits(), (), path, kwargs=example, input_names=list(example), dynamo=True, external_data=False)
    graph = onnx.load(quantize(path, tmp_path / "int8.onnx", batches())).graph
    stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dequantized = {}
    for node in graph.node:
        values = stored.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if values is not None and values.dtype == np.int8:
            scale = stored[node.input[1]]
            values = values.astype(np.float32) * scale.reshape((-1,) + (1,) * (values.ndim - 1))
        elif values is not None and values.dtype == np.uint8:
            scale, zero_point = stored[node.input[1]], stored[node.input[2]]
            values = (values.astype(np.float32) - zero_point) * scale
        if values is not None and values.dtype == np.float32:
            dequantized[node.input[0].split(".")[-2] if "." in node.input[0] else node.input[0]] = values
    return dequantized


def folded(net) -> dict[str, np.ndarray]:
    """The weights onnxruntime sees before rounding them: each layer's, the BatchNorm after it folded in."""
    example = {name: torch.from_numpy(value[:1]) for name, value in batches()[0].items()}
    norms = _norm_after(net, example)
    out = {}
    with torch.no_grad():
        for name in ("conv", "dw", "fc"):
            layer = getattr(net, name)
            out[name] = layer.weight * _fold_of(norms[layer], layer.weight).view(-1, *[1] * (layer.weight.dim() - 1))
        out["table"] = net.table.weight
    return {name: value.numpy() for name, value in out.items()}


def test_the_fake_int8_weights_are_the_weights_onnxruntime_stores(tmp_path):
    """int8_weight (quantisation-aware fine-tuning's rounding) gives, for a Conv2d with a BatchNorm folded in, a
    depthwise one and a Linear layer, exactly what onnxruntime's static per-channel quantisation stores, and
    uint8_table what it stores of an embedding table."""
    net = Net()
    example = {name: torch.from_numpy(value[:1]) for name, value in batches()[0].items()}
    layers = _norm_after(net, example)
    assert {name: layers[getattr(net, name)] for name in ("conv", "dw", "fc")} == {
        "conv": net.norm,
        "dw": net.norm2,
        "fc": None,
    }
    dequantized = stored_weights(net, tmp_path)
    assert set(dequantized) == {"conv", "dw", "fc", "table"}
    for name in ("conv", "dw", "fc"):
        layer = getattr(net, name)
        with torch.no_grad():
            fold = _fold_of(layers[layer], layer.weight)
            mine = int8_weight(layer.weight, fold) * fold.view((-1,) + (1,) * (layer.weight.dim() - 1))
        np.testing.assert_allclose(dequantized[name], mine.numpy(), rtol=0, atol=1e-6 * float(mine.abs().max()))
    with torch.no_grad():
        np.testing.assert_allclose(dequantized["table"], uint8_table(net.table.weight).numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("keep_rounded", [True, False])
def test_a_copy_kept_rounded_is_its_own_int8_models_weights(keep_rounded, tmp_path):
    """With `keep_rounded` (training's --int8_ready), the copy's weights are the numbers onnxruntime's int8 model
    stores: quantising it changes no weight, BatchNorm folded in or not, embedding table included. Without it, the
    copy's float weights round to other numbers."""
    net = Net()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    copy = quantization_aware_copy(
        net, batches(32), steps=5, learning_rate=1e-2, batch_size=8, keep_rounded=keep_rounded
    )
    assert not torch.equal(copy.conv.weight, net.conv.weight)  # it learned
    assert all(torch.equal(value, before[name]) for name, value in net.state_dict().items())  # the original did not
    mine, stored = folded(copy), stored_weights(copy, tmp_path)
    for name, values in mine.items():
        error = np.abs(stored[name] - values).max() / np.abs(values).max()
        assert (error < 1e-6) == keep_rounded, (name, error)
