"""Image quality of a predicted MR image against the real one: PSNR (dB) and SSIM.

SSIM follows Wang et al. 2004 and MONAI's `SSIMMetric` exactly: a separable Gaussian window of
11 taps with σ = 1.5 voxels, K1 = 0.01, K2 = 0.03, population (co)variances, and only the windows
that fit inside the image ("valid" convolution, no padding), so a map is 10 voxels shorter
than the image along each filtered axis. Whole-image SSIM is the mean of that map.

Masked scores: PSNR uses the mask voxels only; SSIM is the mean of the map over the windows
whose centre voxel is in the mask (windows still see the neighbours outside it, and mask voxels
within 5 voxels of the image border have no window). MONAI has no masked SSIM.

Unknown scanner scale: MR intensities have no absolute unit, and two sessions of one patient
differ by a gain. `percentile_normalised` maps an image's brain 0.5–99.5th percentiles onto
0–1 (clipped, 0 outside the brain), as the BraSyn challenge scores synthesised MR, so that a
prediction is scored on its anatomy and contrast, not on the gain of the reference scanner.

Data range (the "peak"): given, or the reference's max − min over the voxels scored (the mask,
else the whole image). Filtering runs in float32 like MONAI, on images shifted by the
reference's mid-range so the variances keep their precision; sums are in float64.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

WINDOW = 11  # taps of the Gaussian window, per axis
SIGMA = 1.5  # voxels
K1, K2 = 0.01, 0.03
HALF = WINDOW // 2  # voxels lost at each border by the valid convolution


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """(size,) normalised Gaussian weights centred on the middle tap (as MONAI builds them)."""
    distance = np.arange((1 - size) / 2, (1 + size) / 2)
    weights = np.exp(-((distance / sigma) ** 2) / 2)
    return weights / weights.sum()


def default_data_range(ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Reference max − min over the mask voxels (or the whole image), in image units."""
    values = ref[mask] if mask is not None else ref
    return float(values.max() - values.min()) if values.size else 0.0


def percentile_normalised(image: np.ndarray, brain: np.ndarray, low: float = 0.5,
                          high: float = 99.5) -> np.ndarray:
    """float32 image with the brain's `low`/`high` percentiles at 0/1, clipped to [0, 1]; 0
    outside the brain. A constant brain maps to 0."""
    values = image[brain]
    if values.size == 0:
        raise ValueError("percentile_normalised needs a non-empty brain mask")
    bottom, top = np.percentile(values, [low, high])
    spread = top - bottom if top > bottom else 1.0
    scaled = np.clip((image.astype(np.float32) - bottom) / spread, 0, 1)
    return np.where(brain, scaled, 0).astype(np.float32)


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10·log10(data_range² / MSE), over the mask voxels or all.

    Identical images give inf. data_range: default `default_data_range(ref, mask)`.
    """
    mask = _checked_mask(pred, ref, mask)
    chosen = mask if mask is not None else slice(None)
    error = pred[chosen].astype(np.float64) - ref[chosen]
    if error.size == 0:
        return float("nan")
    return _psnr_from_mse(float(np.mean(error * error)), _range(ref, mask, data_range))


def ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None, spatial_dims: int | None = None) -> float:
    """Structural similarity in [-1, 1]: the mean of the SSIM map (over the mask's windows).

    pred, ref: (X, Y, Z) or (X, Y) images. spatial_dims: 3 for 3D windows, 2 for 2D windows
    (a 3D array is then a stack of (X, Y) slices along its last axis); default pred.ndim.
    NaN when the mask holds no window centre. data_range: default `default_data_range(ref, mask)`.
    """
    mask = _checked_mask(pred, ref, mask)
    axes = tuple(range(spatial_dims or pred.ndim))
    moments = local_moments(pred, ref, axes)
    similarity = ssim_map(moments, _range(ref, mask, data_range))
    if mask is None:
        return float(similarity.mean(dtype=np.float64))
    centres = mask[_valid(axes, mask.ndim)]
    return float(similarity[centres].mean(dtype=np.float64)) if centres.any() else float("nan")


def local_moments(pred: np.ndarray, ref: np.ndarray, axes: tuple[int, ...]
                  ) -> tuple[np.ndarray, ...]:
    """Gaussian-weighted local (mean_pred, mean_ref, var_pred, var_ref, covariance), filtered
    along `axes` over valid windows only; float32 arrays 10 voxels shorter along each axis."""
    from scipy.ndimage import correlate1d

    too_small = [pred.shape[a] for a in axes if pred.shape[a] < WINDOW]
    if too_small:
        raise ValueError(f"image shape {pred.shape} is smaller than the {WINDOW}-voxel "
                         "SSIM window")
    shift = np.float32((float(ref.max()) + float(ref.min())) / 2)  # variances are shift-free
    x = pred.astype(np.float32) - shift
    y = ref.astype(np.float32) - shift
    weights = gaussian_window().astype(np.float32)
    crop = _valid(axes, pred.ndim)

    def blur(image: np.ndarray) -> np.ndarray:
        for axis in axes:
            image = correlate1d(image, weights, axis=axis, mode="constant")
        return image[crop]

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x * mean_x
    var_y = blur(y * y) - mean_y * mean_y
    covariance = blur(x * y) - mean_x * mean_y
    return mean_x + shift, mean_y + shift, var_x, var_y, covariance


def ssim_map(moments: tuple[np.ndarray, ...], data_range: float) -> np.ndarray:
    """SSIM of each window from `local_moments` (luminance × contrast-structure), float32."""
    mean_x, mean_y, var_x, var_y, covariance = moments
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    luminance = (2 * mean_x * mean_y + c1) / (mean_x * mean_x + mean_y * mean_y + c1)
    return luminance * (2 * covariance + c2) / (var_x + var_y + c2)


def slice_mean(metric: Callable[..., float], pred: np.ndarray, ref: np.ndarray,
               mask: np.ndarray | None = None, axis: int = 2, *, data_range: float | None = None,
               whole_slices: bool = False) -> float:
    """`metric` (psnr or ssim) of each 2D slice along `axis`, averaged over the slices that hold
    mask voxels (without a mask: reference voxels ≠ 0).

    Each slice is scored inside its part of the mask, or as a whole with whole_slices=True.
    data_range: one value for all slices; default the reference's range over the mask (or over
    the whole image when whole_slices or no mask). Slices whose score is NaN (a masked SSIM with
    no window centre in the mask) are left out; NaN when none is left.
    """
    mask = _checked_mask(pred, ref, mask)
    scored_mask = None if whole_slices else mask
    chosen = _slices_with_voxels(ref if mask is None else mask, axis)
    data_range = _range(ref, scored_mask, data_range)
    scores = []
    for index in np.flatnonzero(chosen):
        take = (slice(None),) * axis + (index,)
        scores.append(metric(pred[take], ref[take], data_range=data_range,
                             mask=None if scored_mask is None else scored_mask[take]))
    scores = [s for s in scores if not np.isnan(s)]
    return float(np.mean(scores)) if scores else float("nan")


def image_scores(pred: np.ndarray, ref: np.ndarray, brain: np.ndarray | None = None,
                 data_range: float | None = None, axis: int = 2) -> dict[str, float]:
    """psnr_3d, ssim_3d, psnr_slices, ssim_slices of the whole image (slice means over the
    slices holding brain, or reference voxels ≠ 0), and the same four with suffix _brain
    (scored inside `brain`) when a brain mask is given. PSNR in dB.

    Equal to calling `psnr`, `ssim` and `slice_mean` one by one, but each Gaussian filtering is
    done once (3D windows, and 2D windows in the slices along `axis`).
    """
    brain = _checked_mask(pred, ref, brain)
    if pred.ndim != 3:
        raise ValueError(f"image_scores needs 3D images, got shape {pred.shape}")
    pred = np.moveaxis(pred, axis, -1)  # (X, Y, S): slices last
    ref = np.moveaxis(ref, axis, -1)
    brain = None if brain is None else np.moveaxis(brain, axis, -1)
    squared_error = (pred.astype(np.float64) - ref) ** 2
    volume_moments = local_moments(pred, ref, (0, 1, 2))
    slice_moments = local_moments(pred, ref, (0, 1))
    chosen = _slices_with_voxels(ref if brain is None else brain, 2)

    variants = {"": None} if brain is None else {"": None, "_brain": brain}
    scores: dict[str, float] = {}
    for suffix, mask in variants.items():
        peak = _range(ref, mask, data_range)
        volume_map, slice_map = ssim_map(volume_moments, peak), ssim_map(slice_moments, peak)
        if mask is None:
            mse = float(squared_error.mean())
            per_slice_mse = squared_error.mean(axis=(0, 1))
            volume_ssim = float(volume_map.mean(dtype=np.float64))
            per_slice_ssim = slice_map.mean(axis=(0, 1), dtype=np.float64)
        else:
            mse = float(squared_error[mask].mean())
            per_slice_mse = _masked_slice_mean(squared_error, mask)
            centres = mask[HALF:-HALF, HALF:-HALF, HALF:-HALF]
            volume_ssim = (float(volume_map[centres].mean(dtype=np.float64))
                           if centres.any() else float("nan"))
            per_slice_ssim = _masked_slice_mean(slice_map, mask[HALF:-HALF, HALF:-HALF])
        slice_psnr = [_psnr_from_mse(float(m), peak) for m in per_slice_mse[chosen]]
        slice_ssim = per_slice_ssim[chosen]
        slice_ssim = slice_ssim[~np.isnan(slice_ssim)]
        scores["psnr_3d" + suffix] = _psnr_from_mse(mse, peak)
        scores["ssim_3d" + suffix] = volume_ssim
        scores["psnr_slices" + suffix] = float(np.mean(slice_psnr)) if slice_psnr else float("nan")
        scores["ssim_slices" + suffix] = (float(slice_ssim.mean()) if slice_ssim.size
                                          else float("nan"))
    return scores


def _masked_slice_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(S,) mean of values[..., s] over mask[..., s]; NaN for a slice without mask voxels."""
    counts = mask.sum(axis=(0, 1))
    sums = np.where(mask, values, 0).sum(axis=(0, 1), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _slices_with_voxels(selection: np.ndarray, axis: int) -> np.ndarray:
    """(S,) bool: slices along `axis` holding a non-zero voxel of `selection`."""
    other = tuple(a for a in range(selection.ndim) if a != axis)
    return np.asarray(selection != 0).any(axis=other)


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range * data_range / mse))


def _range(ref: np.ndarray, mask: np.ndarray | None, data_range: float | None) -> float:
    peak = default_data_range(ref, mask) if data_range is None else float(data_range)
    if not peak > 0:
        raise ValueError(f"data range must be positive, got {peak:g} (a constant reference "
                         "needs an explicit data_range)")
    return peak


def _valid(axes: tuple[int, ...], ndim: int) -> tuple[slice, ...]:
    """Index of the window centres that fit inside the image along `axes`."""
    return tuple(slice(HALF, -HALF) if a in axes else slice(None) for a in range(ndim))


def _checked_mask(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None
                  ) -> np.ndarray | None:
    """The mask as bool (non-zero = inside), after checking that the three shapes agree."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if mask is None:
        return None
    if mask.shape != ref.shape:
        raise ValueError(f"mask {mask.shape} and reference {ref.shape} differ in shape")
    return np.asarray(mask).astype(bool, copy=False)
