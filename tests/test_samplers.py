"""Diffusion samplers, checked on a Gaussian toy whose exact denoiser is known.

Data x0 ~ N(MU, S²) per dimension, so E[x0 | x_t] is analytic and the probability-flow ODE maps
the starting noise z to its data quantile, MU + S·(z − alpha_T·MU) / sqrt(alpha_bar_T·S² + sigma_T²)
(≈ MU + S·z, as alpha_bar_T ≈ 0). Driven by this exact model, a sampler's only error is its own.
"""

from __future__ import annotations

import math

import pytest
import torch

from tumorcli.samplers import SAMPLERS, DDIMSampler, NoiseSchedule, make_sampler

MU, S = 1.5, 0.5
N = 20000


def exact_model(schedule: NoiseSchedule, prediction: str = "epsilon"):
    """The Bayes-optimal network for the toy: (x_t (N, ...), t) -> eps, v or x0."""

    def model(x_t: torch.Tensor, t: int) -> torch.Tensor:
        alpha_bar = schedule.alpha_bar_at(int(t))
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
        x0 = MU + alpha * S ** 2 * (x_t - alpha * MU) / (alpha_bar * S ** 2 + 1 - alpha_bar)
        eps = (x_t - alpha * x0) / sigma
        return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction]

    return model


def standard_noise(n: int, seed: int) -> torch.Tensor:
    """(n, 1) float64 noise with exactly mean 0 and std 1, so only the sampler's error remains."""
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (z - z.mean()) / z.std()


def run(sampler, model, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    for t in sampler.timesteps:
        x = sampler.step(model(x, int(t)), int(t), x, generator=generator)
    return x


def sample(name: str, n: int, kind: str = "linear", prediction: str = "epsilon", size: int = N,
           **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, probability-flow answer), both (size, 1), from pure noise with n steps."""
    schedule = NoiseSchedule.make(kind)
    sampler = make_sampler(name, schedule, prediction, **options)
    sampler.set_timesteps(n)
    z = standard_noise(size, seed=0)
    alpha_bar = schedule.alpha_bar_at(schedule.steps - 1)
    spread_t = math.sqrt(alpha_bar * S ** 2 + 1 - alpha_bar)
    answer = MU + S * (z - math.sqrt(alpha_bar) * MU) / spread_t
    return run(sampler, exact_model(schedule, prediction), z), answer


# --- the schedule ---------------------------------------------------------------------------

def test_linear_schedule_runs_from_almost_clean_to_almost_pure_noise():
    schedule = NoiseSchedule.make("linear")
    assert schedule.steps == 1000 and schedule.alphas_cumprod.dtype == torch.float64
    assert schedule.alpha_bar_at(0) == pytest.approx(1 - 1e-4)
    assert schedule.alpha_bar_at(999) < 1e-4
    assert bool((schedule.alphas_cumprod.diff() < 0).all())


def test_cosine_schedule_ends_at_almost_zero_signal_with_betas_clipped_at_0_999():
    schedule = NoiseSchedule.make("cosine")
    assert schedule.alpha_bar_at(0) > 0.9999
    assert schedule.alpha_bar_at(999) < 1e-8
    assert float(schedule.betas.max()) == pytest.approx(0.999)


def test_scaled_linear_betas_are_squares_of_evenly_spaced_roots():
    betas = NoiseSchedule.make("scaled_linear", 10, 1e-4, 0.01).betas
    assert torch.allclose(betas.sqrt().diff(), torch.full((9,), 0.01, dtype=torch.float64))


def test_add_noise_gives_the_forward_marginal():
    schedule = NoiseSchedule.make("linear")
    noise = torch.randn(N, 1, generator=torch.Generator().manual_seed(0))
    x_t = schedule.add_noise(torch.full((N, 1), 2.0), noise, 500)
    alpha_bar = schedule.alpha_bar_at(500)
    assert x_t.dtype == torch.float32
    assert float(x_t.mean()) == pytest.approx(2 * math.sqrt(alpha_bar), abs=0.02)
    assert float(x_t.std()) == pytest.approx(math.sqrt(1 - alpha_bar), abs=0.02)


def test_add_noise_with_one_timestep_per_volume_broadcasts_over_c_d_h_w():
    schedule = NoiseSchedule.make("cosine")
    x0, noise = torch.randn(3, 2, 4, 5, 6), torch.randn(3, 2, 4, 5, 6)  # (B, C, D, H, W)
    t = torch.tensor([0, 400, 999])
    x_t = schedule.add_noise(x0, noise, t)
    for b in range(3):
        assert torch.allclose(x_t[b], schedule.add_noise(x0[b], noise[b], int(t[b])))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_each_training_target_converts_back_to_x0_and_eps(prediction):
    schedule = NoiseSchedule.make("cosine")
    x0 = torch.randn(4, 1, 8, 8, dtype=torch.float64)  # (B, C, H, W)
    noise = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([1, 10, 500, 990])
    x_t = schedule.add_noise(x0, noise, t)
    target = {"epsilon": noise, "v_prediction": schedule.velocity(x0, noise, t), "sample": x0}
    x0_hat, eps_hat = schedule.predicted_x0_and_eps(target[prediction], x_t, t, prediction)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, noise, atol=1e-9)


def test_timesteps_descend_evenly_from_start_to_zero():
    schedule = NoiseSchedule.make("linear")
    assert schedule.timesteps_for(4).tolist() == [999, 666, 333, 0]
    assert schedule.timesteps_for(3, start=200).tolist() == [200, 100, 0]
    assert schedule.timesteps_for(1).tolist() == [999]
    assert len(set(schedule.timesteps_for(1000).tolist())) == 1000


# --- the samplers on the Gaussian toy -------------------------------------------------------

@pytest.mark.parametrize("name, n", [("ddim", 50), ("dpmpp", 20), ("ddpm", 1000)])
def test_sampler_reaches_the_data_mean_and_spread(name, n):
    x0, _ = sample(name, n)
    assert abs(float(x0.mean()) - MU) < 0.02
    assert abs(float(x0.std()) - S) < 0.03


def test_strided_ddpm_100_reaches_the_data_within_a_looser_tolerance():
    x0, _ = sample("ddpm", 100)
    assert abs(float(x0.mean()) - MU) < 0.03
    assert abs(float(x0.std()) - S) < 0.05


def test_deterministic_samplers_follow_the_probability_flow_ode():
    ddim, answer = sample("ddim", 50)
    dpmpp, _ = sample("dpmpp", 50)
    assert float((ddim - answer).abs().mean()) < 0.03
    assert float((dpmpp - answer).abs().mean()) < 0.005


@pytest.mark.parametrize("kind, ratio", [("linear", 0.85), ("cosine", 0.5)])
def test_dpmpp_10_is_closer_to_the_probability_flow_answer_than_ddim_10(kind, ratio):
    ddim, answer = sample("ddim", 10, kind)
    dpmpp, _ = sample("dpmpp", 10, kind)
    ddim_error = float((ddim - answer).abs().mean())
    dpmpp_error = float((dpmpp - answer).abs().mean())
    assert ddim_error < 0.15
    assert dpmpp_error < ratio * ddim_error


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_v_and_x0_parameterisations_give_the_same_samples_as_epsilon(name, prediction):
    by_epsilon, _ = sample(name, 25, "cosine", "epsilon", size=500)
    by_other, _ = sample(name, 25, "cosine", prediction, size=500)
    assert torch.allclose(by_other, by_epsilon, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SAMPLERS)
def test_sdedit_from_a_prior_noised_to_a_small_t_comes_back_near_the_prior(name):
    schedule = NoiseSchedule.make("linear")
    prior = MU + S * standard_noise(2000, seed=3)
    noise = standard_noise(2000, seed=4)
    distances = {}
    for start in (20, 900):
        sampler = make_sampler(name, schedule)
        sampler.set_timesteps(10, start=start)
        assert int(sampler.timesteps[0]) == start
        refined = run(sampler, exact_model(schedule), schedule.add_noise(prior, noise, start))
        distances[start] = float((refined - prior).abs().mean())
    assert distances[20] < 0.1 and distances[900] > 0.3


def test_ddim_with_eta_1_is_strided_ddpm_with_the_posterior_variance():
    ddpm, _ = sample("ddpm", 30, size=500)
    ddim, _ = sample("ddim", 30, size=500, eta=1.0)
    assert torch.allclose(ddim, ddpm, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name, options", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_the_same_generator_seed_gives_the_same_samples(name, options):
    schedule = NoiseSchedule.make("linear")
    sampler = make_sampler(name, schedule, **options)
    sampler.set_timesteps(20)
    z = standard_noise(100, seed=0)
    model = exact_model(schedule)
    assert torch.equal(run(sampler, model, z, seed=7), run(sampler, model, z, seed=7))
    assert not torch.equal(run(sampler, model, z, seed=7), run(sampler, model, z, seed=8))


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_keeps_the_shape_and_dtype_of_a_3d_volume(name):
    sampler = make_sampler(name, NoiseSchedule.make("cosine"), "v_prediction")
    sampler.set_timesteps(5)
    x = torch.randn(2, 1, 4, 8, 8)  # (B, C, D, H, W)
    out = run(sampler, lambda x_t, t: 0.1 * x_t, x)
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(out.isfinite().all())


def test_clip_keeps_x0_hat_inside_the_range():
    sampler = make_sampler("ddpm", NoiseSchedule.make("linear"), "sample", clip=1.0)
    sampler.set_timesteps(5)
    x = torch.randn(16, 1, 4, 4)
    out = run(sampler, lambda x_t, t: torch.full_like(x_t, 5.0), x)
    assert float(out.abs().max()) <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SAMPLERS)
def test_sampling_on_cuda_matches_the_cpu(name):
    schedule = NoiseSchedule.make("cosine")
    results = []
    for device in ("cpu", "cuda"):
        sampler = make_sampler(name, schedule)
        sampler.set_timesteps(10)
        z = standard_noise(1000, seed=0).float().to(device)
        results.append(run(sampler, exact_model(schedule), z).cpu())
    assert torch.allclose(results[0], results[1], atol=1e-4)


# --- bad inputs ------------------------------------------------------------------------------

def test_bad_inputs_are_refused_with_what_was_expected():
    schedule = NoiseSchedule.make("linear")
    with pytest.raises(ValueError, match="ddpm"):
        make_sampler("euler", schedule)
    with pytest.raises(ValueError, match="v_prediction"):
        make_sampler("ddim", schedule, prediction="noise")
    with pytest.raises(ValueError, match="cosine"):
        NoiseSchedule.make("quadratic")
    with pytest.raises(ValueError, match="between 1 and"):
        schedule.timesteps_for(0)
    with pytest.raises(ValueError, match="start"):
        schedule.timesteps_for(20, start=10)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(schedule, eta=2.0)
    sampler = make_sampler("dpmpp", schedule)
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of the timesteps"):
        sampler.step(torch.zeros(1), 5, torch.zeros(1))
