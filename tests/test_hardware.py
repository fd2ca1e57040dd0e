"""GPU facts paired by identity (PCI bus id), not by index, from fake nvidia-smi listings and
TensorFlow device descriptions: no GPU is needed."""

from trainer.distribute import hardware

# What nvidia-smi prints for hardware.NVIDIA_SMI_QUERY on a 4-GPU host: bus order.
FOUR_GPUS = """\
00000000:07:00.0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960, Disabled
00000000:0F:00.0, GPU-bbbb, NVIDIA A100-SXM4-80GB, 81920, Disabled
00000000:47:00.0, GPU-cccc, NVIDIA A100-SXM4-40GB, 40960, Disabled
00000000:4E:00.0, GPU-dddd, NVIDIA A100-SXM4-40GB, [N/A], Disabled
"""


def tf_description(index, name, bus_id, capability="8.0"):
  return f"device: {index}, name: {name}, pci bus id: {bus_id}, compute capability: {capability}"


def test_a_subset_in_cudas_order_is_paired_by_bus_id_not_by_index():
  # CUDA_VISIBLE_DEVICES=3,1 and CUDA's fastest-first order: TensorFlow's GPU 0 is the 80 GB
  # card, which nvidia-smi lists second; pairing by index gave it the first card's 40 GB.
  gpus = hardware.describe_gpus_from(
      [tf_description(0, "NVIDIA A100-SXM4-80GB", "0000:0f:00.0"),
       tf_description(1, "NVIDIA A100-SXM4-40GB", "0000:47:00.0")],
      hardware.parse_nvidia_smi(FOUR_GPUS))
  assert [(g["uuid"], g["memory_mib"]) for g in gpus] == [("GPU-bbbb", 81920),
                                                          ("GPU-cccc", 40960)]
  assert gpus[0] == {"name": "NVIDIA A100-SXM4-80GB", "bus_id": "0000:0f:00.0",
                     "uuid": "GPU-bbbb", "mig": False, "compute_capability": [8, 0],
                     "memory_mib": 81920}


def test_a_field_nvidia_smi_cannot_read_blanks_only_its_own_gpu():
  listing = hardware.parse_nvidia_smi(FOUR_GPUS)
  assert [gpu["memory_mib"] for gpu in listing.values()] == [40960, 81920, 40960, None]


def test_a_warning_line_before_the_listing_is_skipped():
  listing = hardware.parse_nvidia_smi(
      "WARNING: infoROM is corrupted at gpu 0000:07:00.0\n" + FOUR_GPUS)
  assert list(listing) == ["0000:07:00.0", "0000:0f:00.0", "0000:47:00.0", "0000:4e:00.0"]


def test_without_nvidia_smi_tensorflows_facts_remain():
  gpus = hardware.describe_gpus_from(
      [tf_description(0, "Tesla V100-SXM2-16GB", "0000:00:1e.0", "7.0")],
      hardware.parse_nvidia_smi(""))
  assert gpus == [{"name": "Tesla V100-SXM2-16GB", "bus_id": "0000:00:1e.0", "uuid": None,
                   "mig": False, "compute_capability": [7, 0], "memory_mib": None}]


def test_mig_slices_are_shown_as_such_without_their_gpus_memory():
  listing = hardware.parse_nvidia_smi(
      "00000000:07:00.0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960, Enabled\n")
  gpus = hardware.describe_gpus_from(
      [tf_description(0, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "0000:07:00.0"),
       tf_description(1, "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "0000:07:00.0")], listing)
  assert [(g["mig"], g["memory_mib"], g["uuid"]) for g in gpus] == [(True, None, "GPU-aaaa")] * 2
