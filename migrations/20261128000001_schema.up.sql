-- agent-meter schema: tenants (agents), their call data, the usage ledger and invoices.
--
-- Tenancy rules (see README, "Tenancy"):
--   * every tenant table carries agent_id;
--   * every UNIQUE on a tenant table includes agent_id;
--   * child foreign keys are composite (agent_id, parent_id), so a row can only ever point at a
--     parent of the same tenant, whatever Row Level Security allows a session to see;
--   * Row Level Security is enabled on every tenant table (policies and the tenant role arrive in
--     a later migration; the owner role used by the service is not affected until FORCE is set).
-- Money is NUMERIC everywhere.

CREATE TABLE agents (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agency_name           text NOT NULL CHECK (agency_name <> ''),
    email                 text NOT NULL UNIQUE CHECK (email LIKE '%@%'),
    phone_number          text,
    vapi_phone_number_id  text UNIQUE,
    vapi_assistant_id     text,
    user_id               uuid,
    discord_webhook_url   text,
    greeting              text,
    system_prompt         text,
    status                text NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'paused', 'cancelled')),
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE leads (
    id          uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    phone       text NOT NULL,
    name        text,
    email       text,
    address     text,
    status      text NOT NULL DEFAULT 'new',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    UNIQUE (agent_id, phone)
);

CREATE TABLE properties (
    id            uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id      uuid NOT NULL REFERENCES agents (id),
    lead_id       uuid,
    address       text,
    latitude      numeric(9, 6),
    longitude     numeric(9, 6),
    water_source  text,
    has_solar     boolean,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    FOREIGN KEY (agent_id, lead_id) REFERENCES leads (agent_id, id)
);

CREATE TABLE risk_assessments (
    id               uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id         uuid NOT NULL REFERENCES agents (id),
    lead_id          uuid,
    property_id      uuid,
    kind             text NOT NULL CHECK (kind IN ('solar', 'water')),
    result           jsonb NOT NULL,
    idempotency_key  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    UNIQUE (agent_id, kind, idempotency_key),
    FOREIGN KEY (agent_id, lead_id) REFERENCES leads (agent_id, id),
    FOREIGN KEY (agent_id, property_id) REFERENCES properties (agent_id, id)
);

CREATE TABLE tags (
    id          uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id    uuid NOT NULL REFERENCES agents (id),
    lead_id     uuid NOT NULL,
    tag         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, lead_id, tag),
    FOREIGN KEY (agent_id, lead_id) REFERENCES leads (agent_id, id)
);

CREATE TABLE calls (
    id                uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id          uuid NOT NULL REFERENCES agents (id),
    vapi_call_id      text NOT NULL,
    lead_id           uuid,
    customer_number   text,
    status            text,
    started_at        timestamptz,
    ended_at          timestamptz,
    duration_seconds  numeric(12, 3) CHECK (duration_seconds >= 0),
    ended_reason      text,
    vapi_cost_usd     numeric(14, 6),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    UNIQUE (agent_id, vapi_call_id),
    FOREIGN KEY (agent_id, lead_id) REFERENCES leads (agent_id, id)
);

-- Every authenticated Vapi message, as received. agent_id is NULL for unroutable messages
-- (unknown phoneNumberId); NULLS NOT DISTINCT keeps those deduplicated too (PostgreSQL 15+).
CREATE TABLE webhook_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      uuid REFERENCES agents (id),
    dedupe_key    text NOT NULL,
    message_type  text NOT NULL,
    vapi_call_id  text,
    routing       text NOT NULL CHECK (routing IN ('routed', 'unroutable', 'no_call')),
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (agent_id, dedupe_key)
);
CREATE INDEX webhook_events_unroutable ON webhook_events (received_at) WHERE routing = 'unroutable';

-- Prices over time. effective_from/effective_to are dates in BILLING_TIMEZONE, the range is
-- [from, to). A row with agent_id overrides the default (agent_id NULL) for that agent.
CREATE TABLE pricing_config (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metric_type     text NOT NULL,
    unit            text NOT NULL,
    unit_price_usd  numeric(14, 6) NOT NULL CHECK (unit_price_usd >= 0),
    unit_cost_usd   numeric(14, 6) CHECK (unit_cost_usd >= 0),
    effective_from  date NOT NULL,
    effective_to    date CHECK (effective_to > effective_from),
    agent_id        uuid REFERENCES agents (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (agent_id, metric_type, effective_from)
);

-- The usage ledger: one row per billable effect, exactly once (idempotency_key).
-- cost_usd is quantity x unit_price_usd, unrounded; rounding happens once per invoice line.
CREATE TABLE agent_usage_metrics (
    id                 uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id           uuid NOT NULL REFERENCES agents (id),
    metric_type        text NOT NULL,
    quantity           numeric(18, 6) NOT NULL CHECK (quantity >= 0),
    unit_price_usd     numeric(14, 6) NOT NULL,
    cost_usd           numeric NOT NULL,
    provider_cost_usd  numeric,
    occurred_at        timestamptz NOT NULL,
    idempotency_key    text NOT NULL,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    UNIQUE (agent_id, metric_type, idempotency_key)
);
CREATE INDEX agent_usage_metrics_period ON agent_usage_metrics (agent_id, occurred_at);

CREATE TABLE invoices (
    id            uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id      uuid NOT NULL REFERENCES agents (id),
    period_start  date NOT NULL,
    period_end    date NOT NULL CHECK (period_end > period_start),
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'issued', 'void')),
    total_usd     numeric(14, 2) NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, id),
    UNIQUE (agent_id, period_start)
);

CREATE TABLE invoice_lines (
    id              uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    agent_id        uuid NOT NULL,
    invoice_id      uuid NOT NULL,
    metric_type     text NOT NULL,
    description     text NOT NULL,
    quantity        numeric(18, 6) NOT NULL,
    unit_price_usd  numeric(14, 6) NOT NULL,
    amount_usd      numeric(14, 2) NOT NULL,
    UNIQUE (agent_id, invoice_id, metric_type),
    FOREIGN KEY (agent_id, invoice_id) REFERENCES invoices (agent_id, id) ON DELETE CASCADE
);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE leads ENABLE ROW LEVEL SECURITY;
ALTER TABLE properties ENABLE ROW LEVEL SECURITY;
ALTER TABLE risk_assessments ENABLE ROW LEVEL SECURITY;
ALTER TABLE tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_usage_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoice_lines ENABLE ROW LEVEL SECURITY;
