"""FLOPs of one training step, read from the HLO that XLA compiles for it.

The count follows XLA's HloCostAnalysis for the instructions that carry a network's arithmetic:
a dot or a convolution costs 2 FLOPs per multiply-add. It reads XLA's *optimized* HLO, so work
XLA removes is not counted: the first layer's input gradient, which nothing uses, is gone. What
it leaves out, elementwise ops and reductions, is memory-bound work that a matmul ceiling does
not measure either. Being read from the compiled step, the figure holds for any model: the
built-in ones, and users' own.

The count does not depend on the device the run is on: the step is compiled for the CPU wherever
the run is, and the parser also counts what XLA's GPU backend rewrites dots and convolutions into
(cuBLAS and cuDNN custom-calls), so an HLO text compiled for a GPU gives the same figure.
"""

import json
import math
import re
from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

# `%name = f32[32,784]{1,0} op(` defines an instruction and its shape; of a tuple
# (`(f32[32,256]{1,0}, s8[4096]{0}) custom-call(`, a GPU library call and its workspace) the
# first element is the result.
_DEFINITION = re.compile(
    r"%([\w.\-]+) = \(?\w+\[([\d,]*)\](?:\{[^}]*\})?(?:, [^()]*\))? ([\w\-]+)\((.*)")
_OPERAND = re.compile(r"%([\w.\-]+)")
_LHS_CONTRACTING = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
_DIM_LABELS = re.compile(r"dim_labels=\w+_(\w+)->\w+")
_CUSTOM_CALL_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_BACKEND_CONFIG = "backend_config="
# cuBLAS calls that are dots, and cuDNN calls that are convolutions: for each, which operand (or
# "result") holds the forward convolution's output and which its kernel. XLA keeps the forward
# convolution's dim_labels on the backward ones.
_CUBLAS_GEMMS = ("__cublas$gemm", "__cublas$lt$matmul", "__cublas$lt$matmul$f8")
_CUDNN_CONVOLUTIONS = {"__cudnn$convForward": ("result", 1),
                       "__cudnn$convBiasActivationForward": ("result", 1),
                       "__cudnn$convBackwardInput": (0, 1),
                       "__cudnn$convBackwardFilter": (1, "result")}


def _dims(text: str) -> list:
  return [int(size) for size in text.split(",") if size]


def count_hlo_flops(hlo_text: str) -> int:
  """FLOPs of the dots and convolutions in an HLO module's text (each instruction once),
  compiled for a CPU or a GPU."""
  shapes: Dict[str, list] = {}
  costly = []
  for line in hlo_text.splitlines():
    match = _DEFINITION.search(line)
    if not match:
      continue
    name, shape, opcode, rest = match.groups()
    shapes[name] = _dims(shape)
    if opcode in ("dot", "convolution", "custom-call"):
      costly.append((opcode, shapes[name], _OPERAND.findall(rest.split(")", 1)[0]), rest))
  total = 0
  for opcode, output, operands, rest in costly:
    operand_shapes = [shapes[operand] for operand in operands]
    if opcode == "custom-call":
      total += _library_call_flops(output, operand_shapes, rest) or 0
    elif opcode == "dot":
      contracting = _dims(_LHS_CONTRACTING.search(rest).group(1))
      total += _dot_flops(output, operand_shapes[0], contracting)
    else:
      total += _convolution_flops(output, operand_shapes[1], rest)
  return total


def _dot_flops(output: list, lhs: list, contracting: Sequence[int]) -> int:
  # Each output element sums over the contracting dimensions of the left operand.
  return 2 * math.prod(output) * math.prod(lhs[d] for d in contracting)


def _convolution_flops(output: list, kernel: list, rest: str) -> int:
  # Each output element sums over the kernel's window and input features: every kernel
  # dimension but its output features ("o" in dim_labels).
  output_features = kernel[_DIM_LABELS.search(rest).group(1).index("o")]
  return 2 * math.prod(output) * math.prod(kernel) // output_features


def _library_call_flops(result: list, operands: Sequence[list], rest: str) -> Optional[int]:
  """FLOPs of a cuBLAS gemm or cuDNN convolution custom-call; None for any other target."""
  target = _CUSTOM_CALL_TARGET.search(rest)
  target = target.group(1) if target else ""
  if target in _CUBLAS_GEMMS:
    config, _ = json.JSONDecoder().raw_decode(rest, rest.index(_BACKEND_CONFIG) +
                                              len(_BACKEND_CONFIG))
    config = config.get("gemm_backend_config", config)
    contracting = [int(d) for d in
                   config["dot_dimension_numbers"]["lhs_contracting_dimensions"]]
    return _dot_flops(result, operands[0], contracting)
  if target in _CUDNN_CONVOLUTIONS:
    output_at, kernel_at = _CUDNN_CONVOLUTIONS[target]
    pick = lambda at: result if at == "result" else operands[at]  # pylint: disable=unnecessary-lambda-assignment
    return _convolution_flops(pick(output_at), pick(kernel_at), rest)
  return None


def train_step_flops(model: keras.Model, from_logits: bool, image_shape: Sequence[int],
                     batch_size: int) -> int:
  """FLOPs of one Adam training step of `model` on a batch of `batch_size` images, as XLA
  compiles it (forward, backward and update)."""
  optimizer = keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

  @tf.function(jit_compile=True)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, tf.cast(model(images, training=True), tf.float32))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  images = tf.zeros([batch_size, *image_shape], model.inputs[0].dtype if model.inputs else
                    tf.float32)
  labels = tf.zeros([batch_size], tf.int64)
  # Compiled for the CPU wherever the run is, so every machine counts the same FLOPs.
  hlo = train_step.experimental_get_compiler_ir(images, labels)(stage="optimized_hlo",
                                                                platform_name="CPU")
  return count_hlo_flops(hlo)
