-- An agency's whole life (issue 21): pause, resume, cancel, reactivate, each audited; the months it
-- pays for in one rule.
--
-- `agents.status` is 'active' or 'paused' while in service; 'cancelled' once `cancelled_on` has
-- come (a future `cancelled_on` is a scheduled cancellation, and the agency stays in service until
-- that day begins in the billing zone). A cancelled agency always has its date.
UPDATE agents SET cancelled_on = (now() AT TIME ZONE 'America/Phoenix')::date
 WHERE status = 'cancelled' AND cancelled_on IS NULL;
ALTER TABLE agents ADD CONSTRAINT agents_cancelled_has_date
    CHECK (status <> 'cancelled' OR cancelled_on IS NOT NULL);

-- Months between a cancellation and a reactivation: not billed. [from_month, to_month), first days.
-- A reactivation within the cancellation month or the next one leaves no gap.
CREATE TABLE agent_billing_gaps (
    agent_id   uuid NOT NULL REFERENCES agents (id),
    from_month date NOT NULL CHECK (extract(day FROM from_month) = 1),
    to_month   date NOT NULL CHECK (extract(day FROM to_month) = 1),
    PRIMARY KEY (agent_id, from_month),
    CHECK (from_month < to_month),
    EXCLUDE USING gist (agent_id WITH =, daterange(from_month, to_month) WITH &&)
);

-- Every move of an agency's life, with who made it and when.
CREATE TABLE agent_lifecycle_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id     uuid NOT NULL REFERENCES agents (id),
    action       text NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    effective_on date,
    actor        text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX agent_lifecycle_events_agent ON agent_lifecycle_events (agent_id, at);

-- The billable-month rule with the gaps: billing started before the month ends, the agency was
-- not cancelled before the month starts (the cancellation month is billed whole), and the month
-- is not between a cancellation and a reactivation.
CREATE FUNCTION billable_in(p_agent uuid, p_starts date, p_cancelled date, p_month date)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT billable_in(p_starts, p_cancelled, p_month)
       AND NOT EXISTS (SELECT 1 FROM agent_billing_gaps g
                        WHERE g.agent_id = p_agent AND p_month >= g.from_month
                          AND p_month < g.to_month)
$$;

-- The first month at or after `p_from` that is not in a gap (the agent's open month after a
-- finalized one).
CREATE FUNCTION billable_from(p_agent uuid, p_from date) RETURNS date
LANGUAGE sql STABLE
AS $$
    SELECT COALESCE((SELECT g.to_month FROM agent_billing_gaps g
                      WHERE g.agent_id = p_agent AND p_from >= g.from_month
                        AND p_from < g.to_month), p_from)
$$;

-- Reports may run as the tenant (the portal): it sees its own gaps.
GRANT SELECT ON agent_billing_gaps TO agent_meter_tenant;
ALTER TABLE agent_billing_gaps ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_own_gaps ON agent_billing_gaps TO agent_meter_tenant
    USING (agent_id = current_agent_id());
GRANT EXECUTE ON FUNCTION billable_in(uuid, date, date, date) TO agent_meter_tenant;
GRANT EXECUTE ON FUNCTION billable_from(uuid, date) TO agent_meter_tenant;

-- Each invoice keeps the zone its bounds were made in (invoices before this were made in the
-- default zone).
ALTER TABLE invoices ADD COLUMN time_zone text NOT NULL DEFAULT 'America/Phoenix';
ALTER TABLE invoices ALTER COLUMN time_zone DROP DEFAULT;

-- The audit trail is the operator's: the tenant role has no privilege on it (RLS and a policy
-- keep the catalog audit's rule for every table with an agent_id).
ALTER TABLE agent_lifecycle_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_own_lifecycle ON agent_lifecycle_events TO agent_meter_tenant
    USING (agent_id = current_agent_id());
