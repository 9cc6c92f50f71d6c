-- The Entra delta base: the state of the last scheduled run that the next run's delta
-- applies to (src/idp/delta_base.rs: a format byte, then deflated JSON). Written in the
-- transaction that applies the run's plan, so a restarted daemon or another replica
-- continues with a delta run from exactly what was applied. NULL: the next run is full.
ALTER TABLE sync_state ADD COLUMN delta_base BLOB;
