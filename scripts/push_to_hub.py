"""Publish a finished training run on the Hugging Face Hub: weights, config, processor, modeling code (for
`trust_remote_code`), metrics, confusion matrices and a model card.

    python scripts/push_to_hub.py runs/cnn user/hf-skin-cnn [--private]

The token comes from HF_TOKEN or `hf auth login` (never from the command line, where shell history and process
lists would keep it). `scripts/finetune.py --push_to_hub --hub_model_id user/name` does the same at the end of a run.
"""

import argparse
import os
import sys

if __name__ == "__main__":
    # scripts/evaluate.py would shadow the `evaluate` library that hf_skin imports: keep this folder off sys.path.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from hf_skin.hub import push_run_to_hub  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="The --output_dir of a finished scripts/finetune.py run.")
    parser.add_argument("repo_id", help="The Hub model repo, user/name or org/name (created when missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    args = parser.parse_args(argv)
    url = push_run_to_hub(args.run_dir, args.repo_id, private=args.private or None)
    print(f"pushed: {url}")
    return url


if __name__ == "__main__":
    main()
