"""Fine-tune an hf-skin model on HAM10000.

accelerate launch scripts/finetune.py --model cnn --dataset /path/to/HAM10000
python scripts/finetune.py args.json
"""

from hf_skin.training import parse_args, run


def main() -> dict:
    return run(*parse_args())


if __name__ == "__main__":
    main()
