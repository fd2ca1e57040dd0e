"""Reloads a finished run's exported model and evaluates it on the test split again.

  python -m trainer.evaluate --workdir=runs/seed
  python -m trainer.evaluate --workdir=runs/seed --format=saved_model

Reads the run's config.json for the dataset, so the figure is comparable with the test_accuracy
in its results.json, which it prints beside it.
"""

from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True)
flags.DEFINE_enum("format", "keras", ["keras", "saved_model"],
                  "Which export to load: model.keras or the inference SavedModel.")
flags.DEFINE_string("data_dir", None, "Read the IDX files from here instead of the saved path.")

FLAGS = flags.FLAGS


def evaluate_export(workdir: str, export_format: str = "keras", data_dir=None) -> dict:
  """Returns {"test_accuracy", "test_loss", "num_examples"} of the exported model in `workdir`."""
  # Imported here so that --help answers without loading TensorFlow.
  import keras  # pylint: disable=g-import-not-at-top
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer import export  # pylint: disable=g-import-not-at-top
  from trainer import input_pipeline  # pylint: disable=g-import-not-at-top
  from trainer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  run_config = workdir_lib.read_run_config(workdir)
  if run_config is None or not export.has_export(workdir):
    raise errors.UserError(f"{workdir} holds no finished run with an exported model.")
  pipeline = input_pipeline.make_input_pipeline(
      run_config["dataset"], data_dir or run_config["data_dir"], run_config["tfds_data_dir"],
      run_config["batch_size"], run_config["seed"])
  if export_format == "keras":
    model = export.load_keras_model(workdir)
    predict = model
  else:
    # The loaded object owns the variables: keep it referenced while `serve` runs.
    model = export.load_saved_model(workdir)
    predict = model.serve
  loss = keras.metrics.Mean()
  accuracy = keras.metrics.SparseCategoricalAccuracy()
  loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
  for images, labels, weights in pipeline.eval_dataset():
    probabilities = predict(images)
    loss.update_state(loss_fn(labels, probabilities), sample_weight=weights)
    accuracy.update_state(labels, probabilities, sample_weight=weights)
  return {"test_accuracy": float(accuracy.result()), "test_loss": float(loss.result()),
          "num_examples": pipeline.num_test_examples}


def main(argv):
  del argv  # Unused.
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer import run_record  # pylint: disable=g-import-not-at-top
  with errors.shown_as_one_line():
    figures = evaluate_export(FLAGS.workdir, FLAGS.format, FLAGS.data_dir)
    recorded = run_record.read_results(FLAGS.workdir)["test_accuracy"]
  print(f"{FLAGS.format}: test accuracy {figures['test_accuracy']:.4f} "
        f"(results.json: {recorded:.4f}), loss {figures['test_loss']:.4f}, "
        f"{figures['num_examples']} examples")


if __name__ == "__main__":
  app.run(main)
