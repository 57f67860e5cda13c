"""``python -m loopml``: the same as the ``loopml`` command."""

from loopml.cli import main

if __name__ == "__main__":
    main()
