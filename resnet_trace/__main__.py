"""``python -m resnet_trace``."""

try:
    from resnet_trace.cli import main
except KeyboardInterrupt:  # Ctrl-C before the entry point could catch it: the same one line, exit 130
    import os

    os.write(2, b"resnet-trace: interrupted\n")
    os._exit(130)

if __name__ == "__main__":
    main()
