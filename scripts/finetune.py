"""Fine-tune an hf-skin model on HAM10000: a shim over `hf_skin.cli.finetune` (the library's `run()`), kept as a
script so that `accelerate launch scripts/finetune.py` works.

accelerate launch scripts/finetune.py --model cnn --dataset /path/to/HAM10000
python scripts/finetune.py args.json
"""

from hf_skin.cli import finetune as main

if __name__ == "__main__":
    main()
