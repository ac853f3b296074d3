r"""Explains a trained fedclf model: saliency maps, a sanity check, pictures.

  python -m fedclf.interpret --run_dir=results/baselines/mnist_cnn \
      --name=centralized \
      --compare_run_dir=results/mcmahan/fedavg_iid_e5_b10_lr0.1 \
      --compare_name=FedAvg --out_dir=results/interpret

--run_dir is any finished run that trained a classifier (centralized,
federated, domain adaptation; see fedclf.results.trained_run).
Writes attributions.png (gradient, SmoothGrad, integrated gradients,
Grad-CAM on chosen test examples, misclassified ones included),
ig_completeness.json, randomization.{json,png} and randomization_maps.png
(the cascading model-parameter randomization test), with --compare_run_dir
compare.{json,png}, and architecture.png, filters.png, activations.png,
config.json, summary.json to --out_dir.

--out_dir holds one interpretation: the binary claims it like a training
run (see fedclf.results.run_folder), so a folder that already holds one
is refused (a second interpretation would overwrite some files and leave
others, compare.* say, from the first) unless --overwrite, which moves it
aside to <out_dir>.old-<time>. Every file is written atomically.
"""

from absl import flags

from fedclf import cli

cli.define_common_flags()
flags.DEFINE_string("run_dir", "", "The finished fedclf run to explain.")
flags.DEFINE_string("name", "", "Its label in figures (default: its kind, "
                    "e.g. centralized).")
flags.DEFINE_string("compare_run_dir", "",
                    "A second run whose maps are compared on the same "
                    "inputs (e.g. a federated model).")
flags.DEFINE_string("compare_name", "", "Its label (default: its kind).")
flags.DEFINE_string("data_dir", "",
                    "Data directory (default: what the run recorded, else "
                    "$FEDCLF_DATA_DIR).")
flags.DEFINE_list("methods",
                  ["gradient", "smoothgrad", "integrated_gradients",
                   "grad_cam"],
                  "Attribution methods (grad_cam needs a convolutional "
                  "model).")
flags.DEFINE_integer("examples", 6,
                     "Correctly classified test examples in the grid.")
flags.DEFINE_integer("misclassified", 4,
                     "Misclassified test examples in the grid (at most).")
flags.DEFINE_integer("ig_steps", 128, "Integrated gradients: steps.")
flags.DEFINE_float("ig_tolerance", 0.01,
                   "Integrated gradients: completeness tolerance, relative "
                   "to |logit(x) - logit(baseline)|.")
flags.DEFINE_integer("smoothgrad_samples", 32, "SmoothGrad: noisy samples.")
flags.DEFINE_float("smoothgrad_noise", 0.15,
                   "SmoothGrad: noise std as a fraction of the value range.")
flags.DEFINE_string("gradcam_layer", "",
                    "Grad-CAM: convolution layer name (default: the last "
                    "one, found automatically).")
flags.DEFINE_integer("randomization_examples", 8,
                     "Examples in the randomization sanity check.")
flags.DEFINE_bool("architecture", True,
                  "Draw architecture.png with Keras plot_model (needs "
                  "graphviz's dot).")
flags.DEFINE_integer("seed", 0,
                     "Seed of the example choice, SmoothGrad noise and "
                     "re-initialization.")
flags.DEFINE_string("out_dir", "results/interpret", "Output directory.")
cli.define_overwrite_flag()

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # Imported here so --help and flag errors answer without loading fedclf.
  from fedclf.errors import UserError  # pylint: disable=g-import-not-at-top
  from fedclf.interpret import InterpretConfig  # pylint: disable=g-import-not-at-top
  from fedclf.interpret import run_interpret  # pylint: disable=g-import-not-at-top

  if not FLAGS.run_dir:
    raise UserError("--run_dir is required")
  config = InterpretConfig(
      run_dir=FLAGS.run_dir, name=FLAGS.name,
      compare_run_dir=FLAGS.compare_run_dir, compare_name=FLAGS.compare_name,
      data_dir=FLAGS.data_dir, examples=FLAGS.examples,
      misclassified=FLAGS.misclassified, methods=tuple(FLAGS.methods),
      ig_steps=FLAGS.ig_steps, ig_tolerance=FLAGS.ig_tolerance,
      smoothgrad_samples=FLAGS.smoothgrad_samples,
      smoothgrad_noise=FLAGS.smoothgrad_noise,
      gradcam_layer=FLAGS.gradcam_layer,
      randomization_examples=FLAGS.randomization_examples,
      architecture=FLAGS.architecture, seed=FLAGS.seed)
  summary = run_interpret(config, FLAGS.out_dir, cli.flag_values_dict())
  line = (f"{summary['model']}: integrated gradients completeness "
          f"{'passed' if summary['ig_completeness_passed'] else 'FAILED'} "
          f"(max relative error {summary['ig_max_relative_error']:.2e})"
          if summary["ig_completeness_passed"] is not None else
          f"{summary['model']}")
  final = "; ".join(f"{m} rho={v['spearman_abs']:.2f}" for m, v in
                    summary["randomization_final_step"].items())
  print(f"{line}; fully randomized vs trained maps: {final}  -> "
        f"{FLAGS.out_dir}/summary.json")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
