"""edgebench: how small language models really run on the hardware people own."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgebench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
