"""`python -m imagefleet`, the same as the `imagefleet` console script."""

from imagefleet.cli import main

main()
