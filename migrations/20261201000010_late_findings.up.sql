-- A tool call whose finding was not ready when its tool-calls webhook answered: the finding is
-- sent into the live call through Vapi's control URL once it is saved, exactly once (whoever
-- sets delivered_at first, the webhook or the tool job, is the one that says it). Keyed by the
-- tool call's business key; tool call ids are Vapi's, unique across tenants. Pruned daily.
CREATE TABLE late_findings (
    key           text PRIMARY KEY,
    control_url   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
GRANT SELECT, UPDATE ON late_findings TO agent_meter_tenant;
