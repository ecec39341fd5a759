DROP TABLE provider_answers;
