DROP FUNCTION price_in_force(uuid, text, date);
