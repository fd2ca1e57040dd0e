"""FLOPs of one training step, read from the HLO that XLA makes of it.

The count follows XLA's HloCostAnalysis for the instructions that carry a network's arithmetic:
a dot or a convolution costs 2 FLOPs per multiply-add. Only the instructions the step's results
depend on count: work nothing uses, such as the first layer's input gradient, is left out, as
XLA's optimisation removes it (so the HLO before optimisation, which takes a fraction of the
compile, gives the same figure). What it leaves out, elementwise ops and reductions, is
memory-bound work that a matmul ceiling does not measure either. Being read from the compiled
step, the figure holds for any model: the built-in ones, and users' own.

The count does not depend on the device the run is on: the step is compiled for the CPU wherever
the run is, and the parser also counts what XLA's GPU backend rewrites dots and convolutions into
(cuBLAS and cuDNN custom-calls), so an HLO text compiled for a GPU gives the same figure. It reads
TensorFlow's HLO text (names with a `%`) and JAX's (without), so both backends count alike.
"""

import dataclasses
import json
import math
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

import keras
import tensorflow as tf

# A computation's first line (`ENTRY %main.9 (arg0.1: f32[32]) -> f32[10] {`) and an
# instruction's (`ROOT %dot.1 = f32[32,256]{1,0} dot(%p0, %p1), ...`); JAX's text drops the `%`.
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) (?:\(.*\) -> .*)?\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%?([\w.\-]+) = (.*)$")
_ARRAY = re.compile(r"\w+\[([\d,]*)\]")  # Of a tuple, the first element: a library call's result.
_OPCODE = re.compile(r"([\w\-]+)\(")
# An operand's name ends an item of the operand list; a typed operand has its shape before it.
_OPERAND = re.compile(r"%?([A-Za-z_][\w.\-]*)(?=\s*(?:,|$))")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition|true_computation|false_computation|"
                     r"branch_computations)=(\{[^}]*\}|%?[\w.\-]+)")
_LHS_CONTRACTING = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
_DIM_LABELS = re.compile(r"dim_labels=\w+_(\w+)->(\w+)")
_WINDOW = re.compile(r"window=\{([^}]*)\}")
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
_COSTLY = ("dot", "convolution", "custom-call")


@dataclasses.dataclass
class _Instruction:
  opcode: str
  shape: List[int]
  operands: List[str]
  called: List[str]  # The computations it runs: fusions, reductions, loop bodies, branches.
  attributes: str  # The text after the operand list.


@dataclasses.dataclass
class _Computation:
  instructions: Dict[str, _Instruction] = dataclasses.field(default_factory=dict)
  root: Optional[str] = None


def _dims(text: str) -> list:
  return [int(size) for size in text.split(",") if size]


def count_hlo_flops(hlo_text: str) -> int:
  """FLOPs of the dots and convolutions in an HLO module's text (each instruction once),
  compiled for a CPU or a GPU, of those the module's result depends on; a text without an
  ENTRY computation (a list of instructions) counts every one."""
  computations, entry = _parse(hlo_text)
  if entry is None:
    live = {(name, instruction) for name, computation in computations.items()
            for instruction in computation.instructions}
  else:
    live = _live(computations, entry)
  total = 0
  for computation_name, name in live:
    computation = computations[computation_name]
    instruction = computation.instructions[name]
    if instruction.opcode not in _COSTLY:
      continue
    operand_shapes = [computation.instructions[operand].shape
                      for operand in instruction.operands if operand in computation.instructions]
    if instruction.opcode == "custom-call":
      total += _library_call_flops(instruction.shape, operand_shapes,
                                   instruction.attributes) or 0
    elif instruction.opcode == "dot":
      contracting = _dims(_LHS_CONTRACTING.search(instruction.attributes).group(1))
      total += _dot_flops(instruction.shape, operand_shapes[0], contracting)
    else:
      total += _convolution_flops(instruction.shape, operand_shapes[1], instruction.attributes)
  return total


def _parse(hlo_text: str) -> Tuple[Dict[str, _Computation], Optional[str]]:
  """The module's computations by name, and the ENTRY's name (None in a bare list of
  instructions, which is read as one computation)."""
  computations: Dict[str, _Computation] = {"": _Computation()}
  current, entry = computations[""], None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = computations.setdefault(header.group(2), _Computation())
      entry = header.group(2) if header.group(1) else entry
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    root, name, rest = match.groups()
    shape, rest = _split_shape(rest)
    opcode = _OPCODE.match(rest)
    if not opcode:
      continue
    operands, attributes = _operand_list(rest[opcode.end():])
    called = [callee.strip().lstrip("%") for group in _CALLED.findall(attributes)
              for callee in group.strip("{}").split(",") if callee.strip()]
    array = _ARRAY.search(shape)
    current.instructions[name] = _Instruction(
        opcode.group(1), _dims(array.group(1)) if array else [],
        _OPERAND.findall(operands), called, attributes)
    if root:
      current.root = name
  return computations, entry


def _split_shape(text: str) -> Tuple[str, str]:
  """An instruction's shape (an array, or a tuple in parentheses) and the text after it."""
  if not text.startswith("("):
    shape, _, rest = text.partition(" ")
    return shape, rest
  depth = 0
  for position, character in enumerate(text):
    depth += (character == "(") - (character == ")")
    if not depth:
      return text[:position + 1], text[position + 1:].lstrip()
  return text, ""


def _operand_list(text: str) -> Tuple[str, str]:
  """The operand list that opens `text` (without the typed operands' tuple shapes, whose
  commas would split it) and the attributes after it."""
  depth = 1
  for position, character in enumerate(text):
    depth += (character == "(") - (character == ")")
    if not depth:
      operands = text[:position]
      while "(" in operands:
        operands = re.sub(r"\([^()]*\)", "", operands)
      return operands, text[position + 1:]
  return text, ""


def _live(computations: Dict[str, _Computation], entry: str) -> Set[Tuple[str, str]]:
  """(computation, instruction) of every instruction the ENTRY's result depends on, through
  the computations live instructions run."""
  live: Set[Tuple[str, str]] = set()
  pending = [(entry, computations[entry].root)]
  while pending:
    computation_name, name = pending.pop()
    computation = computations.get(computation_name)
    if (computation_name, name) in live or computation is None or (
        name not in computation.instructions):
      continue
    live.add((computation_name, name))
    instruction = computation.instructions[name]
    pending += [(computation_name, operand) for operand in instruction.operands]
    pending += [(callee, computations[callee].root) for callee in instruction.called
                if callee in computations]
  return live


def _dot_flops(output: list, lhs: list, contracting: Sequence[int]) -> int:
  # Each output element sums over the contracting dimensions of the left operand.
  return 2 * math.prod(output) * math.prod(lhs[d] for d in contracting)


def _convolution_flops(output: list, kernel: list, rest: str) -> int:
  """Each output element sums over the kernel's window and input features (every kernel
  dimension but its output features, "o" in dim_labels), padding included as in the usual
  count; the holes of a dilated input (lhs_dilate: how XLA writes a strided convolution's input
  gradient) are not multiplied, so a gradient costs what its forward convolution costs."""
  kernel_labels, output_labels = _DIM_LABELS.search(rest).groups()
  output_features = kernel[kernel_labels.index("o")]
  window = _WINDOW.search(rest)
  window = dict(item.split("=", 1) for item in window.group(1).split()) if window else {}
  if "lhs_dilate" not in window:
    return 2 * math.prod(output) * math.prod(kernel) // output_features
  spatial = [label for label in output_labels if label.isdigit()]

  def per_dimension(key: str) -> List[int]:
    return [int(v) for v in window[key].split("x")] if key in window else [1] * len(spatial)

  strides, dilations = per_dimension("stride"), per_dimension("lhs_dilate")
  kernel_dilations = per_dimension("rhs_dilate")
  padding_low = ([int(pad.split("_")[0]) for pad in window["pad"].split("x")]
                 if "pad" in window else [0] * len(spatial))
  pairs = 1  # (output position, kernel position) pairs that meet an input element.
  for index, label in enumerate(spatial):
    size, width = output[output_labels.index(label)], kernel[kernel_labels.index(label)]
    pairs *= sum(1 for o in range(size) for k in range(width)
                 if (o * strides[index] + k * kernel_dilations[index] - padding_low[index])
                 % dilations[index] == 0)
  spatial_sizes = math.prod(output[output_labels.index(label)] for label in spatial)
  kernel_sizes = math.prod(kernel[kernel_labels.index(label)] for label in spatial)
  return (2 * math.prod(output) // spatial_sizes * math.prod(kernel)
          // (output_features * kernel_sizes) * pairs)


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
  """FLOPs of one training step of `model` on a batch of `batch_size` images: its forward and
  backward passes as XLA sees them. The optimizer's update is elementwise work (no dot), so
  the figure holds for any optimizer; a step of accumulated micro-batches does the same
  arithmetic on the same batch.

  Traced, not run: the model's weights and statistics are left as they are. The HLO before
  XLA's optimisation takes a fraction of a second for the small models (the optimisation
  passes took several times that), and counting only what the gradients depend on gives the
  figure the optimised HLO gives.
  """
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)

  @tf.function(jit_compile=True)
  def gradients(images, labels):
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, tf.cast(model(images, training=True), tf.float32))
    return tape.gradient(loss, model.trainable_variables)

  # A subclassed model has no `inputs`; its first layer casts what it gets.
  inputs = getattr(model, "inputs", None)
  images = tf.zeros([batch_size, *image_shape], inputs[0].dtype if inputs else tf.float32)
  labels = tf.zeros([batch_size], tf.int64)
  # Compiled for the CPU wherever the run is, so every machine counts the same FLOPs.
  hlo = gradients.experimental_get_compiler_ir(images, labels)(stage="hlo", platform_name="CPU")
  return count_hlo_flops(hlo)
