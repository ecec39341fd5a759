ALTER TABLE usage_daily
    DROP COLUMN quantity_without_provider_cost,
    DROP COLUMN events_without_provider_cost;
