"""Queueing-theory sanity checks: one replica that runs one request at a time with a constant step
time is an M/D/1 queue, so its simulated waits must match the Pollaczek-Khinchine formula.

Set-up: `max_num_seqs: 1`, `cost_model: constant` (every step takes D seconds), fixed lengths with
L output tokens (one prefill step that emits the first token, then L - 1 decode steps), so every
request has the deterministic service time S = L * D. Poisson arrivals at rate lambda = rho / S.
Then (Pollaczek-Khinchine, deterministic service):

    Wq = rho * S / (2 * (1 - rho))      mean wait before service (llmsim: queue_delay_s)
    P(Wq = 0) = 1 - rho                 an arrival finds the server idle (PASTA)

Tolerances. Successive waits are strongly correlated (Lindley recursion), so the standard error of
the mean wait is not std / sqrt(n). It is estimated from the run itself by the method of batch
means: 40 batches of n / 40 consecutive requests (500 to 1,000 requests, several times the queue's
relaxation time even at rho = 0.8, so the batch means are close to independent), and the
test allows 4 standard errors (a two-sided normal tail of 6e-5). The standard error itself shrinks
as 1 / sqrt(n): at n = 40,000 it is about 2 % of Wq at rho = 0.5 and 4 % at rho = 0.8, which
matches the spread measured over 40 seeds (1.9 % and 4.1 %); the test also asserts that it stays
below 6 %, so the check cannot pass vacuously with a huge error bar. The seed is fixed, so the test
is deterministic; the tolerance says how far a correct simulator may be from the formula.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmsim.cluster.simulation import simulate
from llmsim.config import scenario_from_dict

REPO = Path(__file__).resolve().parents[1]
STEP_TIME_S = 0.01
NUM_BATCHES = 40


def md1_scenario(rho: float, output_tokens: int, num_requests: int, seed: int = 0) -> dict:
    service_s = output_tokens * STEP_TIME_S
    return {
        "name": f"md1-rho{rho}",
        "seed": seed,
        "model": "llama-2-7b",
        "hardware": "h100-80g-sxm",
        "engine": {"mode": "separate", "max_num_seqs": 1, "kv_capacity_tokens": 4096, "record_steps": False},
        "cost_model": {"kind": "constant", "step_time_s": STEP_TIME_S},
        "scheduler": {"kind": "aggressive"},
        "workload": {
            "lengths": {"kind": "fixed", "input_tokens": 16, "output_tokens": output_tokens},
            "arrivals": {"kind": "poisson", "rate_per_s": rho / service_s},
            "num_requests": num_requests,
            "max_new_tokens": output_tokens,
        },
    }


def batch_means_standard_error(values: np.ndarray, batches: int = NUM_BATCHES) -> float:
    usable = len(values) // batches * batches
    means = values[:usable].reshape(batches, -1).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(batches))


def run_md1(rho: float, output_tokens: int, num_requests: int):
    result = simulate(scenario_from_dict(md1_scenario(rho, output_tokens, num_requests), REPO))
    df = result.requests
    assert df["finished"].all()
    return result, df


@pytest.mark.parametrize(
    "rho, output_tokens, num_requests",
    [
        (0.5, 1, 40_000),  # one step per request: S = D
        (0.8, 1, 40_000),
        (0.5, 4, 20_000),  # four steps per request: S = 4 D
    ],
)
def test_single_slot_replica_mean_queueing_delay_matches_pollaczek_khinchine_md1(rho, output_tokens, num_requests):
    result, df = run_md1(rho, output_tokens, num_requests)
    service_s = output_tokens * STEP_TIME_S
    expected_wq = rho * service_s / (2 * (1 - rho))
    waits = df["queue_delay_s"].to_numpy()
    se = batch_means_standard_error(waits)
    assert se < 0.06 * expected_wq, f"error bar too wide to be a test: SE {se:.5f} s vs Wq {expected_wq:.5f} s"
    assert abs(waits.mean() - expected_wq) <= 4 * se, (waits.mean(), expected_wq, se)

    # Deterministic service: once admitted, every request runs exactly L steps of D seconds.
    np.testing.assert_allclose(df["ttft_s"] - df["queue_delay_s"], STEP_TIME_S, rtol=0, atol=1e-9)
    np.testing.assert_allclose(df["e2e_s"] - df["queue_delay_s"], service_s, rtol=0, atol=1e-9)
    assert (df["evictions"] == 0).all()
    if output_tokens > 1:
        np.testing.assert_allclose(df["max_tbt_s"], STEP_TIME_S, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_single_slot_replica_is_busy_a_fraction_rho_of_the_time_and_idle_on_arrival_with_probability_one_minus_rho(rho):
    n = 40_000
    result, df = run_md1(rho, 1, n)
    busy_s = result.derived["replica_busy_s"][0]
    # every request is exactly one step of D seconds
    assert result.derived["replica_steps"] == [n]
    assert busy_s == pytest.approx(n * STEP_TIME_S, rel=1e-9)
    # utilisation: the run lasts about n / lambda; its relative error is about 1 / sqrt(n) = 0.5 %,
    # so 4 / sqrt(n) = 2 % is a 4-sigma bound
    utilisation = busy_s / result.summary["duration_s"]
    assert abs(utilisation - rho) <= 4 / np.sqrt(n) * rho, utilisation
    # PASTA: the fraction of arrivals that find the server idle (zero wait) is 1 - rho
    idle_on_arrival = (df["queue_delay_s"].to_numpy() == 0).astype(float)
    se = batch_means_standard_error(idle_on_arrival)
    assert abs(idle_on_arrival.mean() - (1 - rho)) <= 4 * se, (idle_on_arrival.mean(), se)


def test_single_slot_replica_obeys_littles_law_for_the_number_in_system():
    """L = lambda * W, with L measured independently of W: the number in the system that each arrival
    finds (PASTA: arrivals see time averages) against the arrival rate times the mean time in system."""
    rho, n = 0.8, 40_000
    result, df = run_md1(rho, 1, n)
    arrival = df["arrival_s"].to_numpy()
    finish = arrival + df["e2e_s"].to_numpy()
    # requests that arrived strictly before request i and had not finished when it arrived
    seen = np.arange(n) - np.searchsorted(np.sort(finish), arrival, side="right")
    lam = (n - 1) / (arrival[-1] - arrival[0])
    little_l = lam * df["e2e_s"].mean()
    se = batch_means_standard_error(seen.astype(float))
    assert abs(seen.mean() - little_l) <= 4 * se + 4 / np.sqrt(n) * little_l, (seen.mean(), little_l, se)
    # and the P-K mean number in system for M/D/1: rho + rho^2 / (2 (1 - rho))
    assert abs(seen.mean() - (rho + rho**2 / (2 * (1 - rho)))) <= 4 * se
