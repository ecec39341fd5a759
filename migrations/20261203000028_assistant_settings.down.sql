DROP TABLE call_transfers;
ALTER TABLE agents
    DROP CONSTRAINT agents_transfer_needs_hours,
    DROP COLUMN transfer_hours,
    DROP COLUMN transfer_number,
    DROP COLUMN max_call_minutes;
