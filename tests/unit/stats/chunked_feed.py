"""Feeding a long label stream to the change-point detector in chunks, for the null-stream tests."""

from __future__ import annotations

import numpy as np

from shadoweval.stats import change_point_detector as cpd


def alarms_in_chunks(
    labels: np.ndarray,
    *,
    threshold: float,
    min_rise: float,
    window_labels: int,
    chunk: int = 2_000,
) -> list[cpd.ChangePointAlarm]:
    """The alarms of one `change_point_update` call over `labels`, fed `chunk` labels at a time.

    One call recomputes the rest of its input after every alarm, so a long stream with many
    alarms costs alarms × length; in chunks it stays linear. Chunked and whole feeds give the
    same alarms (test_sequential.test_state_round_trip_gives_the_same_as_one_pass and
    test_change_point_episodes.test_the_stored_form_gives_the_same_detector).
    """
    state, alarms = cpd.ChangePointState(), list[cpd.ChangePointAlarm]()
    for start in range(0, labels.size, chunk):
        step = cpd.change_point_update(
            state,
            labels[start : start + chunk],
            min_rise=min_rise,
            threshold=threshold,
            window_labels=window_labels,
        )
        state, alarms = step.state, [*alarms, *step.alarms]
    return alarms
