-- Raw high-volume Vapi events are pruned daily after WEBHOOK_EVENT_RETENTION_DAYS (prune_jobs);
-- this index keeps that delete off a scan of every stored message.
CREATE INDEX webhook_events_high_volume ON webhook_events (received_at)
    WHERE message_type IN ('conversation-update', 'speech-update', 'transcript', 'model-output');
