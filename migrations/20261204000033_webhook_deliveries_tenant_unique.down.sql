ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_one_per_endpoint;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_message_id_endpoint_id_key
    UNIQUE (message_id, endpoint_id);
