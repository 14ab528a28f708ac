"""`aimonk ...` and `python -m aimonk ...`: interrupts handled for the whole process first, before torch and the
DataLoader workers start, so that Ctrl-C or SIGTERM at any moment, imports included, is exit code 130 and one line."""

import sys

from aimonk import io


def main() -> int:
    io.handle_interrupts()
    try:
        from aimonk.cli import main as command_line
    except KeyboardInterrupt:
        return io.interrupted()
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
