-- The audit copies of purged API keys are pruned by age ([audit] retain, store/retention.rs),
-- oldest first, a batch at a time: without this index each batch would scan the whole
-- table. (audit_log is pruned by audit_log_at, which 0001 created.)
CREATE INDEX deleted_api_keys_deleted ON deleted_api_keys (deleted);
