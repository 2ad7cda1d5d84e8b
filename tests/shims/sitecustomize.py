"""Test set-up only (``PYTHONPATH=tests/shims``): child processes the tests start get the same
torchvision shim as the test process (``tests/torchvision_shim.py`` says why)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torchvision_shim  # noqa: E402

torchvision_shim.install()
