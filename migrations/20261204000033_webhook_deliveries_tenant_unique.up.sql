-- A delivery's uniqueness is scoped to its agency, as every tenant table's is (the schema test
-- checks it): one delivery of an event to an endpoint, within the agency that owns both.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_message_id_endpoint_id_key;
ALTER TABLE webhook_deliveries
    ADD CONSTRAINT webhook_deliveries_one_per_endpoint UNIQUE (agent_id, message_id, endpoint_id);
