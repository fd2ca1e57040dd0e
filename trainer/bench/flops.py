"""FLOPs of one training step, read from the HLO that XLA compiles for it.

The count follows XLA's HloCostAnalysis for the instructions that carry a network's arithmetic:
a dot or a convolution costs 2 FLOPs per multiply-add. It reads XLA's *optimized* HLO, so work
XLA removes is not counted: the first layer's input gradient, which nothing uses, is gone. What
it leaves out, elementwise ops and reductions, is memory-bound work that a matmul ceiling does
not measure either. Being read from the compiled step, the figure holds for any model: the
built-in ones, and users' own.
"""

import math
import re
from typing import Dict, Sequence

import keras
import tensorflow as tf

# `%name = f32[32,784]{1,0} op(` defines an instruction and its shape; tuples are not needed.
_DEFINITION = re.compile(r"%([\w.\-]+) = \w+\[([\d,]*)\](?:\{[^}]*\})? ([\w\-]+)\((.*)")
_OPERAND = re.compile(r"%([\w.\-]+)")
_LHS_CONTRACTING = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
_DIM_LABELS = re.compile(r"dim_labels=\w+_(\w+)->\w+")


def _dims(text: str) -> list:
  return [int(size) for size in text.split(",") if size]


def count_hlo_flops(hlo_text: str) -> int:
  """FLOPs of the dots and convolutions in an HLO module's text (each instruction once)."""
  shapes: Dict[str, list] = {}
  costly = []
  for line in hlo_text.splitlines():
    match = _DEFINITION.search(line)
    if not match:
      continue
    name, shape, opcode, rest = match.groups()
    shapes[name] = _dims(shape)
    if opcode in ("dot", "convolution"):
      costly.append((opcode, shapes[name], _OPERAND.findall(rest.split(")", 1)[0]), rest))
  total = 0
  for opcode, output, operands, rest in costly:
    if opcode == "dot":
      # Each output element sums over the contracting dimensions of the left operand.
      lhs = shapes[operands[0]]
      contracting = _dims(_LHS_CONTRACTING.search(rest).group(1))
      total += 2 * math.prod(output) * math.prod(lhs[d] for d in contracting)
    else:
      # Each output element sums over the kernel's window and input features: every kernel
      # dimension but its output features ("o" in dim_labels).
      kernel = shapes[operands[1]]
      output_features = kernel[_DIM_LABELS.search(rest).group(1).index("o")]
      total += 2 * math.prod(output) * math.prod(kernel) // output_features
  return total


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
  hlo = train_step.experimental_get_compiler_ir(images, labels)(stage="optimized_hlo")
  return count_hlo_flops(hlo)
