"""course_lib: the small tested library behind the diffusion course notebooks."""

__version__ = "0.1.0"
