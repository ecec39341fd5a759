-- The agencies' own systems (issue 25): endpoints an agency registers, the events we send them
-- (Standard Webhooks) and each delivery of an event to an endpoint.

-- An endpoint: where, which event types (NULL: all), and its signing secret (`whsec_` + base64;
-- kept to sign, never shown again). During a rotation the previous secret signs too until
-- `previous_until`. An endpoint failing for 5 days is disabled (`disabled_at`, why).
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id         uuid NOT NULL REFERENCES agents (id),
    url              text NOT NULL,
    events           text[],
    secret           text NOT NULL,
    previous_secret  text,
    previous_until   timestamptz,
    failing_since    timestamptz,
    slow             boolean NOT NULL DEFAULT false,
    disabled_at      timestamptz,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    UNIQUE (agent_id, id)
);
CREATE INDEX webhook_endpoints_agent ON webhook_endpoints (agent_id) WHERE removed_at IS NULL;

-- An event as sent: `id` is the `webhook-id` header (the same on every attempt and replay).
CREATE TABLE webhook_messages (
    id          text PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id)
);

-- One event to one endpoint. `status`: pending (an attempt is queued), delivered (a 2xx), failed
-- (the schedule ran out, or the endpoint was disabled). Replays reset it to pending.
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id          uuid NOT NULL,
    message_id        text NOT NULL,
    endpoint_id       uuid NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          int NOT NULL DEFAULT 0,
    last_status_code  int,
    last_error        text,
    last_attempt_at   timestamptz,
    delivered_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, endpoint_id),
    FOREIGN KEY (agent_id, message_id) REFERENCES webhook_messages (agent_id, id) ON DELETE CASCADE,
    FOREIGN KEY (agent_id, endpoint_id) REFERENCES webhook_endpoints (agent_id, id)
);
CREATE INDEX webhook_deliveries_agent ON webhook_deliveries (agent_id, created_at DESC);
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (created_at) WHERE status = 'failed';

-- The agency reads its own endpoints (not their secrets: a column grant) and deliveries in the
-- portal; only the owner writes.
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
GRANT SELECT (id, agent_id, url, events, failing_since, disabled_at, disabled_reason, created_at,
              removed_at) ON webhook_endpoints TO agent_meter_tenant;
GRANT SELECT ON webhook_messages, webhook_deliveries TO agent_meter_tenant;
CREATE POLICY tenant_isolation ON webhook_endpoints TO agent_meter_tenant
    USING (agent_id = current_agent_id());
CREATE POLICY tenant_isolation ON webhook_messages TO agent_meter_tenant
    USING (agent_id = current_agent_id());
CREATE POLICY tenant_isolation ON webhook_deliveries TO agent_meter_tenant
    USING (agent_id = current_agent_id());
