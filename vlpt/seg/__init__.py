"""Prompt tuning for vision-language segmentation models (TuneVLSeg, Adhikari et al., ACCV 2024)."""
