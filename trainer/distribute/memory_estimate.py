"""How much device memory one replica's training takes: weights, optimizer slots, gradients,
activations and workspace, from a model's built layers, at a batch and precision.

A model is read once (`model_footprint`: its parameter counts, and the elements per example of
every tensor the backward pass keeps, from its layers' output shapes); `estimate` then prices
that footprint at any per-replica batch, precision and optimizer in microseconds, so a device
plan can weigh batch sizes and GPUs without building the model again.

What the backward pass keeps is decided per layer from what its gradient reads: a convolution's
or Dense layer's gradient reads its input (for the kernel's gradient), BatchNormalization's its
input, ReLU's and softmax's their output, MaxPool's both; Add, Flatten, pooling by average and
the input layer read neither. A tensor is counted once however many layers keep it. So a
ResNet's conv -> BatchNorm -> ReLU keeps the convolution's output and the ReLU's, not the
BatchNorm's, as TensorFlow's and XLA's gradients do. A layer this rule does not know (your
own) is taken to keep both its inputs and its outputs, which over-counts rather than under;
a layer nested inside another without a graph of its own (a subclassed block) is seen only at
its container's inputs and outputs.

Checked against published practice: NVIDIA's ResNet-50 v1.5 TensorFlow recipe on a 16 GB V100
trains 256 examples a GPU in mixed precision and 128 in float32 (tests/test_device_plan.py).
"""

import copy
import dataclasses
import math
from typing import Any, Callable, Dict, FrozenSet, Optional

# Optimizer state per trainable parameter, in float32 copies of the weights.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}
# What a GPU process holds beyond its tensors: the CUDA context, cuDNN's and cuBLAS's
# workspaces and the allocator's fragmentation. A round figure, not measured here.
GPU_RESERVE_BYTES = 2**30

# Layers whose gradient reads their inputs, their outputs, or neither (by class name, the
# layer's own or a base class's); a layer with a non-linear `activation` keeps its output too.
_READS_INPUTS = ("Conv", "Dense", "EinsumDense", "BatchNormalization", "LayerNormalization",
                 "GroupNormalization", "Multiply", "MaxPooling", "Attention")
_READS_OUTPUTS = ("ReLU", "Softmax", "MaxPooling", "Dropout")
_READS_NEITHER = ("InputLayer", "Add", "Subtract", "Average", "Concatenate", "Flatten",
                  "Reshape", "Permute", "GlobalAveragePooling", "AveragePooling", "ZeroPadding",
                  "Cropping", "Rescaling", "Normalization", "Identity", "CenterCrop", "Resizing")
# Activations whose gradient is a function of their output alone.
_OUTPUT_ACTIVATIONS = ("relu", "relu6", "softmax", "sigmoid", "tanh", "elu", "exponential")


@dataclasses.dataclass(frozen=True)
class ModelFootprint:
  """What a model's training memory depends on, counted once from its built layers."""

  parameters: int  # Every variable's elements: weights, and BatchNorm's moving statistics.
  trainable_parameters: int
  kept_per_example: int  # Elements of the activations the backward pass keeps, per example.
  largest_per_example: int  # Elements of the largest single activation, per example.
  input_per_example: int  # Elements of one input example.
  layer_kinds: FrozenSet[str]  # The layers' class names.


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes one replica's device holds in a training step, by part, against its memory."""

  weights: int
  optimizer_slots: int
  gradients: int
  activations: int
  workspace: int
  device_bytes: Optional[int]  # The device's memory; None where unknown.

  @property
  def per_device_bytes(self) -> int:
    return (self.weights + self.optimizer_slots + self.gradients + self.activations +
            self.workspace)

  @property
  def fits(self) -> Optional[bool]:
    """Whether the step fits the device's memory; None where that memory is unknown."""
    return None if self.device_bytes is None else self.per_device_bytes <= self.device_bytes

  def as_dict(self) -> dict:
    return {"per_device_bytes": self.per_device_bytes,
            "parts": {"weights": self.weights, "optimizer_slots": self.optimizer_slots,
                      "gradients": self.gradients, "activations": self.activations,
                      "workspace": self.workspace},
            "device_bytes": self.device_bytes, "fits": self.fits}


def _any_named(names: FrozenSet[str], patterns) -> bool:
  return any(pattern in name for name in names for pattern in patterns)


def _reads(layer) -> tuple:
  """(reads its inputs, reads its outputs): what `layer`'s gradient needs kept."""
  names = frozenset(cls.__name__ for cls in type(layer).__mro__)
  activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
  if type(layer).__name__ == "Activation":
    by_output = activation in _OUTPUT_ACTIVATIONS
    return activation != "linear" and not by_output, by_output
  inputs = _any_named(names, _READS_INPUTS)
  # A layer's own activation (Conv2D(..., activation="relu")) keeps a tensor of its output's size.
  outputs = _any_named(names, _READS_OUTPUTS) or activation != "linear"
  if not (inputs or outputs or _any_named(names, _READS_NEITHER)):
    return True, True  # Unknown: keep both rather than under-count.
  return inputs, outputs


def _elements(tensor) -> int:
  # The batch axis aside; an axis of unknown length (a sequence) counts as one.
  return math.prod(dim or 1 for dim in tuple(tensor.shape)[1:])


def model_footprint(model) -> ModelFootprint:
  """`model`'s footprint from its built layers and the graph of their calls (a Functional or
  Sequential model, or a subclassed one built on a symbolic input)."""
  kept: Dict[int, int] = {}
  largest = 0
  layers = list(model._flatten_layers(include_self=False))  # pylint: disable=protected-access
  for layer in layers:
    reads_inputs, reads_outputs = _reads(layer)
    for node in layer._inbound_nodes:  # pylint: disable=protected-access
      for tensor in node.output_tensors:
        largest = max(largest, _elements(tensor))
      for reads, tensors in ((reads_inputs, node.input_tensors),
                             (reads_outputs, node.output_tensors)):
        if reads:
          kept.update((id(tensor), _elements(tensor)) for tensor in tensors)
  inputs = model.inputs if getattr(model, "inputs", None) else []
  return ModelFootprint(
      parameters=sum(math.prod(v.shape) for v in model.variables),
      trainable_parameters=sum(math.prod(v.shape) for v in model.trainable_variables),
      kept_per_example=sum(kept.values()), largest_per_example=largest,
      input_per_example=sum(_elements(tensor) for tensor in inputs),
      layer_kinds=frozenset(type(layer).__name__ for layer in layers))


def footprint_of(build: Callable[[], Any]) -> ModelFootprint:
  """The footprint of the model `build()` returns, built with shapes only: no variable is given
  a value, so no framework starts its devices (a run plans before its runtime opens them) and
  resnet50 at 224x224 takes well under a second. Keras's global state (its layer names, the
  variables waiting for a value) is left as it was, so the run's own model is built as if this
  one never was."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras.src.backend.common import global_state  # pylint: disable=g-import-not-at-top
  tracker = vars(global_state.GLOBAL_STATE_TRACKER)
  saved = {name: copy.copy(value) for name, value in tracker.items()}
  try:
    with keras.StatelessScope(initialize_variables=False):
      return model_footprint(build())
  finally:
    tracker.clear()
    tracker.update(saved)


def built_in_footprint(model: str, image_shape, num_classes: int,
                       hidden_units: int = 256) -> ModelFootprint:
  """The footprint of a built-in model (mlp, cnn, resnet18/34/50), built as a Functional graph
  (its layers' graph gives the activations) under float32, with shapes only."""
  from trainer.models import factory  # pylint: disable=g-import-not-at-top
  return footprint_of(lambda: factory.build_model(model, "functional", tuple(image_shape),
                                                  num_classes, hidden_units=hidden_units))


def estimate(footprint: ModelFootprint, per_replica_batch: int, precision: str,
             optimizer: str = "adam", momentum: float = 0.9, moving_average: bool = False,
             grad_accum_steps: int = 1, on_gpu: bool = True,
             device_bytes: Optional[int] = None) -> MemoryEstimate:
  """One replica's training memory for `footprint` at `per_replica_batch` examples under the
  Keras dtype policy `precision`, against `device_bytes` of device memory.

  Variables, their gradients and the optimizer's slots are float32 under every policy; mixed
  precision adds the weights' cast copies that the layers compute with and keeps its
  activations in 16 bits. With accumulation the activations are a micro-batch's and the summed
  gradients a second buffer. Workspace is the backward pass's gradients in flight (twice the
  largest activation) and, on a GPU, GPU_RESERVE_BYTES.
  """
  mixed = precision.startswith("mixed_")
  activation_bytes = 2 if mixed else 4
  trainable = footprint.trainable_parameters
  micro_batch = max(1, per_replica_batch // max(1, grad_accum_steps))
  slots = OPTIMIZER_SLOTS.get(optimizer, 2)
  if optimizer == "sgd" and not momentum:
    slots = 0
  weights = 4 * footprint.parameters + (2 * trainable if mixed else 0)
  if moving_average:
    weights += 4 * trainable
  gradients = 4 * trainable * (2 if grad_accum_steps > 1 else 1)
  activations = footprint.kept_per_example * micro_batch * activation_bytes
  workspace = (2 * footprint.largest_per_example * micro_batch * activation_bytes +
               (GPU_RESERVE_BYTES if on_gpu else 0))
  return MemoryEstimate(weights=weights, optimizer_slots=4 * trainable * slots,
                        gradients=gradients, activations=activations, workspace=workspace,
                        device_bytes=device_bytes)
