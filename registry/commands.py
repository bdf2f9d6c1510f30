"""Pure command logic shared by both backends: validate, apply, revert, keep a short history.

A service's configuration is held as *flat keys* so a command can say exactly which values it
replaced: ``degraded``, ``idc_weight/IDC``, ``node_weight/NODE`` and ``switch/NAME``. A value of
``None`` means the key is absent. Reverting command N puts back what N replaced, except for
keys a later, still active command has changed since: that command then inherits N's old
value, so reverting it later restores the original (motan-go's switcher behaves the same).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from registry.model import (
    COMMAND_KINDS,
    Command,
    Degrade,
    ServiceConfig,
    _check_fields,
    _check_text,
    check_name,
    check_weight,
)

__all__ = ["MAX_HISTORY", "apply_command", "config_to_flat", "flat_to_config"]

MAX_HISTORY = 100
MAX_ITEMS_PER_COMMAND = 256


def config_to_flat(config: ServiceConfig) -> dict[str, Any]:
    """Flatten a config into ``{flat_key: value}`` (absent keys are left out)."""
    flat: dict[str, Any] = {}
    if config.degraded is not None:
        flat["degraded"] = config.degraded.to_dict()
    flat.update({f"idc_weight/{k}": v for k, v in config.idc_weights.items()})
    flat.update({f"node_weight/{k}": v for k, v in config.node_weights.items()})
    flat.update({f"switch/{k}": v for k, v in config.switches.items()})
    return flat


def flat_to_config(flat: Mapping[str, Any], revision: int) -> ServiceConfig:
    """Rebuild a config from flat keys."""
    degraded = flat.get("degraded")
    return ServiceConfig(
        degraded=Degrade.from_dict(degraded) if degraded is not None else None,
        idc_weights={k.split("/", 1)[1]: v for k, v in flat.items()
                     if k.startswith("idc_weight/") and v is not None},
        node_weights={k.split("/", 1)[1]: v for k, v in flat.items()
                      if k.startswith("node_weight/") and v is not None},
        switches={k.split("/", 1)[1]: v for k, v in flat.items()
                  if k.startswith("switch/") and v is not None},
        revision=revision,
    )


def _named_map(args: Mapping[str, Any], field: str, what: str) -> Mapping[str, Any]:
    value = args.get(field)
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{field}: expected a non-empty object of {what}")
    if len(value) > MAX_ITEMS_PER_COMMAND:
        raise ValueError(f"{field}: more than {MAX_ITEMS_PER_COMMAND} entries")
    return value


def _changes_for(kind: str, args: Mapping[str, Any], who: str, now: float) -> dict[str, Any]:
    if kind == "degrade":
        _check_fields(args, {"reason", "fallback_status"}, "args")
        if "reason" not in args:
            raise ValueError("reason: missing")
        degrade = Degrade(reason=args["reason"], who=who, at=now,
                          fallback_status=args.get("fallback_status", 503))
        return {"degraded": degrade.to_dict()}
    if kind == "restore":
        _check_fields(args, set(), "args")
        return {"degraded": None}
    if kind in ("idc_weights", "node_weights"):
        _check_fields(args, {"weights"}, "args")
        prefix, what = ("idc_weight/", "idc") if kind == "idc_weights" else ("node_weight/", "node")
        weights = _named_map(args, "weights", f"{what} weights")
        return {prefix + check_name(name, what):
                (None if w is None else check_weight(w, f"weights.{name}"))
                for name, w in weights.items()}
    if kind == "switches":
        _check_fields(args, {"switches"}, "args")
        switches = _named_map(args, "switches", "switch states")
        changes: dict[str, Any] = {}
        for name, state in switches.items():
            if state is not None and not isinstance(state, bool):
                raise ValueError(f"switches.{name}: expected true, false or null")
            changes["switch/" + check_name(name, "switch")] = state
        return changes
    raise ValueError(f"kind: {kind!r} must be one of {', '.join(COMMAND_KINDS)}")


def apply_command(
    flat: Mapping[str, Any],
    history: Sequence[Command],
    *,
    service: str,
    kind: str,
    args: Mapping[str, Any],
    who: str,
    why: str,
    now: float,
    next_id: int = 1,
) -> tuple[dict[str, Any], list[Command], Command]:
    """Apply one command to flat config and history; returns (new flat, new history, command).

    The command's id is the larger of ``next_id`` and one more than the newest in
    ``history`` (a backend that keeps history apart passes its counter). Raises
    :class:`ValueError` naming the field for bad input; nothing is changed then.
    """
    check_name(service, "service")
    _check_text(who, "who", allow_empty=False)
    _check_text(why, "why")
    if not isinstance(args, Mapping):
        raise ValueError("args: expected an object")
    new_history = list(history)
    next_id = max(next_id, max((c.id for c in history), default=0) + 1)
    if kind == "revert":
        _check_fields(args, {"command"}, "args")
        target_id = args.get("command")
        if isinstance(target_id, bool) or not isinstance(target_id, int):
            raise ValueError("command: expected a command id")
        index = next((i for i, c in enumerate(new_history) if c.id == target_id), None)
        if index is None:
            raise ValueError(f"command: {target_id} is not in the history")
        target = new_history[index]
        if target.kind == "revert":
            raise ValueError(f"command: {target_id} is a revert and cannot be reverted")
        if target.reverted_by is not None:
            raise ValueError(f"command: {target_id} was already reverted")
        changes: dict[str, Any] = {}
        for key in target.changes:
            later = next((i for i in range(index + 1, len(new_history))
                          if key in new_history[i].changes
                          and new_history[i].kind != "revert"
                          and new_history[i].reverted_by is None), None)
            if later is None:
                changes[key] = target.previous.get(key)
            else:
                heir = new_history[later]
                new_history[later] = replace(
                    heir, previous={**heir.previous, key: target.previous.get(key)})
        new_history[index] = replace(target, reverted_by=next_id)
    else:
        changes = _changes_for(kind, args, who, now)
    previous = {key: flat.get(key) for key in changes}
    command = Command(id=next_id, service=service, kind=kind, who=who, why=why, at=now,
                      changes=changes, previous=previous)
    new_flat = dict(flat)
    for key, value in changes.items():
        if value is None:
            new_flat.pop(key, None)
        else:
            new_flat[key] = value
    new_history.append(command)
    return new_flat, new_history[-MAX_HISTORY:], command
