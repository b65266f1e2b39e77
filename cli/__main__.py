from .main import main

# Guarded: worker processes started with spawn (the trainer's robustness workers) import this module too.
if __name__ == "__main__":
    raise SystemExit(main())
