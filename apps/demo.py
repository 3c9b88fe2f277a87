"""The Gradio chat demo; same as `anygen demo` (the code lives in anygen/apps/demo.py).

Usage:
    python apps/demo.py [--model PATH] [--host 127.0.0.1] [--port 7860] [--share]
"""

import sys

from anygen.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
