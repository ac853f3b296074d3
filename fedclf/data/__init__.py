"""Datasets, preprocessing and checksums."""

from fedclf.data import loaders  # noqa: F401  (registers the datasets)
from fedclf.data.core import DataConfig
from fedclf.data.core import default_data_dir
from fedclf.data.core import ImageDataset
from fedclf.data.core import load_dataset
from fedclf.data.core import make_image_dataset
from fedclf.data.core import resize_images
