"""Standard of care for glioblastoma (Stupp): resection, chemoradiation, adjuvant temozolomide.

Each event acts on the TumourState on its day; growth runs in between (operator splitting).
Radiotherapy kills by the linear–quadratic model, SF = exp(-alpha d - beta d²) per fraction
inside the clinical target volume (T2-visible tumour + 20 mm); temozolomide kills a fixed
log-fraction per day of concomitant dosing and per adjuvant cycle, everywhere in the brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from tumorcli.synth.growth import VISIBLE_T1GD, VISIBLE_T2, TumourState


@dataclass(frozen=True)
class TreatmentResponse:
    """One patient's sensitivities.

    alpha_per_gy: LQ alpha (beta = alpha / 10, alpha/beta = 10 Gy);
    tmz_log_kill_per_cycle: -ln(surviving fraction) per adjuvant cycle (MGMT methylation helps);
    extent_of_resection: fraction of the tumour core removed (0 = biopsy only).
    """

    alpha_per_gy: float = 0.06
    tmz_log_kill_per_cycle: float = 0.3
    extent_of_resection: float = 0.95
    mgmt_methylated: bool = True


@dataclass(frozen=True)
class Event:
    day: float
    kind: str          # "resection" | "rt_fraction" | "tmz_concomitant" | "tmz_cycle"
    dose_gy: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """Event days after diagnosis (day 0, the pre-operative MRI)."""

    resection_day: float = 10.0
    rt_start_day: float = 38.0
    fractions: int = 30
    fraction_gy: float = 2.0
    adjuvant_cycles: int = 6

    def events(self) -> list[Event]:
        events = [Event(self.resection_day, "resection")]
        fraction_days = [self.rt_start_day + 7 * (n // 5) + n % 5 for n in range(self.fractions)]
        for day in fraction_days:
            events.append(Event(day, "rt_fraction", self.fraction_gy))
            events.append(Event(day, "tmz_concomitant"))
        adjuvant_start = self.rt_end_day + 28
        events += [Event(adjuvant_start + 28 * n, "tmz_cycle") for n in range(self.adjuvant_cycles)]
        return sorted(events, key=lambda event: event.day)

    @property
    def rt_end_day(self) -> float:
        return self.rt_start_day + 7 * ((self.fractions - 1) // 5) + (self.fractions - 1) % 5

    def follow_up_days(self, count: int, interval_days: float) -> list[float]:
        """Post-treatment MRI: 4 weeks after radiotherapy, then every `interval_days`."""
        first = self.rt_end_day + 28
        return [first + n * interval_days for n in range(count)]


def surviving_fraction(event: Event, response: TreatmentResponse) -> float:
    """Fraction of cells in the treated region that survive one event."""
    if event.kind == "rt_fraction":
        alpha = response.alpha_per_gy
        return float(np.exp(-alpha * event.dose_gy - alpha / 10.0 * event.dose_gy**2))
    if event.kind == "tmz_concomitant":  # 42 daily doses at 75 mg/m² ~ one adjuvant cycle in all
        return float(np.exp(-response.tmz_log_kill_per_cycle / 42.0 * 1.0))
    if event.kind == "tmz_cycle":
        return float(np.exp(-response.tmz_log_kill_per_cycle))
    return 1.0


def resect(state: TumourState, response: TreatmentResponse, rng: np.random.Generator) -> None:
    """Remove the tumour core (enhancing + necrotic); a subtotal resection leaves one side.

    The cavity fills with CSF: no cells, no diffusion. Residual tumour is the part of the core
    furthest along a random direction (tumour next to eloquent cortex is left behind).
    """
    core = (state.density >= VISIBLE_T1GD) | state.necrotic
    if response.extent_of_resection <= 0 or not core.any():
        state.history.append((state.day, "biopsy"))
        return
    index = np.argwhere(core)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    depth = (index * np.array(state.grid.spacing)) @ direction
    left_behind = depth > np.quantile(depth, min(response.extent_of_resection, 1.0))
    cavity = np.zeros_like(core)
    cavity[tuple(index[~left_behind].T)] = True
    state.cavity |= cavity
    state.density[state.cavity] = 0.0
    state.necrotic &= ~state.cavity
    state.hypoxic_days[state.cavity] = 0.0
    state.injury[state.cavity] = 0.0
    state.history.append((state.day, f"resection EOR {response.extent_of_resection:.2f}"))


def target_volume(state: TumourState, margin_mm: float = 20.0) -> np.ndarray:
    """Clinical target volume: T2-visible tumour and cavity grown by `margin_mm` (bool)."""
    gross = (state.density >= VISIBLE_T2) | state.cavity | state.necrotic
    image = sitk.GetImageFromArray(gross.astype(np.uint8).transpose(2, 1, 0))
    image.SetSpacing(state.grid.spacing)
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.GetArrayFromImage(distance).transpose(2, 1, 0) <= margin_mm


def apply(event: Event, state: TumourState, response: TreatmentResponse,
          rng: np.random.Generator, field: np.ndarray | None) -> None:
    """Apply one event to `state` in place. `field` is the radiotherapy target (bool) or None."""
    if event.kind == "resection":
        resect(state, response, rng)
        return
    fraction = np.float32(surviving_fraction(event, response))
    alive = ~state.necrotic
    if event.kind == "rt_fraction":
        alive &= field if field is not None else True
    state.density = np.where(alive, state.density * fraction, state.density).astype(np.float32)
