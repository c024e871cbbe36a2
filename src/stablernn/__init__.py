"""stablernn: recurrent neural networks with checkable stability certificates."""
__version__ = "0.1.0"
