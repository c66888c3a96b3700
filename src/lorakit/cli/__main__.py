"""`python -m lorakit.cli`."""

from .main import main

main()
