"""Chapter 3: preprocessing (resizing, normalization, augmentation, input
pipelines). Everything runs in this process on the library."""

from __future__ import annotations

import time

from docs.guide import core

AUGMENT_SAMPLES = 5  # draws per augmentation in the pictures
THROUGHPUT_BATCHES = (16, 64, 256)
THROUGHPUT_EPOCHS = 3  # the first is a warm-up and is not timed


def _load(name: str, **kwargs):
  from fedclf.data import DataConfig, load_dataset  # pylint: disable=g-import-not-at-top
  return load_dataset(DataConfig(name, **kwargs))


def _resize(ctx: core.Context) -> None:
  from fedclf.data.image_dataset import resize_images  # pylint: disable=g-import-not-at-top
  rows = [("cifar10", 3, (8, 16, 32, 64)), ("usps", 0, (8, 16, 28, 56)),
          ("digits", 0, (8, 16, 28, 56))]
  fig = core.new_figure(7.5, 6.0)
  for r, (name, index, sizes) in enumerate(rows):
    ds = _load(name, test_limit=10)
    image = ds.x_test[index:index + 1]
    native = image.shape[1]
    shown = [resize_images(image, size)[0] for size in sizes]
    core.image_grid(fig, shown,
                    [f"{name} {s}x{s}" + (" (native)" if s == native else "")
                     for s in sizes], len(rows), len(sizes),
                    first=r * len(sizes) + 1)
  core.save_figure(fig, ctx.figure("ch03_resize.png"))


def _normalize(ctx: core.Context) -> None:
  from fedclf.data.preprocess import Normalization  # pylint: disable=g-import-not-at-top
  fig = core.new_figure(10, 3.4)
  for k, name in enumerate(("mnist", "cifar10")):
    ds = _load(name, train_limit=ctx.data_limit(4000))
    norm = Normalization.from_images(ds.x_train)
    normalized = norm.apply(ds.x_train)
    for j, (values, title) in enumerate(
        ((ds.x_train, "pixels in [0, 1]"),
         (normalized, "(x - mean) / std"))):
      ax = fig.add_subplot(1, 4, 2 * k + j + 1)
      for c in range(values.shape[-1]):
        colour = ("k" if values.shape[-1] == 1 else "rgb"[c])
        ax.hist(values[..., c].ravel(), bins=50, histtype="step",
                color=colour, density=True)
      # Log scale: MNIST's background spike would flatten everything else.
      ax.set_title(f"{name}: {title}", fontsize=8)
      ax.set_yscale("log")
      ax.set_yticks([])
      ax.set_yticks([], minor=True)
      ax.tick_params(labelsize=7)
      # round() + 0.0 prints a tiny negative mean as +0.00, not -0.00.
      ax.set_xlabel(f"mean {round(float(values.mean()), 2) + 0.0:+.2f}, "
                    f"std {values.std():.2f}", fontsize=7)
  core.save_figure(fig, ctx.figure("ch03_normalization.png"))


def _augment(ctx: core.Context) -> None:
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from fedclf.data.preprocess import AUGMENTATIONS
  from fedclf.data.preprocess import AugmentConfig
  from fedclf.data.preprocess import augment_image
  from fedclf.ssl import augment as ssl_augment
  # pylint: enable=g-import-not-at-top
  for name, index in (("cifar10", 3), ("fashion_mnist", 0)):
    ds = _load(name, test_limit=20)
    image = tf.constant(ds.x_test[index])
    fig = core.new_figure(1.3 * (AUGMENT_SAMPLES + 1),
                          1.35 * len(AUGMENTATIONS))
    for r, aug in enumerate(AUGMENTATIONS):
      config = AugmentConfig.from_names([aug])
      views = [augment_image(image, tf.constant([r, s], tf.int64),
                             config).numpy()
               for s in range(AUGMENT_SAMPLES)]
      core.image_grid(fig, [ds.x_test[index]] + views,
                      [f"--augment={aug}" if i == 0 else f"seed {i - 1}"
                       for i in range(AUGMENT_SAMPLES + 1)],
                      len(AUGMENTATIONS), AUGMENT_SAMPLES + 1,
                      first=r * (AUGMENT_SAMPLES + 1) + 1)
    core.save_figure(fig, ctx.figure(f"ch03_augment_{name}.png"))

  # Self-supervised views: two strong, independent augmentations per image.
  fig = core.new_figure(9, 6.2)
  blocks = (("cifar10", 8), ("mnist", 8))
  for b, (name, count) in enumerate(blocks):
    ds = _load(name, test_limit=count)
    config = ssl_augment.default_for(name)
    one, two = ssl_augment.two_views(tf.constant(ds.x_test[:count]),
                                     tf.constant([7, b], tf.int64), config)
    for r, (images, label) in enumerate(((ds.x_test[:count], "original"),
                                         (one.numpy(), "view 1"),
                                         (two.numpy(), "view 2"))):
      core.image_grid(fig, images,
                      [f"{name} {label}" if i == 0 else ""
                       for i in range(count)],
                      3 * len(blocks), count,
                      first=(3 * b + r) * count + 1)
  core.save_figure(fig, ctx.figure("ch03_ssl_views.png"))


def _throughput(ctx: core.Context) -> None:
  # pylint: disable=g-import-not-at-top
  from fedclf.data.preprocess import AugmentConfig
  from fedclf.data.preprocess import make_pipeline
  from fedclf.data.preprocess import Normalization
  # pylint: enable=g-import-not-at-top
  ds = _load("cifar10", train_limit=ctx.data_limit(0))
  norm = Normalization.from_images(ds.x_train)
  settings = (("none", AugmentConfig()),
              ("crop, flip", AugmentConfig.from_names(["crop", "flip"])),
              ("crop, flip, rotate, jitter",
               AugmentConfig.from_names(["crop", "flip", "rotate", "jitter"])))
  rows = []
  for label, augment in settings:
    row = [label]
    for batch_size in THROUGHPUT_BATCHES:
      seconds = 0.0
      for epoch in range(THROUGHPUT_EPOCHS):
        start = time.perf_counter()
        for images, _ in make_pipeline(ds.x_train, ds.y_train, batch_size,
                                       norm, shuffle=True, seed=epoch,
                                       augment=augment, cache=False):
          images.numpy()  # make sure the batch is really produced
        if epoch:
          seconds += time.perf_counter() - start
      row.append(f"{len(ds.y_train) * (THROUGHPUT_EPOCHS - 1) / seconds:,.0f}")
    rows.append(row)
  ctx.write_output("ch03_throughput.md", core.markdown_table(
      ["augmentation"] + [f"batch {b} (images/s)" for b in THROUGHPUT_BATCHES],
      rows) + f"\nCIFAR-10 subset ({len(ds.y_train):,} training images, "
      f"32x32x3), mean of {THROUGHPUT_EPOCHS - 1} epochs after a warm-up "
      f"epoch; no model, only the input pipeline.\n")


CHAPTER = core.Chapter(3, "03-preprocessing", "Preprocessing", (
    core.Step("ch03.resize", ("figures/ch03_resize.png",), _resize),
    core.Step("ch03.normalize", ("figures/ch03_normalization.png",),
              _normalize),
    core.Step("ch03.augment", ("figures/ch03_augment_cifar10.png",
                               "figures/ch03_augment_fashion_mnist.png",
                               "figures/ch03_ssl_views.png"), _augment),
    core.Step("ch03.throughput", ("outputs/ch03_throughput.md",), _throughput),
))
