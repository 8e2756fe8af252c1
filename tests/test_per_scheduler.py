"""A scenario's per_scheduler section (llmsim/config_per_scheduler.py): settings that apply only
when a given scheduler kind runs, so one file replays servers configured differently."""

from __future__ import annotations

import pytest
import yaml

from llmsim import load_scenario, scenario_from_dict
from llmsim.errors import LlmsimError
from llmsim.sweep import prepare

BASE = {
    "name": "three-servers", "model": "llama-2-7b", "hardware": "a100-80g-sxm",
    "engine": {"kv_capacity_tokens": 120000, "sla_guard": {"max_queue_s": 8.0, "max_tbt_s": 1.49}},
    "scheduler": {"kind": "past-future", "past-future": {"history_window": 40}},
    "workload": {"lengths": {"kind": "fixed", "input_tokens": 100, "output_tokens": 50},
                 "arrivals": {"kind": "closed-loop", "clients": 10}, "num_requests": 50, "max_new_tokens": "exact"},
    "per_scheduler": {
        "aggressive": {"engine": {"sla_guard": {"max_queue_s": None, "max_tbt_s": None}}},
        "conservative": {"engine": {"max_num_seqs": 64}},
    },
}


def _guard(loaded):
    g = loaded.scenario.engine.sla_guard
    return g.max_queue_s, g.max_tbt_s


def test_an_entry_applies_only_when_its_kind_runs():
    assert _guard(scenario_from_dict(BASE)) == (8.0, 1.49)  # past-future: no entry
    assert _guard(scenario_from_dict(BASE, scheduler="aggressive")) == (None, None)
    conservative = scenario_from_dict(BASE, scheduler="conservative")
    assert _guard(conservative) == (8.0, 1.49)
    assert conservative.scenario.engine.max_num_seqs == 64
    assert conservative.scenario.engine.kv_capacity_tokens == 120000  # merged key by key, the rest kept


def test_an_entry_wins_over_set_and_is_changed_through_its_own_key():
    sets = ["engine.sla_guard.max_tbt_s=2.0"]
    assert _guard(scenario_from_dict(BASE, overrides=sets, scheduler="past-future")) == (8.0, 2.0)
    assert _guard(scenario_from_dict(BASE, overrides=sets, scheduler="aggressive")) == (None, None)
    own = ["per_scheduler.aggressive.engine.sla_guard.max_tbt_s=3.0"]
    assert _guard(scenario_from_dict(BASE, overrides=own, scheduler="aggressive")) == (None, 3.0)


def test_sweeps_and_compare_build_each_kind_from_the_unmerged_scenario(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "scheduler": {"kind": "aggressive"}}))
    prep = prepare(path)
    assert _guard(prep.point("aggressive", None, 0).loaded()) == (None, None)
    assert _guard(prep.point("past-future", None, 0).loaded()) == (8.0, 1.49)  # aggressive's entry did not leak


@pytest.mark.parametrize("per, message", [
    ({"agressive": {}}, "unknown scheduler kind 'agressive' in per_scheduler (did you mean 'aggressive'?)"),
    ({"aggressive": {"engine": {"sla_gaurd": {}}}}, "sla_gaurd"),
    ({"conservative": {"engine": {"block_size": 0}}}, "per_scheduler.conservative"),
    ({"aggressive": {"scheduler": {"kind": "oracle"}}}, "per_scheduler.aggressive.scheduler.kind"),
    ({"aggressive": {"per_scheduler": {}}}, "may not contain another per_scheduler"),
    ({"aggressive": 3}, "per_scheduler.aggressive must be a mapping"),
    ([1, 2], "per_scheduler must be a mapping"),
])
def test_a_bad_entry_is_one_clear_error_whichever_kind_runs(per, message):
    with pytest.raises(LlmsimError) as err:
        scenario_from_dict({**BASE, "per_scheduler": per}, scheduler="past-future")
    assert message in str(err.value)


def test_a_scenario_file_with_entries_loads_and_names_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert _guard(load_scenario(path, scheduler="aggressive")) == (None, None)
