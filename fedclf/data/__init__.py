"""Datasets, preprocessing and checksums."""

from fedclf.data import loaders  # noqa: F401  (registers the datasets)
from fedclf.data.image_dataset import DataConfig
from fedclf.data.image_dataset import default_data_dir
from fedclf.data.image_dataset import ImageDataset
from fedclf.data.image_dataset import load_dataset
from fedclf.data.image_dataset import make_image_dataset
from fedclf.data.image_dataset import resize_images
