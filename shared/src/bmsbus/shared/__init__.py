"""bmsbus.shared: the bus contract every bmsbus service depends on."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bmsbus-shared")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
