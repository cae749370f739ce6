"""The small-model pre-flight: how often the base view finds the answer format's opening
tokens (`\\boxed{`, "answer is") too unlikely for DASD to keep them (p_base < tau), measured on
scored gold solutions. Knows the record layout."""

from __future__ import annotations


def answer_opening(record: dict, marker: str) -> list[float] | None:
    """Base probabilities of the tokens that spell the first `marker` (e.g. '\\\\boxed') in the
    response: from the token where it starts to the one where it is complete; None when the
    response never writes it."""
    steps = record.get("steps") or []
    text, starts = "", []
    for s in steps:
        starts.append(len(text))
        text += str(s.get("text", ""))
    at = text.find(marker)
    if at < 0:
        return None
    end = at + len(marker)
    return [float(s["p_base"]) for s, st in zip(steps, starts)
            if st < end and st + len(str(s.get("text", ""))) > at and s.get("p_base") is not None]


def preflight(records: list[dict], marker: str, tau: float) -> dict:
    """Scored gold solutions: how often the base view gives the answer format's opening
    tokens p_base < tau, i.e. how often DASD would have to leave the reference's answer."""
    found = [o for o in (answer_opening(r, marker) for r in records) if o]
    below = [o for o in found if min(o) < tau]
    share = len(below) / len(found) if found else None
    return {"marker": marker, "tau": tau, "records": len(records), "with_marker": len(found), "below_tau": len(below),
            "share_below": share, "warn": bool(share and share > 0.5)}
