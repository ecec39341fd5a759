ALTER TABLE calls DROP CONSTRAINT calls_one_owner_per_call;
