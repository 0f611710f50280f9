"""Diffusion pretraining with anatomical guidance for the downstream segmenter (``python -m training pretrain-seg``).

A MONAI 2-D ``UNet`` of the downstream segmenter's architecture (``network.py``) learns, on unlabelled
slices, to denoise: the slice is noised at a random timestep of a diffusion schedule and the network
predicts x0 (or the noise). With the coordinate head on, extra output channels regress each voxel's
normalised position in the model frame (``coordinates.py``). The encoder half is exported
(``encoder.safetensors``) for the downstream study to fine-tune from.
"""
