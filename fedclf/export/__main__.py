r"""Exports a trained fedclf run for deployment and checks every format.

  python -m fedclf.export --run_dir=results/baselines/mnist_cnn \
      --model_name=mnist_cnn_centralized --export_dir=exports \
      --out_dir=results/export

--run_dir is any finished run that trained a classifier (centralized,
federated, domain adaptation: its summary.json's kind and model.keras; see
fedclf.results.trained_run). Writes the next
version <export_dir>/<model_name>/<N>/ (TF Serving SavedModel taking uint8
images, tflite/model_{float,int8}.tflite, tfjs/, model_card.json), scores
each format on the run's test set next to the Keras model (TF.js in Node),
and writes <out_dir>/<model_name>/{summary,model_card,config}.json,
saved_model_cli.txt and <out_dir>/table.md. Exits with status 1 when a
parity check fails (the files are still written).

One --out_dir collects several models: the binary claims only
<out_dir>/<model_name> (see fedclf.results.run_folder), so exporting
another model adds its row to table.md and leaves the others alone, while
exporting a model name that already has results there is refused unless
--overwrite, which moves the old <out_dir>/<model_name> aside to
<out_dir>/<model_name>.old-<time> (kept, left out of table.md). The
--export_dir versions are never replaced: each export adds the next
version and TF Serving serves the highest.
"""

import sys

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_string("run_dir", "", "A finished fedclf run directory.")
flags.DEFINE_string("model_name", "",
                    "TF Serving model name (the folder under --export_dir).")
flags.DEFINE_string("export_dir", "exports",
                    "Where model versions are written (<model_name>/<N>/).")
flags.DEFINE_list("formats", ["saved_model", "tflite", "tfjs"],
                  "Formats to write and check: saved_model (required), "
                  "tflite (float and int8), tfjs.")
flags.DEFINE_string("data_dir", "",
                    "Data directory (default: what the run recorded, else "
                    "$FEDCLF_DATA_DIR).")
flags.DEFINE_integer("test_limit", 0,
                     "Score on a seeded slice of this many test examples "
                     "(0 = all).")
flags.DEFINE_integer("representative_examples", 500,
                     "Training images that calibrate the int8 model.")
flags.DEFINE_integer("tfjs_examples", 256,
                     "Test images run through TF.js in Node.")
flags.DEFINE_integer("seed", 0, "Seed of the slices above.")
flags.DEFINE_string("out_dir", "results/export",
                    "Results folder (one subfolder per model name).")
cli.define_overwrite_flag(entry_flag="model_name")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Imported here so --help and flag errors answer without loading fedclf.
  from fedclf.export import ExportConfig  # pylint: disable=g-import-not-at-top
  from fedclf.export import run_export  # pylint: disable=g-import-not-at-top
  from fedclf.errors import UserError  # pylint: disable=g-import-not-at-top

  # --model_name is checked by the claim on <out_dir>/<model_name>.
  if not FLAGS.run_dir:
    raise UserError("--run_dir is required")

  config = ExportConfig(
      run_dir=FLAGS.run_dir, model_name=FLAGS.model_name,
      export_dir=FLAGS.export_dir, formats=tuple(FLAGS.formats),
      data_dir=FLAGS.data_dir, test_limit=FLAGS.test_limit,
      representative_examples=FLAGS.representative_examples,
      tfjs_examples=FLAGS.tfjs_examples, seed=FLAGS.seed)
  summary = run_export(config, FLAGS.out_dir, cli.flag_values_dict())
  parts = [f"Keras {summary['keras_test_accuracy']:.4f}",
           f"SavedModel {summary['saved_model']['test_accuracy']:.4f}"]
  for key, label in (("tflite_float", "TFLite float"),
                     ("tflite_int8", "TFLite int8")):
    if key in summary:
      parts.append(f"{label} {summary[key]['test_accuracy']:.4f} "
                   f"({summary[key]['bytes'] / 1e6:.2f} MB)")
  if "tfjs" in summary:
    parts.append(f"TF.js top-1 agreement "
                 f"{summary['tfjs']['top1_agreement_with_keras']:.4f}")
  print(f"{summary['export_path']}: " + ", ".join(parts))
  if summary["failed_checks"]:
    print("failed checks: " + "; ".join(summary["failed_checks"]),
          file=sys.stderr)
    sys.exit(1)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
