"""A synthetic patient: tumour kinetics, treatment response, clinical course and survival.

Parameters are drawn per patient from published ranges (SIMULATOR_NOTES.md). Survival is read
off the same spatial simulation that makes the images: the patient dies on the day the tumour
core (enhancing + necrotic) reaches a lethal volume. Beyond the simulated horizon it is
extrapolated with the model's own rates: logistic regrowth of the residual to the enhancing
threshold, then the Fisher–KPP front speed 2·sqrt(D·rho). Short survivors are therefore the
fast proliferators and poor responders, and they regrow faster on follow-up imaging: the
survival class carries real signal. Sessions after death are not imaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tumorcli.synth.growth import VISIBLE_T1GD, GrowthParams, Simulator, TumourState
from tumorcli.io.itk import Grid
from tumorcli.synth.grid import smooth_random_field
from tumorcli.synth.treatment import Schedule, TreatmentResponse, apply, target_volume

SHORT_SURVIVAL_DAYS = 365  # short/long split at 12 months (median OS with Stupp ~ 14.6 months)


@dataclass(frozen=True)
class Patient:
    growth: GrowthParams
    response: TreatmentResponse
    schedule: Schedule
    diagnosis_wt_cm3: float       # T2-visible volume when symptoms bring the patient in
    follow_up_interval_days: float
    lethal_core_cm3: float        # tumour-core volume at death
    heterogeneity: float = 0.5    # sd of the log-factor on local D (and half of it on rho)
    treated: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def sample_patient(rng: np.random.Generator, treated: bool = True) -> Patient:
    """One patient's parameters (log-uniform where the literature spans an order of magnitude)."""
    methylated = bool(rng.random() < 0.45)
    growth = GrowthParams(
        diffusion_wm_mm2_day=float(np.exp(rng.uniform(np.log(0.05), np.log(0.35)))),
        proliferation_per_day=float(np.exp(rng.uniform(np.log(0.012), np.log(0.05)))),
        necrosis_days=float(rng.uniform(15, 50)))
    response = TreatmentResponse(
        alpha_per_gy=float(rng.uniform(0.02, 0.08)),
        tmz_log_kill_per_cycle=float(rng.uniform(0.3, 0.8) if methylated
                                     else rng.uniform(0.0, 0.1)),
        extent_of_resection=float(0.0 if rng.random() < 0.15 else rng.uniform(0.7, 1.0)),
        mgmt_methylated=methylated)
    resection_day = float(rng.integers(5, 21))
    schedule = Schedule(resection_day=resection_day,  # radiotherapy 3–6 weeks after surgery
                        rt_start_day=resection_day + float(rng.integers(21, 43)))
    return Patient(growth=growth, response=response, schedule=schedule,
                   diagnosis_wt_cm3=float(np.exp(rng.uniform(np.log(20), np.log(150)))),
                   follow_up_interval_days=float(rng.choice([60, 75, 90])),
                   lethal_core_cm3=float(4 / 3 * np.pi * rng.uniform(27, 36) ** 3 / 1000),
                   heterogeneity=float(rng.uniform(0.3, 0.8)), treated=treated)


def survival_class(days: float) -> str:
    return "short" if days < SHORT_SURVIVAL_DAYS else "long"


@dataclass
class Course:
    """Snapshots of the tumour at each imaging session while alive, and the outcome."""

    session_days: list[float]
    states: list[TumourState]
    survival_days: float
    diagnosis_days_of_growth: float
    events: list[tuple[float, str]] = field(default_factory=list)
    death_observed: bool = True  # False: survival extrapolated beyond the simulated horizon


def simulate_course(patient: Patient, tissue: np.ndarray, grid: Grid, seed_allowed: np.ndarray,
                    sessions: int, rng: np.random.Generator, horizon_days: float = 730.0) -> Course:
    """Grow from a seed to diagnosis, treat, image at up to `sessions` time points, find death.

    tissue: (X, Y, Z, 3) csf/gm/wm fractions on the growth grid; seed_allowed: bool mask of
    sites where the tumour may start. Session 0 is the pre-operative scan (day 0); follow-ups
    come 4 weeks after radiotherapy and then every follow_up_interval_days.
    """
    # Tissue is not uniform: D and rho vary smoothly around the patient's values.
    heterogeneity = patient.heterogeneity * smooth_random_field(rng, grid, control_points=10)
    simulator = Simulator(tissue, grid, patient.growth, heterogeneity)
    state = simulator.seed(rng, tissue, seed_allowed)
    grown = simulator.grow_until(state, patient.diagnosis_wt_cm3)
    state.day = 0.0
    state.history = [(-grown, "tumour starts"), (0.0, "diagnosis")]
    planned = [0.0] + patient.schedule.follow_up_days(sessions - 1, patient.follow_up_interval_days)
    events = patient.schedule.events() if patient.treated else []
    pending = sorted([(day, "session") for day in planned[1:]]
                     + [(event.day, event) for event in events], key=lambda item: item[0])
    pending.append((max(horizon_days, planned[-1]), "horizon"))
    snapshots, field_mask, death_day = [state.copy()], None, None
    for day, what in pending:
        death_day = _advance_watching(simulator, state, day, patient.lethal_core_cm3)
        if death_day is not None:
            state.history.append((death_day, "death"))
            break
        if what == "session":
            snapshots.append(state.copy())
        elif what != "horizon":
            if what.kind == "rt_fraction" and field_mask is None:
                field_mask = target_volume(state)
                state.history.append((state.day, "radiotherapy starts (60 Gy / 30 fractions)"))
            apply(what, state, patient.response, rng, field_mask)
    observed = death_day is not None
    survival = death_day if observed else state.day + _extrapolated_days(patient, state)
    return Course(planned[:len(snapshots)], snapshots, float(survival), grown,
                  list(state.history), observed)


def _advance_watching(simulator: Simulator, state: TumourState, until_day: float,
                      lethal_core_cm3: float, check_days: float = 5.0) -> float | None:
    """Advance to `until_day`, checking the core volume; returns the day of death or None."""
    while state.day < until_day - 1e-9:
        simulator.advance(state, min(check_days, until_day - state.day))
        if state.volumes_cm3()["tc_cm3"] >= lethal_core_cm3:
            return state.day
    return None


def _extrapolated_days(patient: Patient, state: TumourState) -> float:
    """Days from `state` to death with the model's rates, for patients alive at the horizon."""
    rho = patient.growth.proliferation_per_day
    living = ~(state.necrotic | state.cavity)
    peak = float(state.density[living].max()) if living.any() else 0.0
    peak = min(max(peak, 1e-6), VISIBLE_T1GD)
    regrow = np.log(VISIBLE_T1GD * (1 - peak) / (peak * (1 - VISIBLE_T1GD))) / rho
    core_cm3 = state.volumes_cm3()["tc_cm3"]
    radius = lambda cm3: (3 * cm3 * 1000 / (4 * np.pi)) ** (1 / 3)  # noqa: E731
    spread_mm = radius(patient.lethal_core_cm3) - radius(core_cm3)
    spread = spread_mm / patient.growth.front_speed_mm_day
    return float(regrow + max(spread, 0.0))
