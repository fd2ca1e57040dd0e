"""Reloads a finished run's exported model and evaluates it on the test split again.

  python -m trainer.evaluate --workdir=runs/seed
  python -m trainer.evaluate --workdir=runs/seed --format=saved_model
  python -m trainer.evaluate --workdir=runs/seed --best      # WORKDIR/best/ (--keep_best)

Reads the run's config.json for the dataset, so the figure is comparable with the test_accuracy
in its results.json, which it prints beside it.
"""

import os

from absl import flags

from trainer import command

flags.DEFINE_string("workdir", None, "Workdir of a finished run.", required=True)
flags.DEFINE_enum("format", "keras", ["keras", "saved_model"],
                  "Which export to load: model.keras or the inference SavedModel (which a "
                  "run made with --noexport_saved_model has not).")
flags.DEFINE_string("data_dir", None, "Read the data from here instead of the saved --data_dir.")
flags.DEFINE_boolean("best", False, "Evaluate the best evaluation's exports, kept under "
                     "WORKDIR/best/ by --keep_best, instead of the final ones.")

FLAGS = flags.FLAGS


def evaluate_export(workdir: str, export_format: str = "keras", data_dir=None,
                    best: bool = False) -> dict:
  """Returns {"test_accuracy", "test_loss", "num_examples"} of the exported model in `workdir`
  (with `best`, of the one in workdir/best/)."""
  # Imported here so that --help answers without loading TensorFlow.
  import keras  # pylint: disable=g-import-not-at-top
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer.records import export  # pylint: disable=g-import-not-at-top
  from trainer.records import run_record  # pylint: disable=g-import-not-at-top
  from trainer.records import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  run_config = workdir_lib.read_run_config(workdir)
  if run_config is None or not export.has_export(workdir):
    raise errors.UserError(f"{workdir} holds no finished run with an exported model.")
  exports = os.path.join(workdir, workdir_lib.BEST_DIR) if best else workdir
  if not export.has_export(exports):
    raise errors.UserError(f"{workdir} holds no best model: only a run with --keep_best keeps "
                           f"one, in {exports}.")
  config = _saved_config(run_config, data_dir)
  if export_format == "saved_model" and not os.path.isdir(
      os.path.join(exports, workdir_lib.SAVED_MODEL_DIR)):
    why = ("its run stopped before it was written" if config.output.export_saved_model
           else "its run was made with --noexport_saved_model")
    raise errors.UserError(f"{exports} holds no saved_model/: {why}. Evaluate its model.keras: "
                           "leave --format out.")
  pipeline = input_pipeline.make_input_pipeline(config.data)  # Evaluated whole below.
  if export_format == "keras":
    model = _load_keras_model(exports, config.model)
    # In a graph, as the trainer evaluates: eager bfloat16 kernels round differently, so the
    # accuracy would differ from results.json's.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    predict = tf.function(lambda images: model(images, training=False))
  else:
    # The loaded object owns the variables: keep it referenced while `serve` runs.
    model = export.load_saved_model(exports)
    predict = model.serve
  loss = keras.metrics.Mean()
  accuracy = keras.metrics.SparseCategoricalAccuracy()
  from_logits = run_record.read_results(workdir).get("from_logits", False)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=None)
  pipeline = pipeline.final_test_split()  # As results.json's figures, whatever --eval_steps.
  for images, labels, weights in pipeline.eval_dataset():
    outputs = keras.ops.cast(predict(images), "float32")
    loss.update_state(loss_fn(labels, outputs), sample_weight=weights)
    accuracy.update_state(labels, outputs, sample_weight=weights)
  return {"test_accuracy": float(accuracy.result()), "test_loss": float(loss.result()),
          "num_examples": pipeline.num_test_examples}


def _saved_config(run_config: dict, data_dir):
  """The Config a run was made with, from its config.json; `data_dir` replaces its data_dir."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  values = {name: run_config[name] for name in config_lib.SETTINGS if name in run_config}
  return config_lib.Config.from_flags(
      **{**values, "data_dir": data_dir or values.get("data_dir")})


def _load_keras_model(workdir: str, model):
  """Loads model.keras; for the user's own model, with the layers and models its module defines,
  as Keras needs their classes to rebuild it."""
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer.models import own_model  # pylint: disable=g-import-not-at-top
  from trainer.records import export  # pylint: disable=g-import-not-at-top
  if not model.own_model:
    return export.load_keras_model(workdir)
  try:
    custom_objects, why = own_model.load_function(model.name).custom_objects(), ""
  except errors.UserError as e:
    custom_objects, why = {}, f" ({e})"
  try:
    return export.load_keras_model(workdir, custom_objects)
  except Exception as e:  # pylint: disable=broad-except  # Keras raises several kinds here.
    location = model.name.rsplit(":", 1)[0]
    raise errors.UserError(
        f"{workdir}/model.keras holds your model, whose classes come from {location}{why}; "
        f"Keras needs them to rebuild it ({str(e).split('. ')[0]}). Run from the folder the run "
        "was started in, so that --model's path or module is found again (a module needs its "
        "folder on PYTHONPATH). The saved_model/ export needs no code: "
        "--format=saved_model.") from None


def main(argv):
  del argv  # Unused.
  from trainer import console  # pylint: disable=g-import-not-at-top
  console.quiet()  # Before TensorFlow loads.
  from trainer import errors  # pylint: disable=g-import-not-at-top
  from trainer.records import run_record  # pylint: disable=g-import-not-at-top
  with errors.shown_as_one_line():
    figures = evaluate_export(FLAGS.workdir, FLAGS.format, FLAGS.data_dir, FLAGS.best)
    results = run_record.read_results(FLAGS.workdir)
    recorded = results["best_test_accuracy" if FLAGS.best else "test_accuracy"]
  print(f"{'best ' if FLAGS.best else ''}{FLAGS.format}: test accuracy "
        f"{figures['test_accuracy']:.4f} (results.json: {recorded:.4f}), loss "
        f"{figures['test_loss']:.4f}, {figures['num_examples']} examples")


if __name__ == "__main__":
  command.run(main)
