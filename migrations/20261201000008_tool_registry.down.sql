ALTER TABLE agents DROP COLUMN tools;

ALTER TABLE properties ADD COLUMN has_solar_old boolean, ADD COLUMN water_source_old text;
UPDATE properties SET has_solar_old = has_solar, water_source_old = water_source;
ALTER TABLE properties DROP COLUMN has_solar, DROP COLUMN water_source, DROP COLUMN facts;
ALTER TABLE properties RENAME COLUMN has_solar_old TO has_solar;
ALTER TABLE properties RENAME COLUMN water_source_old TO water_source;

-- Findings of kinds the first migration did not know cannot survive its CHECK.
DELETE FROM risk_assessments WHERE kind NOT IN ('solar', 'water');
ALTER TABLE risk_assessments DROP CONSTRAINT risk_assessments_kind_fkey;
ALTER TABLE risk_assessments ADD CONSTRAINT risk_assessments_kind_check CHECK (kind IN ('solar', 'water'));
DROP TABLE finding_kinds;
