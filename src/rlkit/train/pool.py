"""The set of rollout actors of one run: creation, sampling, replacement.

An actor that dies (node lost, ``ray.kill``) is replaced by a fresh one with
the same index and a new seed, and its request is sent again: one lost actor
costs one fragment, never the run.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import RayActorError

from rlkit.config import TrainConfig
from rlkit.train.algos.base import Collection
from rlkit.train.agents import AgentMapping
from rlkit.train.pettingzoo_env import MultiAgentSpec
from rlkit.train.rollout import Fragment, RolloutWorker


class WorkerPool:
    def __init__(self, config: TrainConfig, mapping: AgentMapping, collection: Collection,
                 placement: Any = None, multi: MultiAgentSpec | None = None) -> None:
        self.cfg = config
        self.mapping = mapping
        self.collection = collection
        self.placement = placement
        self.multi = multi
        self.restarts = 0
        self.remote_cls = ray.remote(num_cpus=config.rollout.num_cpus_per_worker)(RolloutWorker)
        self.workers = [self._spawn(i) for i in range(config.rollout.num_workers)]
        # Async mode: the request each worker is busy with, keyed by its result ref.
        self.in_flight: dict[ray.ObjectRef, int] = {}

    def _spawn(self, index: int) -> Any:
        # Seeds never repeat across workers, nor across replacements of one worker.
        seed = self.cfg.seed + 10_007 * (index + 1) + 1_000_003 * self.restarts
        options: dict[str, Any] = {}
        if self.placement is not None:
            options["scheduling_strategy"] = self.placement
        return self.remote_cls.options(**options).remote(self.cfg, self.mapping, self.collection, index, seed, self.multi)

    def _replace(self, index: int) -> None:
        self.restarts += 1
        ray.kill(self.workers[index])
        self.workers[index] = self._spawn(index)

    def _request(self, index: int, box: list[Any], version: int) -> ray.ObjectRef:
        return self.workers[index].sample.remote(box, version)

    def sample_all(self, box: list[Any], version: int) -> list[Fragment]:
        """One fragment from every worker, all of ``version``, in worker order (sync mode)."""
        refs = [self._request(i, box, version) for i in range(len(self.workers))]
        fragments: list[Fragment] = []
        for i, ref in enumerate(refs):
            while True:
                try:
                    fragments.append(ray.get(ref))
                    break
                except RayActorError:
                    self._replace(i)
                    ref = self._request(i, box, version)
        return fragments

    def next_completed(self, box: list[Any], version: int) -> Fragment:
        """The next fragment any worker finishes; idle workers get new requests first (async mode)."""
        busy = set(self.in_flight.values())
        for i in range(len(self.workers)):
            if i not in busy:
                self.in_flight[self._request(i, box, version)] = i
        while True:
            [ref], _ = ray.wait(list(self.in_flight), num_returns=1)
            index = self.in_flight.pop(ref)
            try:
                fragment = ray.get(ref)
            except RayActorError:
                self._replace(index)
                self.in_flight[self._request(index, box, version)] = index
                continue
            # The worker never waits: it starts on the newest version at once.
            self.in_flight[self._request(index, box, version)] = index
            return fragment

    def drain(self) -> None:
        """Wait for in-flight requests so worker state is quiet (before a checkpoint)."""
        for ref in list(self.in_flight):
            try:
                ray.get(ref)
            except RayActorError:
                pass
        self.in_flight.clear()

    def get_states(self) -> list[bytes | None]:
        return ray.get([w.get_state.remote() for w in self.workers])

    def set_states(self, states: list[bytes | None]) -> None:
        ray.get([w.set_state.remote(s) for w, s in zip(self.workers, states) if s is not None])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        self.in_flight.clear()
