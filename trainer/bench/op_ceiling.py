"""A model's own ceiling: its matmuls and convolutions alone, at their shapes and dtype.

A training step cannot beat the time its dots and convolutions take: forward, the gradient of
each input that needs one, and the gradient of each kernel. This module reads those ops from the
model's own forward graph (any model: built-in, keras.applications or yours), and times exactly
them in one tf.function, without BatchNorm, elementwise work, input or the optimizer. The
harness's examples/s as a share of `examples_per_sec` is then an honest utilisation: a big-square
matmul ceiling is the wrong limit for small layers, which no kernel runs at that rate.
"""

import dataclasses
import math
from typing import List, Sequence, Tuple

import keras
import tensorflow as tf

from trainer.bench import timing

# The ops that carry a network's arithmetic, as TensorFlow's graph names them.
_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")
_MATMULS = ("MatMul", "BatchMatMulV2")


@dataclasses.dataclass(frozen=True)
class HeavyOp:
  """One dot or convolution of a model's forward pass, as its graph has it."""

  kind: str  # The graph op's type: Conv2D, DepthwiseConv2dNative, MatMul, BatchMatMulV2.
  input_shape: Tuple[int, ...]
  kernel_shape: Tuple[int, ...]
  dtype: str  # What it computes in: float32, or bfloat16/float16 under mixed precision.
  attrs: Tuple[Tuple[str, object], ...]  # strides, padding, dilations; transposes of a matmul.
  input_needs_gradient: bool  # False for the first layer: nothing uses the images' gradient.

  def flops(self, output_shape: Sequence[int]) -> int:
    """Forward FLOPs: 2 per multiply-add."""
    output = math.prod(output_shape)
    if self.kind in _MATMULS:
      attrs = dict(self.attrs)
      transposed = attrs.get("transpose_a") or attrs.get("adj_x")
      return 2 * output * self.input_shape[-2 if transposed else -1]
    if self.kind == "DepthwiseConv2dNative":
      return 2 * output * self.kernel_shape[0] * self.kernel_shape[1]
    return 2 * output * self.kernel_shape[0] * self.kernel_shape[1] * self.kernel_shape[2]


_ATTRS = {"Conv2D": ("strides", "padding", "dilations", "explicit_paddings"),
          "DepthwiseConv2dNative": ("strides", "padding", "dilations", "explicit_paddings"),
          "MatMul": ("transpose_a", "transpose_b"), "BatchMatMulV2": ("adj_x", "adj_y")}


def heavy_ops(model: keras.Model, batch_size: int, image_shape: Sequence[int]) -> List[HeavyOp]:
  """The dots and convolutions of one training forward pass of `model` on `batch_size` images."""
  dtype = model.inputs[0].dtype if getattr(model, "inputs", None) else tf.float32
  spec = tf.TensorSpec([batch_size, *image_shape], dtype)
  graph = tf.function(lambda images: model(images, training=True)).get_concrete_function(
      spec).graph
  images = {tensor.ref() for tensor in graph.inputs[:1]}
  found = []
  for op in graph.get_operations():
    if op.type not in _CONVOLUTIONS + _MATMULS:
      continue
    attrs = []
    for name in _ATTRS[op.type]:
      try:
        value = op.get_attr(name)
      except ValueError:
        continue
      attrs.append((name, value.decode() if isinstance(value, bytes) else
                    tuple(value) if isinstance(value, list) else value))
    source = op.inputs[0]
    # Through casts and reshapes to the graph's input: the first layer's input needs no gradient.
    while source.op.type in ("Cast", "Identity", "Reshape") and source.ref() not in images:
      source = source.op.inputs[0]
    found.append(HeavyOp(op.type, tuple(op.inputs[0].shape), tuple(op.inputs[1].shape),
                         op.inputs[0].dtype.name, tuple(attrs),
                         input_needs_gradient=source.ref() not in images))
  return found


def _run(op: HeavyOp, x, w):
  attrs = dict(op.attrs)
  if op.kind == "Conv2D":
    return tf.raw_ops.Conv2D(input=x, filter=w, **attrs)
  if op.kind == "DepthwiseConv2dNative":
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=w, **attrs)
  if op.kind == "MatMul":
    return tf.raw_ops.MatMul(a=x, b=w, **attrs)
  return tf.raw_ops.BatchMatMulV2(x=x, y=w, **attrs)


def time_ops(ops: Sequence[HeavyOp], jit_compile: bool = False, calls: int = 3,
             min_call_seconds: float = timing.MIN_CALL_SECONDS) -> dict:
  """Seconds of one pass of `ops` forward and backward (the best of `calls` timed calls after a
  warm-up, each holding passes for at least `min_call_seconds`), and its FLOPs:
  {"seconds", "flops"}."""
  def variable(shape, dtype):
    return tf.Variable(tf.cast(tf.random.stateless_uniform(shape, [0, 0], -1.0, 1.0), dtype),
                       trainable=False)

  # Inputs, kernels and output gradients made once, in the op's dtype: the timed step holds
  # nothing but the ops and their gradients.
  inputs = [variable(op.input_shape, op.dtype) for op in ops]
  kernels = [variable(op.kernel_shape, op.dtype) for op in ops]
  output_shapes = [_run(op, x, w).shape for op, x, w in zip(ops, inputs, kernels)]
  output_gradients = [variable(shape, op.dtype) for op, shape in zip(ops, output_shapes)]

  @tf.function(jit_compile=jit_compile)
  def step(total):
    for op, x_var, w_var, dy in zip(ops, inputs, kernels, output_gradients):
      x, w = x_var.read_value(), w_var.read_value()
      with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = _run(op, x, w)
      sources = [x, w] if op.input_needs_gradient else [w]
      gradients = tape.gradient(y, sources, output_gradients=dy.read_value())
      # Reads one element of each result, so nothing is pruned.
      for result in [y, *gradients]:
        total += tf.cast(tf.reshape(result, [-1])[0], tf.float32)
    return total

  @tf.function
  def passes(count):
    total = tf.constant(0.0)
    for _ in tf.range(count):
      total = step(total)
    return total

  best = timing.seconds_per_iteration(lambda count: passes(tf.constant(count)).numpy(),
                                      min_call_seconds, calls)
  # Forward, the kernel's gradient, and the input's where it is needed: each as costly.
  flops = sum(op.flops(shape) * (3 if op.input_needs_gradient else 2)
              for op, shape in zip(ops, output_shapes))
  return {"seconds": best, "flops": flops}


def model_ceiling(model: keras.Model, batch_size: int, image_shape: Sequence[int],
                  jit_compile: bool = False) -> dict:
  """The examples/s `model` would train at if only its matmuls and convolutions took time:
  {"examples_per_sec", "flops_per_sec", "flops_per_example", "ops"}."""
  ops = heavy_ops(model, batch_size, image_shape)
  timed = time_ops(ops, jit_compile)
  return {"examples_per_sec": batch_size / timed["seconds"],
          "flops_per_sec": timed["flops"] / timed["seconds"],
          "flops_per_example": timed["flops"] / batch_size, "ops": len(ops)}
