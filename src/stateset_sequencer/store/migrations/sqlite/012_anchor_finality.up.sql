-- Anchors our worker sent and still waits on: a chain transaction but no anchored_at until
-- ANCHOR_FINALITY_CONFIRMATIONS blocks lie on top of it (docs/ANCHORING.md). The finality
-- pass reads exactly these, oldest block first.
CREATE INDEX ves_commitments_unconfirmed ON ves_commitments (chain_block_number)
    WHERE chain_tx_hash IS NOT NULL AND anchored_at IS NULL;
