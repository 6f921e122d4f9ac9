"""`sequencer-cli drill corruption`, small: bytes flipped in a payload, an agent signature,
a receipt and an anchored commitment root; `verify-events --deep` names each at its place
(the root against the chain too); a restore of the last verified backup and the outboxes'
re-sync give a log that verifies clean."""

from __future__ import annotations

from tests.drill import drills


def test_corruption_is_found_where_it_was_made_and_recovered_from() -> None:
    with drills.drilled("corruption") as (ran, tmp):
        report = drills.passed(ran, "corruption")
        figures = report["figures"]
        findings = {(f["store_id"], f["sequence"], f["check"]) for f in figures["findings"]}
        expected_check = {
            "payload": "envelope",
            "agent signature": "agent_signature",
            "receipt": "receipt",
            "commitment root": "commitments",
        }
        for place in figures["corrupted"]:
            key = (place["store_id"], place["sequence"], expected_check[place["what"]])
            assert key in findings, (place, figures["findings"])
        root = figures["corrupted"][3]
        assert (root["store_id"], root["sequence"], "anchors") in findings
        # Written after the backup: gone with the restore, back from the outboxes.
        assert figures["rpo_events"]["before_resync"] > 0
        drills.assert_clean(tmp)
