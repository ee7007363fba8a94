"""``python -m resnet_trace``."""

from resnet_trace.cli import main

if __name__ == "__main__":
    main()
