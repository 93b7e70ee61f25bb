"""`python -m panosamic ...`: see `panosamic.cli`."""

import sys

from .allocator import use_fast_allocator

if __name__ == "__main__":
    use_fast_allocator()  # may restart this command once with tcmalloc preloaded
    from .cli import main

    sys.exit(main())
