"""Domains of the same task (digits) and their alignment into pairs.

A domain is a registered loader of an `ImageDataset` (in `DOMAINS`, a
registry of its own: domains are datasets with a known channel count that
can be put side by side). Built in:

- `mnist`, `usps`: the real files (fedclf.data's loaders).
- `mnist_m`: MNIST blended over colour photo patches (`fedclf.adapt.mnist_m`;
  CIFAR-10 crops stand in for BSDS500, which is not available offline).
- `mnist_corrupted[/corruption]`: tensorflow-datasets' MNIST-C, when its
  prepared data is in `<data_dir>/tfds` or can be downloaded; offline and
  absent it is a one-line error (default corruption: shot_noise).

`load_domain_pair` loads a source and a target and aligns them: one image
size, one channel count (grayscale replicated to RGB when either domain is
colour), one label set. Mixtures of the digit domains are also registered
as datasets (`domains:mnist+usps`, ...) whose examples carry their domain
index as natural client id, for federated runs across domains (see
`fedclf.adapt.labelled_domain_clients`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fedclf.adapt import mnist_m as mnist_m_lib
from fedclf.data import DataConfig
from fedclf.data import ImageDataset
from fedclf.data import load_dataset
from fedclf.data import make_image_dataset
from fedclf.data import resize_images
from fedclf.data.loaders import DIGIT_NAMES
from fedclf.data.loaders import load_tfds
from fedclf.errors import UserError
from fedclf.registry import DATASETS
from fedclf.registry import Registry

DEFAULT_IMAGE_SIZE = 28
CHANNEL_CHOICES = (0, 1, 3)  # 0: 3 if either domain is colour, else 1
MIXTURE_PREFIX = "domains:"
# ITU-R BT.601 luma, for a colour domain paired with channels=1.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class DomainLimits:
  """Seeded random slices (0 = all), as `DataConfig.train_limit/test_limit`."""
  train: int = 0
  test: int = 0

  def validate(self) -> None:
    if self.train < 0 or self.test < 0:
      raise UserError(f"train_limit and test_limit must be >= 0, got "
                      f"{self.train} and {self.test}")


@dataclasses.dataclass(frozen=True)
class DomainOptions:
  """How to load a domain (everything but its name).

  Attributes:
    data_dir: the data directory ("" = `FEDCLF_DATA_DIR`, else
      ~/.cache/fedclf).
    download: allow tensorflow-datasets downloads of missing data.
    seed: the seed of the limit slices (the same slice as
      `load_dataset` with this seed, so `mnist` and `mnist_m` with one seed
      and limit hold the same digits).
    limits: train/test slice sizes.
    mnist_m_seed: the MNIST-M generator's seed. Separate from `seed` so
      that runs over several seeds see one fixed MNIST-M, as with the
      published dataset.
  """
  data_dir: str = ""
  download: bool = True
  seed: int = 0
  limits: DomainLimits = DomainLimits()
  mnist_m_seed: int = 0


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """A registered domain: its loader and native channel count.

  `load(options, variant)` returns the domain's `ImageDataset` at its native
  size with `options.limits` applied; `variant` is the part after "/" in
  names like `mnist_corrupted/fog` ("" when absent).
  """
  load: Callable[[DomainOptions, str], ImageDataset]
  channels: int
  description: str
  variants: Tuple[str, ...] = ()  # accepted variants; () = none


DOMAINS: Registry = Registry("domain")


def _data_config(name: str, options: DomainOptions,
                 limited: bool = True) -> DataConfig:
  limits = options.limits if limited else DomainLimits()
  return DataConfig(name=name, data_dir=options.data_dir,
                    train_limit=limits.train, test_limit=limits.test,
                    seed=options.seed, download=options.download)


def _slice_indices(n: int, limit: int,
                   rng: np.random.Generator) -> Optional[np.ndarray]:
  # The same draw as fedclf.data.image_dataset.load_dataset's slicing, so a domain
  # built from another dataset's full arrays (mnist_m) slices alike.
  if limit <= 0 or limit >= n:
    return None
  return np.sort(rng.permutation(n)[:limit])


def _limit_slices(train_size: int, test_size: int, options: DomainOptions
                  ) -> Tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(options.seed)
  train = _slice_indices(train_size, options.limits.train, rng)
  test = _slice_indices(test_size, options.limits.test, rng)
  return (np.arange(train_size) if train is None else train,
          np.arange(test_size) if test is None else test)


def _load_dataset_domain(dataset: str) -> Callable[[DomainOptions, str],
                                                   ImageDataset]:
  def load(options: DomainOptions, variant: str) -> ImageDataset:
    del variant  # These domains have none (checked by load_domain).
    return load_dataset(_data_config(dataset, options))

  return load


def load_mnist_m(options: DomainOptions, variant: str) -> ImageDataset:
  """MNIST-M from the real MNIST and CIFAR-10 files (see mnist_m.py)."""
  del variant
  mnist = load_dataset(_data_config("mnist", options, limited=False))
  photos = load_dataset(_data_config("cifar10", options, limited=False))
  train_idx, test_idx = _limit_slices(len(mnist.y_train), len(mnist.y_test),
                                      options)
  splits = []
  # Crops are drawn for the whole split and then sliced, so a limited load
  # holds exactly those images of the full MNIST-M for this mnist_m_seed.
  for split, (x, y, backgrounds, idx) in enumerate(
      ((mnist.x_train, mnist.y_train, photos.x_train, train_idx),
       (mnist.x_test, mnist.y_test, photos.x_test, test_idx))):
    crops = mnist_m_lib.draw_crops(len(y), backgrounds.shape,
                                   (options.mnist_m_seed, split))
    splits.append((mnist_m_lib.blend(x[idx], backgrounds, crops.take(idx)),
                   y[idx]))
  (x_train, y_train), (x_test, y_test) = splits
  return make_image_dataset(
      "mnist_m", f"generated: {mnist.source} over {photos.source} crops "
      f"(mnist_m_seed={options.mnist_m_seed})", x_train, y_train, x_test,
      y_test, DIGIT_NAMES)


MNIST_C_CORRUPTIONS = (
    "identity", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
    "shear", "scale", "rotate", "brightness", "translate", "stripe", "fog",
    "spatter", "dotted_line", "zigzag", "canny_edges")


def load_mnist_corrupted(options: DomainOptions, variant: str) -> ImageDataset:
  """tensorflow-datasets' MNIST-C (Mu & Gilmer 2019), one corruption."""
  corruption = variant or "shot_noise"
  name = f"mnist_corrupted/{corruption}"
  config = _data_config(name, options, limited=False)
  # No local files to look for first: only tfds's prepared copy.
  x_tr, y_tr, x_te, y_te = load_tfds(name, config, [])
  train_idx, test_idx = _limit_slices(len(y_tr), len(y_te), options)
  return make_image_dataset(name, "tfds", x_tr[train_idx], y_tr[train_idx],
                            x_te[test_idx], y_te[test_idx], DIGIT_NAMES)


DOMAINS.add("mnist", DomainSpec(_load_dataset_domain("mnist"), 1,
                                "MNIST digits, 28x28 grayscale"))
DOMAINS.add("usps", DomainSpec(_load_dataset_domain("usps"), 1,
                               "USPS digits, 16x16 grayscale"))
DOMAINS.add("mnist_m", DomainSpec(
    load_mnist_m, 3, "MNIST over CIFAR-10 photo crops, 28x28 colour"))
DOMAINS.add("mnist_corrupted", DomainSpec(
    load_mnist_corrupted, 1, "tensorflow-datasets MNIST-C (if prepared)",
    MNIST_C_CORRUPTIONS))


def parse_domain(name: str) -> Tuple[str, DomainSpec, str]:
  """(base name, spec, variant) of e.g. `mnist` or `mnist_corrupted/fog`."""
  base, _, variant = str(name).partition("/")
  spec = DOMAINS.get(base)  # unknown: the error lists the domains
  if variant and variant not in spec.variants:
    if not spec.variants:
      raise UserError(f"domain {base!r} has no variants, got {name!r}")
    raise UserError(f"unknown {base} variant {variant!r}; choose one of: "
                    f"{', '.join(spec.variants)}")
  return base, spec, variant


def domain_channels(name: str) -> int:
  return parse_domain(name)[1].channels


def common_channels(names: Sequence[str], channels: int = 0) -> int:
  """`channels`, or when 0: 3 if any domain is colour, else 1."""
  if channels not in CHANNEL_CHOICES:
    raise UserError(f"channels must be 0 (automatic), 1 or 3, got "
                    f"{channels}")
  if channels:
    return channels
  return 3 if any(domain_channels(n) == 3 for n in names) else 1


def load_domain(name: str, options: DomainOptions = DomainOptions()
                ) -> ImageDataset:
  """One domain at its native size and channels, limits applied."""
  options.limits.validate()
  _, spec, variant = parse_domain(name)
  ds = spec.load(options, variant)
  ds.name = name
  return ds


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
  if x.shape[-1] == channels:
    return x
  if x.shape[-1] == 1 and channels == 3:
    # Replicated gray keeps the digit identical in every channel, as
    # MNIST -> MNIST-M papers feed MNIST to an RGB network.
    return np.repeat(x, 3, axis=-1)
  if x.shape[-1] == 3 and channels == 1:
    return np.tensordot(x, _LUMA, axes=([-1], [0]))[..., None].astype(
        np.float32)
  raise UserError(f"cannot convert {x.shape[-1]}-channel images to "
                  f"{channels} channels")


def _restrict_labels(ds: ImageDataset, class_names: List[str]) -> None:
  """Keeps the examples of `class_names` and renumbers them in that order."""
  new_id = {ds.class_names.index(c): i for i, c in enumerate(class_names)}
  lookup = np.full(ds.num_classes, -1, np.int64)
  for old, new in new_id.items():
    lookup[old] = new
  for split in ("train", "test"):
    y = lookup[getattr(ds, f"y_{split}")]
    keep = y >= 0
    setattr(ds, f"x_{split}", getattr(ds, f"x_{split}")[keep])
    setattr(ds, f"y_{split}", y[keep])
    if split == "train" and ds.train_client_ids is not None:
      ds.train_client_ids = ds.train_client_ids[keep]
  ds.class_names = list(class_names)
  ds.num_classes = len(class_names)


def align(datasets: Sequence[ImageDataset], image_size: int,
          channels: int) -> List[str]:
  """Resizes, converts channels and restricts labels in place.

  Every dataset ends with `image_size` square images of `channels` channels
  and the class names they all share, in the first dataset's order.

  Returns:
    The shared class names.

  Raises:
    UserError: the datasets share fewer than 2 classes.
  """
  shared = [c for c in datasets[0].class_names
            if all(c in ds.class_names for ds in datasets[1:])]
  if len(shared) < 2:
    raise UserError(f"domains {', '.join(ds.name for ds in datasets)} share "
                    f"{len(shared)} class(es); adaptation needs at least 2")
  for ds in datasets:
    for split in ("train", "test"):
      x = resize_images(getattr(ds, f"x_{split}"), image_size)
      setattr(ds, f"x_{split}", _convert_channels(x, channels))
    if ds.class_names != shared:
      _restrict_labels(ds, shared)
    if not len(ds.y_train) or not len(ds.y_test):
      raise UserError(f"domain {ds.name} has no training or test examples "
                      f"of the shared classes")
  return shared


def load_domains(names: Sequence[str], image_size: int = DEFAULT_IMAGE_SIZE,
                 channels: int = 0,
                 options: DomainOptions = DomainOptions()
                 ) -> Dict[str, ImageDataset]:
  """Loads and aligns several domains (see `align`); keyed by name."""
  if image_size < 1:
    raise UserError(f"image_size must be >= 1, got {image_size}")
  channels = common_channels(names, channels)
  loaded = {}
  for name in names:
    if name not in loaded:
      loaded[name] = load_domain(name, options)
  align(list(loaded.values()), image_size, channels)
  return loaded


@dataclasses.dataclass
class DomainPair:
  """A source and a target domain with aligned shapes and labels."""
  source: ImageDataset
  target: ImageDataset

  @property
  def num_classes(self) -> int:
    return self.source.num_classes

  @property
  def class_names(self) -> List[str]:
    return self.source.class_names

  @property
  def input_shape(self) -> Tuple[int, int, int]:
    return self.source.input_shape

  def describe(self) -> Dict:
    return {"source": self.source.describe(),
            "target": self.target.describe(),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes}


def load_domain_pair(source: str,
                     target: str,
                     image_size: int = DEFAULT_IMAGE_SIZE,
                     channels: int = 0,
                     seed: int = 0,
                     limits: DomainLimits = DomainLimits(),
                     data_dir: str = "",
                     download: bool = True,
                     mnist_m_seed: int = 0,
                     target_limits: Optional[DomainLimits] = None
                     ) -> DomainPair:
  """Loads `source` and `target` aligned to one shape and label set.

  Args:
    source, target: domain names (`DOMAINS`, optionally `name/variant`).
      They may be equal (a no-shift sanity check); the target is then a
      separate copy.
    image_size: the common square size.
    channels: 1, 3, or 0 for 3 when either domain is colour, else 1.
    seed: the seed of the limit slices.
    limits: train/test slice sizes per domain (0 = all).
    data_dir, download: as `DataConfig`.
    mnist_m_seed: the MNIST-M generator's seed.
    target_limits: the target's slice sizes when they differ from the
      source's (ADDA's MNIST -> USPS protocol: 2000 and 1800 training
      images); None: `limits`.

  Returns:
    The `DomainPair`.

  Raises:
    UnknownNameError: an unknown domain (the message lists them).
    UserError: bad sizes, or domains without 2 shared classes.
    DataFileError: missing or corrupt data files.
  """
  options = DomainOptions(data_dir=data_dir, download=download, seed=seed,
                          limits=limits, mnist_m_seed=mnist_m_seed)
  if image_size < 1:
    raise UserError(f"image_size must be >= 1, got {image_size}")
  channels = common_channels((source, target), channels)
  source_ds = load_domain(source, options)
  target_ds = load_domain(target, options if target_limits is None else
                          dataclasses.replace(options, limits=target_limits))
  align([source_ds, target_ds], image_size, channels)
  return DomainPair(source_ds, target_ds)


# -- mixtures of domains as datasets (federated runs across domains) --------


def mixture_name(domains: Sequence[str]) -> str:
  """The registered dataset name of a mixture, e.g. `domains:mnist+usps`."""
  return MIXTURE_PREFIX + "+".join(sorted(set(domains)))


def mixture_domains(dataset_name: str) -> List[str]:
  """The domains of a mixture dataset, in domain-id order."""
  if not dataset_name.startswith(MIXTURE_PREFIX):
    raise UserError(f"{dataset_name!r} is not a domain mixture dataset")
  return dataset_name[len(MIXTURE_PREFIX):].split("+")


def _mixture_loader(domains: Tuple[str, ...]) -> Callable[[DataConfig],
                                                          ImageDataset]:
  def load(config: DataConfig) -> ImageDataset:
    # load_dataset slices the mixture afterwards; each domain loads whole.
    loaded = load_domains(
        domains, config.image_size or DEFAULT_IMAGE_SIZE, 0,
        DomainOptions(data_dir=config.data_dir, download=config.download,
                      seed=config.seed))
    parts = [loaded[d] for d in domains]
    return make_image_dataset(
        config.name, "; ".join(f"{d}: {p.source}" for d, p in
                               zip(domains, parts)),
        np.concatenate([p.x_train for p in parts]),
        np.concatenate([p.y_train for p in parts]),
        np.concatenate([p.x_test for p in parts]),
        np.concatenate([p.y_test for p in parts]),
        parts[0].class_names,
        # The domain index is each example's natural client id, which the
        # `per_domain` partitioner reads.
        train_client_ids=np.concatenate([
            np.full(len(p.y_train), i, np.int64) for i, p in enumerate(parts)
        ]))

  return load


# Mixtures of the digit domains that need no download (MNIST-C is left
# out: it is usually absent offline).
MIXABLE_DOMAINS = ("mnist", "mnist_m", "usps")
for _size in range(2, len(MIXABLE_DOMAINS) + 1):
  for _combo in itertools.combinations(MIXABLE_DOMAINS, _size):
    DATASETS.add(mixture_name(_combo), _mixture_loader(_combo))
