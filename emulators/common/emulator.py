"""The `Emulator` base class every emulator implements, and `StateFile`, its persistence on disk.

An emulator keeps its whole state in memory and exposes it through five operations that the
control API (`control.py`) maps onto HTTP:

    class WhmcsEmulator(Emulator):
        name = "whmcs"
        def to_state(self) -> dict[str, Any]: ...        # JSON-serialisable snapshot
        def load_state(self, state: dict[str, Any]) -> None: ...
        def reset(self, seed: int | None = None) -> None: ...  # empty, deterministic under seed
        def seed(self, payload: dict[str, Any]) -> dict[str, Any]: ...  # {"dataset": "demo"} | …
        def is_empty(self) -> bool: ...

and may override `expire_tokens`, `drop_sessions`, `settings` and `configure`. An emulator whose
behaviour has settings (credentials, delays) derives from `ConfigurableEmulator` instead, which
gives it checked `configure` changes and start values that `reset` returns to. State is only
touched on the server's event loop thread (handlers mutate synchronously between awaits), so no
locks are needed. A handler that changes state needs to do nothing more: the app shell calls
`changed()` after every non-GET request, and `StateFile` saves (debounced) on that signal.

`StateFile(path)` loads a saved state at start (`load`), writes atomically (temp file +
`os.replace`) after changes and at shutdown, so an emulator restarted with `--state-file` resumes
where it stopped.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from emulators.common.faults import FaultInjector
from emulators.common.requestlog import RequestLog

Clock = Callable[[], float]


class Emulator(ABC):
    """State and behaviour of one emulated system; the protocol routes read and change it."""

    name: ClassVar[str]

    def __init__(self, *, seed: int | None = None, clock: Clock = time.time) -> None:
        self.clock = clock
        self.faults = FaultInjector(seed)
        self.requests = RequestLog()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Seconds since the epoch on the emulator's clock (tests may inject their own)."""
        return self.clock()

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """The whole state as JSON-serialisable data; `load_state` must accept it back."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with one produced by `to_state`."""

    @abstractmethod
    def reset(self, seed: int | None = None) -> None:
        """Back to empty; ids and random choices afterwards depend only on `seed`."""

    @abstractmethod
    def seed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Add data (`{"dataset": "demo"}` or emulator-specific records); return what was made.

        Raises ValueError for a payload it does not understand.
        """

    @abstractmethod
    def is_empty(self) -> bool:
        """True when no data has been created since the last reset."""

    def expire_tokens(self) -> int:
        """Invalidate every token, session or key handed out; return how many."""
        return 0

    def drop_sessions(self) -> int:
        """End every streaming session; return how many (none where there is no streaming)."""
        return 0

    def settings(self) -> dict[str, Any]:
        """Behaviour settings (credentials, delays, …) as `GET /__emulator__/config` shows them."""
        return {}

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change settings and return them all; raises ValueError for an unknown setting."""
        if changes:
            raise ValueError(f"unknown settings: {', '.join(sorted(changes))}")
        return self.settings()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        """Tell listeners (the state file) that state may have changed."""
        for listener in self._listeners:
            listener()


class ConfigurableEmulator(Emulator):
    """An emulator with behaviour settings, declared with their defaults in `DEFAULT_SETTINGS`.

    `settings` given at construction become the start values; `reset` must call
    `start_settings()` to return to them. A change must name a known setting and keep its
    default's type; a setting whose default is a float takes any non-negative number.
    """

    DEFAULT_SETTINGS: ClassVar[Mapping[str, Any]]

    def __init__(
        self,
        *,
        seed: int | None = None,
        settings: dict[str, Any] | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(seed=seed, clock=clock)
        self._base_settings = {**self.DEFAULT_SETTINGS, **self.checked_settings(settings or {})}
        self.config: dict[str, Any] = self.start_settings()
        self.reset(seed)

    def start_settings(self) -> dict[str, Any]:
        """A fresh copy of the start values (lists and dicts included, so changes stay local)."""
        return copy.deepcopy(self._base_settings)

    def settings(self) -> dict[str, Any]:
        return dict(self.config)

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.config.update(self.checked_settings(changes))
        return self.settings()

    def checked_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """`changes` validated against `DEFAULT_SETTINGS`; raises ValueError naming the culprit."""
        unknown = set(changes) - set(self.DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        checked = dict(changes)
        for key, value in changes.items():
            expected = self.DEFAULT_SETTINGS[key]
            if isinstance(expected, float):
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"setting '{key}' must be a non-negative number")
                checked[key] = float(value)
            elif not isinstance(value, type(expected)):
                raise ValueError(f"setting '{key}' must be a {type(expected).__name__}")
        return checked


class StateFile:
    """A JSON file holding an emulator's state across restarts."""

    def __init__(self, path: str | os.PathLike[str], *, debounce: float = 0.2) -> None:
        self.path = Path(path)
        self.debounce = debounce
        self._emulator: Emulator | None = None
        self._pending: asyncio.TimerHandle | None = None

    def load(self, emulator: Emulator) -> bool:
        """Load the saved state into `emulator` if the file exists; return whether it did."""
        if not self.path.exists():
            return False
        emulator.load_state(json.loads(self.path.read_text(encoding="utf-8")))
        return True

    def attach(self, emulator: Emulator) -> None:
        """Save `emulator` shortly after each change it reports, and on `flush`."""
        self._emulator = emulator
        emulator.on_change(self._schedule)

    def save(self, emulator: Emulator) -> None:
        """Write the state atomically: a reader sees the old file or the new one, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(emulator.to_state(), sort_keys=True, indent=1)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def flush(self) -> None:
        """Save now if a save is pending or the file does not exist yet."""
        if self._emulator is None:
            return
        if self._pending is not None or not self.path.exists():
            self._cancel()
            self.save(self._emulator)

    def _schedule(self) -> None:
        if self._emulator is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save(self._emulator)
            return
        # Debounced: a burst of requests costs one write, at most `debounce` seconds late.
        if self._pending is None:
            self._pending = loop.call_later(self.debounce, self._save_pending)

    def _save_pending(self) -> None:
        self._pending = None
        if self._emulator is not None:
            self.save(self._emulator)

    def _cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
