"""Tumour growth: the Fisher–KPP proliferation–invasion model on a coarse brain grid.

    du/dt = div(D grad u) + rho u (1 - u)

u is tumour-cell density relative to the carrying capacity. D is the patient's white-matter
diffusivity in white matter, a tenth of it in grey matter, zero in CSF and outside the brain
(no flux across faces with a zero side). Explicit finite differences, stable for
dt <= h² / (6 D_max); the reaction step is the exact logistic solution.

The state also keeps the history that the labels need: how long each voxel has been densely
packed (hypoxia; long enough makes it necrotic) and the resection cavity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tumorcli.io.itk import Grid

VISIBLE_T1GD = 0.80   # density at the edge of the enhancing tumour (Swanson et al.)
VISIBLE_T2 = 0.16     # density at the edge of the T2/FLAIR abnormality
HYPOXIC = 0.88        # cells this dense run short of oxygen (~2/3 necrotic at diagnosis)
INJURY_DAYS = 120.0   # time constant of T2/FLAIR change (oedema, gliosis) after cells are gone
NETC, SNFH, ET = 1, 2, 3  # BraTS 2023 labels


@dataclass(frozen=True)
class GrowthParams:
    """One patient's tumour kinetics.

    diffusion_wm_mm2_day: D in white matter (grey matter gets a tenth);
    proliferation_per_day: rho; necrosis_days: time above HYPOXIC before cells die.
    """

    diffusion_wm_mm2_day: float = 0.65
    proliferation_per_day: float = 0.012
    necrosis_days: float = 40.0
    grey_to_white: float = 0.1

    @property
    def front_speed_mm_day(self) -> float:
        return 2.0 * float(np.sqrt(self.diffusion_wm_mm2_day * self.proliferation_per_day))


@dataclass
class TumourState:
    """Everything about the tumour on the growth grid (arrays (X, Y, Z))."""

    density: np.ndarray        # u in [0, 1], float32
    hypoxic_days: np.ndarray   # days spent with u >= HYPOXIC, float32
    necrotic: np.ndarray       # bool: dead core (does not proliferate, stays dead)
    injury: np.ndarray         # decaying memory of density: T2/FLAIR change outlives the cells
    cavity: np.ndarray         # bool: resected, filled with CSF
    grid: Grid
    day: float = 0.0
    history: list = field(default_factory=list)  # (day, event) pairs, for the metadata

    def copy(self) -> "TumourState":
        return TumourState(self.density.copy(), self.hypoxic_days.copy(), self.necrotic.copy(),
                           self.injury.copy(), self.cavity.copy(), self.grid, self.day,
                           list(self.history))

    @property
    def t2_signal(self) -> np.ndarray:
        """What T2/FLAIR sees: living cells, or the oedema/gliosis they left behind."""
        return np.maximum(self.density, self.injury)

    def labels(self) -> np.ndarray:
        """BraTS labels on the growth grid: 1 NETC, 2 SNFH, 3 ET (ET ⊂ TC ⊂ WT)."""
        return labels_from_maps(self.density, self.t2_signal, self.necrotic.astype(np.float32),
                                self.cavity)

    def volumes_cm3(self) -> dict[str, float]:
        return label_volumes_cm3(self.labels(), self.grid.voxel_cm3)


def labels_from_maps(density: np.ndarray, t2_signal: np.ndarray, necrotic_fraction: np.ndarray,
                     cavity: np.ndarray) -> np.ndarray:
    """Labels from (possibly interpolated) maps: necrotic core, enhancing rim, oedema/infiltration.

    A partition of the voxels, so ET ⊂ TC (= NETC ∪ ET) ⊂ WT (= all three) by construction.
    """
    labels = np.zeros(density.shape, np.uint8)
    labels[t2_signal >= VISIBLE_T2] = SNFH
    labels[density >= VISIBLE_T1GD] = ET
    labels[necrotic_fraction >= 0.5] = NETC
    labels[cavity] = 0
    return labels


def label_volumes_cm3(labels: np.ndarray, voxel_cm3: float) -> dict[str, float]:
    """BraTS regions in cm³: whole tumour, tumour core and enhancing tumour, plus each label."""
    counts = np.bincount(labels.ravel(), minlength=4)
    return {"wt_cm3": float(counts[1:4].sum() * voxel_cm3),
            "tc_cm3": float((counts[NETC] + counts[ET]) * voxel_cm3),
            "et_cm3": float(counts[ET] * voxel_cm3),
            "netc_cm3": float(counts[NETC] * voxel_cm3),
            "snfh_cm3": float(counts[SNFH] * voxel_cm3)}


class Simulator:
    """Advances a TumourState in time on fixed tissue (csf/gm/wm fractions on the growth grid)."""

    def __init__(self, tissue: np.ndarray, grid: Grid, params: GrowthParams,
                 heterogeneity: np.ndarray | None = None) -> None:
        """heterogeneity: optional (X, Y, Z) log-factor on D and rho (irregular tumour shapes)."""
        self.grid = grid
        self.params = params
        grey, white = tissue[..., 1], tissue[..., 2]
        self.brain = tissue.sum(axis=-1) >= 0.5
        local = (np.exp(np.clip(heterogeneity, -1.1, 1.1)).astype(np.float32)
                 if heterogeneity is not None else 1.0)  # within a factor of 3 either way
        self.diffusion = (params.diffusion_wm_mm2_day * (white + params.grey_to_white * grey)
                          * local).astype(np.float32) * self.brain
        self.proliferation = (params.proliferation_per_day * np.sqrt(local)
                              * np.ones(grid.shape)).astype(np.float32)
        self._faces = None
        self._refresh_faces(np.zeros(grid.shape, bool))

    def _refresh_faces(self, cavity: np.ndarray) -> None:
        """Face diffusivities / h² per axis: harmonic means, zero next to no-flux voxels."""
        diffusion = np.where(cavity, 0.0, self.diffusion).astype(np.float32)
        faces = []
        for axis, h in enumerate(self.grid.spacing):
            a = np.take(diffusion, range(0, diffusion.shape[axis] - 1), axis=axis)
            b = np.take(diffusion, range(1, diffusion.shape[axis]), axis=axis)
            faces.append((2 * a * b / np.maximum(a + b, 1e-12) / h**2).astype(np.float32))
        self._faces = faces
        self._cavity_key = cavity.sum()
        d_max = float(self.diffusion.max()) if self.diffusion.size else 0.0
        h_min = min(self.grid.spacing)
        self.max_dt = min(1.0, 0.9 * h_min**2 / (6 * max(d_max, 1e-9)))

    def seed(self, rng: np.random.Generator, tissue: np.ndarray, allowed: np.ndarray,
             radius_mm: float = 6.0) -> TumourState:
        """A small tumour at a random white-matter site inside `allowed` (bool mask)."""
        candidates = np.argwhere((tissue[..., 2] >= 0.8) & allowed)
        if len(candidates) == 0:
            candidates = np.argwhere(self.brain)
        centre = candidates[rng.integers(len(candidates))]
        index = np.stack(np.meshgrid(*[np.arange(n) for n in self.grid.shape], indexing="ij"), -1)
        distance = np.linalg.norm((index - centre) * np.array(self.grid.spacing), axis=-1)
        density = (np.exp(-(distance / radius_mm) ** 2) * self.brain).astype(np.float32)
        shape = self.grid.shape
        return TumourState(density, np.zeros(shape, np.float32), np.zeros(shape, bool),
                           density.copy(), np.zeros(shape, bool), self.grid, 0.0, [(0.0, "seed")])

    def advance(self, state: TumourState, days: float) -> None:
        """Grow `state` in place for `days` (exactly: the last step is shortened)."""
        if int(state.cavity.sum()) != self._cavity_key:
            self._refresh_faces(state.cavity)
        remaining = float(days)
        while remaining > 1e-9:
            dt = min(self.max_dt, remaining)
            self._step(state, dt)
            remaining -= dt
        state.day += float(days)

    def grow_until(self, state: TumourState, wt_cm3: float, core_cm3: float = 2.0,
                   max_days: float = 3000.0, check_days: float = 5.0) -> float:
        """Grow until the T2-visible volume reaches `wt_cm3` and the core (T1Gd-visible or
        necrotic) `core_cm3`, or for max_days; returns the days grown."""
        grown = 0.0
        while grown < max_days:
            volumes = state.volumes_cm3()
            if volumes["wt_cm3"] >= wt_cm3 and volumes["tc_cm3"] >= core_cm3:
                break
            self.advance(state, check_days)
            grown += check_days
        return grown

    def _growth_factor(self, dt: float) -> np.ndarray:
        """e^(rho dt) per voxel, zero-proliferation (1) outside the brain; cached per dt."""
        if getattr(self, "_cached_dt", None) != dt:
            self._cached_dt = dt
            self._cached_growth = np.where(self.brain, np.exp(self.proliferation * dt),
                                           1.0).astype(np.float32)
        return self._cached_growth

    def _step(self, state: TumourState, dt: float) -> None:
        u = state.density
        divergence = np.zeros_like(u)
        for axis, face in enumerate(self._faces):
            low = [slice(None)] * 3
            high = [slice(None)] * 3
            low[axis], high[axis] = slice(0, -1), slice(1, None)
            flux = face * (u[tuple(high)] - u[tuple(low)])
            divergence[tuple(low)] += flux
            divergence[tuple(high)] -= flux
        dead = state.necrotic | state.cavity
        divergence[dead] = 0.0
        divergence *= np.float32(dt)
        u_new = u + divergence
        np.clip(u_new, 0.0, 1.0, out=u_new)
        # Exact logistic step: u -> u e^{rho dt} / (1 + u (e^{rho dt} - 1)), in living tissue.
        growth = self._growth_factor(dt)
        grown = u_new * growth / (1 + u_new * (growth - 1))
        state.density = np.where(dead, u_new, grown).astype(np.float32, copy=False)
        dense = state.density >= HYPOXIC
        state.hypoxic_days[dense] += np.float32(dt)
        state.necrotic |= state.hypoxic_days >= self.params.necrosis_days
        np.maximum(state.injury * np.float32(np.exp(-dt / INJURY_DAYS)), state.density,
                   out=state.injury)
