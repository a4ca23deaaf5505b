"""The engine on its memory backend (`worker/engine/memory.py`): the one way the tests build
one, for the engine's own tests (bare `EngineSettings`) and the stages' (the pipeline's)."""

from __future__ import annotations

from worker.engine.engine import Engine, EngineSettings, StageFactory
from worker.engine.memory import MemoryBackend, MemoryBroker


def memory_engine(broker: MemoryBroker, settings: EngineSettings, *stages: StageFactory) -> Engine:
    """An engine with these stages (each built from its context) on `broker`; not started."""
    return Engine(MemoryBackend(broker), settings, stages)
