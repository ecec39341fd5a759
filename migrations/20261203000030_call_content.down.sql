-- pg_trgm stays installed: it may have been there before (Supabase ships it), and dropping an
-- extension others may use is not this migration's to do.
DROP FUNCTION search_call_content(text);
DROP TABLE call_content;
