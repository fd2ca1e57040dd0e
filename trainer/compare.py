"""Compares finished runs: a table over seeds, CSV, plots and whether the APIs really differ.

  python -m trainer.compare --logdir=runs/sweep
  python -m trainer.compare --logdir=runs/sweep --output_dir=docs/results --target_accuracy=0.85

Reads every run under --logdir (its results.json, and its TensorBoard events through
tensorboard's own event reader), groups runs that differ only by seed and writes, into
--output_dir (default LOGDIR/report): report.md, report.csv, accuracy_per_epoch.png,
throughput.png and goodput.png (where each configuration's time went). The report states
whether accuracy differences between APIs exceed seed-to-seed noise, by a Welch t-test for each
pair of APIs; runs on several Keras backends (a sweep with --backends=tensorflow,jax) are grouped
by backend, and each other backend is set against TensorFlow: its speed, and whether it trains to
the same accuracy. Each configuration's goodput and MFU are the medians of its runs' (runs
recorded before they existed have none).
"""

import csv
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow loads, via tensorboard.
import statistics
from typing import Dict, List, Optional, Sequence

from absl import flags
from absl import logging

from trainer import command
from trainer import errors
from trainer.records import goodput as goodput_lib
from trainer.records import run_record

flags.DEFINE_string("logdir", None, "Folder of runs, as written by trainer.sweep.", required=True)
flags.DEFINE_string("output_dir", None, "Where to write the report (default LOGDIR/report).")
flags.DEFINE_float("target_accuracy", 0.85, "Accuracy for the time-to-accuracy column.")
flags.DEFINE_float("alpha", 0.05, "Significance level of the Welch t-tests.")

FLAGS = flags.FLAGS
GROUP_KEYS = ("model", "api", "backend", "strategy", "precision", "device", "global_batch_size",
              "dataset")


def _load_events(folder: str):
  """Every event of one run folder, through tensorboard's own reader (nothing dropped)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(
      folder, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _event_scalars(folder: str, tag: str) -> List[tuple]:
  """(wall_time, step, value) of a scalar in one run folder."""
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(folder):
    return []
  accumulator = _load_events(folder)
  if tag not in accumulator.Tags()["tensors"]:
    return []
  return [(event.wall_time, event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
          for event in accumulator.Tensors(tag)]


def load_runs(logdir: str) -> List[dict]:
  """Returns every finished run under `logdir`: its results plus per-epoch eval accuracy."""
  runs = []
  for folder, _, files in sorted(os.walk(logdir)):
    if run_record.RESULTS_FILE not in files:
      continue
    run = run_record.read_results(folder)
    run.setdefault("model", "mlp")  # Runs recorded before --model existed trained the mlp.
    run.setdefault("backend", "tensorflow")  # And before --backend, on TensorFlow.
    run["workdir"] = folder
    run["eval_accuracy"] = _event_scalars(os.path.join(folder, "eval"), "accuracy")
    run["start_wall_time"] = _first_wall_time(folder)
    runs.append(run)
  return runs


def _first_wall_time(folder: str) -> Optional[float]:
  """Wall time of the first event in a run's own folder: the HParams entry, before step 1."""
  accumulator = _load_events(folder)
  times = [event.wall_time for tag in accumulator.Tags()["tensors"]
           for event in accumulator.Tensors(tag)]
  return min(times, default=None)


def _seconds_to_accuracy(run: dict, target: float) -> Optional[float]:
  for wall_time, _, value in run["eval_accuracy"]:
    if value >= target:
      return wall_time - run["start_wall_time"]
  return None


def summarize(runs: Sequence[dict], target_accuracy: float) -> List[dict]:
  """One row per configuration (runs that differ only by seed)."""
  groups: Dict[tuple, List[dict]] = {}
  for run in runs:
    groups.setdefault(tuple(run[key] for key in GROUP_KEYS), []).append(run)
  rows = []
  for key, members in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
    accuracies = [run["test_accuracy"] for run in members]
    times = [_seconds_to_accuracy(run, target_accuracy) for run in members]
    rows.append({
        **dict(zip(GROUP_KEYS, key)), "seeds": len(members),
        "test_accuracy_mean": statistics.mean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "examples_per_sec_median": statistics.median(run["examples_per_sec"] for run in members),
        "examples_per_sec_min": min(run["examples_per_sec"] for run in members),
        "examples_per_sec_max": max(run["examples_per_sec"] for run in members),
        "seconds_to_target_median": (statistics.median(times) if None not in times else None),
        "goodput_median": _median_of(run.get("goodput", {}).get("fraction")
                                     for run in members),
        "mfu_median": _median_of(run.get("mfu") for run in members),
        "accuracies": accuracies,
        "runs": members,
    })
  return rows


def _median_of(values) -> Optional[float]:
  """The median of the figures runs have (runs recorded before a figure existed have none)."""
  known = [value for value in values if value is not None]
  return statistics.median(known) if known else None


def _configuration(run: dict) -> tuple:
  """What a run shares with the runs it is compared with: every group key but api."""
  return tuple(run[key] for key in GROUP_KEYS if key != "api")


def _label(run: dict, varying: Sequence[str]) -> str:
  return ", ".join(str(run[key]) for key in varying) or run["api"]


def _varying_keys(runs: Sequence[dict], keys: Sequence[str] = GROUP_KEYS) -> List[str]:
  """The group keys whose value differs between runs: what a label must name."""
  return [key for key in keys if len({str(run[key]) for run in runs}) > 1]


def compare_apis(runs: Sequence[dict], alpha: float) -> List[str]:
  """Plain sentences: does each pair of APIs differ beyond seed noise (Welch t-test)?

  Only runs of the same configuration (strategy, precision, device, batch, dataset) are
  compared, seed against seed; each configuration gets its own tests.
  """
  configurations: Dict[tuple, List[dict]] = {}
  for run in runs:
    configurations.setdefault(_configuration(run), []).append(run)
  varying = _varying_keys(runs, [key for key in GROUP_KEYS if key != "api"])
  lines = []
  for key in sorted(configurations, key=lambda k: tuple(map(str, k))):
    members = configurations[key]
    prefix = f"[{_label(members[0], varying)}] " if varying else ""
    by_api: Dict[str, Dict[int, float]] = {}
    for run in members:
      by_api.setdefault(run["api"], {})[run["seed"]] = run["test_accuracy"]
    for first, second in itertools.combinations(sorted(by_api), 2):
      lines.append(f"- {prefix}{first} vs {second}: "
                   + _welch_verdict(by_api[first], by_api[second], alpha))
  return lines


def compare_backends(runs: Sequence[dict], alpha: float) -> List[str]:
  """Plain sentences: each other backend against TensorFlow in every configuration (model, API,
  strategy, ...) run on both: its median examples/s as a multiple of TensorFlow's, and whether
  its test accuracy differs beyond seed noise."""
  configurations: Dict[tuple, Dict[str, List[dict]]] = {}
  for run in runs:
    key = tuple(run[k] for k in GROUP_KEYS if k not in ("backend", "device"))
    configurations.setdefault(key, {}).setdefault(run["backend"], []).append(run)
  varying = _varying_keys(runs, [k for k in GROUP_KEYS if k not in ("backend", "device")])
  lines = []
  for key in sorted(configurations, key=lambda k: tuple(map(str, k))):
    by_backend = configurations[key]
    if "tensorflow" not in by_backend:
      continue
    base = by_backend["tensorflow"]
    prefix = f"[{_label(base[0], varying)}] " if varying else ""
    for backend in sorted(set(by_backend) - {"tensorflow"}):
      members = by_backend[backend]
      speed = (statistics.median(r["examples_per_sec"] for r in members)
               / statistics.median(r["examples_per_sec"] for r in base))
      lines.append(f"- {prefix}{backend} vs tensorflow: {speed:.2f}x the examples/s (median); "
                   "test accuracy " + _welch_verdict(
                       {r["seed"]: r["test_accuracy"] for r in members},
                       {r["seed"]: r["test_accuracy"] for r in base}, alpha))
  return lines


def _welch_verdict(first: Dict[int, float], second: Dict[int, float], alpha: float) -> str:
  """One pair of APIs, accuracy by seed: identical, within noise, or different."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a, b = list(first.values()), list(second.values())
  if len(a) < 2 or len(b) < 2:
    return "too few seeds to test (need 2 or more each)."
  same_seeds = sorted(set(first) & set(second))
  if same_seeds and all(first[s] == second[s] for s in same_seeds):
    return (f"identical test accuracy for every seed ({len(same_seeds)} seeds): no difference "
            "at all.")
  result = stats.ttest_ind(a, b, equal_var=False)
  verdict = ("a difference beyond seed noise" if result.pvalue < alpha
             else "within seed-to-seed noise")
  return (f"mean {statistics.mean(a):.4f} vs {statistics.mean(b):.4f}, Welch t = "
          f"{result.statistic:.2f}, p = {result.pvalue:.3f}: {verdict} (alpha {alpha}).")


def write_table(rows: Sequence[dict], target_accuracy: float, statements: Sequence[str],
                path: str, backend_statements: Sequence[str] = ()) -> str:
  """Writes the Markdown report; returns its text."""
  header = ("| model | api | backend | strategy | precision | device | batch | seeds | test "
            f"accuracy (mean ± std) | examples/s (median) | s to {target_accuracy:.2f} (median) "
            "| goodput (median) | MFU (median) |")
  lines = [header, "|" + "---|" * 13]
  for row in rows:
    to_target = ("not reached" if row["seconds_to_target_median"] is None
                 else f"{row['seconds_to_target_median']:.1f}")
    lines.append(
        f"| {row['model']} | {row['api']} | {row['backend']} | {row['strategy']} | "
        f"{row['precision']} | "
        f"{row['device']} | "
        f"{row['global_batch_size']} | {row['seeds']} | {row['test_accuracy_mean']:.4f} ± "
        f"{row['test_accuracy_std']:.4f} | {row['examples_per_sec_median']:,.0f} | {to_target} | "
        f"{_percent(row['goodput_median'])} | {_percent(row['mfu_median'])} |")
  lines += ["", "Goodput: the share of the runs' wall time (every process, start to end) spent in "
            "training steps whose results were kept; goodput.png shows where the rest went. "
            "MFU: the model's training FLOP/s over the devices' peak (results.json's "
            "peak_source: a datasheet's on GPUs, a measured matmul ceiling on CPUs)."]
  lines += ["", "Do the APIs differ beyond seed noise?", *statements]
  if backend_statements:
    lines += ["", "Each Keras backend against TensorFlow:", *backend_statements]
  text = "\n".join(lines) + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def _percent(share: Optional[float]) -> str:
  return "-" if share is None else f"{share:.1%}"


def write_csv(rows: Sequence[dict], path: str) -> None:
  columns = [*GROUP_KEYS, "seeds", "test_accuracy_mean", "test_accuracy_std",
             "examples_per_sec_median", "seconds_to_target_median", "goodput_median",
             "mfu_median"]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def plot_accuracy(runs: Sequence[dict], path: str) -> dict:
  """Eval accuracy per epoch for each configuration: the mean line and a min-max band over seeds.

  Returns the curves' "labels", one per configuration (all group keys; only those that differ
  between runs are named), and the "epoch_ticks" drawn. Configurations with identical curves
  (the three APIs can agree to the bit) would hide each other: each repeat is nudged sideways,
  hatched, and its label says which curve it equals.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
  styles = itertools.cycle([("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")])
  hatches = itertools.cycle(["//", "\\\\", "xx", ".."])
  groups: Dict[tuple, List[dict]] = {}
  for run in runs:
    if run["eval_accuracy"]:
      groups.setdefault(tuple(run[key] for key in GROUP_KEYS), []).append(run)
  varying = _varying_keys(runs)
  labels, seen = [], {}
  for key in sorted(groups, key=lambda k: tuple(map(str, k))):
    curves = [[value for _, _, value in run["eval_accuracy"]] for run in groups[key]]
    length = min(len(curve) for curve in curves)
    columns = [[curve[i] for curve in curves] for i in range(length)]
    mean = [statistics.mean(c) for c in columns]
    low, high = [min(c) for c in columns], [max(c) for c in columns]
    label = f"{_label(groups[key][0], varying)} ({len(curves)} seeds)"
    signature = (tuple(mean), tuple(low), tuple(high))
    repeats = seen.setdefault(signature, [])
    offset, hatch = 0.06 * len(repeats), None
    if repeats:
      label += f"; same curve as {repeats[0]}"
      hatch = next(hatches)
    repeats.append(label.split(" (")[0])
    epochs = [epoch + offset for epoch in range(1, length + 1)]
    line_style, marker = next(styles)
    lines = axes.plot(epochs, mean, linestyle=line_style, marker=marker, markersize=4,
                      label=label)
    axes.fill_between(epochs, low, high, alpha=0.2, color=lines[0].get_color(), hatch=hatch)
    labels.append(label)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel("epoch", fontsize=FONT_SIZE)
  axes.set_ylabel("test accuracy", fontsize=FONT_SIZE)
  axes.set_title("Test accuracy per epoch (band: min-max over seeds)", fontsize=FONT_SIZE + 2)
  axes.tick_params(labelsize=FONT_SIZE - 1)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=FONT_SIZE - 2)
  figure.tight_layout()
  figure.savefig(path)
  low, high = axes.get_xlim()
  ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
  cut = _texts_outside(figure, axes)
  pyplot.close(figure)
  return {"labels": labels, "epoch_ticks": ticks, "cut": cut}


def plot_throughput(rows: Sequence[dict], path: str) -> dict:
  """Median training examples/sec per configuration, whiskers from the slowest to the fastest
  seed: how far apart runs of one configuration land on this machine (its noise). Returns the
  "whiskers" (below, above each median) and the "title", which names the machines."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  machines = sorted({row["device"] for row in rows})
  backends = {row["backend"] for row in rows}
  labels = [f"{run_record.model_label(row['model'], row['api'])}\n"
            + (f"{row['backend']}, " if len(backends) > 1 else "")
            + f"{row['strategy']}, {row['precision']}"
            + (f"\n{row['device']}" if len(machines) > 1 else "")
            for row in rows]
  medians = [row["examples_per_sec_median"] for row in rows]
  whiskers = [[m - row["examples_per_sec_min"] for m, row in zip(medians, rows)],
              [row["examples_per_sec_max"] - m for m, row in zip(medians, rows)]]
  width, height = FIGURE_INCHES
  figure, axes = pyplot.subplots(figsize=(max(width, 2.2 * len(rows)), height), dpi=FIGURE_DPI)
  axes.bar(range(len(rows)), medians, yerr=whiskers, capsize=6)
  axes.set_xticks(range(len(rows)), labels, fontsize=FONT_SIZE - 2)
  axes.tick_params(axis="y", labelsize=FONT_SIZE - 1)
  axes.set_ylabel("training examples/s\n(median; whiskers: min-max over seeds)",
                  fontsize=FONT_SIZE)
  title = "Throughput on " + "; ".join(machines)
  axes.set_title(title, fontsize=FONT_SIZE)
  axes.grid(axis="y", alpha=0.3)
  figure.tight_layout()
  figure.savefig(path)
  cut = _texts_outside(figure, axes)
  pyplot.close(figure)
  return {"whiskers": whiskers, "title": title, "cut": cut}


# goodput.png's parts, bottom up, with the names its legend gives them.
GOODPUT_PARTS = {"productive_s": "productive (steps kept)", "lost_s": "lost (steps trained again)",
                 "startup_s": "start-up", "compile_s": "compiling", "input_wait_s": "input wait",
                 "checkpoint_s": "checkpoints", "evaluation_s": "evaluation",
                 "between_processes_s": "between processes", "other_s": "other"}


def goodput_shares(runs: Sequence[dict]) -> Optional[Dict[str, float]]:
  """Each goodput part's share of the wall time of `runs` together (seconds summed over the
  runs, so a longer seed weighs more), or None where no run recorded its goodput."""
  recorded = [run["goodput"] for run in runs if run.get("goodput")]
  wall = sum(goodput["wall_s"] for goodput in recorded)
  if not wall:
    return None
  return {part: sum(goodput[part] for goodput in recorded) / wall for part in goodput_lib.PARTS}


def plot_goodput(rows: Sequence[dict], path: str) -> dict:
  """One stacked bar per configuration: where its runs' wall time went, part by part (shares
  of the wall time, over its seeds). Returns the "shares" drawn, by configuration label, and
  the texts "cut" by the figure's edge."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  drawn = [(row, goodput_shares(row["runs"])) for row in rows]
  drawn = [(row, shares) for row, shares in drawn if shares is not None]
  varying = _varying_keys([row for row, _ in drawn]) if len(drawn) > 1 else []
  labels = [_label(row, varying) if varying else run_record.model_label(row["model"], row["api"])
            for row, _ in drawn]
  width, height = FIGURE_INCHES
  figure, axes = pyplot.subplots(figsize=(max(width, 2.2 * len(drawn)), height),
                                 dpi=FIGURE_DPI)
  bottoms = [0.0] * len(drawn)
  colours = pyplot.get_cmap("tab10")
  for index, (part, name) in enumerate(GOODPUT_PARTS.items()):
    heights = [100 * shares[part] for _, shares in drawn]
    axes.bar(range(len(drawn)), heights, bottom=bottoms, label=name, color=colours(index))
    bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
  axes.set_xticks(range(len(drawn)), [label.replace(", ", "\n") for label in labels],
                  fontsize=FONT_SIZE - 2)
  axes.tick_params(axis="y", labelsize=FONT_SIZE - 1)
  axes.set_ylim(0, 100)
  axes.set_ylabel("share of wall time, % (all processes, seeds summed)", fontsize=FONT_SIZE)
  axes.set_title("Where each configuration's time went (goodput: the bottom part)",
                 fontsize=FONT_SIZE)
  axes.legend(fontsize=FONT_SIZE - 3, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  figure.tight_layout()
  figure.savefig(path)
  cut = _texts_outside(figure, axes)
  pyplot.close(figure)
  return {"shares": dict(zip(labels, (shares for _, shares in drawn))), "cut": cut}


def _texts_outside(figure, axes) -> List[str]:
  """The axis labels, title and tick labels that do not fit inside the saved figure."""
  renderer = figure.canvas.get_renderer()
  bounds = figure.bbox
  (x_low, x_high), (y_low, y_high) = axes.get_xlim(), axes.get_ylim()
  # Only the tick labels drawn: those of ticks inside the axes' limits.
  ticks = [label for tick, label in zip(axes.get_xticks(), axes.get_xticklabels())
           if x_low <= tick <= x_high]
  ticks += [label for tick, label in zip(axes.get_yticks(), axes.get_yticklabels())
            if y_low <= tick <= y_high]
  texts = [axes.xaxis.label, axes.yaxis.label, axes.title, *ticks]
  cut = []
  for text in texts:
    if not text.get_text() or not text.get_visible():
      continue
    box = text.get_window_extent(renderer)
    if box.x0 < bounds.x0 - 1 or box.y0 < bounds.y0 - 1 or box.x1 > bounds.x1 + 1 or (
        box.y1 > bounds.y1 + 1):
      cut.append(text.get_text())
  return cut


# The PNGs: 1200x800 pixels, with text that reads at that size.
FIGURE_INCHES, FIGURE_DPI, FONT_SIZE = (12, 8), 100, 13


def build_report(logdir: str, output_dir: str, target_accuracy: float = 0.85,
                 alpha: float = 0.05) -> dict:
  """Writes report.md, report.csv and the three PNGs; returns their paths and the rows."""
  runs = load_runs(logdir)
  if not runs:
    raise errors.UserError(
        f"No finished run (results.json) under --logdir={logdir}. Point it at the --root of a "
        "sweep, or at a folder holding trainer workdirs.")
  os.makedirs(output_dir, exist_ok=True)
  rows = summarize(runs, target_accuracy)
  paths = {name: os.path.join(output_dir, name) for name in (
      "report.md", "report.csv", "accuracy_per_epoch.png", "throughput.png", "goodput.png")}
  text = write_table(rows, target_accuracy, compare_apis(runs, alpha), paths["report.md"],
                     compare_backends(runs, alpha))
  write_csv(rows, paths["report.csv"])
  plot_accuracy(runs, paths["accuracy_per_epoch.png"])
  plot_throughput(rows, paths["throughput.png"])
  plot_goodput(rows, paths["goodput.png"])
  return {"paths": paths, "rows": rows, "text": text, "num_runs": len(runs)}


def main(argv):
  del argv  # Unused.
  # Before TensorFlow loads (tensorboard's reader imports it): its cuInit "error" on machines
  # without a GPU and its other start-up chatter are filtered, as under trainer.main.
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()
  logging.set_verbosity(logging.WARNING)  # tensorboard's reader logs every file it opens.
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.logdir, "report")
  with errors.shown_as_one_line():
    report = build_report(FLAGS.logdir, output_dir, FLAGS.target_accuracy, FLAGS.alpha)
  print(f"{errors.plural(report['num_runs'], 'run')} in "
        f"{errors.plural(len(report['rows']), 'configuration')}\n")
  print(report["text"])
  print("Written:", ", ".join(report["paths"].values()))


if __name__ == "__main__":
  command.run(main)
