DROP TABLE portal_sessions;
DROP TABLE portal_sign_in_tokens;
