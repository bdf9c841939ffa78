"""Fine-tune an hf-skin model on HAM10000.

accelerate launch scripts/finetune.py --model cnn --dataset /path/to/HAM10000
python scripts/finetune.py args.json
"""

import os
import sys

if __name__ == "__main__":
    # scripts/evaluate.py would shadow the `evaluate` library that hf_skin imports: keep this folder off sys.path.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from hf_skin.pretrained import HubUnavailableError  # noqa: E402
from hf_skin.training import parse_args, run  # noqa: E402


def main() -> dict:
    return run(*parse_args())


if __name__ == "__main__":
    try:
        main()
    except HubUnavailableError as err:  # offline: what was asked for and the ways forward, not a traceback
        sys.exit(f"error: {err}")
