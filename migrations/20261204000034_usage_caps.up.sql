-- Spend caps (issue 26): a monthly cap on an agency's usage charges (not the subscription or the
-- setup fee), per billing-zone month. `alert` only notifies; `block` also refuses billable tool
-- calls once the month's usage, with the calls admitted and not yet metered, reaches the cap.
ALTER TABLE agents
    ADD COLUMN usage_cap_usd numeric(12, 2) CHECK (usage_cap_usd > 0),
    ADD COLUMN cap_action text NOT NULL DEFAULT 'alert' CHECK (cap_action IN ('alert', 'block'));

-- Each threshold's notice, once per agency and month (the primary key is what makes it once),
-- with the usage and the cap it was crossed at.
CREATE TABLE usage_cap_notices (
    agent_id    uuid NOT NULL REFERENCES agents (id),
    month       date NOT NULL,
    threshold   int NOT NULL CHECK (threshold IN (50, 80, 100)),
    usage_usd   numeric NOT NULL,
    cap_usd     numeric NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, month, threshold)
);

-- A billable tool call admitted under a `block` cap and not yet metered: what it will cost, so
-- calls arriving at once see each other (admissions take the agency's advisory lock). Counted
-- until its usage row exists, for an hour at most (a call whose job failed for good lets go).
CREATE TABLE usage_cap_holds (
    agent_id         uuid NOT NULL REFERENCES agents (id),
    metric_type      text NOT NULL,
    idempotency_key  text NOT NULL,
    amount_usd       numeric NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, metric_type, idempotency_key)
);
CREATE INDEX usage_cap_holds_recent ON usage_cap_holds (agent_id, created_at);

-- The agency sees its own notices (the portal's banner); holds are the service's alone.
ALTER TABLE usage_cap_notices ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_cap_holds ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON usage_cap_notices TO agent_meter_tenant;
CREATE POLICY tenant_isolation ON usage_cap_notices TO agent_meter_tenant
    USING (agent_id = current_agent_id());
CREATE POLICY tenant_isolation ON usage_cap_holds TO agent_meter_tenant
    USING (agent_id = current_agent_id());
