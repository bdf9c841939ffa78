"""`python -m hf_skin.synthetic OUT_DIR`: the command lives with the others, in hf_skin.cli (this entry point sits
above it, so the generator itself never imports the command line)."""

from hf_skin.cli import synthetic

synthetic()
