"""ResNet-18, -34 and -50 (v1.5), each written with all three Keras APIs.

One table of block specs builds every depth (as Model Garden's backbones/resnet.py does):
basic blocks (two 3x3 convolutions) for 18 and 34, bottlenecks (1x1, 3x3, 1x1 with 4x the
width out) for 50. v1.5, as in torchvision and Model Garden: no convolution has a bias, each is
followed by BatchNorm, a bottleneck strides in its 3x3 (v1 strode in the first 1x1), and a
projection shortcut (1x1 convolution and BatchNorm) wherever a block changes shape. The last
BatchNorm of every block starts with gamma 0, so each block starts as the identity (Goyal et al.,
"Accurate, Large Minibatch SGD", section 5.1): always on, it costs nothing and helps large
batches.

The stem follows the image size: up to SMALL_IMAGE_MAX pixels a 3x3 stride-1 convolution and no
max-pool (the CIFAR variant, which keeps a 32x32 image's resolution for the first stage); above
it the ImageNet stem, a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool.

The three APIs share the layers and the one function that runs a block on them
(`_block_outputs`), so they compute the same thing from the same weights:
  - Functional: the blocks' layers wired as a graph, skip connections as Add layers.
  - Subclass: a keras.Model that makes the same layers in __init__ and runs them in call().
  - Sequential: a Sequential model cannot express a skip connection (each layer has one input,
    the previous layer's output), so it stacks `ResidualBlock` layers, a keras.layers.Layer
    per block that holds the block's layers and adds the shortcut inside its own call().
"""

import dataclasses
from typing import Dict, List, Sequence

import keras

SMALL_IMAGE_MAX = 64  # Images up to this many pixels high and wide get the CIFAR stem.
# (block kind, blocks per stage); the stages are 64, 128, 256 and 512 wide (x4 out of a
# bottleneck), each after the first starting with a stride-2 block.
RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
# torchvision's BatchNorm settings (Keras's momentum is 1 - PyTorch's 0.1): a short run's moving
# statistics settle within a few hundred steps, where Keras's default 0.99 needs thousands.
BATCHNORM_MOMENTUM = 0.9
BATCHNORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="trainer")
class BatchNormalization(keras.layers.BatchNormalization):
  """Keras's BatchNormalization whose moving statistics stay one value across replicas.

  Keras 3 creates them with aggregation "none", so under a mirrored strategy each replica
  updates its own copy: the copies drift apart, evaluation on each replica uses its own, and a
  checkpoint keeps only the first. Here they are "mean": each replica updates its own copy in
  the step and the task averages the copies over replicas after it (see
  `_assign_this_replicas_copy`), so all hold the same statistics, as Keras 2's did. Normalisation itself uses each replica's batch,
  or the global batch with synchronized=True (--sync_batchnorm).

  Without synchronisation, a 4-D input is normalised by TensorFlow's fused kernel
  (FusedBatchNormV3, which oneDNN runs on CPUs) in the compute dtype, instead of Keras 3's
  float32 casts and separate mean, variance and scale ops: those were half of resnet18's
  mixed_bfloat16 step on a 2-core AMX CPU. The moving statistics follow Keras's own update.
  """

  def add_weight(self, *args, **kwargs):
    if not kwargs.get("trainable", True):
      kwargs.setdefault("aggregation", "mean")
    return super().add_weight(*args, **kwargs)

  def call(self, inputs, training=None, mask=None):
    if (self.synchronized or mask is not None or len(inputs.shape) != 4
        or self.axis not in (-1, 3) or keras.backend.backend() != "tensorflow"):
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    training = bool(training) and self.trainable
    inputs = tf.cast(inputs, self.compute_dtype)
    if training:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC",
          is_training=True)
      # The kernel hands back the unbiased variance; Keras's moving average takes the
      # batch's own (biased) one, which is also what normalised this batch.
      count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
      variance *= (count - 1.0) / count
      momentum = self.momentum
      _assign_this_replicas_copy(self.moving_mean,
                                 self.moving_mean * momentum + mean * (1.0 - momentum))
      _assign_this_replicas_copy(self.moving_variance,
                                 self.moving_variance * momentum + variance * (1.0 - momentum))
      return outputs
    outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
        epsilon=self.epsilon, data_format="NHWC", is_training=False)
    return outputs


def _assign_this_replicas_copy(variable: keras.Variable, value) -> None:
  """Assigns `value` to this replica's copy of `variable` only.

  A step compiled by XLA over several replicas (--jit_compile under mirrored) cannot update a
  variable averaged over replicas: the update is a cross-replica merge_call, which XLA cannot
  compile. So each replica updates its own copy, and the task averages the copies once after
  every step (distribution.average_replica_copies), with or without XLA, on every strategy: the
  moving average is linear, so the average of the replicas' updates is the update by the
  replicas' average statistics, as an update averaged at once gives.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  target = variable.value
  if (isinstance(target, tf.distribute.DistributedValues)
      and not tf.distribute.in_cross_replica_context()):
    target = target._get_on_device_or_primary()  # pylint: disable=protected-access
  target.assign(tf.cast(value, target.dtype))


@dataclasses.dataclass
class _LayerFactory:
  """Makes a ResNet's layers in build order, each with its own seed and the run's dtype policy.

  Seeding each initializer (rather than relying on a global seed) makes the weights a function
  of (seed, layer index) alone, so all three APIs start identical.
  """

  seed: int
  precision: str
  sync_batchnorm: bool
  count: int = 0

  def _next_seed(self) -> int:
    self.count += 1
    return self.seed * 10_007 + self.count

  def conv(self, filters: int, kernel_size: int, strides: int, name: str) -> keras.Layer:
    # He initialisation on fan-out, as torchvision and Model Garden initialise ResNets.
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(
            2.0, "fan_out", "untruncated_normal", seed=self._next_seed()),
        dtype=self.precision, name=name)

  def batchnorm(self, name: str, zero_gamma: bool = False) -> keras.Layer:
    return BatchNormalization(
        momentum=BATCHNORM_MOMENTUM, epsilon=BATCHNORM_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=self.sync_batchnorm, dtype=self.precision, name=name)

  def relu(self, name: str) -> keras.Layer:
    return keras.layers.ReLU(dtype=self.precision, name=name)

  def dense(self, units: int, name: str) -> keras.Layer:
    return keras.layers.Dense(
        units, kernel_initializer=keras.initializers.RandomNormal(
            stddev=0.01, seed=self._next_seed()), dtype=self.precision, name=name)


def _block_layers(make: _LayerFactory, kind: str, filters: int, strides: int,
                  projection: bool, name: str) -> Dict[str, keras.Layer]:
  """The layers of one block, by role, in the order `_block_outputs` uses them."""
  layers = {}
  if kind == "basic":
    convs = [(filters, 3, strides), (filters, 3, 1)]
  else:  # v1.5 bottleneck: the stride sits in the 3x3.
    convs = [(filters, 1, 1), (filters, 3, strides), (filters * BOTTLENECK_EXPANSION, 1, 1)]
  for index, (width, kernel_size, conv_strides) in enumerate(convs, start=1):
    last = index == len(convs)
    layers[f"conv{index}"] = make.conv(width, kernel_size, conv_strides, f"{name}_conv{index}")
    layers[f"bn{index}"] = make.batchnorm(f"{name}_bn{index}", zero_gamma=last)
    if not last:
      layers[f"relu{index}"] = make.relu(f"{name}_relu{index}")
  if projection:
    shortcut_conv = make.conv(convs[-1][0], 1, strides, f"{name}_shortcut_conv")
    shortcut_bn = make.batchnorm(f"{name}_shortcut_bn")
    # Listed as the Functional model orders its layers (by depth, so each shortcut layer after
    # its twin on the main path): all three APIs then list their weights in the same order.
    last = len(convs)
    last_bn = layers.pop(f"bn{last}")
    layers.update({"shortcut_conv": shortcut_conv, f"bn{last}": last_bn,
                   "shortcut_bn": shortcut_bn})
  layers["add"] = keras.layers.Add(dtype=make.precision, name=f"{name}_add")
  layers["out"] = make.relu(f"{name}_out")
  return layers


def _block_outputs(layers: Dict[str, keras.Layer], inputs):
  """Runs one block on `inputs` (a tensor, or a symbolic tensor of the Functional API)."""
  outputs = inputs
  index = 1
  while f"conv{index}" in layers:
    outputs = layers[f"bn{index}"](layers[f"conv{index}"](outputs))
    if f"relu{index}" in layers:
      outputs = layers[f"relu{index}"](outputs)
    index += 1
  shortcut = inputs
  if "shortcut_conv" in layers:
    shortcut = layers["shortcut_bn"](layers["shortcut_conv"](inputs))
  return layers["out"](layers["add"]([outputs, shortcut]))


def _outputs(stem: Sequence[keras.Layer], blocks: Sequence[Dict[str, keras.Layer]],
             head: Sequence[keras.Layer], images):
  """Runs a whole ResNet on `images`: the stem, every block, the head."""
  outputs = images
  for layer in stem:
    outputs = layer(outputs)
  for block in blocks:
    outputs = _block_outputs(block, outputs)
  for layer in head:
    outputs = layer(outputs)
  return outputs


@dataclasses.dataclass
class _ResNetLayers:
  """Every layer of one ResNet, in order: stem, blocks (each a dict by role), head."""

  stem: List[keras.Layer]
  blocks: List[Dict[str, keras.Layer]]
  block_names: List[str]
  head: List[keras.Layer]


def _resnet_layers(network: str, image_shape: Sequence[int], num_classes: int, seed: int,
                   precision: str, sync_batchnorm: bool) -> _ResNetLayers:
  kind, blocks_per_stage = RESNET_SPECS[network]
  make = _LayerFactory(seed, precision, sync_batchnorm)
  if max(image_shape[:2]) <= SMALL_IMAGE_MAX:
    stem = [make.conv(64, 3, 1, "stem_conv"), make.batchnorm("stem_bn"), make.relu("stem_relu")]
  else:
    stem = [make.conv(64, 7, 2, "stem_conv"), make.batchnorm("stem_bn"), make.relu("stem_relu"),
            keras.layers.MaxPooling2D(3, strides=2, padding="same", dtype=precision,
                                      name="stem_pool")]
  blocks, names = [], []
  channels = 64
  for stage, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage), start=1):
    for block in range(1, num_blocks + 1):
      strides = 2 if stage > 1 and block == 1 else 1
      out_channels = width * (BOTTLENECK_EXPANSION if kind == "bottleneck" else 1)
      name = f"stage{stage}_block{block}"
      blocks.append(_block_layers(make, kind, width, strides,
                                  projection=strides != 1 or channels != out_channels, name=name))
      names.append(name)
      channels = out_channels
  head = [keras.layers.GlobalAveragePooling2D(dtype=precision, name="avg_pool"),
          make.dense(num_classes, "logits"),
          # Softmax in float32 keeps the probabilities and the loss accurate under mixed precision.
          keras.layers.Activation("softmax", dtype="float32", name="softmax")]
  return _ResNetLayers(stem, blocks, names, head)


# ---------------------------------------------------------------- Sequential.
@keras.saving.register_keras_serializable(package="trainer")
class ResidualBlock(keras.layers.Layer):
  """One residual block as a single layer, so a Sequential model can stack it.

  It holds the block's layers and adds the shortcut inside call(): the skip connection a
  Sequential model cannot express between its own layers.
  """

  def __init__(self, block_layers: Dict[str, keras.Layer] = None, **kwargs):
    super().__init__(**kwargs)
    self.block_layers = block_layers

  def call(self, inputs):
    return _block_outputs(self.block_layers, inputs)

  def compute_output_shape(self, input_shape):
    shape = input_shape
    index = 1
    while f"conv{index}" in self.block_layers:
      shape = self.block_layers[f"conv{index}"].compute_output_shape(shape)
      index += 1
    return shape

  def get_config(self) -> dict:
    return {**super().get_config(), "block_layers": {
        role: keras.saving.serialize_keras_object(layer)
        for role, layer in self.block_layers.items()}}

  @classmethod
  def from_config(cls, config: dict) -> "ResidualBlock":
    config = dict(config)
    config["block_layers"] = {role: keras.saving.deserialize_keras_object(layer)
                              for role, layer in config["block_layers"].items()}
    return cls(**config)


def build_sequential(network: str, image_shape: Sequence[int], num_classes: int, seed: int,
                     precision: str, sync_batchnorm: bool = False) -> keras.Model:
  """Returns `network` (a RESNET_SPECS key) as a keras.Sequential of stem layers, one
  ResidualBlock per block, and the head."""
  layers = _resnet_layers(network, image_shape, num_classes, seed, precision, sync_batchnorm)
  blocks = [ResidualBlock(block, dtype=precision, name=name)
            for block, name in zip(layers.blocks, layers.block_names)]
  return keras.Sequential([keras.Input(shape=tuple(image_shape), name="images"), *layers.stem,
                           *blocks, *layers.head], name=f"sequential_{network}")


# ---------------------------------------------------------------- Functional.
def build_functional(network: str, image_shape: Sequence[int], num_classes: int, seed: int,
                     precision: str, sync_batchnorm: bool = False) -> keras.Model:
  """Returns `network` built with the Functional API: skip connections as Add layers."""
  layers = _resnet_layers(network, image_shape, num_classes, seed, precision, sync_batchnorm)
  images = keras.Input(shape=tuple(image_shape), name="images")
  return keras.Model(images, _outputs(layers.stem, layers.blocks, layers.head, images),
                     name=f"functional_{network}")


# ---------------------------------------------------------------- Subclassed.
@keras.saving.register_keras_serializable(package="trainer")
class SubclassResNet(keras.Model):
  """A ResNet as a keras.Model subclass: its layers made in __init__, the skips in call()."""

  def __init__(self, network: str = "resnet18", image_shape: Sequence[int] = (32, 32, 3),
               num_classes: int = 10, seed: int = 0, precision: str = "float32",
               sync_batchnorm: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.network, self.image_shape, self.num_classes = network, tuple(image_shape), num_classes
    self.seed, self.precision, self.sync_batchnorm = seed, precision, sync_batchnorm
    layers = _resnet_layers(network, image_shape, num_classes, seed, precision, sync_batchnorm)
    self.stem, self.blocks, self.head = layers.stem, layers.blocks, layers.head

  def build(self, input_shape):
    # One symbolic pass builds every layer in call order, as the Functional model's are built.
    self.call(keras.KerasTensor(tuple(input_shape), dtype="float32"))

  def call(self, images):
    return _outputs(self.stem, self.blocks, self.head, images)

  def get_config(self) -> dict:
    return {**super().get_config(), "network": self.network, "image_shape": self.image_shape,
            "num_classes": self.num_classes, "seed": self.seed, "precision": self.precision,
            "sync_batchnorm": self.sync_batchnorm}


def build_subclass(network: str, image_shape: Sequence[int], num_classes: int, seed: int,
                   precision: str, sync_batchnorm: bool = False) -> keras.Model:
  """Returns `network` as a keras.Model subclass, built so its weights exist."""
  model = SubclassResNet(network, image_shape, num_classes, seed, precision, sync_batchnorm,
                         name=f"subclass_{network}")
  model.build((None, *image_shape))
  return model


BUILDERS = {"sequential": build_sequential, "functional": build_functional,
            "subclass": build_subclass}
