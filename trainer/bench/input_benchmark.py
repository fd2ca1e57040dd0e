"""`python -m trainer.benchmark --input --data_dir=DIR`: is the input pipeline fast enough?

Three rows, measured interleaved in rounds on the same cores (a shared VM drifts over minutes,
so only figures of one run compare):

  harness     the training pipeline a run builds (InputPipeline.training_batches with
              --augment=crop_flip) iterated alone: images/s and per core; held in memory as a
              run here would hold it, and streamed from disk as ImageNet's 140 GB would be
  reference   the same work written as Model Garden writes it (the peer): a parallel
              interleave of the shards (or a parallel read of the files), parse, a random box
              sampled from the JPEG's header, decode_and_crop_jpeg, bilinear resize, flip, batch
  model       the harness training --input_model on synthetic data of the same shape: what the
              model alone takes, without input

and which of input and model is the bottleneck, by how much. Each row also says how many cores
the process obtained while it ran (its CPU seconds over the wall seconds) and its images per CPU
second: on a machine shared with other work, a process gets a share of the cores that grows with
its runnable threads, so images/s compares processes only together with what they obtained. `--make_jpegs=N` first writes N
ImageNet-like JPEGs (300-500 px a side, quality 90) into --data_dir as TFRecord shards, for a
machine without ImageNet.
"""

import os
import statistics
import time
from typing import Callable, Dict, Sequence, Tuple

from absl import flags
import numpy as np

from trainer.bench import machine

INPUT_BATCH = 128
WARMUP_BATCHES = 2
JPEG_QUALITY = 90
JPEG_SIDES = (300, 500)  # Every image's height and width are drawn between these.
NUM_CLASSES = 10


def define_flags() -> None:
  """The input benchmark's flags, beside the benchmark's own (--data_dir is shared)."""
  flags.DEFINE_boolean("input", False, "Measure the input pipeline of --data_dir (TFRecord "
                       "shards or an image folder) against a Model Garden-style reference and "
                       "the model alone; see trainer/bench/input_benchmark.py.")
  flags.DEFINE_list("image_size", ["224", "224"], "--input: HEIGHT,WIDTH trained on.")
  flags.DEFINE_integer("input_batches", 12, "--input: batches of 128 timed per row and round.",
                       lower_bound=1)
  flags.DEFINE_string("input_model", "resnet50", "--input: the model of the model-alone row.")
  flags.DEFINE_integer("make_jpegs", 0, "--input: first write this many ImageNet-like JPEGs "
                       "(300-500 px, quality 90) into an empty --data_dir as TFRecord shards.",
                       lower_bound=0)


# ---------------------------------------------------------------- ImageNet-like JPEGs.
def imagenet_like_image(rng: np.random.Generator) -> np.ndarray:
  """A uint8 photo-like image of 300-500 px a side: smooth colour fields with edges and grain,
  so that its JPEG has the size and decoding cost of a photo's (tens of KB), not of noise or of
  a flat colour."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = rng.integers(JPEG_SIDES[0], JPEG_SIDES[1] + 1, 2)
  coarse = rng.uniform(0, 255, (1, height // 24 + 2, width // 24 + 2, 3)).astype(np.float32)
  smooth = tf.image.resize(coarse, (height, width), method="bicubic")[0].numpy()
  grain = rng.normal(0, 12, (height, width, 3))
  return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def write_jpeg_shards(output: str, count: int, seed: int = 0, num_shards: int = 8) -> int:
  """Writes `count` ImageNet-like JPEGs (quality 90) with labels as TFRecord shards in `output`
  (train-* and test-*), as trainer.tfrecords writes them; returns the bytes of JPEG written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.data import tfrecords  # pylint: disable=g-import-not-at-top
  from trainer import safe_files  # pylint: disable=g-import-not-at-top
  os.makedirs(output, exist_ok=True)
  rng = np.random.default_rng(seed)
  encoded = [tf.io.encode_jpeg(imagenet_like_image(rng), quality=JPEG_QUALITY).numpy()
             for _ in range(count)]
  labels = rng.integers(0, NUM_CLASSES, count)
  num_test = max(1, count // 10)
  files = {**tfrecords.write_split(output, "train", encoded.__getitem__, labels, num_shards),
           **tfrecords.write_split(output, "test", encoded.__getitem__, labels[:num_test], 1)}
  safe_files.write_json(os.path.join(output, tfrecords.METADATA_FILE),
                        {"num_classes": NUM_CLASSES, "files": files,
                         "class_names": [str(label) for label in range(NUM_CLASSES)]})
  return sum(len(image) for image in encoded)


# ---------------------------------------------------------------- The three rows.
def harness_batches(data_dir: str, image_size: Sequence[int], batch_size: int,
                    num_batches: int, streamed: bool = False):
  """The first `num_batches` training batches (and the warm-up's) a run with
  --augment=crop_flip builds (`streamed`: as if the data were larger than the memory limit),
  and what it holds."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  pipeline = input_pipeline.make_input_pipeline(config_lib.DataConfig(
      data_dir=data_dir, image_size=tuple(image_size), augment="crop_flip",
      batch_size=batch_size, memory_limit_mb=0.001 if streamed else 0.0))
  held = "encoded" if pipeline.encoded else "decoded"
  where = "streamed" if pipeline.stream is not None else "in memory"
  epochs = -(-(num_batches + WARMUP_BATCHES) // pipeline.steps_per_epoch)
  return pipeline.training_batches(0, epochs), f"{held}, {where}"


def reference_batches(data_dir: str, image_size: Sequence[int], batch_size: int):
  """The peer: Model Garden's classification input (official/vision/dataloaders and
  ops/preprocess_ops.py) for the same files, written out: files interleaved in parallel, records
  shuffled, parsed, a box sampled from the JPEG header (area 8-100%, aspect 3/4-4/3, 10 tries),
  only that window decoded, resized bilinearly, flipped, batched, prefetched; not deterministic."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.data import image_folder  # pylint: disable=g-import-not-at-top
  from trainer.data import tfrecords  # pylint: disable=g-import-not-at-top
  size = tuple(image_size)

  def crop(image_bytes):
    shape = tf.image.extract_jpeg_shape(image_bytes)
    begin, box, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], box[0], box[1]])
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = tf.image.resize(image, size, method="bilinear")
    return tf.image.random_flip_left_right(image) / 255.0

  if tfrecords.is_tfrecord_folder(data_dir):
    files = tf.data.Dataset.list_files(os.path.join(data_dir, tfrecords.TRAIN_PATTERN),
                                       shuffle=True)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=16,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    examples = records.shuffle(10_000).repeat().map(
        lambda record: tfrecords.parse_example(record, 0), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False)
  else:
    folder = image_folder.read_image_folder(data_dir, size)
    examples = tf.data.Dataset.from_tensor_slices((folder.train.paths.astype(str),
                                                   folder.train.labels)).shuffle(
        len(folder.train.labels)).repeat().map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return examples.map(lambda image_bytes, label: (crop(image_bytes), label),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).batch(
      batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset, batch_size: int, num_batches: int,
                      warmup: int = WARMUP_BATCHES) -> Tuple[float, float]:
  """Images/s of iterating `dataset` for `num_batches` batches after `warmup` (tf.data fills
  its buffers and autotunes during those), and the cores this process obtained meanwhile."""
  iterator = iter(dataset)
  for _ in range(warmup):
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return num_batches * batch_size / seconds, (time.process_time() - cpu_start) / seconds


def model_alone(model: str, image_size: Sequence[int], root: str) -> float:
  """Examples/s of the harness training `model` on synthetic data of the same shape."""
  from trainer.bench import model_benchmark  # pylint: disable=g-import-not-at-top
  workload = model_benchmark.Workload(model, (*image_size, 3), 16, 2, 4)
  return model_benchmark.measure_harness(workload, os.path.join(root, "model"))[
      "examples_per_sec"]


def run_input_benchmark(data_dir: str, image_size: Sequence[int], num_batches: int, rounds: int,
                        model: str, root: str, batch_size: int = INPUT_BATCH) -> dict:
  """The rows (median over interleaved `rounds`), the machine, and the verdict."""
  harness, held = harness_batches(data_dir, image_size, batch_size, num_batches)
  streamed, held_streamed = harness_batches(data_dir, image_size, batch_size, num_batches,
                                            streamed=True)
  peers: Dict[str, Callable[[], Tuple[float, float]]] = {
      "harness": lambda: images_per_second(harness, batch_size, num_batches),
      "harness_streamed": lambda: images_per_second(streamed, batch_size, num_batches),
      "reference": lambda: images_per_second(
          reference_batches(data_dir, image_size, batch_size), batch_size, num_batches)}
  measured = {name: [] for name in peers}
  obtained = {name: [] for name in peers}
  for _ in range(rounds):
    for name, measure in peers.items():
      rate, cores_used = measure()
      measured[name].append(rate)
      obtained[name].append(cores_used)
  cores = len(os.sched_getaffinity(0))
  rows = {name: {"images_per_sec": statistics.median(values), "rounds": values,
                 "per_core": statistics.median(values) / cores,
                 "cores_obtained": statistics.median(obtained[name]),
                 "per_cpu_second": statistics.median(
                     rate / max(used, 1e-9) for rate, used in zip(values, obtained[name]))}
          for name, values in measured.items()}
  rows["harness"]["held"] = held
  rows["harness_streamed"]["held"] = held_streamed
  if model:
    rate = model_alone(model, image_size, root)
    rows["model"] = {"images_per_sec": rate, "per_core": rate / cores, "model": model}
  return {"machine": machine.machine(), "data_dir": data_dir, "image_size": list(image_size),
          "cores": cores, "rows": rows,
          "harness_vs_reference": _ratio(measured["harness"], measured["reference"]),
          "streamed_vs_reference": _ratio(measured["harness_streamed"], measured["reference"])}


def _ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
  """The median of each round's ratio: rows measured side by side share the machine's drift."""
  return statistics.median(a / b for a, b in zip(ours, theirs))


def format_input_report(record: dict) -> str:
  """The rows as Markdown, with the bottleneck named."""
  described, rows = record["machine"], record["rows"]
  lines = [f"Input pipeline, {record['image_size'][0]}x{record['image_size'][1]}, "
           f"{record['data_dir']}: {described['cpu']}, {record['cores']} cores, "
           f"{' '.join(described['extensions'])}",
           "", "| row | images/s | per core | cores obtained | per CPU second |",
           "|---|---|---|---|---|"]
  for name, row in rows.items():
    label = {"harness": f"harness training pipeline ({row.get('held', '')})",
             "harness_streamed": f"harness training pipeline ({row.get('held', '')})",
             "reference": "reference (Model Garden-style)",
             "model": f"{row.get('model', '')} alone, synthetic data"}[name]
    obtained = (f"{row['cores_obtained']:.2f} | {row['per_cpu_second']:,.0f}"
                if "cores_obtained" in row else "- | -")
    lines.append(f"| {label} | {row['images_per_sec']:,.0f} | {row['per_core']:,.0f} | "
                 f"{obtained} |")
  lines += ["", f"harness / reference: {record['harness_vs_reference']:.2f}x in memory, "
                f"{record['streamed_vs_reference']:.2f}x streamed (the median of each "
                "interleaved round's ratio)"]
  if "model" in rows:
    input_rate = rows["harness_streamed"]["images_per_sec"]
    model_rate = rows["model"]["images_per_sec"]
    if input_rate < model_rate:
      lines.append(f"Input-bound: the model could train {model_rate / input_rate:.1f}x faster "
                   "than these cores prepare its images.")
    else:
      lines.append(f"Model-bound: the input runs {input_rate / model_rate:.1f}x faster than the "
                   "model trains.")
  return "\n".join(lines)


def main(config) -> dict:
  """Runs the input benchmark for the benchmark's parsed flags `config`; prints the report."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer import safe_files  # pylint: disable=g-import-not-at-top
  image_size = [int(side) for side in config.image_size]
  with errors.shown_as_one_line():
    if config.make_jpegs:
      if os.path.isdir(config.data_dir) and os.listdir(config.data_dir):
        raise errors.UserError(f"--make_jpegs writes into an empty --data_dir; "
                               f"{config.data_dir} is not empty.")
      written = write_jpeg_shards(config.data_dir, config.make_jpegs)
      print(f"{config.data_dir}: {config.make_jpegs} JPEGs, {written / 2**20:.0f} MB")
    with tempfile.TemporaryDirectory(prefix="input-benchmark-") as root:
      record = run_input_benchmark(config.data_dir, image_size, config.input_batches,
                                   config.repeats, config.input_model, root)
  safe_files.write_json(config.output, record, sort_keys=False)
  print("\n" + format_input_report(record))
  print(f"\nWritten to {config.output}")
  return record
