"""Recalibrate a trained hf-skin checkpoint on labelled images, without retraining: a new temperature, the prior
shift to a deployment prior (a clinic's class mix) and the referral threshold, into a new folder.

python scripts/calibrate.py --model runs/cnn --output_dir runs/cnn-calibrated [--dataset DIR --split validation]
python scripts/calibrate.py --model runs/cnn --dataset CLINIC_DIR --split all --target_prior data --output_dir OUT
python scripts/calibrate.py --model runs/cnn --target_prior "nv=0.8,mel=0.03,..." --output_dir OUT
"""

from hf_skin.cli import calibrate as main

if __name__ == "__main__":
    main()
