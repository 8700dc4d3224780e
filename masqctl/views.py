"""Human output: what a person at a terminal reads, one function per API answer."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from masqctl import listing
from masqd.api.families import OF_VALUE, label_of_value
from masqd.api.v1 import control_pb2 as pb
from masqd.core.durations import format_duration


def status(st: pb.Status, now: float | None = None) -> str:
    """A compact summary: config, interval, then one line per family."""
    now = time.time() if now is None else now
    cfg = st.config
    ours = f"table {st.table}" if st.table else f"chain {st.chain}"
    backend = "nftables" if st.table else "iptables"
    why = f" ({st.backend_choice})" if st.backend_choice else ""
    lines = [f"masqd {st.version}, {ours}, {backend} backend{why}"]
    source = " (defaults: no file or an empty one)" if cfg.using_defaults else ""
    if cfg.generation:
        lines.append(
            f"config    {cfg.path}{source}: generation {cfg.generation}, "
            f"loaded {_when(cfg.loaded_at, now)}"
        )
    else:
        lines.append(f"config    {cfg.path}: no valid config loaded yet, no rules written")
    if cfg.error:
        kept = f"generation {cfg.generation} stays in force" if cfg.generation else "nothing"
        lines.append(f"          REJECTED {_when(cfg.error_at, now)}: {cfg.error} ({kept})")
    lines += [f"          warning: {w}" for w in cfg.warnings]
    lines += _files(cfg.files)
    lines.append(interval(st, now))
    lines += _names(st.names, now)
    rows = [("FAMILY", "BACKEND", "STATE", "PID", "RESTARTS", "IN SYNC", "LAST SYNC", "SYNCS")]
    for f in st.families:
        rows.append(
            (
                label_of_value(f.family),
                f.backend,
                f.state,
                str(f.pid) if f.pid else "-",
                str(f.restarts),
                "yes" if f.in_sync else "NO",
                _last_sync(f, now),
                _counts(f.sync_counts),
            )
        )
    notes = [line for f in st.families for line in _troubles(f, now)]
    notes += [_fault("config loop", fault, now) for fault in st.faults]
    notes += [f"{label_of_value(f.family)} warning: {w}" for f in st.families for w in f.warnings]
    return "\n".join([*lines, "", *_align(rows), *notes])


def explanation(e: pb.Explanation) -> str:
    """The connection's fate, who decides, and what masqd alone would do when that differs."""
    source = f" from {e.source}" if e.source else ""
    action = f"snat to {e.snat_to}" if e.action == "snat" else e.action
    lines = [f"{e.destination}{source} ({label_of_value(e.family)}): {_fate(action)}"]
    decided = e.decided_by
    if e.owner != "masqd" and e.rule and decided.endswith(f": {e.rule}"):
        decided = f"{decided[: -len(e.rule) - 2]} (another owner's rule, not masqd's)"
    rows = [("decided by", decided)]
    if e.rule:
        rows.append(("rule", e.rule))
    mine = e.masqd
    if (mine.action, mine.decided_by) != (e.action, e.decided_by):
        alone = f"snat to {mine.snat_to}" if mine.action == "snat" else mine.action
        rows.append(("masqd alone", f"{alone} ({mine.decided_by})"))
    backend = {"nft": "iptables-nft", "legacy": "iptables-legacy"}.get(e.backend, e.backend)
    rows.append(("position", f"{e.position} ({backend})" if backend else e.position))
    if e.config:
        rows.append(("config", e.config))
    lines += [f"  {name:<12}{value}" for name, value in rows]
    lines += [f"  warning: {w}" for w in e.warnings]
    lines += [f"  note: {n}" for n in e.notes]
    return "\n".join(lines)


def _fate(action: str) -> str:
    return {
        "masquerade": "masquerade (leaves with the node's address)",
        "none": "none (leaves with the pod's own address)",
    }.get(action, action)


def _files(files: Sequence[pb.ConfigFile]) -> list[str]:
    """--config-dir: one line per file, what became of it and why."""
    fates = {
        pb.ConfigFile.APPLIED: "applied",
        pb.ConfigFile.KEPT: "REFUSED, its last good content stays in force",
        pb.ConfigFile.IGNORED: "REFUSED, contributes nothing",
    }
    lines = []
    for f in files:
        line = f"  file    {f.name}: {fates.get(f.state, 'unknown')}"
        lines.append(line + (f": {f.error}" if f.error else ""))
    return lines


def _names(names: Sequence[pb.DnsName], now: float) -> list[str]:
    """One line per DNS name: what it resolves to, how old that answer is, what failed."""
    lines = []
    for n in names:
        if not n.resolved:
            text = f"never resolved, renders no rule: {n.error or 'looking it up'}"
        else:
            addresses = ", ".join(a.split("/")[0] for a in n.addresses) or "no address"
            text = f"{addresses} (answered {_ago(_seconds(n.answered_at), now)}"
            text += f", ttl {_duration(n.ttl)})" if n.HasField("ttl") else ")"
            if n.error:
                text += f"; last look-up FAILED: {n.error}"
        lines.append(f"dns       {n.name}: {text}")
    return lines


def interval(st: pb.Status, now: float | None = None) -> str:
    """The effective resync interval and where it comes from."""
    now = time.time() if now is None else now
    iv = st.interval
    if iv.source != "override":
        return f"interval  {_duration(iv.effective)} (config)"
    expires = _seconds(iv.override_expires_at)
    return (
        f"interval  {_duration(iv.effective)} (override until {_clock(expires)}, "
        f"{format_duration(max(0, round(expires - now)))} left; "
        f"configured {_duration(iv.configured)})"
    )


def sync_results(response: pb.ResyncResponse) -> str:
    if not response.results:
        return "resync requested"
    return "\n".join(_align([_result_row(r) for r in response.results]))


def rules(response: pb.GetRulesResponse) -> str:
    """Each family's live chain like `iptables -L -n -v`, and how it differs from the config."""
    return "\n\n".join(_family_rules(fr) for fr in response.families)


def event(e: pb.Event) -> str:
    at = _seconds(e.time)
    clock = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
    kind = pb.Event.Kind.Name(e.kind)
    text = e.message
    if e.HasField("result"):
        text = f"{_reason(e.result.reason)} sync " + _outcome(e.result)
    generation = f" [generation {e.config_generation}]" if e.config_generation else ""
    return f"{clock} {kind:<16} {label_of_value(e.family):<4} {text}{generation}"


def unhealthy(st: pb.Status, family: str = "", now: float | None = None) -> str:
    """Why masqd (or one family) is not healthy, one line per reason."""
    now = time.time() if now is None else now
    reasons = []
    if not st.config.generation:
        reasons.append(f"no valid config loaded: {st.config.error or 'not read yet'}")
    for f in st.families:
        if f.serving or family not in ("", label_of_value(f.family)):
            continue
        reasons.append(f"{label_of_value(f.family)}: {f.health}; {_last_sync(f, now)}")
    if not family:
        reasons += [_fault("config loop", fault, now) for fault in st.faults if fault.ongoing]
    return "\n".join(reasons) or "masqd reports not serving"


def _troubles(f: pb.FamilyStatus, now: float) -> list[str]:
    """What keeps a family from being in sync, and its health when that is not fine."""
    label = label_of_value(f.family)
    lines = []
    if f.HasField("trouble"):
        t = f.trouble
        kind = pb.ErrorKind.Name(t.kind).removeprefix("ERROR_KIND_")
        lines.append(
            f"{label}: {kind} for {_duration(t.lasted)} ({t.attempts} attempts): {t.message}"
        )
    if not f.healthy:
        lines.append(f"{label}: NOT HEALTHY: {f.health}")
    if f.HasField("fault"):
        lines.append(_fault(f"{label} runner", f.fault, now))
    return lines


def _fault(where: str, fault: pb.ThreadFault, now: float) -> str:
    state = "FAILING" if fault.ongoing else "recovered"
    return (
        f"{where}: {state} after {fault.count} faults, the last {_when(fault.at, now)}: "
        f"{fault.error}"
    )


# -- pieces ------------------------------------------------------------------------------


def _family_rules(fr: pb.FamilyRules) -> str:
    if fr.HasField("table"):
        return _table_rules(fr)
    label = label_of_value(fr.family)
    if fr.error:
        return f"Chain {fr.chain} ({label}): cannot read the live chain: {fr.error}"
    lines = [f"Chain {fr.chain} ({label}): {_verdict(fr)}"]
    if not fr.chain_exists:
        lines.append("  the chain does not exist")
    else:
        live = [(r.packets, r.bytes, r.spec) for r in fr.live]
        table = listing.table(live, OF_VALUE[fr.family].value)
        origins = [""] + [r.origin for r in fr.live]
        lines += [f"{row}  <- {o}" if o else row for row, o in zip(table, origins, strict=True)]
    if not fr.in_sync:
        lines += _differences([r.spec for r in fr.live], list(fr.desired), fr.jump_present)
    elif not fr.jump_present:
        lines.append(f"  no POSTROUTING jump to {fr.chain}")
    return "\n".join(lines)


def _table_rules(fr: pb.FamilyRules) -> str:
    """Our nftables table: each chain's rules and each set's elements, with their counters."""
    label, table = label_of_value(fr.family), fr.table
    name = table.name or fr.chain
    if fr.error:
        return f"Table {name} ({label}): cannot read the live table: {fr.error}"
    lines = [f"Table {name} ({label}): {_verdict(fr)}"]
    if not table.exists:
        lines.append("  the table does not exist")
    chains: dict[str, list[pb.TableRule]] = {}
    for rule in table.rules:
        chains.setdefault(rule.chain, []).append(rule)
    for chain, rules in chains.items():
        lines.append(f"  chain {chain}")
        rows: list[tuple[str, ...]] = [("pkts", "bytes", "rule")]
        rows += [(str(r.packets), str(r.bytes), r.rule) for r in rules]
        lines += [f"    {row}" for row in _counted(rows)]
    sets: dict[str, list[pb.SetElement]] = {}
    for element in table.elements:
        sets.setdefault(element.set, []).append(element)
    for set_name, elements in sets.items():
        lines.append(f"  set {set_name}")
        rows = [("pkts", "bytes", "element", "comment")]
        for e in elements:
            covers = f" (covers {', '.join(e.covers)})" if e.covers else ""
            rows.append((str(e.packets), str(e.bytes), e.cidr, e.comment + covers))
        lines += [f"    {row}" for row in _counted(rows)]
    if table.pending:
        lines.append("  masqd's next sync writes:")
        lines += [f"    {line}" for line in table.pending.splitlines()]
    return "\n".join(lines)


def _verdict(fr: pb.FamilyRules) -> str:
    if fr.in_sync:
        return "in sync with the config"
    return "OUT OF SYNC with the config (masqd repairs it within seconds)"


def _counted(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows whose first two columns (counters) are right-aligned, the rest left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        " ".join(
            c.rjust(w) if i < 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _differences(live: list[str], desired: list[str], jump_present: bool) -> list[str]:
    lines = [f"  missing:    {spec}" for spec in desired if spec not in live]
    lines += [f"  unexpected: {spec}" for spec in live if spec not in desired]
    if not lines and live != desired:
        lines.append("  the rules are in a different order than the config asks")
    if not jump_present:
        lines.append("  the POSTROUTING jump to our chain is missing")
    return lines


def _result_row(r: pb.SyncResult) -> tuple[str, ...]:
    return (label_of_value(r.family), _outcome(r))


def _outcome(r: pb.SyncResult) -> str:
    if not r.ok:
        return f"FAILED after {_ms(r.duration)}: {r.error}"
    return f"ok, {'changed' if r.changed else 'unchanged'}, {_ms(r.duration)}"


def _last_sync(f: pb.FamilyStatus, now: float) -> str:
    if not f.HasField("last_sync"):
        return "never"
    r = f.last_sync
    return f"{_outcome(r)} ({_reason(r.reason)}, {_ago(_seconds(r.finished_at), now)})"


def _counts(counts: Iterable[pb.SyncCount]) -> str:
    return ", ".join(f"{_reason(c.reason)} {c.count}" for c in counts if c.count) or "none"


def _reason(reason: pb.SyncReason) -> str:
    return pb.SyncReason.Name(reason).removeprefix("SYNC_REASON_").lower()


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _seconds(t: Timestamp) -> float:
    return float(t.seconds) + t.nanos / 1e9


def _duration(d: Duration) -> str:
    return format_duration(d.seconds + d.nanos / 1e9)


def _ms(d: Duration) -> str:
    return f"{(d.seconds + d.nanos / 1e9) * 1000:.1f}ms"


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


def _ago(wall: float, now: float) -> str:
    return f"{format_duration(max(0, round(now - wall)))} ago"


def _when(t: Timestamp, now: float) -> str:
    wall = _seconds(t)
    if not wall:
        return "never"
    return f"{_clock(wall)} ({_ago(wall, now)})"
