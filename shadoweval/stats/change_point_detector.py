"""The production change-point detector, incremental: its stored state, one update over new
labels (alarms, episodes, re-arming), and reading a stored state back. The statistic,
threshold and rise evidence it uses live in change_point.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shadoweval.stats.change_point import (
    CHANGE_POINT_REARM_FRACTION,
    CHANGE_POINT_REFINE_MARGIN_NATS,
    _rise_log_glr,
    change_point_post_lengths,
    change_point_statistic,
)
from shadoweval.stats.sequential import (
    FloatArray,
    _as_labels,
)


@dataclass(frozen=True)
class ChangePointState:
    """One segment's change-point detector between worker passes (bounded: O(window)).

    `n`/`harms` count every label consumed; `recent` holds the last ≤ window labels,
    oldest first. The detector's history is the labels since its last restart
    (`history_labels`/`history_harms`; None: every label, no alarm yet): an alarm restarts
    it at the alarm's estimated change point, so the post-change regime is the baseline a
    further rise is measured against. `statistic` is G at the newest label over that
    history, with `post_labels`/`post_harms` its best post-change stretch (0 when G = 0).
    `alarmed` is True from an alarm until `evidence`, the log GLR of the alarmed rise (its
    pre-change side `episode_pre_labels`/`episode_pre_harms` against the labels since its
    change point, at most the look-back's), falls below the re-arm level; `alarm_n` is the
    label count at that alarm.
    """

    n: int = 0
    harms: int = 0
    recent: tuple[int, ...] = ()
    statistic: float = 0.0
    post_labels: int = 0
    post_harms: int = 0
    alarmed: bool = False
    alarm_n: int | None = None
    history_labels: int | None = None
    history_harms: int | None = None
    episode_pre_labels: int = 0
    episode_pre_harms: int = 0
    evidence: float = 0.0

    @property
    def history(self) -> tuple[int, int]:
        """(labels, harms) of the detector's history: since its last restart."""
        if self.history_labels is None:
            return self.n, self.harms
        return self.history_labels, self.history_harms or 0

    @property
    def split(self) -> tuple[int, int, int, int]:
        """(pre labels, pre harms, post labels, post harms) of the estimate to show: while
        alarmed the alarmed rise (its pre-change side, and every label since its change
        point); otherwise the best split of the history (post 0 when G = 0)."""
        n, x = self.history
        if self.alarmed:
            return self.episode_pre_labels, self.episode_pre_harms, n, x
        return n - self.post_labels, x - self.post_harms, self.post_labels, self.post_harms

    @property
    def pre_change_rate(self) -> float | None:
        pre, pre_harms, _, _ = self.split
        return pre_harms / pre if pre > 0 else None

    @property
    def post_change_rate(self) -> float | None:
        _, _, post, post_harms = self.split
        return post_harms / post if post > 0 else None


@dataclass(frozen=True)
class ChangePointAlarm:
    """One alarm: at label `n`, the change estimated to start at label `change_n` (counting
    every label consumed); its pre-change side is the detector's history before it."""

    n: int
    change_n: int
    statistic: float
    pre_labels: int
    pre_harms: int
    post_labels: int
    post_harms: int

    @property
    def pre_change_rate(self) -> float:
        return self.pre_harms / self.pre_labels

    @property
    def post_change_rate(self) -> float:
        return self.post_harms / self.post_labels


@dataclass(frozen=True)
class ChangePointUpdate:
    state: ChangePointState
    alarms: tuple[ChangePointAlarm, ...]


def restore_state(
    *,
    n: int,
    harms: int,
    recent: tuple[int, ...],
    split: tuple[int, int, int, int],
    alarmed: bool,
    alarm_n: int | None,
) -> ChangePointState:
    """A state back from its stored form: the counts, the recent labels, and `split`
    (`ChangePointState.split`: while alarmed the alarmed rise, whose post-change side is the
    history; otherwise the history cut at its best split). G, its stretch and the evidence
    are recomputed by the next update. A form that does not add up (a row from before
    restarts were kept) falls back to every label as the history, without an episode."""
    pre, pre_harms, post, post_harms = split
    history = (post, post_harms) if alarmed else (pre + post, pre_harms + post_harms)
    valid = 0 <= history[1] <= history[0] <= n and history[1] <= harms
    if alarmed:
        valid = valid and pre >= 1 and 0 <= pre_harms <= pre
    if not valid:
        return ChangePointState(n=n, harms=harms, recent=recent)
    restarted = history != (n, harms)
    return ChangePointState(
        n=n,
        harms=harms,
        recent=recent,
        alarmed=alarmed,
        alarm_n=alarm_n if alarmed else None,
        history_labels=history[0] if restarted else None,
        history_harms=history[1] if restarted else None,
        episode_pre_labels=pre if alarmed else 0,
        episode_pre_harms=pre_harms if alarmed else 0,
    )


_UPDATE_BLOCK_LABELS = 20_000


@dataclass
class _Pass:
    """One `change_point_update` call's working state. Labels are addressed by their end
    position e in `cumulative` (recent + new labels); the history at e holds
    base_n + e − base_pos labels and base_x + C[e] − C[base_pos] harms."""

    cumulative: NDArray[np.int64]
    lengths: NDArray[np.int64]
    min_rise: float
    offset: int  # labels consumed before the first of `recent`
    first_end: int  # end position of the first new label
    base_pos: int
    base_n: int
    base_x: int
    alarmed: bool
    alarm_n: int | None
    pre_n: int
    pre_x: int

    def history_at(self, end: NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
        n = self.base_n + (end - self.base_pos)
        x = self.base_x + self.cumulative[end] - self.cumulative[self.base_pos]
        return n.astype(np.float64), x.astype(np.float64)

    def statistic(self, lo: int, hi: int) -> tuple[FloatArray, NDArray[np.int64]]:
        """G and its best candidate for new labels lo..hi−1. During an episode only rises
        that start after its alarm count: an earlier start is the alarmed rise again."""
        statistic = np.zeros(hi - lo)
        best = np.full(hi - lo, -1, dtype=np.int64)
        lengths = self.lengths
        for start in range(lo, hi, _UPDATE_BLOCK_LABELS):
            stop = min(start + _UPDATE_BLOCK_LABELS, hi)
            end = self.first_end + np.arange(start, stop)
            back = np.maximum(end[:, None] - lengths[None, :], 0)
            testable = lengths[None, :] <= end[:, None]
            if self.alarmed and self.alarm_n is not None:
                since_alarm = self.offset + end - self.alarm_n
                testable &= lengths[None, :] <= since_alarm[:, None]
            recent_harms = np.where(
                testable,
                (self.cumulative[end][:, None] - self.cumulative[back]).astype(np.float64),
                np.nan,
            )
            seen, harms = self.history_at(end)
            statistic[start - lo : stop - lo], best[start - lo : stop - lo] = (
                change_point_statistic(seen, harms, recent_harms, lengths, self.min_rise)
            )
        return statistic, best

    def evidence(self, lo: int, hi: int) -> FloatArray:
        """The log GLR of the alarmed rise at new labels lo..hi−1: its pre-change side
        against the labels since its change point (the history, while alarmed), at most the
        look-back's, so a rise that has ended stops counting once it leaves the window."""
        end = self.first_end + np.arange(lo, hi)
        since_change, _ = self.history_at(end)
        post_n = np.minimum(since_change, float(self.lengths[-1]))
        post_x = (self.cumulative[end] - self.cumulative[end - post_n.astype(np.int64)]).astype(
            np.float64
        )
        pre_n = np.full(end.size, float(self.pre_n))
        pre_x = np.full(end.size, float(self.pre_x))
        return _rise_log_glr(pre_n, pre_x, post_n, post_x, self.min_rise)

    def change_length(self, end: int, seen: int, harms: int, longest: int) -> int:
        """The post-change length, 1..`longest`, of the alarm's change point: the longest whose
        rise log GLR over the labels up to `end` is within CHANGE_POINT_REFINE_MARGIN_NATS of
        the best (the best alone tends to be a burst of harms at the end)."""
        lengths = np.arange(1, longest + 1, dtype=np.int64)
        post_x = (self.cumulative[end] - self.cumulative[end - lengths]).astype(np.float64)
        evidence = _rise_log_glr(
            (seen - lengths).astype(np.float64),
            harms - post_x,
            lengths.astype(np.float64),
            post_x,
            self.min_rise,
        )
        close = np.flatnonzero(evidence >= np.max(evidence) - CHANGE_POINT_REFINE_MARGIN_NATS)
        return int(lengths[close[-1]])

    def alarm(self, index: int, length: int, statistic: float) -> ChangePointAlarm:
        """Record the alarm at new label `index` and restart the history at its change point,
        refined over every position inside the alarmed stretch of `length` labels. The grid's
        shortest stretch is 50 labels, but a large step alarms after ~20: cut at the grid,
        the new history would start with ~30 pre-change labels, its rate diluted, and the
        same step would alarm again as a "further rise" once 50 labels followed the alarm."""
        end = self.first_end + index
        seen, harms = (int(v[0]) for v in self.history_at(np.array([end])))
        length = self.change_length(end, seen, harms, length)
        post_x = int(self.cumulative[end] - self.cumulative[end - length])
        n = self.offset + end
        self.base_pos, self.base_n, self.base_x = end - length, 0, 0
        self.alarmed, self.alarm_n = True, n
        self.pre_n, self.pre_x = seen - length, harms - post_x
        return ChangePointAlarm(
            n=n,
            change_n=n - length + 1,
            statistic=statistic,
            pre_labels=self.pre_n,
            pre_harms=self.pre_x,
            post_labels=length,
            post_harms=post_x,
        )


def change_point_update(
    state: ChangePointState,
    labels: ArrayLike,
    *,
    min_rise: float,
    threshold: float,
    window_labels: int,
) -> ChangePointUpdate:
    """Feed labels (1 = harm) in order; G_n (`change_point_statistic`) after every label,
    over the detector's history.

    Alarm when G_n ≥ h = `threshold`; the alarm restarts the history at its estimated
    change point (within its maximising post-change stretch, refined over every position of
    it: `_Pass.change_length`), so only a further rise, measured against the post-change
    regime, alarms again (while the episode lasts, a rise that starts after its alarm). The
    episode ends (re-arms) once the evidence for the alarmed rise, the log GLR of its
    pre-change side against the labels since its change point (at most the last
    `window_labels`), falls below h × CHANGE_POINT_REARM_FRACTION: when harm is back down.
    Every label of the chunk is checked and the state keeps all that later labels need, so
    two chunks give exactly the state and alarms of one. State stays bounded: the last
    `window_labels` labels plus counts.
    """
    if not (threshold > 0) or math.isinf(threshold):
        raise ValueError(f"threshold must be a finite positive number, got {threshold!r}")
    if not (0.0 <= min_rise < 1.0):
        raise ValueError(f"min_rise must lie in [0, 1), got {min_rise!r}")
    lengths = change_point_post_lengths(window_labels)
    y = _as_labels(labels)
    history_n, history_x = state.history
    if (
        state.n < len(state.recent)
        or not (0 <= state.harms <= state.n)
        or not (0 <= history_x <= history_n <= state.n and history_x <= state.harms)
    ):
        raise ValueError("inconsistent state: recent labels and counts disagree")
    if y.size == 0:
        return ChangePointUpdate(state, ())
    recent = np.asarray(state.recent, dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(np.concatenate([recent, y]))])
    run = _Pass(
        cumulative=cumulative.astype(np.int64),
        lengths=lengths,
        min_rise=float(min_rise),
        offset=state.n - recent.size,
        first_end=recent.size + 1,
        base_pos=recent.size,
        base_n=history_n,
        base_x=history_x,
        alarmed=state.alarmed,
        alarm_n=state.alarm_n,
        pre_n=state.episode_pre_labels,
        pre_x=state.episode_pre_harms,
    )
    if run.alarmed and run.pre_n < 1:
        # A stored alarm without its pre-change side (an older row): it cannot be re-checked.
        run.alarmed = False
    statistic, best, evidence, alarms = _scan(run, y.size, threshold)
    return ChangePointUpdate(_final_state(state, run, y, statistic, best, evidence), alarms)


def _scan(
    run: _Pass, size: int, threshold: float
) -> tuple[FloatArray, NDArray[np.int64], FloatArray, tuple[ChangePointAlarm, ...]]:
    """G, its best candidate and the episode's evidence after each new label, and the alarms,
    in label order: an alarm or an episode's end changes what the later labels are tested
    against, so the rest of the chunk is computed again after each (they are rare)."""
    rearm_level = threshold * CHANGE_POINT_REARM_FRACTION
    statistic = np.zeros(size)
    best = np.full(size, -1, dtype=np.int64)
    evidence = np.zeros(size)
    alarms: list[ChangePointAlarm] = []
    position = 0
    while position < size:
        g, b = run.statistic(position, size)
        statistic[position:], best[position:] = g, b
        hits = np.flatnonzero(g >= threshold)
        first_alarm = int(hits[0]) if hits.size else g.size
        if run.alarmed:
            e = run.evidence(position, size)
            evidence[position:] = e
            # At one label the alarm test comes first; the episode ends after a label whose
            # evidence fell below the re-arm level.
            ended = np.flatnonzero(~(e[:first_alarm] >= rearm_level))
            if ended.size:
                run.alarmed = False
                position += int(ended[0]) + 1
                continue
        if first_alarm == g.size:
            break
        index = position + first_alarm
        length = int(run.lengths[best[index]])
        alarms.append(run.alarm(index, length, float(statistic[index])))
        evidence[index] = statistic[index]
        position = index + 1
    return statistic, best, evidence, tuple(alarms)


def _final_state(
    state: ChangePointState,
    run: _Pass,
    y: NDArray[np.int64],
    statistic: FloatArray,
    best: NDArray[np.int64],
    evidence: FloatArray,
) -> ChangePointState:
    last = y.size - 1
    end = run.first_end + last
    post_labels = int(run.lengths[best[last]]) if best[last] >= 0 else 0
    post_harms = int(run.cumulative[end] - run.cumulative[end - post_labels]) if post_labels else 0
    history_n, history_x = (int(v[0]) for v in run.history_at(np.array([end])))
    restarted = state.history_labels is not None or run.base_pos != run.first_end - 1
    # The longest candidate stretch is the look-back: the labels later ones can need.
    window = int(run.lengths[-1])
    return ChangePointState(
        n=state.n + int(y.size),
        harms=state.harms + int(y.sum()),
        recent=tuple(int(v) for v in np.diff(run.cumulative)[-window:]),
        statistic=float(statistic[last]),
        post_labels=post_labels,
        post_harms=post_harms,
        alarmed=run.alarmed,
        alarm_n=run.alarm_n if run.alarmed else None,
        history_labels=history_n if restarted else None,
        history_harms=history_x if restarted else None,
        episode_pre_labels=run.pre_n if run.alarmed else 0,
        episode_pre_harms=run.pre_x if run.alarmed else 0,
        evidence=float(evidence[last]) if run.alarmed else 0.0,
    )
