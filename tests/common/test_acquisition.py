"""The Acquisition parameter object: validation and derived values."""

from __future__ import annotations

import math

import pytest

from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV, Acquisition
from cryosr.core.errors import InputError


def test_defaults_and_derived_values():
    acq = Acquisition(pixel_size_a=1.1, dose_per_frame_e_a2=1.25)
    assert acq.voltage_kv == DEFAULT_VOLTAGE_KV == 300.0 and acq.pre_exposure_e_a2 == 0.0
    assert acq.dose_known and acq.total_dose_e_a2(40) == pytest.approx(50.0)
    assert acq.binned(0.5).pixel_size_a == pytest.approx(0.55) and acq.binned(0.5).dose_per_frame_e_a2 == 1.25
    assert not acq.with_dose(None).dose_known and acq.with_dose(None).total_dose_e_a2(40) is None


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"pixel_size_a": 0.0}, "pixel size"),
        ({"pixel_size_a": math.nan}, "pixel size"),
        ({"pixel_size_a": 1.0, "dose_per_frame_e_a2": -1.0}, "dose per frame"),
        ({"pixel_size_a": 1.0, "dose_per_frame_e_a2": math.inf}, "dose per frame"),
        ({"pixel_size_a": 1.0, "pre_exposure_e_a2": -0.1}, "pre-exposure"),
        ({"pixel_size_a": 1.0, "voltage_kv": 0.0}, "voltage"),
    ],
)
def test_invalid_values_are_one_line_input_errors(kwargs, word):
    with pytest.raises(InputError, match=word) as err:
        Acquisition(**kwargs)
    assert "\n" not in str(err.value)
