-- Default prices (agent_id NULL), effective from 2025-01-01 in BILLING_TIMEZONE.
-- Idempotent: a price already recorded for the same metric and start date is kept.
INSERT INTO pricing_config (metric_type, unit, unit_price_usd, unit_cost_usd, effective_from)
VALUES
    ('subscription',      'month',  249.00, NULL, DATE '2025-01-01'),
    ('setup_fee',         'once',   500.00, NULL, DATE '2025-01-01'),
    ('solar_ocr_scan',    'scan',   0.075,  NULL, DATE '2025-01-01'),
    ('water_lookup',      'lookup', 0.00,   0.00, DATE '2025-01-01'),
    ('flood_zone_lookup', 'lookup', 0.00,   0.00, DATE '2025-01-01'),
    ('vapi_call_minutes', 'minute', 0.20,   NULL, DATE '2025-01-01')
ON CONFLICT (agent_id, metric_type, effective_from) DO NOTHING;
