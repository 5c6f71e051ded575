"""The video loop, outside the models (as sam2's predictor stands outside `SAM2Base`).

A model whose spec declares `loop="video"` (EfficientTAM) is deployed as units with static shapes; this
package drives them frame by frame through any runner: the tracker and its mask choice (`tracker.py`,
`mask_selection.py`), a tracker assembled from eager units or a bundle's artifacts (`assemble.py`), and the
units' inputs recorded while tracking, for calibration (`calibration.py`).
"""
