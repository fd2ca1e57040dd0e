"""A folder of images with one subfolder per class: what it holds, checked before training.

  DATA_DIR/<class>/*.png|jpg                   the test split is held out (--validation_split)
  DATA_DIR/train/<class>/...  DATA_DIR/test/<class>/...   the test split is given

Class names are the subfolder names, sorted; labels are their indices. Every image's size and
channel count is read from its PNG or JPEG header, which is cheap, so a folder of mixed sizes or
an unreadable file is named before anything trains, whether the images are then decoded into
memory or streamed from disk.
"""

import dataclasses
import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from trainer import errors

EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_VALIDATION_SPLIT = 0.2
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels as tf.io.decode_png gives them (a palette decodes to RGB).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# JPEG start-of-frame markers, which carry the image size.
_JPEG_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  """One split as file paths and int32 labels."""

  paths: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """What an image folder holds: its classes, its two splits, and the size of its images."""

  class_names: Tuple[str, ...]
  train: FolderSplit
  test: FolderSplit
  image_size: Tuple[int, int]  # Height and width of the stored images (before any resize).
  channels: int
  sizes: frozenset = frozenset()  # Every (height, width) the folder's images have.


def is_image_folder(data_dir: str) -> bool:
  """True when `data_dir` holds a train/ folder or a subfolder with images, and no IDX files.

  Subfolders without images (a workdir made inside the data folder, say) do not count.
  """
  entries = [entry for entry in os.scandir(data_dir) if not entry.name.startswith(".")]
  if any(entry.name.startswith(("train-images", "t10k-images")) for entry in entries):
    return False
  return any(entry.is_dir() and (entry.name == "train" or any(
      name.lower().endswith(EXTENSIONS) for name in os.listdir(entry.path)))
             for entry in entries)


def read_image_folder(data_dir: str, resize: Sequence[int] = (),
                      validation_split: Optional[float] = None,
                      mixed_sizes: bool = False) -> ImageFolder:
  """Lists and checks the images under `data_dir`; see the module docstring for the layout.

  `resize` (height, width) or `mixed_sizes` (the converter, which copies the files as they are)
  allows images of mixed sizes; without either they must all agree.
  """
  has_splits = os.path.isdir(os.path.join(data_dir, "train"))
  root = os.path.join(data_dir, "train") if has_splits else data_dir
  class_names, train_files = _list_classes(root)
  if has_splits and validation_split is not None:
    raise errors.UserError(
        f"--validation_split applies to a folder without a test split, but {data_dir} has "
        "train/ (and its test/ folder is the test split). Leave --validation_split out.")
  if has_splits:
    test_root = os.path.join(data_dir, "test")
    if not os.path.isdir(test_root):
      raise errors.UserError(
          f"{data_dir} has a train/ folder but no test/ folder beside it. Add test/ with the "
          "same class subfolders, or put the class subfolders directly in the folder.")
    test_classes, test_files = _list_classes(test_root, min_classes=1)
    unknown = sorted(set(test_classes) - set(class_names))
    if unknown:
      raise errors.UserError(f"{test_root} has classes that train/ lacks: {', '.join(unknown)}.")
    test_files = {name: test_files.get(name, []) for name in class_names}
  else:
    train_files, test_files = _hold_out(train_files, validation_split)
  train, test = _split(train_files, class_names), _split(test_files, class_names)
  size, channels, sizes = _common_size(np.concatenate([train.paths, test.paths]),
                                       resize or mixed_sizes)
  return ImageFolder(tuple(class_names), train, test, size, channels, sizes)


def _list_classes(root: str, min_classes: int = 2) -> Tuple[List[str], Dict[str, List[str]]]:
  files = {}
  for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
    if entry.is_dir() and not entry.name.startswith("."):
      images = sorted(os.path.join(entry.path, name) for name in os.listdir(entry.path)
                      if name.lower().endswith(EXTENSIONS))
      if images:
        files[entry.name] = images
  if not files:
    raise errors.UserError(
        f"{root} holds no images: --data_dir takes a folder with one subfolder of images "
        f"({', '.join(EXTENSIONS)}) per class, or the four MNIST-format IDX files.")
  if len(files) < min_classes:
    raise errors.UserError(
        f"{root} holds one class only ({next(iter(files))}): a classifier needs at least two "
        "subfolders of images, one per class.")
  return sorted(files), files


def _hold_out(files: Dict[str, List[str]],
              validation_split: Optional[float]) -> Tuple[Dict[str, List[str]], Dict[str, List]]:
  """Holds out the same share of every class, chosen by a fixed seed: the test split is the
  same in every run, whatever its --seed."""
  share = DEFAULT_VALIDATION_SPLIT if validation_split is None else validation_split
  train, test = {}, {}
  for name, paths in files.items():
    order = np.random.default_rng(0).permutation(len(paths))
    num_test = int(round(share * len(paths)))
    if num_test == 0 or num_test == len(paths):
      raise errors.UserError(
          f"Class {name} has {len(paths)} images: too few to hold out a share of "
          f"{share} for testing. Add images, or give train/ and test/ folders.")
    test[name] = sorted(paths[i] for i in order[:num_test])
    train[name] = sorted(paths[i] for i in order[num_test:])
  return train, test


def _split(files: Dict[str, List[str]], class_names: Sequence[str]) -> FolderSplit:
  paths = [path for name in class_names for path in files[name]]
  labels = [label for label, name in enumerate(class_names) for _ in files[name]]
  return FolderSplit(np.array(paths, dtype=object), np.array(labels, dtype=np.int32))


def _common_size(paths: Sequence[str], mixed: bool) -> Tuple[Tuple[int, int], int, frozenset]:
  """The (height, width) every image shares, or the first one's when sizes may be `mixed`; the
  channel count of the first image, to which every image is decoded; and every size found."""
  first_size, first_channels = image_header(paths[0])
  sizes = {first_size}
  if not mixed:
    for path in paths[1:]:
      size, _ = image_header(path)
      if size != first_size:
        raise errors.UserError(
            f"The images differ in size: {paths[0]} is {first_size[0]}x{first_size[1]}, {path} is "
            f"{size[0]}x{size[1]} (height x width). Add --image_size=HEIGHT,WIDTH to resize "
            "them all.")
  else:
    for path in paths[1:]:
      sizes.add(image_header(path)[0])  # Every file must at least be a readable image.
  return first_size, min(first_channels, 3) if first_channels != 2 else 1, frozenset(sizes)


def image_header(path: str) -> Tuple[Tuple[int, int], int]:
  """Returns ((height, width), channels) of a PNG or JPEG file, read from its header alone."""
  try:
    with open(path, "rb") as f:
      # Every file of the dataset is read here: 4 KB holds a PNG's header and most JPEGs' frame;
      # a JPEG whose metadata comes first (EXIF may take 64 KB) reads on.
      head = f.read(4096)
      if head.startswith(_PNG_SIGNATURE) and len(head) >= 26 and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return (height, width), _PNG_CHANNELS.get(head[25], 3)
      if head.startswith(b"\xff\xd8"):
        frame = _jpeg_frame(head) or _jpeg_frame(head + f.read(65536 - len(head)))
        if frame:
          return frame
  except OSError as e:
    raise errors.UserError(f"{path} cannot be read: {e.strerror}.") from None
  raise errors.UserError(
      f"{path} is not a readable PNG or JPEG image. Delete it or replace it with a good copy.")


def _jpeg_frame(head: bytes) -> Optional[Tuple[Tuple[int, int], int]]:
  position = 2
  while position + 9 < len(head):
    if head[position] != 0xFF:
      return None
    marker = head[position + 1]
    if marker == 0xFF:  # Fill byte.
      position += 1
      continue
    (length,) = struct.unpack(">H", head[position + 2:position + 4])
    if marker in _JPEG_FRAME_MARKERS:
      height, width = struct.unpack(">HH", head[position + 5:position + 9])
      return (height, width), head[position + 9]
    position += 2 + length
  return None
