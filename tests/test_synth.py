"""The synthetic glioma model: growth, labels, treatment and survival (no images, coarse grids)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorcli.synth import anatomy
from tumorcli.synth.growth import ET, NETC, SNFH, GrowthParams, Simulator, labels_from_maps
from tumorcli.synth.patient import sample_patient, simulate_course, survival_class

COARSE_MM = 4.0  # the model at 4 mm: the same code as 2–3 mm, ~1 s per patient


def _patient_course(seed: int, sessions: int = 3, treated: bool = True):
    rng = np.random.default_rng([seed, 0])
    patient = sample_patient(rng, treated=treated)
    grid = anatomy.growth_grid(COARSE_MM)
    brain = anatomy.subject_anatomy(anatomy.random_warp(rng).transform(), grid)
    course = simulate_course(patient, brain.tissue, grid, anatomy.seed_sites(brain), sessions, rng)
    return patient, course


@pytest.fixture(scope="module")
def forty_patients():
    return [_patient_course(1000 + n) for n in range(40)]


def test_labels_form_a_partition_so_et_is_inside_tc_inside_wt():
    rng = np.random.default_rng(0)
    density = rng.random((20, 20, 20)).astype(np.float32)
    t2 = np.maximum(density, rng.random((20, 20, 20)).astype(np.float32) * 0.3)
    necrotic = (rng.random((20, 20, 20)) > 0.9).astype(np.float32)
    labels = labels_from_maps(density, t2, necrotic, np.zeros((20, 20, 20), bool))
    enhancing, core, whole = labels == ET, np.isin(labels, (NETC, ET)), labels > 0
    assert set(np.unique(labels)) <= {0, NETC, SNFH, ET}
    assert np.all(core[enhancing]) and np.all(whole[core])
    assert np.array_equal(enhancing, (density >= 0.8) & (necrotic < 0.5))
    assert np.array_equal(whole, (t2 >= 0.16) | (density >= 0.8) | (necrotic >= 0.5))


def test_an_untreated_tumour_grows_over_days():
    grid = anatomy.growth_grid(COARSE_MM)
    rng = np.random.default_rng(5)
    brain = anatomy.subject_anatomy(anatomy.random_warp(rng).transform(), grid)
    simulator = Simulator(brain.tissue, grid, GrowthParams(0.2, 0.03, 25.0))
    state = simulator.seed(rng, brain.tissue, anatomy.seed_sites(brain))
    volumes = []
    for _ in range(4):
        simulator.advance(state, 40.0)
        volumes.append(state.volumes_cm3())
    whole = [v["wt_cm3"] for v in volumes]
    core = [v["tc_cm3"] for v in volumes]
    assert all(b > a for a, b in zip(whole, whole[1:])), whole
    assert all(b >= a for a, b in zip(core, core[1:])) and core[-1] > core[0], core
    assert volumes[-1]["netc_cm3"] > 0  # a necrotic core forms where cells stayed dense


@pytest.mark.parametrize("seed", [11, 12])  # 11: biopsy only; 12: subtotal resection
def test_treatment_shrinks_the_enhancing_tumour_and_prolongs_life(seed):
    patient, treated = _patient_course(seed)
    _, untreated = _patient_course(seed, treated=False)
    before, after = treated.states[0].volumes_cm3(), treated.states[1].volumes_cm3()
    assert after["et_cm3"] < 0.5 * before["et_cm3"]
    if len(untreated.states) > 1:  # the untreated twin may already have died
        assert untreated.states[1].volumes_cm3()["tc_cm3"] > after["tc_cm3"]
    assert treated.survival_days > untreated.survival_days
    if patient.response.extent_of_resection > 0:
        assert treated.states[1].cavity.any() and after["tc_cm3"] < before["tc_cm3"]


def test_whole_tumour_at_diagnosis_is_in_the_clinical_range(forty_patients):
    whole = np.array([course.states[0].volumes_cm3()["wt_cm3"] for _, course in forty_patients])
    assert np.mean((whole >= 10) & (whole <= 250)) >= 0.9, np.sort(whole)
    assert 20 <= np.median(whole) <= 150


def test_short_survivors_regrow_faster_after_treatment(forty_patients):
    """Regrowth of the tumour core between the first two follow-ups, cm³/day (permutation test)."""
    rates, short = [], []
    for _, course in forty_patients:
        if len(course.states) < 3:
            continue  # died before the second follow-up
        first, second = (s.volumes_cm3()["tc_cm3"] for s in course.states[1:3])
        rates.append((second - first) / (course.session_days[2] - course.session_days[1]))
        short.append(survival_class(course.survival_days) == "short")
    rates, short = np.array(rates), np.array(short)
    assert 6 <= short.sum() <= len(short) - 6, short.sum()
    observed = rates[short].mean() - rates[~short].mean()
    rng = np.random.default_rng(0)
    permuted = [rates[p[: short.sum()]].mean() - rates[p[short.sum():]].mean()
                for p in (rng.permutation(len(rates)) for _ in range(2000))]
    p_value = (1 + np.sum(np.array(permuted) >= observed)) / 2001
    assert observed > 0 and p_value < 0.05, (observed, p_value)


def test_survival_median_is_near_the_stupp_trial(forty_patients):
    days = np.array([course.survival_days for _, course in forty_patients])
    assert 300 <= np.median(days) <= 600  # Stupp 2005: median 14.6 months ≈ 444 days
