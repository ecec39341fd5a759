-- One home per billable tool (issue 12).
--
-- 1. Finding kinds: a reference table instead of the CHECK in the first migration. `agent-meter
--    migrate` adds every registered tool's kind (src/tools), so a new tool needs no migration;
--    workers and webs refuse to start while a registered tool's kind is missing.
CREATE TABLE finding_kinds (
    kind        text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO finding_kinds (kind) VALUES ('solar'), ('water');
ALTER TABLE risk_assessments DROP CONSTRAINT risk_assessments_kind_check;
ALTER TABLE risk_assessments
    ADD CONSTRAINT risk_assessments_kind_fkey FOREIGN KEY (kind) REFERENCES finding_kinds (kind);
GRANT SELECT ON finding_kinds TO agent_meter_tenant;

-- 2. What tools learn about a property: one JSON object any tool may add keys to (the effects
--    writer merges it). The two facts the API shows stay columns, now read from it.
ALTER TABLE properties ADD COLUMN facts jsonb NOT NULL DEFAULT '{}'::jsonb;
UPDATE properties
   SET facts = jsonb_strip_nulls(jsonb_build_object('has_solar', has_solar, 'water_source', water_source));
ALTER TABLE properties DROP COLUMN has_solar, DROP COLUMN water_source;
ALTER TABLE properties
    ADD COLUMN has_solar boolean GENERATED ALWAYS AS ((facts ->> 'has_solar')::boolean) STORED,
    ADD COLUMN water_source text GENERATED ALWAYS AS (facts ->> 'water_source') STORED;

-- 3. Per-agent tools: the names of the tools an agent's assistant declares; NULL means every
--    registered tool.
ALTER TABLE agents ADD COLUMN tools text[];
