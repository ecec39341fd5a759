-- The five launch agents of the design document: one 928 number each, placeholder Vapi ids
-- (replace with real ones: `UPDATE agents SET vapi_phone_number_id = 'ph_...' WHERE email = ...`).
-- Idempotent: existing agents (by email) are left as they are. They bill from November 2026,
-- their launch month (a fixed date, so what a seeded database bills does not depend on the day
-- it was seeded).
INSERT INTO agents (agency_name, email, phone_number, vapi_phone_number_id, greeting, billing_starts_on)
VALUES
    ('Flagstaff Family Insurance',  'client1@agent-meter.example', '+19285550101', 'ph_placeholder_client1',
     'Thanks for calling Flagstaff Family Insurance. Gracias por llamar. How can I help you today?', DATE '2026-11-01'),
    ('Prescott Valley Insurance',   'client2@agent-meter.example', '+19285550102', 'ph_placeholder_client2',
     'Thanks for calling Prescott Valley Insurance. How can I help you today?', DATE '2026-11-01'),
    ('Sedona Red Rock Insurance',   'client3@agent-meter.example', '+19285550103', 'ph_placeholder_client3',
     'Thanks for calling Sedona Red Rock Insurance. How can I help you today?', DATE '2026-11-01'),
    ('Kingman Route 66 Insurance',  'client4@agent-meter.example', '+19285550104', 'ph_placeholder_client4',
     'Thanks for calling Kingman Route 66 Insurance. How can I help you today?', DATE '2026-11-01'),
    ('Yuma Desert Sun Insurance',   'client5@agent-meter.example', '+19285550105', 'ph_placeholder_client5',
     'Thanks for calling Yuma Desert Sun Insurance. How can I help you today?', DATE '2026-11-01')
ON CONFLICT (email) DO NOTHING;
