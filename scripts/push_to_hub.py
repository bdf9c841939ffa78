"""Publish a finished training run on the Hugging Face Hub: weights, config, processor, modeling code (for
`trust_remote_code`), metrics, confusion matrices and a model card.

    python scripts/push_to_hub.py runs/cnn user/hf-skin-cnn [--private]

The token comes from HF_TOKEN or `hf auth login` (never from the command line, where shell history and process
lists would keep it). `scripts/finetune.py --push_to_hub --hub_model_id user/name` does the same at the end of a run.
"""

from hf_skin.cli import push_to_hub as main

if __name__ == "__main__":
    main()
